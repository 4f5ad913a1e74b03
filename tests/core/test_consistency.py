"""The consistency checks on hand-made captions: every planted contradiction is caught,
consistent text (including tricky wording) gets no flag."""

from __future__ import annotations

import pytest

from mfpipe.consistency import (
    ConsistencyConfig,
    check_answer,
    check_metadata,
    check_song,
    check_text,
    chords_in_text,
    parse_key,
)
from mfpipe.mir.labels import chord_triad

# Facts as the mir stage writes them (two example songs of examples/truth.json).
POP = {"bpm": 120.0, "meter": 4, "key": "C", "mode": "major",
       "chords": [{"start": 0.0, "end": 2.0, "label": "C"}, {"start": 2.0, "end": 4.0, "label": "G"},
                  {"start": 4.0, "end": 6.0, "label": "Am"}, {"start": 6.0, "end": 8.0, "label": "F"},
                  {"start": 8.0, "end": 9.0, "label": "N"}]}
WALTZ = {"bpm": 90.0, "meter": 3, "key": "A", "mode": "minor",
         "chords": [{"start": 0.0, "end": 2.0, "label": "Am"}, {"start": 2.0, "end": 4.0, "label": "Dm"},
                    {"start": 4.0, "end": 6.0, "label": "E7"}]}

CONSISTENT = [
    (POP, "A bright pop song at 120 BPM in C major, in 4/4 time, cycling through C–G–Am–F."),
    (POP, "The tempo sits at around 121 beats per minute. A major part of the appeal is the flute."),
    (POP, "Drums keep a half-time feel at 60 BPM under the verse, while the chorus moves the C - G - Am - F loop."),
    (POP, "The song stays in the key of C major; the bridge leans on the relative A minor."),
    (POP, "Harmonically it uses the chords C, G, Am and F, the classic four-chord loop in common time."),
    (POP, "The tempo is 118.5 BPM. The piano plays the A minor chord before resolving to F."),
    (POP, "Spoken vocals over a steady groove; 3/4 of the way through the flute takes the melody."),
    (POP, "A 4/4 groove. The G chord pulls back to C. A minor detail: the hi-hat opens on the off-beat."),
    (WALTZ, "A waltz in 3/4 time at 90 bpm, in A minor, moving Am - Dm - E7 - Am."),
    (WALTZ, "Triple meter, the tempo of 92. The E7 chord gives a strong pull home. Set in A minor."),
    (WALTZ, "Cello and violin over piano; the key is A minor and the harmony cadences with Dm and E7."),
    (WALTZ, "The melody is in A minor, never modulating to C major."),
]

# (facts, text, the check that must fire)
CONTRADICTING = [
    (POP, "An energetic track at 140 BPM with bright piano.", "bpm"),
    (POP, "The tempo is around 60, a relaxed pace.", "bpm"),  # half-time not stated: a contradiction
    (POP, "The song is in the key of D major with a rising melody.", "key"),
    (POP, "It is set in C minor, which gives it a moody colour.", "mode"),
    (POP, "The whole song is in A minor.", "key"),  # the relative minor is another key
    (POP, "A gentle 3/4 time waltz feel carries the verses.", "meter"),
    (POP, "It loops C–G–Em–F throughout.", "chord"),
    (POP, "The piano leans on a Bbmaj7 before the chorus.", "chord"),
    (POP, "The verse uses the D minor chord for colour.", "chord"),
    (WALTZ, "A lilting waltz in 4/4 time.", "meter"),
    (WALTZ, "A dark waltz in E minor.", "key"),
    (WALTZ, "The dominant E minor chord sets up the return home.", "chord"),
    (WALTZ, "The harmony cycles through the chords Am, Dm, G and E7.", "chord"),
    (WALTZ, "It moves at 120 beats per minute.", "bpm"),
]


@pytest.mark.parametrize("facts,text", CONSISTENT)
def test_no_flag_on_consistent_text(facts, text):
    assert check_text(text, facts, "caption") == []


@pytest.mark.parametrize("facts,text,check", CONTRADICTING)
def test_every_planted_contradiction_is_caught(facts, text, check):
    flags = check_text(text, facts, "caption")
    assert [f.check for f in flags] == [check], flags
    assert flags[0].field == "caption"
    assert flags[0].message


def test_several_contradictions_in_one_caption_are_all_caught():
    text = ("A driving song at 100 BPM in the key of G major, in 6/8 time, "
            "built on the progression C - G - Dm - F.")
    checks = sorted(f.check for f in check_text(text, POP, "caption"))
    assert checks == ["bpm", "chord", "key", "meter"]


def test_tolerances_come_from_config():
    text = "It runs at 125 BPM."
    assert check_text(text, POP, "caption")  # 5 BPM off: more than 4 % of 120
    assert not check_text(text, POP, "caption", ConsistencyConfig(bpm_tolerance_pct=5.0))
    marked = "A half-time feel at 60 BPM."
    assert not check_text(marked, POP, "caption")
    assert check_text(marked, POP, "caption", ConsistencyConfig(allow_half_double_time=False))


def test_metadata_fields_are_checked():
    good = {"bpm": 120.0, "key": "C major", "meter": "4/4", "theory": "I–V–vi–IV: C–G–Am–F."}
    assert check_metadata(good, POP) == []
    bad = {"bpm": 95.0, "key": "Eb major", "meter": "3/4", "theory": "Borrowed Fm chord in the bridge."}
    flags = check_metadata(bad, POP)
    assert sorted((f.field, f.check) for f in flags) == [
        ("metadata.bpm", "bpm"), ("metadata.key", "key"), ("metadata.meter", "meter"),
        ("metadata.theory", "chord")]
    assert check_metadata({"key": "C minor"}, POP)[0].check == "mode"


def test_terse_answers_and_whole_song():
    assert check_answer("A minor", POP, "qa[0].answer")[0].check == "key"
    assert check_answer("3/4", POP, "qa[1].answer")[0].check == "meter"
    assert check_answer("C major", POP, "qa[2].answer") == []
    qa = [{"answer": "4/4"}, {"answer": "D major"}, {"answer": "The flute enters at 0:30."}]
    flags = check_song("A pop song at 120 BPM.", {"bpm": 120.0}, qa, POP)
    assert [(f.field, f.check) for f in flags] == [("qa[1].answer", "key")]


def test_no_facts_no_flags():
    assert check_text("In D major at 200 BPM.", None, "caption") == []
    assert check_text("In D major at 200 BPM.", {"bpm": None, "key": None, "chords": []}, "caption") == []


def test_parsers():
    assert parse_key("F# minor") == (6, "minor")
    assert parse_key("Gb minor") == (6, "minor")
    assert parse_key("E-flat major") == (3, "major")
    assert chord_triad("Am7") == (9, "min")
    assert chord_triad("G/B") == (7, "maj")
    assert chord_triad("Bbmaj7") == (10, "maj")
    assert chord_triad("N") is None
    assert chords_in_text("C–G–Am–F and a Dm7") == ["C", "G", "Am", "F", "Dm7"]


FORM = {"sections": [{"start": 0.0, "end": 16.0, "label": "A", "name": "intro"},
                     {"start": 16.0, "end": 48.0, "label": "B", "name": "verse"},
                     {"start": 48.0, "end": 80.0, "label": "C", "name": "chorus"},
                     {"start": 80.0, "end": 112.0, "label": "B", "name": "verse"},
                     {"start": 112.0, "end": 144.0, "label": "C", "name": "chorus"}]}


def test_a_section_change_where_the_measured_form_has_none_is_flagged():
    (flag,) = check_text("The chorus returns at 1:30, louder than before.", FORM, "caption")
    assert flag.check == "structure" and flag.stated == "1:30.0" and "nearest 80.0 s" in flag.message
    assert check_answer("It comes back at 1:05.", FORM, "qa[0].answer")  # 65 s: 15 s from any boundary


def test_a_section_change_at_a_measured_boundary_passes():
    assert check_text("The chorus returns at 1:52 and the first verse runs from 0:16 to 0:48.", FORM, "caption") == []
    assert check_text("The chorus returns at 1:50.", FORM, "caption") == []  # within the 4 s tolerance of 1:52
    assert check_text("The synth pad swells at 1:30.", FORM, "caption") == []  # no section claim in it
    assert check_text("The chorus returns at 1:30.", {"bpm": 120.0}, "caption") == []  # no form measured
    strict = ConsistencyConfig(structure_tolerance_s=1.0)
    assert check_text("The chorus returns at 1:50.", FORM, "caption", strict)


def test_lyrics_in_an_instrumental_are_flagged_and_saying_it_is_instrumental_is_not():
    instrumental = {"bpm": 120.0, "has_vocals": False}
    (flag,) = check_text("A soft voice sings about the sea over the piano.", instrumental, "caption")
    assert flag.check == "vocals" and "no voice" in flag.message
    assert check_text("An instrumental piece: no vocals, the piano carries the melody.", instrumental, "caption") == []
    assert check_text("A soft voice sings about the sea.", {"bpm": 120.0, "has_vocals": True}, "caption") == []
