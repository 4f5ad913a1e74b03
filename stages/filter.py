"""Quality filter: the audio-LM listens to each song and judges what synthesize wrote about it.

Per song (decoded once, cut into ingest's 30 s windows):

The judge is told which stretch of the song it hears (prompt filter.v2).

- rich caption: on `caption_windows` windows spread over the song, Music
  Flamingo gets only the caption's statements about the stretch it hears
  (`factcheck.claims_heard_in`: sentences with no time, or a time inside the
  window) and answers yes/no whether they all agree with it; the lowest
  window's P(yes) counts (a contradiction anywhere drops it), kept when it
  reaches `caption_min_p_yes`. (filter.v1, still loadable: a 1-10 score of the
  whole text per window, kept at `caption_min_score`.)
- every QA item: a yes/no on "is the proposed answer right for what you
  hear?" (`AudioLM.yes_no`) against the windows the item names by time (m:ss),
  else `qa_windows` windows spread over the song; the best window's P(yes)
  counts (an event happens somewhere, a property holds everywhere). Kept when
  it reaches `qa_min_p_yes`; with `mir_decides`, an answer whose claims MIR
  measured and confirms is kept whatever the audio-LM says.
- multiple-choice items, besides: the audio-LM answers the question itself
  (`AudioLM.choose`: the option letters' probabilities, averaged over the same
  windows). `audio_lm_answer`/`audio_lm_correct` record what it chose and
  whether that is the reference answer. This does not drop the item (a good
  question can be hard): it marks it as challenging for MF-Think.
- MIR: the caption and each answer are checked against the MIR row again
  (`mfpipe.consistency`, the `consistency` tolerances; synthesize's stored
  flags when the song has no MIR row); with `drop_on_mir_flags` any
  contradiction drops the item.
- not judged: when the model gives the yes/no, digits or letters little
  probability (below `min_mass`), it has not answered; such items are kept
  only with `keep_unjudged` (the paper keeps only what the audio-LM confirms).

Dropped items stay in the row with keep=false and the reasons. All
judgements of all songs in a batch go to the model together (one forward pass
each, batched by `generate_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from mfpipe import audio
from mfpipe.consistency import ConsistencyConfig, check_answer, check_text
from mfpipe.factcheck import SongClips, claims_heard_in, hear, mir_check, song_clips, span_text, spread, windows_for
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Resources
from mfpipe.schemas import FilterRecord, ItemJudgement, QaJudgement, Reject
from mfpipe.songfacts import measured
from mfpipe.stages._audiolm import AudioLMStage, AudioLMStageConfig


class FilterConfig(AudioLMStageConfig):
    """Quality filter: the audio-LM listens to each song and judges its rich caption and QA items."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for.")
    prompt: str = Field("filter", description="Prompt id (latest version) or id.vN in prompts/.")
    caption_windows: int = Field(4, ge=1, le=40, description="The caption is scored 1-10 against this many "
                                 "windows, evenly spread over the song.")
    caption_min_score: float = Field(6.0, ge=1, le=10, description="Prompt filter.v1 only (a 1-10 score): keep "
                                     "the caption when its mean expected score reaches this.")
    caption_min_p_yes: float = Field(0.5, ge=0, le=1, description="filter.v2 and later: the judge hears each "
                                     "window with the caption's statements about it and says whether they all "
                                     "agree; the caption is kept when P(yes) reaches this in every window judged.")
    mir_decides: bool = Field(True, description="A QA answer whose claims MIR measured (tempo, key, meter, "
                              "chords, section times) and confirms is kept whatever the audio-LM says (beat "
                              "trackers and key estimators beat audio-LMs there); one MIR refutes is dropped.")
    qa_windows: int = Field(3, ge=1, le=40, description="A QA item that names no time (m:ss) is heard against "
                            "this many windows spread over the song; the best window's judgement counts.")
    qa_min_p_yes: float = Field(0.5, ge=0, le=1, description="Keep a QA item when P(yes) reaches this.")
    min_mass: float = Field(0.5, ge=0, le=1, description="P(yes)+P(no) (or the digits' / letters' total) below "
                            "this: the model did not really answer, and the item counts as not judged.")
    keep_unjudged: bool = Field(False, description="Items the audio-LM did not judge: kept (true) or dropped "
                                "(false: the paper keeps only what the audio-LM confirms).")
    drop_on_mir_flags: bool = Field(True, description="Drop an item that contradicts the MIR facts.")
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0, description="Shorter last windows are read from the song's "
                                                                "end.")


@dataclass
class _Song:
    """One song's plan: its clips and where its queries sit in the batch's query lists."""

    row: dict[str, Any]
    clips: SongClips
    caption_at: list[tuple[int, int]] = field(default_factory=list)  # (window, score query)
    qa_at: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # item -> (window, yes/no query)
    choice_at: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # item -> (window, choice query)


@register
class FilterStage(AudioLMStage):
    name = "filter"
    record = FilterRecord
    requires = ("ingest", "synthesize")
    uses = ("mir", "lyrics")
    columns = {
        "ingest": ("song_id", "source", "processed_s"),
        "synthesize": ("caption", "qa", "flags"),
        "mir": ("bpm", "meter", "key", "mode", "chords", "sections"),
        "lyrics": ("has_vocals",),
    }
    config_model = FilterConfig
    reads = {**AudioLMStage.reads, "consistency": ConsistencyConfig}
    summary = "Music Flamingo judges each rich caption and QA item against the audio; MIR contradictions drop items"
    lm_role = "judge"
    stand_in = ("judges with", "its judgements are noise")

    # ------------------------------------------------------------ worker side
    def setup_stage(self) -> None:
        from mfpipe.prompts import load_prompt

        self.tolerance = self.shared.consistency
        # filter.v2 on: a yes/no on the caption's statements about the stretch heard; v1: a 1-10 score
        self.agrees = self.prompt.has("caption_agrees")
        wrappers = {pid: load_prompt(pid) for pid in ("audiolm_score", "audiolm_yes_no", "audiolm_choice")}
        cfg = self.cfg
        self.provenance_settings = self.settings_text(self.lm.settings(
            window_s=self.window_s, caption_windows=cfg.caption_windows,
            **({"caption_min_p_yes": cfg.caption_min_p_yes} if self.agrees else
               {"caption_min_score": cfg.caption_min_score}), mir_decides=cfg.mir_decides,
            qa_windows=cfg.qa_windows, qa_min_p_yes=cfg.qa_min_p_yes, min_mass=cfg.min_mass,
            keep_unjudged=cfg.keep_unjudged, drop_on_mir_flags=cfg.drop_on_mir_flags,
            answer_formats={p.id: f"{p.version}:{p.sha256[:12]}" for p in wrappers.values()},
        ))

    @classmethod
    def counts(cls, record: FilterRecord) -> dict[str, int]:
        return {"items": record.kept_items + record.dropped_items, "judged_by_audio_lm": record.judged_items,
                "kept": record.kept_items}

    def process_batch(self, rows: list[dict[str, Any]]) -> list[FilterRecord | Reject]:
        from mfpipe.backends.audiolm import Query

        results: dict[int, FilterRecord | Reject] = {}
        songs: dict[int, _Song] = {}
        scores: list[Query] = []
        caption_yes_no: list[Query] = []
        yes_no: list[Query] = []
        choices: list[Query] = []
        options: list[list[str]] = []
        for n, row in enumerate(rows):
            synth = row.get("synthesize")
            if not synth:
                results[n] = self.reject(row, "no_synthesize", "synthesize wrote nothing for this song (see its "
                                         "rejects): nothing to judge", retryable=True)
                continue
            try:
                clips = song_clips(row["source"], row["processed_s"], self.window_s, self.cfg.min_clip_s)
            except audio.AudioError as exc:
                results[n] = self.reject(row, exc.kind, exc.message)
                continue
            song = songs[n] = _Song(row, clips)
            caption = (synth.get("caption") or "").strip()
            for w in spread(len(clips.spans), self.cfg.caption_windows) if caption else []:
                span = clips.spans[w]
                if not self.agrees:  # filter.v1: a 1-10 score of the whole text
                    song.caption_at.append((w, len(scores)))
                    scores.append(Query(clips.clips[w], self.prompt.call("caption", text=caption)))
                    continue
                claims = claims_heard_in(caption, span, self.tolerance.time_tolerance_s)
                if claims:  # the judge gets only what the caption says about the stretch it hears
                    song.caption_at.append((w, len(caption_yes_no)))
                    caption_yes_no.append(Query(clips.clips[w], self.prompt.call(
                        "caption_agrees", claims=claims, span=span_text(*span))))
            for i, item in enumerate(synth.get("qa") or []):
                heard = windows_for([item["question"], item["answer"]], clips.spans, self.cfg.qa_windows)
                song.qa_at[i] = []
                for w in heard:
                    song.qa_at[i].append((w, len(yes_no)))
                    yes_no.append(Query(clips.clips[w], self.prompt.call(
                        "qa", question=item["question"], answer=item["answer"], span=span_text(*clips.spans[w]))))
                if len(item.get("options") or []) >= 2:
                    song.choice_at[i] = []
                    for w in heard:
                        song.choice_at[i].append((w, len(choices)))
                        choices.append(Query(clips.clips[w], self.prompt.call(
                            "choice", question=item["question"], span=span_text(*clips.spans[w]))))
                        options.append(list(item["options"]))
        scored = self.lm.score(scores) if scores else []
        scored = scored or (self.lm.yes_no(caption_yes_no) if caption_yes_no else [])
        answered = self.lm.yes_no(yes_no) if yes_no else []
        chosen = self.lm.choose(choices, options) if choices else []
        for n, song in songs.items():
            results[n] = self._record(song, scored, answered, chosen)
        return [results[n] for n in range(len(rows))]

    # ------------------------------------------------------------ one song
    def _record(self, song: _Song, scored: list, answered: list, chosen: list) -> FilterRecord:
        row, synth = song.row, song.row["synthesize"]
        mir = measured(row)
        notes = list(self.lm.notes())
        if not row.get("mir"):
            notes.append("no MIR row for this song: the MIR flags are synthesize's")
        caption = self._caption(song, synth, mir, scored)
        qa = [self._qa(song, i, item, synth, mir, answered, chosen) for i, item in enumerate(synth.get("qa") or [])]
        kept = int(caption.keep) + sum(q.keep for q in qa)
        judged = int(caption.score is not None or caption.p_yes is not None) + sum(q.p_yes is not None for q in qa)
        return FilterRecord(
            song_id=row["song_id"], source=row["source"], caption=caption, qa=qa,
            kept_items=kept, dropped_items=1 + len(qa) - kept, judged_items=judged,
            provenance=self.provenance(notes=notes),
        )

    def _mir_flags(self, text: str, field_name: str, synth: dict[str, Any], mir: Any, answer: bool) -> list[str]:
        if mir:
            check = check_answer if answer else check_text
            flags = [f.model_dump() for f in check(text, mir, field_name, self.tolerance)]
        else:
            flags = [f for f in synth.get("flags") or [] if f.get("field") == field_name]
        return [f"{f['check']}: {f['message']}" for f in flags]

    def _caption(self, song: _Song, synth: dict[str, Any], mir: Any, scored: list) -> ItemJudgement:
        cfg = self.cfg
        text = (synth.get("caption") or "").strip()
        if not text:
            return ItemJudgement(keep=False, reasons=["dropped: the caption is empty"])
        windows = [w for w, _ in song.caption_at]
        judged = [(w, scored[q]) for w, q in song.caption_at
                  if scored[q].error is None and (scored[q].mass or 0.0) >= cfg.min_mass]
        flags = self._mir_flags(text, "caption", synth, mir, answer=False)
        reasons: list[str] = []
        score = p_yes = None
        if judged and self.agrees:
            # a contradiction in any stretch heard drops the caption: the weakest window counts
            w, worst = min(judged, key=lambda j: j[1].p_yes)
            p_yes = float(worst.p_yes)
            ok = p_yes >= cfg.caption_min_p_yes
            reasons.append(f"audio-LM: the caption's statements about each stretch agree with it, lowest "
                           f"P(yes) {p_yes:.2f} in window {w} (of {len(judged)} judged) "
                           f"{'>=' if ok else '<'} {cfg.caption_min_p_yes:g}")
        elif judged:
            score = float(np.mean([s.expected for _, s in judged]))
            ok = score >= cfg.caption_min_score
            reasons.append(f"audio-LM score {score:.1f}/10 (mean of {len(judged)} window(s)) "
                           f"{'>=' if ok else '<'} {cfg.caption_min_score:g}")
        else:
            ok = cfg.keep_unjudged
            reasons.append(self._unjudged([scored[q] for _, q in song.caption_at],
                                          "yes/no" if self.agrees else "digits 1-10"))
        keep = self._verdict(ok, flags, reasons)
        return ItemJudgement(keep=keep, score=score, p_yes=p_yes, flags=flags, reasons=reasons, windows=windows)

    def _qa(self, song: _Song, i: int, item: dict[str, Any], synth: dict[str, Any], mir: Any,
            answered: list, chosen: list) -> QaJudgement:
        cfg = self.cfg
        at = song.qa_at.get(i, [])
        windows = [w for w, _ in at]
        heard = hear([answered[q] for _, q in at], windows, cfg.min_mass)
        flags = self._mir_flags(item["answer"], f"qa[{i}].answer", synth, mir, answer=True)
        reasons: list[str] = []
        confirmed = mir_check(item["answer"], mir, self.tolerance) if cfg.mir_decides and mir else None
        if confirmed is not None and confirmed.verdict == "correct" and not flags:
            ok = True  # MIR covers the answer and agrees: the audio-LM does not overrule it
            reasons.append(f"MIR decides: it {confirmed.reason}")
            if heard.judged:
                reasons.append(f"audio-LM (not deciding): {heard.detail}")
        elif heard.judged:
            ok = heard.p_yes >= cfg.qa_min_p_yes
            reasons.append(f"audio-LM: answer right with {heard.detail}; "
                           f"{'>=' if ok else '<'} {cfg.qa_min_p_yes:g}")
        else:
            ok = cfg.keep_unjudged
            reasons.append(self._unjudged([answered[q] for _, q in at], "yes/no"))
        own, correct, own_p = self._own_answer(song, i, item, chosen, reasons)
        keep = self._verdict(ok, flags, reasons)
        return QaJudgement(index=i, skill=item["skill"], keep=keep, p_yes=heard.p_yes, flags=flags,
                           reasons=reasons, windows=windows, audio_lm_answer=own, audio_lm_correct=correct,
                           audio_lm_p=own_p)

    def _own_answer(self, song: _Song, i: int, item: dict[str, Any], chosen: list,
                    reasons: list[str]) -> tuple[str | None, bool | None, float | None]:
        """The audio-LM's own pick for a multiple-choice item (mean option probabilities over windows)."""
        at = song.choice_at.get(i)
        if not at:
            return None, None, None
        picks = [chosen[q] for _, q in at if chosen[q].error is None]
        if not picks:
            reasons.append(f"the audio-LM could not answer it: {chosen[at[0][1]].error}")
            return None, None, None
        probs = np.mean([p.probs for p in picks], axis=0)
        best = int(np.argmax(probs))
        answer = item["options"][best]
        correct = answer == item["answer"]
        mass = max(p.mass or 0.0 for p in picks)
        unsure = "" if mass >= self.cfg.min_mass else f" (little probability on any letter: {mass:.2f})"
        reasons.append(f"asked the question itself, the audio-LM chose {'ABCDEFGH'[best]} {answer!r} "
                       f"(p {probs[best]:.2f}){unsure}: "
                       f"{'the reference answer' if correct else 'not the reference answer'}")
        return answer, correct, float(probs[best])

    def _unjudged(self, answers: list, what: str) -> str:
        masses = [a.mass for a in answers if a.error is None and a.mass is not None]
        errors = [a.error for a in answers if a.error is not None]
        why = (f"it put at most {max(masses):.2f} probability on the {what} (< {self.cfg.min_mass:g})"
               if masses else f"the audio could not be used: {errors[0] if errors else 'no windows'}")
        policy = "kept (filter.keep_unjudged)" if self.cfg.keep_unjudged else "only confirmed items are kept"
        return f"not judged by the audio-LM: {why}; {policy}"

    def _verdict(self, audio_ok: bool, flags: list[str], reasons: list[str]) -> bool:
        """Combine the audio-LM's judgement with the MIR flags; add the curator's summary line first."""
        mir_drop = bool(flags) and self.cfg.drop_on_mir_flags
        reasons.extend(f"MIR: {f}" for f in flags)
        keep = audio_ok and not mir_drop
        if keep:
            noted = " (MIR contradictions noted, filter.drop_on_mir_flags is off)" if flags else ""
            reasons.insert(0, "kept" + noted)
        else:
            why = [w for w, on in (("the audio-LM did not confirm it", not audio_ok),
                                   ("it contradicts the MIR facts", mir_drop)) if on]
            reasons.insert(0, "dropped: " + " and ".join(why))
        return keep
