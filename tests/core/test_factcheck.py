"""The fact-checking building blocks: windows to hear, MIR verdicts, audio-LM verdicts, the 30% rule."""

from __future__ import annotations

import pytest

from mfpipe.backends.audiolm import YesNo
from mfpipe.factcheck import audio_check, decide, describe, error_rate, hear, mir_check, spread, times_in, windows_for
from support.think_data import HARBOR, RIGHT, TRUTH, WRONG, mir_row

MIR = mir_row(TRUTH[HARBOR])  # 120 BPM, 4/4, C major, chords C G Am F

@pytest.mark.parametrize("text", RIGHT)
def test_statements_agreeing_with_mir_are_correct(text):
    check = mir_check(text, MIR)
    assert check is not None and check.verdict == "correct" and check.checked_by == "mir"


@pytest.mark.parametrize("text", WRONG)
def test_statements_contradicting_mir_are_wrong_with_the_reason(text):
    check = mir_check(text, MIR)
    assert check is not None and check.verdict == "wrong" and check.checked_by == "mir"
    assert "measured" in check.reason or "key estimate" in check.reason or "Chordino" in check.reason \
        or "downbeat" in check.reason


@pytest.mark.parametrize("text", ["A flute plays the melody.", "Therefore the answer is B.", "The mood is calm."])
def test_statements_without_mir_facts_go_to_the_audio_lm(text):
    assert mir_check(text, MIR) is None
    assert mir_check("The tempo is 90 BPM.", None) is None  # no MIR row: nothing to check against


def test_windows_named_by_time_else_spread():
    spans = [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, 120.0), (120.0, 125.0)]
    assert times_in("the flute enters at 0:45 and leaves at 1:32.5; in 3/4") == [45.0, 92.5]
    assert windows_for(["A flute enters at 0:45."], spans, 3) == [1]
    assert windows_for(["from 0:10 to 2:03"], spans, 3) == [0, 4]
    assert windows_for(["no time here"], spans, 3) == [0, 2, 4]
    assert windows_for(["at 9:59, after the end"], spans, 2) == [0, 4]
    assert spread(1, 3) == [0] and spread(4, 1) == [2] and spread(10, 2) == [0, 9] and spread(0, 2) == []


def yes(p_yes: float, mass: float = 0.9) -> YesNo:
    return YesNo(answer=p_yes >= 0.5, p_yes=p_yes, mass=mass)


def test_audio_verdicts_from_the_best_window_and_only_real_answers():
    assert audio_check(hear([yes(0.2), yes(0.8)], [0, 1], 0.5), 0.65, 0.35).verdict == "correct"
    wrong = audio_check(hear([yes(0.2), yes(0.1)], [0, 1], 0.5), 0.65, 0.35)
    assert wrong.verdict == "wrong" and wrong.p_yes == 0.2 and "window 0" in wrong.reason
    assert audio_check(hear([yes(0.5)], [3], 0.5), 0.65, 0.35).verdict == "unverifiable"
    # a confident-looking P(yes) from a model that barely answered yes/no at all is not a verdict
    mute = audio_check(hear([yes(0.99, mass=0.01), yes(0.01, mass=0.02)], [0, 1], 0.5), 0.65, 0.35)
    assert mute.verdict == "unverifiable" and mute.p_yes is None and "no clear yes/no" in mute.reason
    broken = audio_check(hear([YesNo(None, None, None, error="clip too short")], [0], 0.5), 0.65, 0.35)
    assert broken.verdict == "unverifiable" and "clip too short" in broken.reason


@pytest.mark.parametrize("wrong, steps, action", [
    (0, 10, "keep"), (1, 10, "rewrite"), (3, 10, "rewrite"), (4, 13, "drop"), (4, 10, "drop"),
    (1, 3, "drop"), (3, 7, "drop"), (2, 7, "rewrite"), (6, 20, "rewrite"), (7, 20, "drop"), (0, 0, "drop"),
])
def test_the_thirty_percent_rule_at_its_edges(wrong, steps, action):
    verdicts = ["wrong"] * wrong + ["unverifiable"] * (steps - wrong)
    assert decide(verdicts, 0.3) == action
    if steps:
        assert error_rate(verdicts) == wrong / steps
        assert describe(verdicts).startswith(f"{wrong} of {steps} steps wrong")


def test_a_step_that_places_a_section_change_is_judged_by_the_measured_form():
    form = {**MIR, "sections": [{"start": 0.0, "end": 28.7, "label": "A"}, {"start": 28.7, "end": 57.5, "label": "A"}]}
    assert mir_check("The progression returns at 0:29 for a second pass.", form).verdict == "correct"
    wrong = mir_check("The chorus returns at 0:45.", form)
    assert wrong.verdict == "wrong" and wrong.checked_by == "mir" and "no boundary" in wrong.reason
