"""Key spelling, chord-label reduction and the scoring helpers."""

from __future__ import annotations

import pytest

from mfpipe.mir.analysis import chord_spans
from mfpipe.mir.evaluate import frame_agreement, matched_fraction
from mfpipe.mir.labels import chord_triad, spell_key, triad_name


@pytest.mark.parametrize("name, spelled", [
    ("C", "C"), ("C#", "C#"), ("Db", "C#"), ("D#", "Eb"), ("Eb", "Eb"), ("Gb", "F#"), ("G#", "Ab"),
    ("A#", "Bb"), ("Bb", "Bb"), ("Cb", "B"), ("B#", "C"), ("e", "E"), ("bb", "Bb"),
])
def test_one_spelling_per_pitch_class(name, spelled):
    assert spell_key(name) == spelled


def test_not_a_key():
    assert spell_key("H") is None and spell_key("") is None


@pytest.mark.parametrize("label, triad", [
    ("C", "C"), ("Am", "Am"), ("E7", "E"), ("Fmaj7", "F"), ("F6", "F"), ("Am7", "Am"), ("Bbmaj7", "Bb"),
    ("C#m", "C#m"), ("Dbm", "C#m"), ("Bdim", "Bm"), ("Bm7b5", "Bm"), ("Caug", "C"), ("C/E", "C"),
    ("F#m/A", "F#m"), ("Gsus4", "G"), ("N", "N"), ("X", "N"), ("", "N"),
])
def test_chord_labels_reduce_to_triads(label, triad):
    assert triad_name(chord_triad(label)) == triad


def test_chord_spans_from_chordino_changes():
    changes = [{"timestamp": 0.19, "label": "N"}, {"timestamp": 0.23, "label": "C"},
               {"timestamp": 2.0, "label": "G"}, {"timestamp": 4.05, "label": "N"}]
    # Chordino closes with an "N" at the end of the audio: no zero-length span for it.
    assert chord_spans(changes, 4.05) == [
        {"start": 0.19, "end": 0.23, "label": "N"},
        {"start": 0.23, "end": 2.0, "label": "C"},
        {"start": 2.0, "end": 4.05, "label": "G"},
    ]
    assert chord_spans([], 3.0) == []


def test_frame_agreement_counts_triads_and_skips_no_chord():
    ref = [{"start": 0.0, "end": 2.0, "label": "C"}, {"start": 2.0, "end": 4.0, "label": "N"},
           {"start": 4.0, "end": 6.0, "label": "Am"}]
    est = [{"start": 0.0, "end": 1.0, "label": "Cmaj7"}, {"start": 1.0, "end": 6.0, "label": "Am7"}]
    assert frame_agreement(ref, est) == pytest.approx(0.75)
    assert frame_agreement(ref, []) == 0.0


def test_matched_fraction():
    assert matched_fraction([0.0, 1.02, 2.5], [0.0, 1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert matched_fraction([], [1.0]) == 0.0
