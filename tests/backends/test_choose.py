"""`AudioLM.choose` (the filter asks the audio-LM multiple-choice questions with it), on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from mfpipe.backends.audiolm import AudioLM, Query


@pytest.fixture(scope="module")
def lm(tiny_audio_lm):
    return AudioLM(tiny_audio_lm, device="cpu", batch_size=4)


def clip(seed: int, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_each_query_is_normalised_over_its_own_options_and_batching_changes_nothing(lm):
    queries = [Query(clip(i), q) for i, q in enumerate(["Which instrument leads?", "What is the tempo?", "Vocals?"])]
    options = [["flute", "piano", "drums"], ["60 BPM", "90 BPM", "120 BPM", "150 BPM", "180 BPM"], ["yes", "no"]]
    together = lm.choose(queries, options)
    alone = [lm.choose([q], [o], batch_size=1)[0] for q, o in zip(queries, options)]
    for got, one, opts in zip(together, alone, options):
        assert got.error is None and len(got.probs) == len(opts)
        assert sum(got.probs) == pytest.approx(1.0)
        assert got.index == int(np.argmax(got.probs)) and got.letter == "ABCDEFGH"[got.index]
        assert 0.0 < got.mass <= 1.0
        assert got.index == one.index and got.probs == pytest.approx(one.probs, abs=1e-5)


def test_bad_input_is_refused_or_kept_to_its_own_answer(lm):
    with pytest.raises(ValueError, match="2 to 8 options"):
        lm.choose([Query(clip(0), "q")], [["only one"]])
    with pytest.raises(ValueError, match="one list of options per query"):
        lm.choose([Query(clip(0), "q")], [])
    short, fine = lm.choose([Query(clip(0, 0.01), "q"), Query(clip(1), "q")], [["a", "b"], ["a", "b"]])
    assert short.error and short.index is None and fine.error is None
