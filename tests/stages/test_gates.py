"""The quality gates decide, both ways, through the real judging code: the filter's caption score and
P(yes) thresholds keep and drop, MF-Think's audio-checked steps come out correct or wrong and the chain
is kept, rewritten or dropped by the 30 % rule. The judge is a tiny Music Flamingo whose weights are
set (`build_scripted_judge`): it says yes / 9 / A, or no / 2 / B to any prompt that names a kazoo."""

from __future__ import annotations

import pytest

from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import FilterRecord, Reject
from mfpipe.stages.filter import FilterStage
from mfpipe.stages.think import ThinkStage
from mfpipe.think.select import Item
from support.think_data import HARBOR, config, settle

pytestmark = pytest.mark.slow

GOOD = "A warm piano ballad with a steady pulse, soft strings and a calm, dreamy mood."
PLANTED = "A kazoo carries the melody over the strings."  # the judge "hears" no kazoo


@pytest.fixture(scope="module")
def judge(scripted_judge):
    stage = FilterStage.from_config(config(f"filter.model={scripted_judge}", "filter.keep_unjudged=false",
                                           "filter.drop_on_mir_flags=false"), RunInfo("gates", "gates"))
    stage.setup()
    return stage


def _row(song_rows, caption: str, answers: list[str]) -> dict:
    row = dict(song_rows[HARBOR])
    qa = [{"skill": "attribute", "question": "Which instrument leads?", "answer": a, "options": []} for a in answers]
    return {**row, "synthesize": {"caption": caption, "qa": qa, "flags": []}}


def test_the_filter_keeps_what_the_judge_confirms_and_drops_what_it_refutes(judge, song_rows):
    (kept, dropped) = judge.process_batch([_row(song_rows, GOOD, ["The piano leads.", PLANTED]),
                                           _row(song_rows, f"{GOOD} {PLANTED}", [])])
    assert isinstance(kept, FilterRecord) and isinstance(dropped, FilterRecord)
    # Caption (filter.v2): every window heard agrees with its statements (P(yes) ~1) and it is kept; with
    # the kazoo, no window agrees (P(yes) ~0) and it is dropped.
    assert kept.caption.keep and kept.caption.p_yes > 0.99 and kept.caption.score is None
    assert "lowest P(yes) 1.00" in " ".join(kept.caption.reasons)
    assert not dropped.caption.keep and dropped.caption.p_yes < 0.01
    assert dropped.caption.reasons[0] == "dropped: the audio-LM did not confirm it"
    # QA: P(yes) ~1 (>= qa_min_p_yes) kept; the planted answer P(yes) ~0, dropped.
    right, wrong = kept.qa
    assert right.keep and right.p_yes > 0.99
    assert not wrong.keep and wrong.p_yes < 0.01
    assert kept.judged_items == 3 and dropped.judged_items == 1  # every item really judged


def test_the_judge_hears_only_the_captions_statements_about_its_window(judge, song_rows):
    """A kazoo placed at 0:45 (the second window, 0:30-0:57.5) is not put to the judge while it hears
    the first window: that window agrees, the second does not, and the caption drops on the second."""
    (record,) = judge.process_batch([_row(song_rows, f"{GOOD} At 0:45 a kazoo solo takes over.", [])])
    assert record.caption.windows == [0, 1] and not record.caption.keep
    assert "lowest P(yes) 0.00 in window 1" in " ".join(record.caption.reasons)
    (early,) = judge.process_batch([_row(song_rows, f"{GOOD} At 0:05 a kazoo solo takes over.", [])])
    assert "lowest P(yes) 0.00 in window 0" in " ".join(early.caption.reasons)


def test_mir_decides_what_it_measured_and_confirms(judge, song_rows):
    """The judge says no to anything naming a kazoo; an answer whose tempo MIR confirms stays whatever the
    judge said. One MIR refutes is flagged and MIR does not vouch for it (dropping it is
    filter.drop_on_mir_flags, off in this module's judge)."""
    row = _row(song_rows, GOOD, [])
    row["synthesize"]["qa"] = [
        {"skill": "attribute", "question": "What tempo does the kazoo part keep?", "answer": "About 120 BPM.",
         "options": []},
        {"skill": "attribute", "question": "What tempo does the piano keep?", "answer": "About 150 BPM.",
         "options": []}]
    (record,) = judge.process_batch([row])
    confirmed, refuted = record.qa
    assert confirmed.keep and confirmed.p_yes < 0.01 and confirmed.reasons[1].startswith("MIR decides")
    assert any("beat tracker measured 120.0 BPM" in f for f in refuted.flags)
    assert not any(r.startswith("MIR decides") for r in refuted.reasons)


def test_the_thresholds_decide_between_them(scripted_judge, song_rows):
    """The same judgements against stricter thresholds: a score of 9 under a bar of 9.5 drops (filter.v1's
    1-10 score, still loadable), and so does a P(yes) just under 1 against a bar of 1 (filter.v2)."""
    for overrides, why in ((["filter.prompt=filter.v1", "filter.caption_min_score=9.5"], "< 9.5"),
                           (["filter.caption_min_p_yes=1.0"], "< 1")):
        strict = FilterStage.from_config(config(f"filter.model={scripted_judge}", "filter.drop_on_mir_flags=false",
                                                *overrides), RunInfo("gates", "gates"))
        strict.setup()
        (record,) = strict.process_batch([_row(song_rows, GOOD, [])])
        assert not record.caption.keep and why in " ".join(record.caption.reasons)
    assert record.caption.p_yes > 0.99  # (filter.v2's last record: the judge did say yes)


@pytest.fixture(scope="module")
def checker(scripted_judge, llm_server):
    stage = ThinkStage.from_config(config(f"think.model={scripted_judge}", f"llm.base_url={llm_server.base_url}"),
                                   RunInfo("gates", "gates"))
    stage.setup()
    yield stage
    stage.teardown()


ITEM = Item(index=3, skill="comparative_structural", question="How does the second half relate to the first?",
            options=[], reference="It repeats the same progression.", because="a test item")
# Steps the MIR facts cannot judge (no tempo, key, meter or chord): the audio-LM decides them.
HEARD = ["The piano plays the melody.", "Soft strings hold long notes underneath.", "The second half repeats the "
         "opening material.", "The dynamics stay gentle throughout."]
REFUTED = ["A kazoo doubles the piano line.", "The kazoo solo returns at the end."]


def test_think_keeps_rewrites_and_drops_by_the_audio_lms_verdicts(checker, think_gate_row):
    keep, rewrite, drop = settle(checker, think_gate_row, [
        (ITEM, HEARD, "It repeats the same progression."),
        (ITEM, HEARD[:3] + REFUTED[:1], "It repeats the same progression."),  # 1 of 4 wrong: 25 %
        (ITEM, HEARD[:2] + REFUTED, "It repeats the same progression."),  # 2 of 4 wrong: 50 %
    ])
    job, song, results = keep
    assert [c.verdict for c in job.checks] == ["correct"] * 4 and {c.checked_by for c in job.checks} == {"audio_lm"}
    assert "You hear 0:" in checker.prompt.call("step", text="x", span="0:00 to 0:30")
    assert results[0].chains[0].action == "kept"
    job, song, results = rewrite
    assert job.first_error_rate == pytest.approx(0.25)
    assert job.rewrites == 1 or (job.dropped and job.dropped[0].startswith("llm_"))  # the LLM was asked to fix it
    assert song.usage.requests >= 1
    job, song, results = drop
    assert job.first_error_rate == pytest.approx(0.5)
    assert job.rewrites == 0 and song.usage.requests == 0  # more than 30 % wrong: no rewrite, dropped
    assert [r.error for r in results if isinstance(r, Reject)] == ["too_many_wrong_steps"]


@pytest.fixture(scope="module")
def think_gate_row(song_rows, judge):
    row = _row(song_rows, GOOD, ["It repeats the same progression."])
    (judged,) = judge.process_batch([row])
    return {**row, "filter": judged.model_dump(), "lyrics": None}


def test_deductions_are_not_heard_and_a_compound_step_is_judged_claim_by_claim(checker, think_gate_row):
    """A deduction naming the kazoo is never put to the judge (unverifiable, by logic); an observation
    whose tempo MIR confirms but whose second claim (a kazoo) the judge refutes is wrong."""
    deduction = "So the kazoo cannot be what repeats."
    compound = "The tempo is 120 BPM, and a kazoo doubles the piano."
    ((job, song, _),) = settle(checker, think_gate_row, [
        (ITEM, HEARD[:3] + [deduction, compound], "It repeats the same progression.",
         ["observation"] * 3 + ["deduction", "observation"])])
    assert job.first_error_rate == pytest.approx(0.2)  # 1 of 5: only the compound step is wrong
    assert song.checked[deduction].verdict == "unverifiable" and song.checked[deduction].checked_by == "logic"
    assert song.checked[compound].verdict == "wrong" and song.checked[compound].checked_by == "audio_lm"
