"""Lyrics: the tiny Parakeet-family .nemo (NeMo, random weights) and Whisper tiny.en (real weights)."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest

from mfpipe import audio
from mfpipe.backends.asr import SAMPLE_RATE, WordStamp, chunk_spans, clamp_words
from mfpipe.schemas import LyricsRecord, Reject

pytestmark = pytest.mark.cpu_extra  # the cpu profile's Whisper


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
def test_lyrics_stage_with_tiny_nemo(tiny_nemo, audio_config, audio_run_info, audio_ingest_rows, mixes, tmp_path):
    """The production recognizer's code path (NeMo, a tiny random Parakeet): words only inside the voice
    regions, song-absolute; an instrumental gets no ASR call and no words; a bad file is a reject."""
    import soundfile as sf

    from mfpipe.stages.lyrics import LyricsStage

    config = audio_config.model_copy(update={"lyrics": audio_config.lyrics.model_copy(
        update={"backend": "nemo", "model": str(tiny_nemo), "chunk_s": 20.0})})
    stage = LyricsStage.from_config(config, audio_run_info)
    stage.setup()
    mix = mixes[3.0]
    path = tmp_path / "voice.wav"
    sf.write(path, mix.audio, mix.rate)
    voiced = {"song_id": "voice-song", "source": str(path), "processed_s": len(mix.audio) / mix.rate}
    song, tones, corrupt = stage.process_batch([voiced, audio_ingest_rows["seventy"], audio_ingest_rows["corrupt"]])
    assert isinstance(corrupt, Reject) and corrupt.song_id == "corrupt-song"
    assert isinstance(tones, LyricsRecord) and not tones.has_vocals and tones.outcome == "no_vocals"
    assert tones.words == [] and tones.vocal_regions == []
    assert isinstance(song, LyricsRecord) and song.has_vocals and song.language == "en"
    _check_word_times(song.words, voiced["processed_s"])
    regions = [(r.start, r.end) for r in song.vocal_regions]
    assert all(any(w.start < b + 0.5 and w.end > a - 0.5 for a, b in regions) for w in song.words)  # the guard
    roles = {m.role: m for m in song.provenance.models}
    assert roles["lyrics_asr"].random_weights and "voice_activity" in roles and "language_id" in roles
    assert song.words_model == str(tiny_nemo)
    assert any("NOISE" in n for n in song.provenance.notes)
    assert json.loads(song.provenance.settings)["backend"] == "nemo"
