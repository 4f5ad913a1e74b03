"""The quality gates decide, both ways, through the real judging code: the filter's caption score and
P(yes) thresholds keep and drop, MF-Think's audio-checked steps come out correct or wrong and the chain
is kept, rewritten or dropped by the 30 % rule. The judge is a tiny Music Flamingo whose weights are
set (`build_scripted_judge`): it says yes / 9 / A, or no / 2 / B to any prompt that names a kazoo."""

from __future__ import annotations

import pytest

from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import FilterRecord, Reject
from mfpipe.stages.filter import FilterStage
from mfpipe.stages.think import Item, ThinkStage
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
    # Caption: scored 9 of 10 (>= caption_min_score 6) and kept; with the kazoo, 2 and dropped.
    assert kept.caption.keep and kept.caption.score == pytest.approx(9.0, abs=0.05)
    assert "audio-LM score 9.0/10" in " ".join(kept.caption.reasons)
    assert not dropped.caption.keep and dropped.caption.score == pytest.approx(2.0, abs=0.05)
    assert dropped.caption.reasons[0] == "dropped: the audio-LM did not confirm it"
    # QA: P(yes) ~1 (>= qa_min_p_yes) kept; the planted answer P(yes) ~0, dropped.
    right, wrong = kept.qa
    assert right.keep and right.p_yes > 0.99
    assert not wrong.keep and wrong.p_yes < 0.01
    assert kept.judged_items == 3 and dropped.judged_items == 1  # every item really judged


def test_the_thresholds_decide_between_them(scripted_judge, song_rows):
    """The same judgements against stricter thresholds: a score of 9 under a bar of 9.5 drops."""
    strict = FilterStage.from_config(config(f"filter.model={scripted_judge}", "filter.caption_min_score=9.5",
                                            "filter.drop_on_mir_flags=false"), RunInfo("gates", "gates"))
    strict.setup()
    (record,) = strict.process_batch([_row(song_rows, GOOD, [])])
    assert not record.caption.keep and "< 9.5" in " ".join(record.caption.reasons)


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
