"""MF-Think in-process: the 30% rule at its edges, rewrites re-checked, the selection rule, and
whole batches, with the tiny audio-LM and the session's real vLLM server (SmolLM2-135M).

The rule tests control every verdict through the real fact-check: their chains state tempo,
key, meter and chords that are right or wrong against the MIR row the test wrote for the song
(120 BPM, 4/4, C major, chords C G Am F), so `mfpipe.factcheck.mir_check` decides each step and
the stage's own rule (`apply_rule`) does the rest.
"""

from __future__ import annotations

import pytest

from mfpipe.factcheck import mir_check
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import Reject, ThinkRecord
from mfpipe.songfacts import measured
from mfpipe.stages.think import ThinkStage
from mfpipe.think.chains import apply_fix
from mfpipe.think.select import Item, select_items
from mfpipe.think.steps import Ask, judge_step
from mfpipe.thinktext import parse
from support.think_data import HARBOR, RIGHT, TRUTH, WRONG, config, mir_row, settle

pytestmark = pytest.mark.slow

MIR = mir_row(TRUTH[HARBOR])
TEMPO_ITEM = Item(index=0, skill="attribute", question="What is the tempo?", options=[],
                  reference="About 120 BPM.", because="test")
KEY_ITEM = Item(index=2, skill="harmony_theory", question="Which key is the song in?",
                options=["C minor", "C major", "F# major", "Bb minor"], reference="C major", because="test")


@pytest.fixture(scope="module")
def think_row(song_rows, filter_stage):
    row = dict(song_rows[HARBOR])
    (judged,) = filter_stage.process_batch([row])
    return {**row, "filter": judged.model_dump(), "lyrics": None}


def test_the_steps_verdicts_come_from_the_mir_row():
    assert all(mir_check(s, MIR).verdict == "correct" for s in RIGHT)
    assert all(mir_check(s, MIR).verdict == "wrong" for s in WRONG)


def test_thirty_percent_rule_at_0_exactly_30_and_just_over(think_stage, think_row):
    zero = RIGHT[:10]
    thirty = RIGHT[:7] + WRONG[:3]  # 3 of 10
    over = RIGHT[:9] + WRONG[:4]  # 4 of 13 = 30.8%
    (j0, s0, r0), (j30, s30, r30), (jo, so, ro) = settle(
        think_stage, think_row, [(TEMPO_ITEM, zero, "About 120 BPM."), (TEMPO_ITEM, thirty, "About 120 BPM."),
                                 (TEMPO_ITEM, over, "About 120 BPM.")])

    # 0%: kept as written, no LLM request
    (record,) = r0
    (chain,) = record.chains
    assert chain.action == "kept" and chain.rewrites == 0 and chain.step_error_rate == chain.first_error_rate == 0.0
    assert [s.text for s in chain.steps] == zero
    assert all(s.verdict == "correct" and s.checked_by == "mir" for s in chain.steps)
    assert s0.usage.requests == 0

    # exactly 30%: rewritten (the rule includes the edge): the real LLM was asked to fix the three steps
    assert j30.first_error_rate == pytest.approx(0.3)
    assert s30.usage.requests >= 1 and j30.failed is None
    assert j30.rewrites == 1 or j30.dropped[0] == "llm_invalid_output"  # applied, or the fix itself failed
    assert_rechecked(think_stage, j30, s30, r30, first_draft=thirty)

    # 4 of 13 (30.8%): dropped at once with a reject giving the ratio, no rewrite asked
    (reject,) = ro
    assert isinstance(reject, Reject) and reject.stage == "think" and reject.error == "too_many_wrong_steps"
    assert "4 of 13 steps wrong (30.8%)" in reject.message and "more than 30%" in reject.message
    assert "qa[0] (attribute)" in reject.message and "first draft" in reject.message
    assert jo.rewrites == 0 and so.usage.requests == 0


def assert_rechecked(stage, job, song, results, first_draft):
    """After a rewrite the chain's verdicts are those of its NEW text, checked again."""
    for text, kind, check in zip(job.steps, job.kinds, job.checks):
        assert song.checked[text] == check
        expected = judge_step(text, kind, measured(song.row), stage.maker.tolerance, stage.cfg.gate.checks)
        if isinstance(expected, Ask):
            assert check.checked_by == "audio_lm"
        else:
            assert check == expected
    still_wrong = [t for t in job.steps if t in WRONG[:3]]
    if job.chain is not None:
        (record,) = results
        (chain,) = record.chains
        assert chain.action == "rewritten" and chain.rewrites == 1 and chain.step_error_rate == 0.0
        assert chain.first_error_rate == pytest.approx(0.3) and not still_wrong
        assert [s.text for s in chain.steps] == job.steps != first_draft
        assert parse(chain.text).steps == job.steps
    else:
        # the rewrite did not fix everything: the re-check caught it and the chain is gone
        assert [type(r) for r in results] == [Reject]
        # (wrong_answer: the rewrite also changed the answer away from the reference)
        assert results[0].error in ("still_wrong_after_rewrite", "too_many_wrong_steps", "wrong_answer",
                                    "llm_invalid_output")
        if results[0].error != "llm_invalid_output":
            assert "after 1 rewrite(s) (first draft 30.0%)" in results[0].message


class ScriptedFixes(ThinkStage):
    """The real stage with the LLM's fixes replaced by scripted ones, to show what the re-check
    does with a rewrite that is right, still wrong, or deletes steps (the LLM picks its own words)."""

    script: list[tuple[list[str], str]] = []

    def setup_stage(self) -> None:
        super().setup_stage()

        async def rewrite(song, job):
            fixes, answer = self.script[job.rewrites]
            apply_fix(job, fixes, answer)

        self.maker.rewrite = rewrite


@pytest.fixture(scope="module")
def scripted(tiny_audio_lm):
    stage = ScriptedFixes.from_config(config("llm.base_url=http://127.0.0.1:9/v1", "think.rewrite_budget=2"),
                          RunInfo("test-think", "scripted"))
    stage.setup()
    yield stage
    stage.teardown()


def test_a_rewrite_that_fixes_the_steps_is_kept_as_rewritten(scripted, think_row):
    draft = RIGHT[:7] + WRONG[:3]
    scripted.script = [(["The tempo is 120 BPM.", "The song is in C major.", ""], "About 120 BPM.")]
    ((job, _, results),) = settle(scripted, think_row, [(TEMPO_ITEM, draft, "About 120 BPM.")])
    (record,) = results
    (chain,) = record.chains
    assert chain.action == "rewritten" and chain.rewrites == 1
    assert chain.first_error_rate == pytest.approx(0.3) and chain.step_error_rate == 0.0
    assert [s.text for s in chain.steps] == RIGHT[:7] + ["The tempo is 120 BPM.", "The song is in C major."]
    assert all(s.verdict == "correct" for s in chain.steps)


def test_a_rewrite_that_is_still_wrong_is_caught_by_the_recheck(scripted, think_row):
    draft = RIGHT[:9] + WRONG[:1]  # 10%
    scripted.script = [(["The tempo is 60 BPM."], "About 120 BPM."), (["The tempo is 200 BPM."], "About 120 BPM.")]
    ((job, _, results),) = settle(scripted, think_row, [(TEMPO_ITEM, draft, "About 120 BPM.")])
    (reject,) = results
    assert reject.error == "still_wrong_after_rewrite" and job.rewrites == 2
    assert "after 2 rewrite(s) (first draft 10.0%)" in reject.message and "1 of 10 steps wrong" in reject.message
    assert "'The tempo is 200 BPM.'" in reject.message and "120.0 BPM" in reject.message


def test_a_second_rewrite_can_finish_the_job(scripted, think_row):
    draft = RIGHT[:8] + WRONG[:2]  # 20%
    scripted.script = [(["The tempo is 60 BPM.", "The song is in C major."], "About 120 BPM."),
                       (["The tempo is 120 BPM."], "About 120 BPM.")]
    ((job, _, results),) = settle(scripted, think_row, [(TEMPO_ITEM, draft, "About 120 BPM.")])
    (chain,) = results[0].chains
    assert chain.rewrites == 2 and chain.first_error_rate == pytest.approx(0.2) and chain.step_error_rate == 0.0


def test_a_wrong_multiple_choice_answer_is_rewritten_then_dropped(scripted, think_row):
    scripted.script = [([], "A"), ([], "A")]  # keeps answering "C minor"
    ((job, _, results),) = settle(scripted, think_row, [(KEY_ITEM, RIGHT[:4], "A")])
    (reject,) = results
    assert reject.error == "wrong_answer" and "'C minor'" in reject.message and "'C major'" in reject.message
    scripted.script = [([], "B")]
    ((job, _, results),) = settle(scripted, think_row, [(KEY_ITEM, RIGHT[:4], "A")])
    (chain,) = results[0].chains
    assert chain.answer == "C major" == chain.reference_answer and chain.action == "rewritten"
    assert parse(chain.text).answer == "C major"


def test_selection_takes_kept_items_the_audio_lm_got_wrong_first_then_hard_skills(think_stage):
    qa = [{"skill": s, "question": f"q{i}", "answer": "x", "options": ["x", "y"] if mc else []}
          for i, (s, mc) in enumerate([("attribute", True), ("temporal", False), ("temporal", False),
                                       ("harmony_theory", True), ("lyric_vocal", True), ("harmony_theory", False),
                                       ("attribute", False)])]
    judged = [{"index": i, "keep": i != 3, "audio_lm_correct": {0: False, 3: False, 4: True}.get(i)}
              for i in range(len(qa))]
    row = {"synthesize": {"qa": qa}, "filter": {"qa": judged}}
    stage = ThinkStage.from_config(config("think.max_chains_per_song=10"), RunInfo("t", "t"))
    picked = select_items(row, stage.cfg)
    # 0: audio-LM wrong (3 too, but the filter dropped it); then hard skills, skills taking turns
    assert [p.index for p in picked] == [0, 1, 5, 2]
    assert "audio-LM itself chose" in picked[0].because and "hard_skills" in picked[1].because
    assert [p.index for p in select_items(row, think_stage.cfg)] == [0, 1]  # cpu profile: at most 2 per song


def test_whole_batch_with_the_real_llm(think_stage, song_rows, filter_stage):
    rows = [dict(song_rows[name]) for name in list(TRUTH)[:2]]
    for row, judged in zip(rows, filter_stage.process_batch(rows)):
        row["filter"] = judged.model_dump()
        row["lyrics"] = None
    results = think_stage.process_batch(rows)
    by_song = {row["song_id"]: [r for r in results if r.song_id == row["song_id"]] for row in rows}
    for row in rows:
        mine = by_song[row["song_id"]]
        assert mine, "every song gets a record or rejects"
        records = [r for r in mine if isinstance(r, ThinkRecord)]
        rejects = [r for r in mine if isinstance(r, Reject)]
        selected = select_items(row, think_stage.cfg)
        assert len(records) <= 1
        if records:
            (record,) = records
            assert record.considered == len(selected) == len(record.chains) + record.dropped
            assert record.dropped == len(rejects) and record.usage.requests >= len(selected)
            for chain in record.chains:
                assert chain.qa_index in [s.index for s in selected]
                assert chain.action in ("kept", "rewritten") and chain.step_error_rate == 0.0
                assert all(s.verdict in ("correct", "unverifiable") for s in chain.steps)
                assert parse(chain.text).steps == [s.text for s in chain.steps]
                assert parse(chain.text).answer == chain.answer
                assert chain.answer == chain.reference_answer or not chain.options
            prov = record.provenance
            assert [m.role for m in prov.models] == ["llm", "step_checker"] and prov.models[1].random_weights
            assert prov.prompt.id == "think" and '"max_wrong_ratio": 0.3' in prov.settings
            assert '"rewrite_budget": 1' in prov.settings and "audiolm_yes_no" in prov.settings
        else:
            assert len(rejects) == len(selected) > 0
        for reject in rejects:
            assert reject.error in ("too_many_wrong_steps", "still_wrong_after_rewrite", "wrong_answer") \
                or reject.error.startswith("llm_"), reject


def test_songs_without_upstream_or_without_challenging_items(think_stage, think_row):
    no_filter = {**think_row, "filter": None}
    none_kept = {**think_row, "song_id": "none-kept",
                 "filter": {**think_row["filter"], "qa": [dict(q, keep=False) for q in think_row["filter"]["qa"]]}}
    results = think_stage.process_batch([no_filter, none_kept])
    (reject,) = [r for r in results if isinstance(r, Reject)]
    assert reject.error == "no_filter" and reject.retryable and reject.song_id == think_row["song_id"]
    (record,) = [r for r in results if isinstance(r, ThinkRecord)]
    assert record.song_id == "none-kept" and record.chains == [] and record.considered == 0
    assert any("no challenging item" in n for n in record.provenance.notes)


def test_unheard_chains_are_dropped_and_an_open_answer_is_the_reference_word_for_word(tiny_audio_lm, think_row):
    """think.max_unverifiable_ratio 0.5: 3 of 4 observations nobody could confirm (the stand-in never
    commits) drop the chain; deductions are not heard and do not count. An open answer that gives the
    reference within a sentence is written as the reference; one that does not is sent back."""
    stage = ScriptedFixes.from_config(config("llm.base_url=http://127.0.0.1:9/v1", "think.max_unverifiable_ratio=0.5"),
                                      RunInfo("test-think", "unheard"))
    stage.setup()
    stage.script = [([], "About 120 BPM.")]
    unheard = ["A flute carries the tune.", "Soft pads fill the back.", "The drums stay brushed."]
    try:
        dropped, kept, fixed = settle(stage, think_row, [
            (TEMPO_ITEM, unheard + RIGHT[:1], "About 120 BPM.", ["observation"] * 4),
            (TEMPO_ITEM, RIGHT[:3] + ["So the pulse is moderate."], "The tempo is about 120 BPM.",
             ["observation"] * 3 + ["deduction"]),
            (TEMPO_ITEM, RIGHT[:3], "Quite fast.", ["observation"] * 3)])
    finally:
        stage.teardown()
    (reject,) = dropped[2]
    assert reject.error == "too_many_unverifiable_steps" and "75% of its observations unverifiable" in reject.message
    (chain,) = kept[2][0].chains
    assert chain.answer == "About 120 BPM." and parse(chain.text).answer == "About 120 BPM."
    assert (chain.steps[3].kind, chain.steps[3].checked_by, chain.steps[3].verdict) == \
        ("deduction", "logic", "unverifiable")
    job = fixed[0]
    assert job.rewrites == 1 and fixed[2][0].chains[0].answer == "About 120 BPM."  # sent back, then right
