"""The MIR facts are right on songs whose truth is known (numpy-synthesized, several tempi,
3/4 and 4/4, major and minor keys with their leading tone)."""

from __future__ import annotations

import pytest

from mfpipe.mir.evaluate import frame_agreement, matched_fraction
from support.render_mir import TEST_SONGS

pytestmark = pytest.mark.slow
NAMES = [spec.name for spec in TEST_SONGS]


def test_the_songs_cover_the_cases():
    assert {s.meter for s in TEST_SONGS} == {3, 4}
    assert {s.mode for s in TEST_SONGS} == {"major", "minor"}
    assert len({s.bpm for s in TEST_SONGS}) == len(TEST_SONGS)


@pytest.mark.parametrize("name", NAMES)
def test_tempo_within_4_percent(synth_results, name):
    spec, facts = synth_results[name]
    assert facts.bpm is not None, facts.notes
    assert abs(facts.bpm - spec.bpm) / spec.bpm <= 0.04, (facts.bpm, spec.bpm)


@pytest.mark.parametrize("name", NAMES)
def test_meter(synth_results, name):
    spec, facts = synth_results[name]
    assert facts.meter == spec.meter


@pytest.mark.parametrize("name", NAMES)
def test_key_and_mode(synth_results, name):
    spec, facts = synth_results[name]
    assert (facts.key, facts.mode) == (spec.key, spec.mode)
    assert 0.0 < facts.key_strength <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_chords_right_for_most_frames(synth_results, name):
    spec, facts = synth_results[name]
    agreement = frame_agreement(spec.truth()["chord_timeline"], facts.chords)
    assert agreement >= 0.85, agreement


@pytest.mark.parametrize("name", NAMES)
def test_beats_and_downbeats_on_the_grid(synth_results, name):
    spec, facts = synth_results[name]
    beat_grid = [i * spec.beat_s for i in range(spec.bars * spec.meter)]
    bar_starts = [b * spec.bar_s for b in range(spec.bars)]
    assert matched_fraction(facts.beats, beat_grid) >= 0.9
    assert matched_fraction(facts.downbeats, bar_starts) >= 0.9
    # ...and no extra downbeats between the bars.
    assert matched_fraction(bar_starts, facts.downbeats) >= 0.9


@pytest.mark.parametrize("name", NAMES)
def test_loudness_is_plausible(synth_results, name):
    _, facts = synth_results[name]
    # Peak-normalised to -1 dBFS with drums: integrated loudness lands in the usual range.
    assert -30.0 < facts.loudness_lufs < -8.0
    assert facts.notes == []
