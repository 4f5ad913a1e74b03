"""Vocal regions from Silero VAD; region arithmetic and cutting keep timestamps right."""

from __future__ import annotations

import numpy as np
import pytest

from mfpipe.lyrics.vad import (
    SAMPLE_RATE,
    VadConfig,
    VoiceActivity,
    cut_regions,
    in_regions,
    join_spans,
    merge_regions,
    pad_regions,
    regions_seconds,
)
from support import render_voice as testaudio


def test_merge_pad_and_join():
    regs = [{"start": 5.0, "end": 6.0}, {"start": 1.0, "end": 2.0}, (2.5, 3.0), {"start": 9.0, "end": 9.0}]
    assert merge_regions(regs) == [{"start": 1.0, "end": 2.0}, {"start": 2.5, "end": 3.0}, {"start": 5.0, "end": 6.0}]
    assert merge_regions(regs, gap_s=0.5) == [{"start": 1.0, "end": 3.0}, {"start": 5.0, "end": 6.0}]
    assert pad_regions([(0.2, 1.0), (1.5, 2.0)], 0.3, duration_s=2.1) == [{"start": 0.0, "end": 2.1}]
    assert regions_seconds(regs) == pytest.approx(2.5)
    spans = [{"start": 0.0, "end": 2.0}, {"start": 5.0, "end": 8.0}, {"start": 30.0, "end": 31.0}]
    assert join_spans(spans, join_gap_s=6.0, max_clip_s=28.0) == [{"start": 0.0, "end": 8.0},
                                                                   {"start": 30.0, "end": 31.0}]
    assert join_spans(spans, join_gap_s=6.0, max_clip_s=5.0) == spans
    assert in_regions(5.5, 5.7, spans) == 1 and in_regions(12.0, 13.0, spans) is None


def test_cut_regions_maps_clip_time_back_to_song_time():
    rate = SAMPLE_RATE
    audio = np.zeros(60 * rate, dtype=np.float32)
    clicks = [7.25, 31.5, 44.125]
    for t in clicks:
        audio[int(t * rate)] = 1.0
    regions = [{"start": 7.0, "end": 8.0}, {"start": 31.0, "end": 32.0}, {"start": 44.0, "end": 45.0}]
    clips = cut_regions(audio, regions, pad_s=0.5)
    assert [round(c.offset, 3) for c in clips] == [6.5, 30.5, 43.5]
    for clip, t in zip(clips, clicks):
        at = np.flatnonzero(clip.audio)[0] / rate
        assert clip.to_song(at) == pytest.approx(t, abs=1 / rate)
        assert clip.regions[0]["start"] <= t <= clip.regions[0]["end"]
    joined = cut_regions(audio, regions, pad_s=0.5, join_gap_s=15.0, max_clip_s=30.0)
    assert [(c.offset, round(c.end, 3)) for c in joined] == [(6.5, 8.5), (30.5, 45.5)]  # a 22 s gap stays cut
    found = [c.to_song(i / rate) for c in joined for i in np.flatnonzero(c.audio)]
    assert found == pytest.approx(clicks, abs=1 / rate)
    assert len(joined[1].regions) == 2
    edge = cut_regions(audio, [{"start": 0.1, "end": 0.5}, {"start": 59.8, "end": 60.0}], pad_s=1.0)
    assert edge[0].offset == 0.0 and edge[-1].end == pytest.approx(60.0)


def test_instrumental_renders_have_no_vocal_regions(vad):
    from support.render_mir import TEST_SONGS

    for spec in TEST_SONGS[:4]:
        res = vad.detect(testaudio.render_instrumental(spec).audio)
        assert res.error is None
        assert res.vocal_regions == [] and not res.has_vocals, spec.name


@pytest.mark.parametrize("db", [3.0, 0.0])
def test_voice_over_music_gives_regions_on_the_lines(vad, mixes, db):
    mix = mixes[db]
    res = vad.detect(mix.audio)
    assert res.has_vocals
    assert len(res.vocal_regions) == len(mix.lines)
    for region, truth in zip(res.vocal_regions, mix.lines):
        assert abs(region["start"] - truth.start) < 0.5 and abs(region["end"] - truth.end) < 0.5


def test_voice_under_the_music_regions_stay_on_the_lines(vad, mixes):
    """At -6 dB Silero may miss lines in a full mix (separation helps); what it finds is on the lines."""
    mix = mixes[-6.0]
    res = vad.detect(mix.audio)
    for region in res.vocal_regions:
        assert any(t.start - 0.5 <= region["start"] and region["end"] <= t.end + 0.5 for t in mix.lines)


def test_all_model_forms_agree(mixes):
    x = mixes[0.0].audio
    got = {form: VoiceActivity(VadConfig(model=form)).detect(x).vocal_regions for form in ("sequence", "onnx")}
    assert len(got["sequence"]) == len(got["onnx"])
    for a, b in zip(got["sequence"], got["onnx"]):
        assert abs(a["start"] - b["start"]) < 0.1 and abs(a["end"] - b["end"]) < 0.1


def test_bad_input_and_disabled_vad(vad):
    assert vad.detect(np.zeros((2, 100), dtype=np.float32)).error
    assert vad.detect(np.array([np.nan] * 16000, dtype=np.float32)).error
    res = vad.detect(np.zeros(0, dtype=np.float32))
    assert res.error is None and not res.has_vocals
    off = VoiceActivity(VadConfig(enabled=False)).detect(np.zeros(32000, dtype=np.float32))
    assert off.vocal_regions == [{"start": 0.0, "end": 2.0}]


def test_vad_config_is_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        VadConfig(treshold=0.4)
    assert all(f.description for f in VadConfig.model_fields.values())


@pytest.mark.slow
def test_real_debian_instrumentals_have_no_vocal_regions(vad, debian_music):
    from mfpipe.audio import load_mono

    for path in debian_music:
        audio = load_mono(str(path), SAMPLE_RATE)
        assert len(audio) > 60 * SAMPLE_RATE
        res = vad.detect(audio)
        # Game music with lead synths: allow a stray blip, never a voice.
        assert res.voiced_s < 2.0, (path.name, res.vocal_regions)
        assert not res.has_vocals or res.voiced_s < VadConfig().min_vocal_s, path.name
