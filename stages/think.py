"""MF-Think: reasoning chains for challenging QA items, every step fact-checked against the song.

Per song:
1. Select challenging items among the QA items the filter KEPT (a dropped
   item's reference answer is not trusted): first the multiple-choice items
   the audio-LM itself answered wrongly in the filter (`select_audio_lm_wrong`),
   then items of the `hard_skills`; within each group the skills take turns;
   at most `max_chains_per_song`.
2. Ask the LLM for a chain: `min_steps`..`max_steps` short steps plus a final
   answer (structured output; for multiple choice the answer is an option
   letter). With `show_reference` the prompt gives the filtered reference
   answer to reason towards (distillation, as in the paper).
3. Check every step (`mfpipe.think.steps`): the gate's checks first (tools,
   identities, ungrounded times: wrong); then claim by claim, MIR judges what
   it measured (`mfpipe.consistency`); a deduction is never heard; an
   observation's other claims go to the audio-LM's yes/no over the windows it
   names by time (m:ss), else `step_check.windows` windows spread over the
   song (the best window counts). Verdicts: correct, wrong, unverifiable. The
   answer is checked too: a multiple-choice answer must be the reference
   option, an open answer must not contradict MIR and (think.v2) must give the
   reference, which the training text then carries verbatim.
4. Apply the rule: no wrong step (and a right answer) → keep; wrong steps ≤
   `max_wrong_ratio` of all steps (30%, inclusive) → rewrite: the LLM gets the
   flagged steps with the reasons and returns one replacement per flagged step
   (or "" to delete it) and the answer, and the chain is checked again, up to
   `rewrite_budget` rounds; more than `max_wrong_ratio` wrong → drop.
   A chain still wrong when the budget is spent is dropped too, and so is one
   whose observations are unverifiable above `max_unverifiable_ratio`.
5. Render the training text `<think>…</think><answer>…</answer>`
   (`mfpipe.thinktext`).

A dropped chain is not in the song's row; it becomes a rejects row (stage
`think`; error `too_many_wrong_steps`, `still_wrong_after_rewrite`,
`wrong_answer` or `llm_<error>`; the message gives the ratios). A song whose
every chain was dropped has only rejects. When the LLM server fails for a song
(connection, timeout, 5xx, model not found) the song is deferred: the runner
pauses the stage while it checks the server and redoes the song whole; any
other failed request makes the whole song one retryable reject.

All chains of a batch move together: drafts for every song are in flight at
once, then every step of every chain goes to the audio-LM in one batched
call, then all rewrites are in flight at once, and so on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from mfpipe.lint import GateConfig
from mfpipe.think.steps import Ask, answer_matches, judge_step, unverifiable_share

from .. import audio
from ..backends import refs
from ..backends.audiolm import AudioLMSettings
from ..backends.llm import OUTAGE_ERRORS, LlmConfig
from ..config import Section
from ..consistency import ConsistencyConfig, check_answer
from ..factcheck import (
    Check,
    SongClips,
    audio_check,
    decide,
    describe,
    error_rate,
    hear,
    song_clips,
    span_text,
    windows_for,
)
from ..pipeline.registry import register
from ..pipeline.stage import Deferred, Resources, Stage, StageConfig, StageSettings
from ..schemas import LlmUsage, ModelRef, Reject, ToolVersion
from ..schemas.synthesize import Skill
from ..schemas.think import Chain, ChainStep, ThinkRecord, chain_draft, fix_draft
from ..songfacts import measured, song_inputs
from ..thinktext import clean, render


class ThinkStepCheck(Section):
    """How the audio-LM's yes/no on one reasoning step becomes a verdict."""

    windows: int = Field(3, ge=1, le=40, description="Windows a step that names no time (m:ss) is heard against.")
    correct_p_yes: float = Field(0.65, ge=0, le=1, description="The best window's P(yes) at or above this: correct.")
    wrong_p_yes: float = Field(0.35, ge=0, le=1, description="The best window's P(yes) below this: wrong (between "
                               "the two: unverifiable).")
    min_mass: float = Field(0.5, ge=0, le=1, description="P(yes)+P(no) below this: unverifiable (no real answer).")

    @model_validator(mode="after")
    def _ordered(self) -> ThinkStepCheck:
        if self.wrong_p_yes > self.correct_p_yes:
            raise ValueError("wrong_p_yes must not exceed correct_p_yes")
        return self


class ThinkConfig(AudioLMSettings, StageConfig):
    """MF-Think: LLM reasoning chains for challenging QA items, every step fact-checked."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for.")
    prompt: str = Field("think", description="Prompt id (latest version) or id.vN in prompts/.")
    max_chains_per_song: int = Field(4, ge=0, description="Chains per song, most challenging items first.")
    select_audio_lm_wrong: bool = Field(True, description="A multiple-choice item the audio-LM itself answered "
                                        "wrongly in the filter is challenging.")
    hard_skills: list[Skill] = Field(default_factory=lambda: ["harmony_theory", "comparative_structural", "temporal"],
                                     description="Items of these skills are challenging too.")
    min_steps: int = Field(3, ge=1, le=20, description="Fewest steps a chain may have.")
    max_steps: int = Field(8, ge=1, le=20, description="Most steps a chain may have.")
    show_reference: bool = Field(True, description="Tell the LLM the filtered reference answer to reason towards "
                                 "(distillation, as in the paper).")
    max_wrong_ratio: float = Field(0.3, ge=0, le=1, description="The MF-Think rule: no wrong step: keep; wrong "
                                   "steps up to this share: rewrite; more: drop.")
    max_unverifiable_ratio: float = Field(0.5, ge=0, le=1, description="A chain whose observations (deductions "
                                          "are not heard) are unverifiable above this share is dropped "
                                          "(too_many_unverifiable_steps): nothing confirmed it. 1: keep them all.")
    rewrite_budget: int = Field(1, ge=0, le=5, description="Rewrite rounds per chain before it is dropped.")
    step_check: ThinkStepCheck = Field(default_factory=ThinkStepCheck, description="How a step's yes/no becomes "
                                                                                   "a verdict.")
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0, description="Shorter last windows are read from the song's "
                                                                "end.")
    max_lyrics_chars: int = Field(2000, ge=0, description="Lyrics characters in the prompt.")
    max_chord_changes: int = Field(32, ge=0, description="Chords of one section's progression in the prompt.")
    min_chord_s: float = Field(1.0, ge=0, description="Chords shorter than this are left out of the prompt.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The checks every step passes "
                             "(mfpipe.lint: tools cited, identities, ungrounded times): a flagged step is wrong "
                             "(checked_by rules), so the rewrite repairs it once; `repair` is not used here.")
    max_caption_chars: int = Field(4000, ge=0, description="Characters of synthesize's rich caption in the prompt.")

    @model_validator(mode="after")
    def _steps(self) -> ThinkConfig:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")
        return self


@dataclass
class Item:
    """A QA item selected for a chain."""

    index: int
    skill: str
    question: str
    options: list[str]
    reference: str
    because: str


@dataclass
class Job:
    """One chain in progress: its song, its item, its current draft and verdicts."""

    song: int  # index of the song in the batch
    item: Item
    messages: list[dict[str, str]]  # system + song + task: every request of the chain starts with them
    steps: list[str] = field(default_factory=list)
    kinds: list[str | None] = field(default_factory=list)  # observation | deduction per step (None: untagged)
    answer: str = ""  # as the LLM gave it (a letter for multiple choice)
    checks: list[Check] = field(default_factory=list)
    answer_problem: str | None = None
    first_error_rate: float | None = None
    rewrites: int = 0
    chain: Chain | None = None  # set when kept
    dropped: tuple[str, str] | None = None  # (error, message)
    failed: Any = None  # a transient LLM failure: the song is redone by a later run

    @property
    def done(self) -> bool:
        return self.chain is not None or self.dropped is not None or self.failed is not None

    @property
    def answer_text(self) -> str:
        if self.item.options and len(self.answer) == 1 and "A" <= self.answer <= "H":
            index = ord(self.answer) - ord("A")
            if index < len(self.item.options):
                return self.item.options[index]
        return self.answer


@dataclass
class Song:
    row: dict[str, Any]
    clips: SongClips
    facts: list[str]
    untrusted_json: str
    notes: list[str]
    jobs: list[Job] = field(default_factory=list)
    usage: LlmUsage = field(default_factory=LlmUsage)
    checked: dict[str, Check] = field(default_factory=dict)  # step text -> verdict (a rewrite re-checks only new text)
    first_request: float | None = None  # monotonic clock, for usage.seconds (first request to last answer)


@register
class ThinkStage(Stage):
    name = "think"
    record = ThinkRecord
    requires = ("ingest", "synthesize", "filter")
    # lyrics: the words sung, for the chains of lyric and vocal questions.
    uses = ("mir", "lyrics")
    columns = {
        "ingest": ("song_id", "source", "processed_s", "truncated"),
        "synthesize": ("caption", "qa"),
        "filter": ("caption", "qa"),
        "mir": ("bpm", "meter", "key", "mode", "key_strength", "chords", "loudness_lufs", "sections"),
        "lyrics": ("text", "words", "has_vocals", "language", "vocal_regions", "outcome"),
    }
    config_model = ThinkConfig
    reads = {"audio": audio.AudioConfig, "llm": LlmConfig, "consistency": ConsistencyConfig}
    services = ("llm",)  # the same server synthesize uses (started once per run, shared)
    summary = "MF-Think: LLM reasoning chains for challenging items, each step fact-checked (audio-LM + MIR)"

    # ------------------------------------------------------------ driver side

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        notes = refs.stand_in_notes(settings.own.model,
                                    "checks steps with a tiny RANDOM-WEIGHT stand-in for Music Flamingo: its "
                                    "judgements are noise, made only to exercise the pipeline")
        llm = settings.shared["llm"]
        if llm.base_url:
            notes.append(f"LLM {llm.model} at {llm.base_url}")
        elif llm.server.local_model:
            notes.append(f"chains from {llm.server.local_model}, a tiny local model: plumbing, not useful data")
        return notes

    # ------------------------------------------------------------ worker side
    def setup(self) -> None:
        from ..backends.audiolm import AudioLM
        from ..backends.llm import LlmSession
        from ..prompts import load_prompt

        self.window_s = self.shared.audio.window_s
        self.tolerance = self.shared.consistency
        self.prompt = load_prompt(self.cfg.prompt)
        self.tagged = int(self.prompt.version.lstrip("v")) >= 2  # think.v2 on: observation / deduction steps
        self.lm = AudioLM.from_config(self.cfg)
        self.session = LlmSession(self.shared.llm)
        self.llm = self.session.llm
        yes_no = load_prompt("audiolm_yes_no")
        cfg = self.cfg
        self.settings = json.dumps({
            "llm": self.llm.settings(),
            "audio_lm": self.lm.settings(window_s=self.window_s, answer_format=f"{yes_no.id}.{yes_no.version}:"
                                         f"{yes_no.sha256[:12]}"),
            "think": {k: getattr(cfg, k) for k in ("max_chains_per_song", "select_audio_lm_wrong", "hard_skills",
                                                    "min_steps", "max_steps", "show_reference", "max_wrong_ratio",
                                                    "max_unverifiable_ratio", "rewrite_budget")},
            "gate": cfg.gate.checks,
            "step_check": cfg.step_check.model_dump(),
        }, sort_keys=True)
        self.model_refs = [ModelRef(role="llm", name=self.llm.model), self.lm.model_ref("step_checker")]
        self.prompt_ref = self.prompt.ref()

    def teardown(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()

    @classmethod
    def counts(cls, record: ThinkRecord) -> dict[str, int]:
        steps = [step for chain in record.chains for step in chain.steps]
        return {"chains": len(record.chains), "steps": len(steps),
                "steps_checked_by_audio_lm": sum(s.checked_by == "audio_lm" and s.verdict != "unverifiable"
                                                 for s in steps)}

    def tool_versions(self) -> list[ToolVersion]:
        from importlib.metadata import version

        return [ToolVersion(name=n, version=version(n)) for n in ("transformers", "torch", "openai")]

    def process_batch(self, rows: list[dict[str, Any]]) -> list[ThinkRecord | Reject]:
        return self.session.run(self.process_async(rows))

    async def process_async(self, rows: list[dict[str, Any]]) -> list[ThinkRecord | Reject]:
        out: list[ThinkRecord | Reject] = []
        songs: dict[int, Song] = {}
        for n, row in enumerate(rows):
            items = self.select(row) if row.get("synthesize") and row.get("filter") else []
            prepared = self.prepare(row, decode=bool(items))
            if isinstance(prepared, Reject):
                out.append(prepared)
            else:
                songs[n] = prepared
                prepared.jobs.extend(self.job(n, prepared, item) for item in items)
        jobs = [job for song in songs.values() for job in song.jobs]
        await asyncio.gather(*(self.draft(songs[job.song], job) for job in jobs))
        await self.settle(songs, jobs)
        for song in songs.values():
            out.extend(self.results(song))
        return out

    # ------------------------------------------------------------ one song
    def prepare(self, row: dict[str, Any], decode: bool = True) -> Song | Reject:
        """The song's prompt inputs and (when it has chains to check) its audio, or a reject."""
        synth, judged = row.get("synthesize"), row.get("filter")
        if not synth or not judged:
            missing = "synthesize" if not synth else "filter"
            return self.reject(row, f"no_{missing}", f"{missing} wrote nothing for this song (see its rejects): "
                               "no items to reason about", retryable=True)
        clips = SongClips([], [])
        if decode:
            try:
                clips = song_clips(row["source"], row["processed_s"], self.window_s, self.cfg.min_clip_s)
            except audio.AudioError as exc:
                return self.reject(row, exc.kind, exc.message)
        inputs = song_inputs(row, max_lyrics_chars=self.cfg.max_lyrics_chars, max_caption_windows=0,
                             max_chord_changes=self.cfg.max_chord_changes, min_chord_s=self.cfg.min_chord_s,
                             key_hedge_below=self.tolerance.key_hedge_below)
        caption_kept = (judged.get("caption") or {}).get("keep")
        if synth.get("caption") and caption_kept:
            text = synth["caption"]
            if len(text) > self.cfg.max_caption_chars:
                inputs.notes.append(f"description cut to {self.cfg.max_caption_chars} of {len(text)} characters")
                text = text[: self.cfg.max_caption_chars]
            inputs.untrusted["description"] = text
        elif synth.get("caption"):
            inputs.notes.append("the rich caption was dropped by the filter: not shown to the LLM")
        return Song(row, clips, inputs.facts, inputs.untrusted_json(), inputs.notes)

    def select(self, row: dict[str, Any]) -> list[Item]:
        """The challenging items of one song, most challenging first (see the module doc)."""
        cfg = self.cfg
        qa = row["synthesize"].get("qa") or []
        judged = {j["index"]: j for j in row["filter"].get("qa") or []}
        groups: list[list[Item]] = [[], []]
        for i, item in enumerate(qa):
            j = judged.get(i)
            if not j or not j.get("keep"):
                continue
            options = list(item.get("options") or [])
            if cfg.select_audio_lm_wrong and options and j.get("audio_lm_correct") is False:
                because = (f"the audio-LM itself chose {j.get('audio_lm_answer')!r}; the reference answer is "
                           f"{item['answer']!r}")
                group = 0
            elif item["skill"] in cfg.hard_skills:
                because = f"a {item['skill']} item (think.hard_skills: a reasoning skill)"
                group = 1
            else:
                continue
            groups[group].append(Item(i, item["skill"], item["question"], options, item["answer"], because))
        chosen: list[Item] = []
        for group in groups:
            chosen.extend(_skills_take_turns(group))
        return chosen[: cfg.max_chains_per_song]

    def job(self, n: int, song: Song, item: Item) -> Job:
        cfg = self.cfg
        reference = None
        if cfg.show_reference:
            reference = item.reference
            if item.options and item.reference in item.options:
                reference = f"{'ABCDEFGH'[item.options.index(item.reference)]}. {item.reference}"
        prompt = self.prompt
        task = prompt.call("task_chain", question=item.question, options=item.options, reference=reference,
                           min_steps=cfg.min_steps, max_steps=cfg.max_steps)
        song_block = prompt.call("song", facts=song.facts, untrusted_json=song.untrusted_json)
        messages = [{"role": "system", "content": prompt.call("system")},
                    {"role": "user", "content": f"{song_block}\n\n{task}"}]
        return Job(n, item, messages)

    # ------------------------------------------------------------ LLM
    async def draft(self, song: Song, job: Job) -> None:
        model = chain_draft(self.cfg.min_steps, self.cfg.max_steps, len(job.item.options), self.tagged)
        song.first_request = song.first_request or time.monotonic()
        result = await self.llm.structured(job.messages, model, name="chain")
        if self._failed(song, job, result, "draft"):
            return
        steps = [_step(s) for s in result.value.steps]
        job.steps = [text for text, _ in steps if text]
        job.kinds = [kind for text, kind in steps if text]
        job.answer = clean(result.value.answer)

    async def rewrite(self, song: Song, job: Job) -> None:
        """One rewrite round: the flagged steps and reasons go back to the LLM; its fixes replace them."""
        wrong = [i for i, c in enumerate(job.checks) if c.verdict == "wrong"]
        flagged = [{"number": i + 1, "text": job.steps[i], "reason": job.checks[i].reason} for i in wrong]
        steps = [{"kind": k, "text": t} for k, t in zip(job.kinds, job.steps)] if self.tagged else job.steps
        before = json.dumps({"steps": steps, "answer": job.answer}, ensure_ascii=False)
        task = self.prompt.call("task_fix", flagged=flagged, answer_problem=job.answer_problem,
                                has_options=bool(job.item.options))
        messages = [*job.messages, {"role": "assistant", "content": before},
                    {"role": "user", "content": task}]
        song.first_request = song.first_request or time.monotonic()
        result = await self.llm.structured(messages, fix_draft(len(wrong), len(job.item.options), self.tagged),
                                           name="chain_fix")
        if self._failed(song, job, result, f"rewrite {job.rewrites + 1}"):
            return
        self.apply_fix(job, result.value.fixes, result.value.answer)

    @staticmethod
    def apply_fix(job: Job, fixes: list[Any], answer: str) -> None:
        """Replace the wrong steps, in order, by the fixes (a text, or {kind, text}; "" deletes one); the
        chain is checked again."""
        wrong = [i for i, c in enumerate(job.checks) if c.verdict == "wrong"]
        if len(fixes) != len(wrong):
            raise ValueError(f"{len(fixes)} fixes for {len(wrong)} wrong steps")
        steps = list(zip(job.steps, job.kinds or [None] * len(job.steps)))
        for i, fix in zip(wrong, fixes):
            text, kind = _step(fix)
            steps[i] = (text, kind or steps[i][1])
        job.steps = [text for text, _ in steps if text]
        job.kinds = [kind for text, kind in steps if text]
        job.answer = clean(answer)
        job.rewrites += 1

    def _failed(self, song: Song, job: Job, result: Any, what: str) -> bool:
        song.usage.add(result.usage)
        song.usage.seconds = round(time.monotonic() - song.first_request, 3)
        if result.ok:
            return False
        if result.retryable:
            job.failed = result
        else:
            job.dropped = (f"llm_{result.error}", f"{self._which(job)}: the LLM's {what} failed: {result.message}")
        return True

    # ------------------------------------------------------------ checking and the rule
    async def settle(self, songs: dict[int, Song], jobs: list[Job]) -> None:
        """Check, decide, rewrite, check again... until every chain is kept or dropped."""
        pending = [job for job in jobs if not job.done]
        while pending:
            self.check(songs, pending)
            to_fix = [job for job in pending if self.apply_rule(songs[job.song], job) == "rewrite"]
            await asyncio.gather(*(self.rewrite(songs[job.song], job) for job in to_fix))
            pending = [job for job in to_fix if not job.done]

    def check(self, songs: dict[int, Song], jobs: list[Job]) -> None:
        """Verdicts for every step of every job (`mfpipe.think.steps`): the checks' rules and MIR where
        they settle a step, the audio-LM for what only listening can judge (one batched yes/no call for
        all of them; a deduction is never heard). A text already judged for the song keeps its verdict
        (rewrites re-check only what changed)."""
        from ..backends.audiolm import Query

        step_check = self.cfg.step_check
        asked: dict[tuple[int, str], list[int]] = {}  # (song, text) -> query positions
        windows: dict[tuple[int, str], list[int]] = {}
        queries: list[Query] = []
        for job in jobs:
            song = songs[job.song]
            mir = measured(song.row)
            for text, kind in zip(job.steps, job.kinds or [None] * len(job.steps)):
                key = (job.song, text)
                if text in song.checked or key in asked:
                    continue
                verdict = judge_step(text, kind, mir, self.tolerance, self.cfg.gate.checks)
                if not isinstance(verdict, Ask):
                    song.checked[text] = verdict
                    continue
                windows[key] = windows_for([text], song.clips.spans, step_check.windows)
                asked[key] = []
                for w in windows[key]:
                    asked[key].append(len(queries))
                    queries.append(Query(song.clips.clips[w], self.prompt.call(
                        "step", text=verdict.text, span=span_text(*song.clips.spans[w]))))
        answers = self.lm.yes_no(queries) if queries else []
        for (n, text), positions in asked.items():
            heard = hear([answers[p] for p in positions], windows[(n, text)], step_check.min_mass)
            songs[n].checked[text] = audio_check(heard, step_check.correct_p_yes, step_check.wrong_p_yes)
        for job in jobs:
            song = songs[job.song]
            job.checks = [song.checked[text] for text in job.steps]
            job.answer_problem = self.answer_problem(song, job)

    def answer_problem(self, song: Song, job: Job) -> str | None:
        """Why the chain's answer is not acceptable, or None."""
        item = job.item
        if item.options:
            if job.answer_text != item.reference:
                return (f"it answers {job.answer} {job.answer_text!r}; the answer confirmed by listening is "
                        f"{item.reference!r}")
            return None
        flags = check_answer(job.answer, measured(song.row), "answer", self.tolerance)
        if flags:
            return "; ".join(f.message for f in flags)
        if self.cfg.show_reference and self.tagged and not answer_matches(job.answer, item.reference):
            return (f"it answers {job.answer!r}; the answer confirmed by listening is {item.reference!r}: give it "
                    "word for word")
        return None

    def apply_rule(self, song: Song, job: Job) -> str:
        """The MF-Think rule on the job's current verdicts; sets `chain` or `dropped` when it ends."""
        verdicts = [c.verdict for c in job.checks]
        rate = error_rate(verdicts)
        if job.first_error_rate is None:
            job.first_error_rate = rate
        action = decide(verdicts, self.cfg.max_wrong_ratio)
        draft = "first draft" if job.rewrites == 0 else f"after {job.rewrites} rewrite(s) (first draft " \
                                                        f"{100 * job.first_error_rate:.1f}%)"
        limit = f"{100 * self.cfg.max_wrong_ratio:g}%"
        if not job.steps:
            job.dropped = ("too_many_wrong_steps", f"{self._which(job)}: {draft}: no steps left")
            return "drop"
        if action == "drop":
            job.dropped = ("too_many_wrong_steps", f"{self._which(job)}: {draft}: {describe(verdicts)}, more than "
                           f"{limit}{self._first_wrong(job)}")
            return "drop"
        if action == "keep" and job.answer_problem is None:
            share = unverifiable_share(job.kinds or [None] * len(verdicts), verdicts)
            if share > self.cfg.max_unverifiable_ratio + 1e-9:
                job.dropped = ("too_many_unverifiable_steps",
                               f"{self._which(job)}: {draft}: {describe(verdicts)}; {100 * share:.0f}% of its "
                               f"observations unverifiable, more than think.max_unverifiable_ratio "
                               f"{100 * self.cfg.max_unverifiable_ratio:g}%: nothing confirmed them")
                return "drop"
            job.chain = self.chain(job, rate)
            return "keep"
        if job.rewrites < self.cfg.rewrite_budget:
            return "rewrite"
        if action == "rewrite":
            job.dropped = ("still_wrong_after_rewrite",
                           f"{self._which(job)}: {draft}: {describe(verdicts)} (within {limit}, but "
                           f"think.rewrite_budget = {self.cfg.rewrite_budget} is spent){self._first_wrong(job)}")
        else:
            job.dropped = ("wrong_answer", f"{self._which(job)}: {draft}: {job.answer_problem}")
        return "drop"

    def chain(self, job: Job, rate: float) -> Chain:
        item = job.item
        kinds = job.kinds or [None] * len(job.steps)
        steps = [ChainStep(text=t, verdict=c.verdict, checked_by=c.checked_by, kind=k, p_yes=c.p_yes,
                           reason=c.reason or None) for t, k, c in zip(job.steps, kinds, job.checks)]
        # An open answer the chain gave word for word (or within a sentence) is written as the reference
        # itself, so the accuracy reward's exact match can score it.
        answer = item.reference if not item.options and answer_matches(job.answer, item.reference) \
            else job.answer_text
        return Chain(
            qa_index=item.index, skill=item.skill, question=item.question, options=item.options,
            selected_because=item.because, steps=steps, answer=answer, reference_answer=item.reference,
            step_error_rate=rate, first_error_rate=job.first_error_rate if job.first_error_rate is not None else rate,
            action="kept" if job.rewrites == 0 else "rewritten", rewrites=job.rewrites,
            text=render(job.steps, answer),
        )

    @staticmethod
    def _which(job: Job) -> str:
        return f"chain for qa[{job.item.index}] ({job.item.skill})"

    @staticmethod
    def _first_wrong(job: Job) -> str:
        wrong = [(i, c) for i, c in enumerate(job.checks) if c.verdict == "wrong"]
        if not wrong:
            return ""
        i, c = wrong[0]
        return f"; e.g. step {i + 1} {job.steps[i]!r}: {c.reason}"[:600]

    # ------------------------------------------------------------ results
    def results(self, song: Song) -> list[ThinkRecord | Reject | Deferred]:
        row = song.row
        failed = [job for job in song.jobs if job.failed is not None]
        if failed:
            res = failed[0].failed
            message = f"{self._which(failed[0])}: {res.message}"[:2000]
            if any(job.failed.error in OUTAGE_ERRORS for job in failed):
                return [self.defer(row, "llm", message)]
            return [self.reject(row, f"llm_{res.error}", message, retryable=True)]
        kept = [job.chain for job in song.jobs if job.chain is not None]
        rejects = [self.reject(row, job.dropped[0], job.dropped[1][:2000]) for job in song.jobs if job.dropped]
        if song.jobs and not kept:
            return rejects
        notes = list(self.lm.notes()) + song.notes
        if not song.jobs:
            notes.append("no challenging item among the filter's kept QA items")
        record = ThinkRecord(
            song_id=row["song_id"], source=row["source"], chains=kept, considered=len(song.jobs),
            dropped=len(rejects), usage=song.usage,
            provenance=self.provenance(models=self.model_refs, prompt=self.prompt_ref, settings=self.settings,
                                       notes=notes),
        )
        return [record, *rejects]


def _step(step: Any) -> tuple[str, str | None]:
    """(text, kind) of a drafted step: a {kind, text} (think.v2) or a plain sentence (think.v1)."""
    if isinstance(step, str):
        return clean(step), None
    return clean(step.text), step.kind


def _skills_take_turns(items: list[Item]) -> list[Item]:
    """Interleave by skill (first of each skill, then second of each...), keeping item order within a skill."""
    seen: dict[str, int] = {}
    ranked = []
    for item in items:
        ranked.append((seen.get(item.skill, 0), item.index, item))
        seen[item.skill] = seen.get(item.skill, 0) + 1
    return [item for *_, item in sorted(ranked, key=lambda r: (r[0], r[1]))]
