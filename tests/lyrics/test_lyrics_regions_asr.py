"""ASR on vocal regions only: song-absolute word times, no ASR for instrumentals, real Whisper tiny.en."""

from __future__ import annotations

import numpy as np
import pytest

from mfpipe.backends.asr import Transcript, WordStamp
from mfpipe.lyrics.regions_asr import transcribe_regions
from support import render_voice as testaudio

RATE = 16000

pytestmark = pytest.mark.cpu_extra  # the cpu profile's Whisper


class ScriptedAsr:
    """Stands in for mfpipe.backends.asr.Asr: one word at 0.5-0.8 s of every clip it is given."""

    def __init__(self):
        self.calls: list[list[float]] = []  # clip durations per call

    def transcribe(self, audios):
        self.calls.append([len(a) / RATE for a in audios])
        return [Transcript(text="word", words=[WordStamp("word", 0.5, 0.8)], language="en") for _ in audios]


def test_word_times_are_shifted_to_song_time_and_songs_batched_in_one_call():
    asr = ScriptedAsr()
    songs = [np.zeros(60 * RATE, np.float32), np.zeros(30 * RATE, np.float32)]
    regions = [[{"start": 10.0, "end": 12.0}, {"start": 40.0, "end": 41.0}], [{"start": 5.0, "end": 6.0}]]
    out = transcribe_regions(asr, songs, regions, pad_s=0.5, join_gap_s=0.0)
    assert len(asr.calls) == 1 and len(asr.calls[0]) == 3  # every clip of every song in one call
    assert asr.calls[0] == pytest.approx([3.0, 2.0, 2.0])
    assert [(w.start, w.end) for w in out[0].words] == [(10.0, 10.3), (40.0, 40.3)]
    assert [(w.start, w.end) for w in out[1].words] == [(5.0, 5.3)]
    assert out[0].clips == 2 and out[0].asr_audio_s == pytest.approx(5.0)


def test_an_instrumental_costs_no_asr_call():
    asr = ScriptedAsr()
    out = transcribe_regions(asr, [np.zeros(30 * RATE, np.float32)], [[]])
    assert asr.calls == [] and out[0].words == [] and out[0].asr_audio_s == 0.0
    out = transcribe_regions(asr, [np.zeros(30 * RATE, np.float32)] * 2, [[], [{"start": 1.0, "end": 2.0}]])
    assert len(asr.calls) == 1 and out[0].words == [] and len(out[1].words) == 1


def test_no_vad_means_the_whole_song_and_clip_errors_stay_with_their_song():
    class Failing(ScriptedAsr):
        def transcribe(self, audios):
            return [Transcript(error="boom") if len(a) > 5 * RATE else Transcript(text="ok") for a in audios]

    out = transcribe_regions(Failing(), [np.zeros(10 * RATE, np.float32), np.zeros(10 * RATE, np.float32)],
                             [None, [{"start": 1.0, "end": 2.0}]])
    assert out[0].error and "boom" in out[0].error and out[1].error is None


def _words_inside_lines(words, lines, tol=0.7):
    return all(any(t.start - tol <= w.start and w.end <= t.end + tol for t in lines) for w in words)


@pytest.mark.slow
@pytest.mark.parametrize("db", [3.0, 0.0])
def test_whisper_on_regions_gives_words_inside_the_lines(vad, whisper_asr, mixes, db):
    mix = mixes[db]
    regions = vad.detect(mix.audio).vocal_regions
    out = transcribe_regions(whisper_asr, [mix.audio], [regions])[0]
    assert out.error is None and len(out.words) >= 10
    assert _words_inside_lines(out.words, mix.lines)
    for truth in mix.lines:  # every line got words
        assert any(truth.start - 0.7 <= w.start <= truth.end for w in out.words), truth.text
    said = {w.word.strip(".,?!").lower() for w in out.words}
    assert {"home", "morning", "river", "name"} <= said
    assert out.asr_audio_s < mix.duration_s


@pytest.mark.slow
def test_whisper_gets_nothing_for_an_instrumental(vad, whisper_asr):
    song = testaudio.render_instrumental(seconds=40).audio
    regions = vad.detect(song).vocal_regions
    assert regions == []
    assert transcribe_regions(whisper_asr, [song], [regions])[0].words == []


@pytest.mark.slow
def test_real_debian_instrumental_gets_no_words(vad, whisper_asr, debian_music):
    from mfpipe.audio import load_mono

    song = load_mono(str(debian_music[0]), RATE, max_seconds=120)
    regions = vad.detect(song).vocal_regions
    out = transcribe_regions(whisper_asr, [song], [regions])[0]
    assert out.words == [] and out.asr_audio_s < 5.0
