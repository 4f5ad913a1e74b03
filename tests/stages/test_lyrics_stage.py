"""Lyrics: the tiny Parakeet-family .nemo (NeMo, random weights) and Whisper tiny.en (real weights)."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest

from mfpipe import audio
from mfpipe.backends.asr import SAMPLE_RATE, WordStamp, chunk_spans, clamp_words
from mfpipe.schemas import LyricsRecord, Reject


def _check_word_times(words, duration):
    assert words, "expected some words"
    starts = [w.start for w in words]
    assert all(0.0 <= w.start <= w.end <= duration for w in words), words
    assert starts == sorted(starts), "word starts must not go back in time"


@pytest.fixture(scope="module")
def harbor(example):
    return audio.load_mono(example("harbor_lights.mp3"), SAMPLE_RATE)


@pytest.fixture(scope="module")
def waltz(example):
    return audio.load_mono(example("anna_waltz.flac"), SAMPLE_RATE)


@pytest.mark.slow
def test_tiny_nemo_word_times_lie_inside_the_song_and_increase(nemo_asr, harbor, waltz):
    clips = [harbor, waltz[: int(41.3 * SAMPLE_RATE)]]
    results = nemo_asr.transcribe(clips)
    for result, song in zip(results, clips):
        assert result.error is None
        _check_word_times(result.words, len(song) / SAMPLE_RATE)
        assert result.text and result.language == "en"
    # 20 s chunks: words from the 2nd and 3rd chunk were shifted by their offsets.
    assert any(w.start >= 40.0 for w in results[0].words)
    assert max(w.end for w in results[1].words) <= 41.3
    assert nemo_asr.model_ref().random_weights


@pytest.mark.slow
def test_tiny_nemo_bad_song_does_not_take_the_batch_down(nemo_asr, harbor):
    bad = harbor[: 20 * SAMPLE_RATE].copy()
    bad[100] = np.inf
    good, broken, short = nemo_asr.transcribe([harbor[: 25 * SAMPLE_RATE], bad, harbor[:50]])
    assert good.error is None and good.words
    assert "non-finite" in broken.error and "too short" in short.error


@pytest.mark.slow
def test_whisper_tiny_en_hears_the_spoken_line(whisper_asr, harbor, waltz):
    truth = {s["file"]: s for s in json.loads(files("mfpipe.examples").joinpath("truth.json").read_text())}
    lyric = truth["harbor_lights.mp3"]
    spoken, instrumental = whisper_asr.transcribe([harbor, waltz])
    _check_word_times(spoken.words, lyric["duration_s"])

    def norm(text):
        return [w.strip(".,!?").lower() for w in text.split()]

    expected, heard = norm(lyric["lyrics"]), norm(spoken.text)
    hits = sum(1 for w in expected if w in heard)
    assert hits / len(expected) >= 0.8, (spoken.text, lyric["lyrics"])
    # The line starts in bar 4 (0-based) at 120 BPM in 4/4: 8 s in.
    bar_s = 60.0 / lyric["bpm"] * lyric["meter"]
    assert abs(spoken.words[0].start - lyric["lyrics_bar"] * bar_s) < 1.5
    assert spoken.language == "en"
    assert truth["anna_waltz.flac"]["lyrics"] is None
    assert instrumental.words == [] and instrumental.text == "" and instrumental.language is None


def test_chunks_cover_the_song_and_short_tails_join():
    assert chunk_spans(50 * SAMPLE_RATE, 20.0) == [(0, 320000), (320000, 640000), (640000, 800000)]
    assert chunk_spans(41 * SAMPLE_RATE, 20.0) == [(0, 320000), (320000, 656000)]  # 1 s tail joined
    assert chunk_spans(5 * SAMPLE_RATE, 20.0) == [(0, 80000)]


def test_word_times_are_clamped_into_their_chunk():
    words = [WordStamp("a", 19.9, 20.16), WordStamp("b", 20.2, 20.1)]
    assert clamp_words(words, 0.0, 20.0) == [WordStamp("a", 19.9, 20.0), WordStamp("b", 20.0, 20.0)]


@pytest.mark.slow
def test_lyrics_stage_with_tiny_nemo(tiny_nemo, audio_config, audio_run_info, audio_ingest_rows):
    from mfpipe.stages.lyrics import LyricsStage

    config = audio_config.model_copy(update={"lyrics": audio_config.lyrics.model_copy(
        update={"backend": "nemo", "model": str(tiny_nemo), "chunk_s": 20.0})})
    stage = LyricsStage.from_config(config, audio_run_info)
    stage.setup()
    seventy, corrupt = stage.process_batch([audio_ingest_rows["seventy"], audio_ingest_rows["corrupt"]])
    assert isinstance(corrupt, Reject) and corrupt.song_id == "corrupt-song"
    assert isinstance(seventy, LyricsRecord) and seventy.has_vocals == bool(seventy.words)
    _check_word_times(seventy.words, 70.0)
    (model,) = seventy.provenance.models
    assert model.random_weights and model.role == "lyrics_asr"
    assert any("NOISE" in n for n in seventy.provenance.notes)
    assert json.loads(seventy.provenance.settings)["backend"] == "nemo"
