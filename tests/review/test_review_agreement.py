"""The filter and MIR rules against people: precision and recall per skill, Cohen's kappa between reviewers,
on a known set of decisions (figures worked out by hand, kappa also checked against scikit-learn)."""

from __future__ import annotations

import pytest

from mfpipe.review.agreement import cohen_kappa, judge_verdicts, measure


def _item(skill: str, filter_drop: bool, human: str, mir: bool = False, reviewers: dict | None = None) -> dict:
    return {"key": f"x:{skill}", "skill": skill, "human": human, "reviewers": reviewers or {"alice": human},
            "judges": {"filter": filter_drop, "audio_lm": filter_drop and not mir, "mir": mir}}


def test_precision_recall_per_skill_and_overall():
    items = [
        _item("caption", True, "drop"),  # the filter rejects, people too
        _item("caption", True, "keep"),  # the filter rejects, people keep
        _item("caption", False, "edit"),  # people reject (an edit: the text as written was not good), filter keeps
        _item("caption", False, "keep"),
        _item("temporal", True, "drop", mir=True),
        _item("temporal", True, "edit"),
        _item("temporal", False, "keep"),
    ]
    table = {(r["rule"], r["skill"]): r for r in measure(items)["rules"]}
    caption, temporal, overall = table["filter", "caption"], table["filter", "temporal"], table["filter", "all"]
    assert (caption["tp"], caption["fp"], caption["fn"], caption["tn"]) == (1, 1, 1, 1)
    assert caption["precision"] == 0.5 and caption["recall"] == 0.5
    assert (temporal["tp"], temporal["fp"], temporal["fn"], temporal["tn"]) == (2, 0, 0, 1)
    assert temporal["precision"] == 1.0 and temporal["recall"] == 1.0
    assert overall["items"] == 7 and overall["precision"] == 0.75 and overall["recall"] == 0.75
    mir = table["mir", "all"]  # one flag, on an item people dropped; three rejections it missed
    assert (mir["tp"], mir["fp"], mir["fn"], mir["tn"]) == (1, 0, 3, 3) and mir["recall"] == 0.25
    audio = table["audio_lm", "temporal"]  # the MIR-flagged drop was not the audio-LM's
    assert (audio["tp"], audio["fn"]) == (1, 1)


def test_no_figure_without_a_denominator():
    rows = {(r["rule"], r["skill"]): r for r in measure([_item("attribute", False, "keep")])["rules"]}
    assert rows["filter", "attribute"]["precision"] is None and rows["filter", "attribute"]["recall"] is None


def test_cohens_kappa_between_two_reviewers():
    both = [{"alice": "drop", "bob": "drop"}, {"alice": "edit", "bob": "keep"}, {"alice": "keep", "bob": "keep"},
            {"alice": "keep", "bob": "keep"}]
    items = [_item("caption", False, r["bob"], reviewers=r) for r in both]
    items.append(_item("caption", False, "keep", reviewers={"carol": "keep"}))  # reviewed by one person only
    pairs = measure(items)["reviewer_pairs"]
    assert [(p["a"], p["b"], p["items"], p["agree"]) for p in pairs] == [("alice", "bob", 4, 3)]
    # p_o = 3/4; p_e = 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5
    assert pairs[0]["kappa"] == 0.5
    from sklearn.metrics import cohen_kappa_score

    a, b = [True, True, False, False, True, False], [True, False, False, False, True, True]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-4)
    assert cohen_kappa([True, True], [True, True]) is None  # chance agreement is total: undefined


def test_which_judge_made_the_call():
    kept = {"keep": True, "score": 8.0, "flags": [], "reasons": ["kept"]}
    assert judge_verdicts(kept, []) == {"filter": False, "audio_lm": False, "mir": False}
    heard_no = {"keep": False, "p_yes": 0.1, "flags": [], "reasons": ["dropped: the audio-LM did not confirm it"]}
    assert judge_verdicts(heard_no, []) == {"filter": True, "audio_lm": True, "mir": False}
    mir_only = {"keep": False, "p_yes": 0.9, "flags": ["bpm: says 999 BPM"],
                "reasons": ["dropped: it contradicts the MIR facts"]}
    assert judge_verdicts(mir_only, []) == {"filter": True, "audio_lm": False, "mir": True}
    both = {**mir_only, "reasons": ["dropped: the audio-LM did not confirm it and it contradicts the MIR facts"]}
    assert judge_verdicts(both, [])["audio_lm"] is True
    unheard = {"keep": False, "score": None, "p_yes": None, "flags": [], "reasons": ["dropped: not judged"]}
    assert judge_verdicts(unheard, [])["audio_lm"] is None  # the audio-LM made no call on it
    assert judge_verdicts(None, ["key"]) == {"filter": None, "audio_lm": None, "mir": True}  # synthesize's flags
