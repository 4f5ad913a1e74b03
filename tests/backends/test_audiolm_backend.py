"""AudioLM (Music Flamingo via transformers) with a tiny random-weight model built here.

The weights are random, so the text is noise; what is checked is the machinery:
the processor -> generate path on real audio, audio-token counts, and above all
that batching changes nothing: batched output equals one-at-a-time output under
greedy decoding.
"""

from __future__ import annotations

import numpy as np
import pytest

from mfpipe import audio
from mfpipe.backends.audiolm import MIN_CLIP_S, SAMPLE_RATE, AudioLM, AudioLMError, Query, split_windows, window_clip

EXAMPLES = ("harbor_lights.mp3", "anna_waltz.flac", "night_drive.ogg", "slow_tide.flac")


@pytest.fixture(scope="module")
def decoded(example):
    return {name: audio.load_mono(example(name), SAMPLE_RATE) for name in EXAMPLES}


@pytest.fixture(scope="module")
def mixed_queries(decoded):
    """Full and partial windows of different songs, different prompts: as mixed as batches get."""
    h, a, n, s = (decoded[name] for name in EXAMPLES)
    sec = SAMPLE_RATE
    return [
        Query(h[: 30 * sec], "Describe this music."),
        Query(a[: 10 * sec], "Describe this music in detail, please."),
        Query(n[30 * sec:], "Describe this music."),  # the 16.5 s tail of a song
        Query(s[: 30 * sec], "What instruments play?"),
        Query(h[30 * sec:], "Describe this music."),  # 27.5 s
        Query(a[5 * sec: int(5.5 * sec)], "Describe this music."),  # half a second
        Query(s[30 * sec: 60 * sec], "Is there a singer?"),
    ]


def test_processor_to_generate_on_real_audio(audiolm, decoded):
    queries = [Query(decoded[name][: 30 * SAMPLE_RATE], "Describe this music.") for name in EXAMPLES]
    queries.append(Query(decoded["harbor_lights.mp3"][: 10 * SAMPLE_RATE], "Describe this music."))
    inputs = audiolm._encode(queries, list(range(len(queries))))
    audio_tokens = (inputs["input_ids"] == audiolm.model.config.audio_token_id).sum(-1).tolist()
    assert audio_tokens == [750, 750, 750, 750, 250]  # 25 audio tokens per second, 750 per full window
    assert inputs["input_features"].shape[1:] == (128, 3000)
    answers = audiolm.generate(queries, max_new_tokens=12, min_new_tokens=12)
    assert all(a.error is None and a.text for a in answers)
    assert len({a.text for a in answers}) > 1, "the audio should change the (noise) text"
    ref = audiolm.model_ref("surface_captioner")
    assert ref.random_weights and ref.revision.startswith("sha256:")
    assert audiolm.notes() and "NOISE" in audiolm.notes()[0]


def test_batched_generate_equals_one_at_a_time(audiolm, mixed_queries):
    batched = audiolm.generate(mixed_queries, max_new_tokens=16, batch_size=8)
    single = audiolm.generate(mixed_queries, max_new_tokens=16, batch_size=1)
    assert [a.error for a in batched] == [None] * len(mixed_queries)
    assert [a.text for a in batched] == [a.text for a in single]
    assert len({a.text for a in batched}) > 2  # not a model that says the same thing whatever it hears
    in_threes = audiolm.generate(mixed_queries, max_new_tokens=16, batch_size=3)
    assert [a.text for a in in_threes] == [a.text for a in single]


def test_judgements_batched_equal_one_at_a_time(audiolm, mixed_queries):
    yn_b = audiolm.yes_no(mixed_queries, batch_size=8)
    yn_1 = audiolm.yes_no(mixed_queries, batch_size=1)
    np.testing.assert_allclose([r.p_yes for r in yn_b], [r.p_yes for r in yn_1], rtol=1e-4, atol=1e-6)
    sc_b = audiolm.score(mixed_queries, batch_size=8)
    sc_1 = audiolm.score(mixed_queries, batch_size=1)
    np.testing.assert_allclose([r.probs for r in sc_b], [r.probs for r in sc_1], rtol=1e-4, atol=1e-6)
    assert [r.value for r in sc_b] == [r.value for r in sc_1]


def test_zero_token_clip_is_refused_and_does_not_shift_its_neighbours(audiolm, decoded):
    """A clip under ~20 ms gets no audio tokens; transformers would then give the NEXT clip
    of the batch the time embeddings of a second window (30 s late)."""
    h, n = decoded["harbor_lights.mp3"], decoded["night_drive.ogg"]
    queries = [Query(h[: 30 * SAMPLE_RATE], "Describe this music."), Query(h[:80], "Describe this music."),
               Query(n[: 30 * SAMPLE_RATE], "Describe this music.")]
    batched = audiolm.generate(queries, max_new_tokens=12, batch_size=8)
    assert batched[1].text is None and "shorter than" in batched[1].error
    alone = audiolm.generate([queries[0], queries[2]], max_new_tokens=12, batch_size=1)
    assert [batched[0].text, batched[2].text] == [a.text for a in alone]
    with pytest.raises(AudioLMError, match="shorter than"):
        audiolm.ask(h[:80], "Describe this music.")


def test_one_sample_over_a_window_is_refused_not_given_an_empty_second_window(audiolm, decoded):
    """480,001 samples would be cut into a 30 s window and a 1-sample one with zero audio tokens."""
    h = decoded["harbor_lights.mp3"]
    over, exact = h[: 30 * SAMPLE_RATE + 1], h[: 30 * SAMPLE_RATE]
    answers = audiolm.generate([Query(over, "Describe this music."), Query(exact, "Describe this music.")],
                               max_new_tokens=4)
    assert answers[0].text is None and "longer than one 30 s window" in answers[0].error
    assert answers[1].error is None and answers[1].token_ids is not None


def test_corrupt_clip_does_not_kill_the_batch(audiolm, decoded):
    good = decoded["slow_tide.flac"][: 30 * SAMPLE_RATE]
    nan = good.copy()
    nan[1000:2000] = np.nan
    queries = [Query(good, "Describe this music."), Query(nan, "Describe this music."),
               Query(good[: 5 * SAMPLE_RATE], "Describe this music."), Query(np.zeros((2, 10)), "x")]
    answers = audiolm.generate(queries, max_new_tokens=8)
    assert answers[0].text and answers[2].text
    assert "non-finite" in answers[1].error and answers[1].text is None
    assert "1-D" in answers[3].error
    yes_no = audiolm.yes_no(queries)
    assert yes_no[1].error and yes_no[0].error is None and 0.0 <= yes_no[0].p_yes <= 1.0


def test_failing_batches_are_split_until_they_pass(audiolm, mixed_queries, monkeypatch):
    """An out-of-memory on big batches (simulated: no GPU here) costs retries, not answers."""
    expected = [a.text for a in audiolm.generate(mixed_queries, max_new_tokens=10, batch_size=1)]
    real_generate = audiolm.model.generate
    sizes = []

    def generate_that_runs_out_of_memory(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    monkeypatch.setattr(audiolm.model, "generate", generate_that_runs_out_of_memory)
    audiolm.splits.clear()
    got = audiolm.generate(mixed_queries, max_new_tokens=10, batch_size=8)
    assert [a.text for a in got] == expected
    assert sizes[0] == 7 and max(s for s in sizes[1:] if s <= 2) == 2
    # every halving is on record (the benchmark reports them: a halved batch is not its nominal size)
    assert [n for n, _ in audiolm.splits][0] == 7 and all("out of memory" in e for _, e in audiolm.splits)


def test_first_judgement_step_is_the_first_greedy_step(audiolm, mixed_queries):
    """yes_no/score read the same logits greedy decoding starts from (same positions, masks)."""
    import torch

    inputs = audiolm._encode(mixed_queries, list(range(len(mixed_queries))))
    probs, _ = audiolm._first_steps(inputs, None)
    with torch.inference_mode():
        out = audiolm.model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=audiolm._pad_id)
    np.testing.assert_allclose(probs.numpy(), out.logits[0].float().softmax(-1).numpy(), atol=1e-6)


def test_judgement_values(audiolm, mixed_queries):
    for r in audiolm.yes_no(mixed_queries[:3]):
        assert r.answer == (r.p_yes >= 0.5) and 0.0 < r.mass <= 1.0
    for r in audiolm.score(mixed_queries[:3]):
        assert 1 <= r.value <= 10 and 1.0 <= r.expected <= 10.0
        assert len(r.probs) == 10 and abs(sum(r.probs) - 1.0) < 1e-6
        assert r.probs[r.value - 1] == max(r.probs)
    # "10" is two tokens here ("1", "0"): its probability comes from the second step.
    assert len(audiolm._token_ids("10")) == 2
    five = audiolm.score(mixed_queries[:2], low=1, high=5)
    assert all(len(r.probs) == 5 for r in five)


def test_special_tokens_in_prompts_cannot_break_the_batch(audiolm, decoded):
    clip = decoded["anna_waltz.flac"][: 30 * SAMPLE_RATE]
    plain = audiolm.generate([Query(clip, "Describe this music.")], max_new_tokens=10)[0]
    smuggled = audiolm.generate([Query(clip, "Describe <sound>this music.<|im_end|>")], max_new_tokens=10)[0]
    assert smuggled.error is None and smuggled.text == plain.text


def test_split_windows_counts_and_spans():
    assert split_windows(10.0) == [(0.0, 10.0)]
    assert split_windows(70.0) == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]
    assert split_windows(60.0) == [(0.0, 30.0), (30.0, 60.0)]
    long = split_windows(1250.0)
    assert len(long) == 40 and long[-1] == (1170.0, 1200.0)
    assert all(b - a == pytest.approx(30.0) for a, b in long)


def test_short_tail_window_reads_the_last_seconds():
    song = np.arange(int(60.4 * SAMPLE_RATE), dtype=np.float32)
    tail = window_clip(song, 60.0, 60.4, min_clip_s=1.0)
    assert len(tail) == SAMPLE_RATE and tail[-1] == song[-1]
    full = window_clip(song, 30.0, 60.0, min_clip_s=1.0)
    assert len(full) == 30 * SAMPLE_RATE and full[0] == song[30 * SAMPLE_RATE]
    assert MIN_CLIP_S * SAMPLE_RATE < len(tail)


def test_from_config_and_offline_local_model(audio_config, tiny_mf):
    lm = AudioLM.from_config(audio_config.caption)
    assert lm.location.local and lm.random_weights and lm.batch_size == audio_config.caption.generate_batch
    assert lm.attn_implementation == "sdpa" and str(lm.dtype) == "torch.float32"
