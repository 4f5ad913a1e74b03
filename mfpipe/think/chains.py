"""MF-Think chains for a batch of songs: drafted by the LLM, every step checked, the rule applied, rewritten.

Per song:
1. Select challenging items (`select.select_items`).
2. Ask the LLM for a chain: `min_steps`..`max_steps` short steps plus a final answer (structured output;
   for multiple choice the answer is an option letter). With `show_reference` the prompt gives the
   filtered reference answer to reason towards (distillation, as in the paper).
3. Check every step (`steps.judge_step`): the gate's checks first (tools, identities, ungrounded times:
   wrong); then claim by claim, MIR judges what it measured (`mfpipe.consistency`); a deduction is never
   heard; an observation's other claims go to the audio-LM's yes/no over the windows it names by time
   (m:ss), else `step_check.windows` windows spread over the song (the best window counts). Verdicts:
   correct, wrong, unverifiable. The answer is checked too: a multiple-choice answer must be the
   reference option, an open answer must not contradict MIR and (think.v2) must give the reference,
   which the training text then carries verbatim.
4. Apply the rule: no wrong step (and a right answer) → keep; wrong steps ≤ `max_wrong_ratio` of all
   steps (30%, inclusive) → rewrite: the LLM gets the flagged steps with the reasons and returns one
   replacement per flagged step (or "" to delete it) and the answer, and the chain is checked again, up
   to `rewrite_budget` rounds; more than `max_wrong_ratio` wrong → drop. A chain still wrong when the
   budget is spent is dropped too, and so is one whose observations are unverifiable above
   `max_unverifiable_ratio`.
5. Render the training text `<think>…</think><answer>…</answer>` (`mfpipe.thinktext`).

All chains of a batch move together: drafts for every song are in flight at once, then every step of
every chain goes to the audio-LM in one batched call, then all rewrites are in flight at once, and so
on. What comes out per song is a `SongChains`: the kept chains, the dropped ones with their reasons,
or the LLM failure that stopped it; the stage turns them into rows, rejects or a deferral.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .. import audio
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
from ..schemas import LlmUsage
from ..schemas.think import Chain, ChainStep, chain_draft, fix_draft
from ..songfacts import measured, song_inputs
from ..thinktext import clean, render
from .config import ThinkSettings
from .select import Item, select_items
from .steps import Ask, answer_matches, judge_step, unverifiable_share


@dataclass(frozen=True)
class Refused:
    """A song that cannot get chains at all (missing upstream rows, audio that does not decode)."""

    error: str
    message: str
    retryable: bool = False


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
    def which(self) -> str:
        return f"chain for qa[{self.item.index}] ({self.item.skill})"

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

    @property
    def kept(self) -> list[Chain]:
        return [job.chain for job in self.jobs if job.chain is not None]

    @property
    def dropped(self) -> list[tuple[str, str]]:
        return [(job.dropped[0], job.dropped[1][:2000]) for job in self.jobs if job.dropped]

    @property
    def failure(self) -> tuple[Job, Any] | None:
        """The first job whose LLM request failed transiently, with its result (the song goes again)."""
        failed = [job for job in self.jobs if job.failed is not None]
        return (failed[0], failed[0].failed) if failed else None


class ChainMaker:
    """Makes the chains of a batch of songs with one prompt, one LLM client and one audio-LM."""

    def __init__(self, cfg: ThinkSettings, prompt: Any, lm: Any, llm: Any, tolerance: ConsistencyConfig,
                 window_s: float):
        self.cfg, self.prompt, self.lm, self.llm, self.tolerance, self.window_s = cfg, prompt, lm, llm, tolerance, \
            window_s
        self.tagged = int(prompt.version.lstrip("v")) >= 2  # think.v2 on: observation / deduction steps

    async def make(self, rows: list[dict[str, Any]]) -> list[Song | Refused]:
        """One outcome per row, in order."""
        out: list[Song | Refused] = []
        for n, row in enumerate(rows):
            items = select_items(row, self.cfg) if row.get("synthesize") and row.get("filter") else []
            song = self.prepare(row, decode=bool(items))
            if isinstance(song, Song):
                song.jobs.extend(self.job(n, song, item) for item in items)
            out.append(song)
        songs = {n: s for n, s in enumerate(out) if isinstance(s, Song)}
        jobs = [job for song in songs.values() for job in song.jobs]
        await asyncio.gather(*(self.draft(songs[job.song], job) for job in jobs))
        await self.settle(songs, jobs)
        return out

    # ------------------------------------------------------------ one song
    def prepare(self, row: dict[str, Any], decode: bool = True) -> Song | Refused:
        """The song's prompt inputs and (when it has chains to check) its audio."""
        synth, judged = row.get("synthesize"), row.get("filter")
        if not synth or not judged:
            missing = "synthesize" if not synth else "filter"
            return Refused(f"no_{missing}", f"{missing} wrote nothing for this song (see its rejects): no items to "
                           "reason about", retryable=True)
        clips = SongClips([], [])
        if decode:
            try:
                clips = song_clips(row["source"], row["processed_s"], self.window_s, self.cfg.min_clip_s)
            except audio.AudioError as exc:
                return Refused(exc.kind, exc.message)
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

    def job(self, n: int, song: Song, item: Item) -> Job:
        cfg = self.cfg
        reference = None
        if cfg.show_reference:
            reference = item.reference
            if item.options and item.reference in item.options:
                reference = f"{'ABCDEFGH'[item.options.index(item.reference)]}. {item.reference}"
        task = self.prompt.call("task_chain", question=item.question, options=item.options, reference=reference,
                                min_steps=cfg.min_steps, max_steps=cfg.max_steps)
        song_block = self.prompt.call("song", facts=song.facts, untrusted_json=song.untrusted_json)
        messages = [{"role": "system", "content": self.prompt.call("system")},
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
        messages = [*job.messages, {"role": "assistant", "content": before}, {"role": "user", "content": task}]
        song.first_request = song.first_request or time.monotonic()
        result = await self.llm.structured(messages, fix_draft(len(wrong), len(job.item.options), self.tagged),
                                           name="chain_fix")
        if self._failed(song, job, result, f"rewrite {job.rewrites + 1}"):
            return
        apply_fix(job, result.value.fixes, result.value.answer)

    @staticmethod
    def _failed(song: Song, job: Job, result: Any, what: str) -> bool:
        song.usage.add(result.usage)
        song.usage.seconds = round(time.monotonic() - song.first_request, 3)
        if result.ok:
            return False
        if result.retryable:
            job.failed = result
        else:
            job.dropped = (f"llm_{result.error}", f"{job.which}: the LLM's {what} failed: {result.message}")
        return True

    # ------------------------------------------------------------ checking and the rule
    async def settle(self, songs: dict[int, Song], jobs: list[Job]) -> None:
        """Check, decide, rewrite, check again... until every chain is kept or dropped."""
        pending = [job for job in jobs if not job.done]
        while pending:
            self.check(songs, pending)
            to_fix = [job for job in pending if self.apply_rule(job) == "rewrite"]
            await asyncio.gather(*(self.rewrite(songs[job.song], job) for job in to_fix))
            pending = [job for job in to_fix if not job.done]

    def check(self, songs: dict[int, Song], jobs: list[Job]) -> None:
        """Verdicts for every step of every job (`steps.judge_step`): the checks' rules and MIR where they
        settle a step, the audio-LM for what only listening can judge (one batched yes/no call for all of
        them; a deduction is never heard). A text already judged for the song keeps its verdict (rewrites
        re-check only what changed)."""
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

    def apply_rule(self, job: Job) -> str:
        """The MF-Think rule on the job's current verdicts; sets `chain` or `dropped` when it ends."""
        cfg = self.cfg
        verdicts = [c.verdict for c in job.checks]
        rate = error_rate(verdicts)
        if job.first_error_rate is None:
            job.first_error_rate = rate
        action = decide(verdicts, cfg.max_wrong_ratio)
        draft = "first draft" if job.rewrites == 0 else f"after {job.rewrites} rewrite(s) (first draft " \
                                                        f"{100 * job.first_error_rate:.1f}%)"
        limit = f"{100 * cfg.max_wrong_ratio:g}%"
        if not job.steps:
            job.dropped = ("too_many_wrong_steps", f"{job.which}: {draft}: no steps left")
            return "drop"
        if action == "drop":
            job.dropped = ("too_many_wrong_steps", f"{job.which}: {draft}: {describe(verdicts)}, more than "
                           f"{limit}{_first_wrong(job)}")
            return "drop"
        if action == "keep" and job.answer_problem is None:
            share = unverifiable_share(job.kinds or [None] * len(verdicts), verdicts)
            if share > cfg.max_unverifiable_ratio + 1e-9:
                job.dropped = ("too_many_unverifiable_steps",
                               f"{job.which}: {draft}: {describe(verdicts)}; {100 * share:.0f}% of its "
                               f"observations unverifiable, more than think.max_unverifiable_ratio "
                               f"{100 * cfg.max_unverifiable_ratio:g}%: nothing confirmed them")
                return "drop"
            job.chain = self.chain(job, rate)
            return "keep"
        if job.rewrites < cfg.rewrite_budget:
            return "rewrite"
        if action == "rewrite":
            job.dropped = ("still_wrong_after_rewrite",
                           f"{job.which}: {draft}: {describe(verdicts)} (within {limit}, but "
                           f"think.rewrite_budget = {cfg.rewrite_budget} is spent){_first_wrong(job)}")
        else:
            job.dropped = ("wrong_answer", f"{job.which}: {draft}: {job.answer_problem}")
        return "drop"

    @staticmethod
    def chain(job: Job, rate: float) -> Chain:
        item = job.item
        kinds = job.kinds or [None] * len(job.steps)
        steps = [ChainStep(text=t, verdict=c.verdict, checked_by=c.checked_by, kind=k, p_yes=c.p_yes,
                           reason=c.reason or None) for t, k, c in zip(job.steps, kinds, job.checks)]
        # An open answer the chain gave word for word (or within a sentence) is written as the reference
        # itself, so the accuracy reward's exact match can score it. The record holds the answer as the
        # text renders it (`clean`: an option with a line break or a double space is one line), so the
        # record and its training text never disagree.
        answer = clean(item.reference if not item.options and answer_matches(job.answer, item.reference)
                       else job.answer_text)
        return Chain(
            qa_index=item.index, skill=item.skill, question=item.question, options=item.options,
            selected_because=item.because, steps=steps, answer=answer, reference_answer=item.reference,
            step_error_rate=rate, first_error_rate=job.first_error_rate if job.first_error_rate is not None else rate,
            action="kept" if job.rewrites == 0 else "rewritten", rewrites=job.rewrites,
            text=render(job.steps, answer),
        )


def apply_fix(job: Job, fixes: list[Any], answer: str) -> None:
    """Replace the wrong steps, in order, by the fixes (a text, or {kind, text}; "" deletes one); the chain
    is checked again."""
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


def _step(step: Any) -> tuple[str, str | None]:
    """(text, kind) of a drafted step: a {kind, text} (think.v2) or a plain sentence (think.v1)."""
    if isinstance(step, str):
        return clean(step), None
    return clean(step.text), step.kind


def _first_wrong(job: Job) -> str:
    wrong = [(i, c) for i, c in enumerate(job.checks) if c.verdict == "wrong"]
    if not wrong:
        return ""
    i, c = wrong[0]
    return f"; e.g. step {i + 1} {job.steps[i]!r}: {c.reason}"[:600]
