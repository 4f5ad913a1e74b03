"""Synthesize's gate and its per-part failures, with the LLM's answers scripted (what a strong LLM could
write, flawed and repaired): a flagged part gets one repair request, what the repair fixed is `repaired`,
what is still flagged is dropped with the reason; a failed QA part costs its skill, not the song; the
metadata is the measured values or null, never the model's guess."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from mfpipe.backends.llm import Result
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import LlmUsage, Reject
from mfpipe.schemas.synthesize import SynthesizeRecord
from mfpipe.stages.synthesize import SynthesizeStage
from support.llm_data import TRUTH, cpu_config, song_row

WALTZ = next(s for s in TRUTH if s["file"] == "anna_waltz.flac")  # 90 BPM, 3/4, A minor, an instrumental
REPAIR = "A check of your reply found"

CAPTION = ("A gentle classical waltz at 90 BPM in A minor, its three-beat lilt carried by piano and cello. "
           "The beat tracker measured the tempo with high confidence. The harmony turns on i-iv-V7 (Am, Dm, E7), "
           "a chord to the bar, and each phrase falls back home through the E7.")
CAPTION_FIXED = ("A gentle classical waltz at 90 BPM in A minor, its three-beat lilt carried by piano and cello. "
                 "The harmony turns on i-iv-V7 (Am, Dm, E7), a chord to the bar, and each phrase falls back home "
                 "through the E7.")
METADATA = {"genre": "classical waltz", "bpm": 100, "key": "A minor", "meter": "3/4", "structure": ["verse"],
            "instruments": ["piano", "cello"], "vocal_character": "warm alto, legato",
            "lyric_themes": ["love"], "theory": "i-iv-V7 loop, authentic cadence", "mix_notes": "close, dry piano",
            "dynamics": "soft start, swelling middle"}


def qa(open_q: tuple[str, str], choice: tuple[str, list[str], str]) -> dict:
    return {"open": [{"question": open_q[0], "answer": open_q[1]}],
            "multiple_choice": [{"question": choice[0], "options": choice[1], "correct": choice[2]}]}


CLEAN = {
    "qa/temporal": qa(("When does the violin take over the tune?", "Between 0:30 and 0:49."),
                      ("What happens at 0:30?", ["The violin takes the tune", "The drums stop", "A choir enters",
                                                 "The key changes"], "A")),
    "qa/lyric_vocal": qa(("Which instrument carries the melody?", "The cello."),
                         ("Which instrument carries the melody?", ["Cello", "Trumpet", "Voice", "Organ"], "A")),
    "qa/comparative_structural": qa(("How does the second half differ from the first?", "The violin leads it."),
                                    ("What changes after 0:30?", ["The lead instrument", "The key", "The meter",
                                                                  "The tempo"], "A")),
}
FIRST = {
    **CLEAN,
    "caption": {"caption": CAPTION},
    "metadata": METADATA,
    "qa/attribute": qa(("Which instrument plays the low sustained line?", "The cello."),
                       ("At what tempo does the waltz move?", ["90 BPM", "88 BPM", "45 BPM", "130 BPM"], "A")),
    "qa/harmony_theory": qa(("In this A-minor waltz, which chord is the dominant?", "E7"),
                            ("Which chord pulls each phrase home?", ["E7", "Dm", "G", "F"], "A")),
}
REPAIRED = {
    "caption": {"caption": CAPTION_FIXED},
    "qa/attribute": qa(("Which instrument plays the low sustained line?", "The cello."),
                       ("At what tempo does the waltz move?", ["90 BPM", "60 BPM", "120 BPM", "150 BPM"], "A")),
    # the repair leaves the open question leaky: it is dropped, the fine multiple-choice item stays
    "qa/harmony_theory": qa(("Over the A minor tonic, which chord acts as the dominant?", "E7"),
                            ("Which chord pulls each phrase home?", ["E7", "Dm", "G", "F"], "A")),
}


def make_stage(*overrides: str) -> SynthesizeStage:
    stage = SynthesizeStage.from_config(cpu_config("llm.base_url=http://127.0.0.1:9/v1", *overrides),
                                        RunInfo("test-gate", "test-hash"))
    stage.setup()
    return stage


@dataclass
class ScriptedLlm:
    """Answers each part from a script (first answer, repair answer); records what it was asked."""

    first: dict
    repaired: dict = field(default_factory=dict)
    fail: dict = field(default_factory=dict)  # part -> Result error (the part's answer failed for good)
    model: str = "scripted"
    asked: list = field(default_factory=list)

    async def structured(self, messages, model, *, name=None, **_):
        repair = REPAIR in messages[-1]["content"]
        self.asked.append((name, repair))
        if name in self.fail and not repair:
            return Result(error=self.fail[name], message=f"{name}: the answer was cut at max_tokens",
                          usage=LlmUsage(requests=2))
        answer = (self.repaired if repair else self.first)[name]
        return Result(value=model.model_validate_json(json.dumps(answer)), raw=json.dumps(answer),
                      usage=LlmUsage(requests=1, repairs=int(repair)))

    def settings(self):
        return {"model": self.model}


def run(llm: ScriptedLlm, *overrides: str) -> SynthesizeRecord | Reject:
    stage = make_stage(*overrides)
    stage.llm = llm
    try:
        (result,) = stage.process_batch([song_row(WALTZ)])
    finally:
        stage.teardown()
    return result


def test_flagged_parts_get_one_repair_and_what_stays_flagged_is_dropped():
    llm = ScriptedLlm(FIRST, REPAIRED)
    record = run(llm, "synthesize.gate.repair=true")
    assert isinstance(record, SynthesizeRecord)
    assert sorted(name for name, repair in llm.asked if repair) == ["caption", "qa/attribute", "qa/harmony_theory"]
    outcomes = {(e.field.split(" ")[0], e.check, e.outcome) for e in record.gated}
    assert outcomes == {("caption", "tool_mention", "repaired"), ("qa/attribute", "distractor", "repaired"),
                        ("qa/harmony_theory", "leaky_question", "dropped")}
    assert record.caption == CAPTION_FIXED
    harmony = [q for q in record.qa if q.skill == "harmony_theory"]
    assert [q.question for q in harmony] == ["Which chord pulls each phrase home?"]
    assert any("qa/harmony_theory: 1 item(s) dropped by the checks (leaky_question)" in n
               for n in record.provenance.notes)
    attribute = next(q for q in record.qa if q.skill == "attribute" and q.options)
    assert sorted(attribute.options) == ["120 BPM", "150 BPM", "60 BPM", "90 BPM"]
    assert record.usage.requests == 7 + 3 and record.usage.repairs == 3


def test_without_repairs_flagged_items_and_sentences_are_dropped_at_once():
    llm = ScriptedLlm(FIRST)
    record = run(llm)  # the cpu profile: gate.repair false
    assert not any(repair for _, repair in llm.asked)
    assert {e.outcome for e in record.gated} == {"dropped"}
    assert "beat tracker" not in record.caption and record.caption.startswith("A gentle classical waltz")
    assert "The harmony turns on i-iv-V7" in record.caption
    assert not any(q.skill == "attribute" and q.options for q in record.qa)
    assert len(record.qa) == 8  # 10 items, the distractor item and the leaky question gone


def test_metadata_is_measured_or_null_and_an_instrumental_reads_so():
    record = run(ScriptedLlm(FIRST))
    meta = record.metadata
    assert meta.bpm == 90.0 and meta.key == "A minor" and meta.meter == "3/4"  # the model wrote 100 BPM
    assert meta.vocal_character == "instrumental (no vocals)" and meta.lyric_themes == []
    assert any(f.field == "metadata.bpm" for f in record.flags)  # what the model said is still flagged
    no_mir = dict(song_row(WALTZ), mir=None)
    stage = make_stage()
    stage.llm = ScriptedLlm(FIRST)
    try:
        (record,) = stage.process_batch([no_mir])
    finally:
        stage.teardown()
    assert record.metadata.bpm is None and record.metadata.key is None and record.metadata.meter is None


def test_a_failed_qa_part_costs_its_skill_and_a_failed_caption_the_song():
    record = run(ScriptedLlm(FIRST, fail={"qa/temporal": "invalid_output"}))
    assert isinstance(record, SynthesizeRecord)
    assert not any(q.skill == "temporal" for q in record.qa)
    assert any(n.startswith("qa/temporal: left out") for n in record.provenance.notes)
    reject = run(ScriptedLlm(FIRST, fail={"caption": "invalid_output"}))
    assert isinstance(reject, Reject) and reject.error == "llm_invalid_output" and "caption" in reject.message


@pytest.mark.parametrize("version", ["synthesize.v2"])
def test_an_older_prompt_has_no_repair_message_so_flagged_items_are_dropped(version):
    llm = ScriptedLlm(FIRST, REPAIRED)
    record = run(llm, f"synthesize.prompt={version}", "synthesize.gate.repair=true")
    assert not any(repair for _, repair in llm.asked)
    assert {e.outcome for e in record.gated} == {"dropped"}
