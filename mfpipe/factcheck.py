"""Fact-checking generated text against the song: which windows to hear, MIR verdicts,
audio-LM verdicts, and the MF-Think keep / rewrite / drop rule.

Shared by the quality filter (which judges captions and QA items) and MF-Think
(which judges every step of a reasoning chain).

Verdicts on one statement (a reasoning step):
- `wrong`: it contradicts a MIR fact (tempo, key, mode, meter, chords, read by
  `mfpipe.consistency`), or the audio-LM rejects it (P(yes) below
  `wrong_p_yes` in every window it was heard in, with a real yes/no answer);
- `correct`: it states MIR facts and agrees with all of them, or the audio-LM
  confirms it (P(yes) at least `correct_p_yes` in some window);
- `unverifiable`: neither: no MIR fact in it and the audio-LM unsure (P(yes)
  in between) or not answering (P(yes)+P(no) below `min_mass`), or the audio
  could not be used.
MIR decides whenever a statement names something MIR measured: beat trackers
and key estimators beat audio-LMs on tempo and mode (the reason the paper
back-fills MIR facts at all). A compound statement ("120 BPM, and a flute
carries the tune") is split into its claims (`split_claims`), each judged by
what can judge it (`mfpipe.think.steps`).

The chain rule (`decide`): the error rate is wrong steps / all steps; an
unverifiable step is not an error (nothing refuted it) but stays in the
denominator. No wrong step: keep; a rate up to `max_wrong_ratio` (30% in the
paper; exactly 30% included): rewrite; above it: drop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .consistency import (
    ConsistencyConfig,
    check_answer,
    chords_in_text,
    parse_key,
    sentences,
    stated_keys,
    stated_meters,
    stated_section_times,
    stated_tempi,
)
from .mir.labels import chord_triad

Verdict = Literal["correct", "wrong", "unverifiable"]
Action = Literal["keep", "rewrite", "drop"]

# "1:05", "0:45.5", "12:30" (minutes:seconds), as the prompts write times.
_TIME = re.compile(r"(?<![\d:.])(\d{1,2}):([0-5]\d(?:\.\d+)?)(?![\d:])")
_TERSE_METER = re.compile(r"^\s*(\d+)/(\d+)(?:\s+time)?\s*\.?\s*$")


@dataclass(frozen=True)
class Check:
    """One statement's verdict and who gave it."""

    verdict: Verdict
    checked_by: Literal["mir", "audio_lm", "rules", "logic"]
    p_yes: float | None = None
    reason: str = ""


# ------------------------------------------------------------------ windows


def spread(count: int, pick: int) -> list[int]:
    """`pick` window indices spread evenly over `count` windows (first and last included)."""
    if count <= 0:
        return []
    if pick >= count:
        return list(range(count))
    if pick == 1:
        return [count // 2]
    return sorted({round(i * (count - 1) / (pick - 1)) for i in range(pick)})


def times_in(text: str) -> list[float]:
    """Times (seconds) a text names as m:ss."""
    return [int(m.group(1)) * 60 + float(m.group(2)) for m in _TIME.finditer(text or "")]


def windows_for(texts: Iterable[str], spans: Sequence[tuple[float, float]], pick: int) -> list[int]:
    """The windows a statement is heard against: those containing the times it names, else
    `pick` windows spread over the song."""
    named = set()
    for text in texts:
        for t in times_in(text):
            for i, (start, end) in enumerate(spans):
                if start <= t < end or (i == len(spans) - 1 and t == end):
                    named.add(i)
    return sorted(named) if named else spread(len(spans), pick)


def span_text(start: float, end: float) -> str:
    """A window as the judge is told it: "0:30 to 1:00" (whole seconds)."""
    def mmss(t: float) -> str:
        t = int(round(t))
        return f"{t // 60}:{t % 60:02d}"

    return f"{mmss(start)} to {mmss(end)}"


def claims_heard_in(text: str, span: tuple[float, float], tolerance: float = 0.0) -> list[str]:
    """The sentences of a text that a judge hearing `span` can judge: those that name no time, and
    those naming a time inside the span (a sentence about 1:05 is not asked while 0:00-0:30 plays)."""
    start, end = span
    out = []
    for sentence in sentences(text):
        times = times_in(sentence)
        if not times or any(start - tolerance <= t <= end + tolerance for t in times):
            out.append(sentence.strip())
    return out


# One claim per clause: a step "120 BPM, and a flute carries the tune" is two claims, each judged by what
# can judge it (MIR the tempo, the audio-LM the flute).
_CLAUSE = re.compile(r"\s*(?:;|,\s*(?:and|but|while|whereas|so)\s+|\s+(?:while|whereas|but)\s+)\s*", re.I)


def split_claims(text: str) -> list[str]:
    """A statement's clauses, each one claim (a list of chords stays whole: no split on a bare comma)."""
    parts = [p.strip(" ,.") for p in _CLAUSE.split(text or "")]
    return [p for p in parts if len(p.split()) >= 2] or [text.strip()]


# ------------------------------------------------------------------ MIR


def _mir(mir: Any) -> dict[str, Any]:
    if mir is None:
        return {}
    return mir.model_dump() if hasattr(mir, "model_dump") else dict(mir)


def mir_claims(text: str, mir: Any) -> list[str]:
    """What the text states that MIR measured: 'tempo', 'key', 'meter', 'chords'."""
    facts = _mir(mir)
    if not text or not facts:
        return []
    claims = []
    terse = text.strip().rstrip(".")
    if facts.get("bpm") and stated_tempi(text):
        claims.append("tempo")
    if facts.get("key") and (stated_keys(text) or (re.search(r"(major|minor)$", terse, re.I) and parse_key(terse))):
        claims.append("key")
    if facts.get("meter") and (stated_meters(text) or _TERSE_METER.match(text)):
        claims.append("meter")
    has_chords = any(chord_triad(c.get("label") or "") for c in facts.get("chords") or [])
    if has_chords and any(chord_triad(name) for name in chords_in_text(text)):
        claims.append("chords")
    if facts.get("sections") and stated_section_times(text):
        claims.append("structure")
    return claims


def mir_check(text: str, mir: Any, tolerance: ConsistencyConfig = ConsistencyConfig()) -> Check | None:
    """The MIR verdict on a statement, or None when it names nothing MIR measured."""
    flags = check_answer(text, mir, "step", tolerance)
    if flags:
        return Check("wrong", "mir", reason="; ".join(f.message for f in flags))
    claims = mir_claims(text, mir)
    if claims:
        return Check("correct", "mir", reason=f"agrees with the measured {', '.join(claims)}")
    return None


# ------------------------------------------------------------------ audio-LM


@dataclass(frozen=True)
class Heard:
    """An audio-LM yes/no over several windows, reduced to one judgement."""

    p_yes: float | None  # the best window's P(yes), among windows where the model really answered
    window: int | None  # that window
    judged: bool  # False: no window gave a real yes/no answer (or the audio failed)
    detail: str


def hear(answers: Sequence[Any], windows: Sequence[int], min_mass: float) -> Heard:
    """Reduce per-window `YesNo` answers: the best window counts (a statement about a moment is
    true if some window shows it; one about the whole song should hold in every window)."""
    errors = [a.error for a in answers if a.error is not None]
    committed = [(a.p_yes, w) for a, w in zip(answers, windows) if a.error is None and (a.mass or 0.0) >= min_mass]
    if not committed:
        masses = [a.mass for a in answers if a.error is None]
        if masses:
            why = f"no clear yes/no from the audio-LM (P(yes)+P(no) at most {max(masses):.2f} < {min_mass:g})"
        else:
            why = f"audio not usable: {errors[0] if errors else 'no windows'}"
        return Heard(None, None, False, why)
    p_yes, window = max(committed)
    return Heard(p_yes, window, True, f"P(yes) {p_yes:.2f} in window {window} (best of {len(committed)})")


def audio_check(heard: Heard, correct_p_yes: float, wrong_p_yes: float) -> Check:
    if not heard.judged or heard.p_yes is None:
        return Check("unverifiable", "audio_lm", None, heard.detail)
    if heard.p_yes >= correct_p_yes:
        return Check("correct", "audio_lm", heard.p_yes, f"the audio-LM confirms it: {heard.detail}")
    if heard.p_yes < wrong_p_yes:
        return Check("wrong", "audio_lm", heard.p_yes, f"the audio-LM rejects it: {heard.detail}")
    return Check("unverifiable", "audio_lm", heard.p_yes, f"the audio-LM is unsure: {heard.detail}")


# ------------------------------------------------------------------ the chain rule


def error_rate(verdicts: Sequence[str]) -> float:
    return sum(v == "wrong" for v in verdicts) / len(verdicts) if verdicts else 1.0


def decide(verdicts: Sequence[str], max_wrong_ratio: float) -> Action:
    """keep (no wrong step), rewrite (wrong share <= max_wrong_ratio), drop (more, or no steps)."""
    if not verdicts:
        return "drop"
    wrong = sum(v == "wrong" for v in verdicts)
    if wrong == 0:
        return "keep"
    # Compare counts, not floats: 3 of 10 is exactly 30%.
    return "rewrite" if wrong <= max_wrong_ratio * len(verdicts) + 1e-9 else "drop"


def describe(verdicts: Sequence[str]) -> str:
    wrong = sum(v == "wrong" for v in verdicts)
    unsure = sum(v == "unverifiable" for v in verdicts)
    return f"{wrong} of {len(verdicts)} steps wrong ({100 * error_rate(verdicts):.1f}%), {unsure} unverifiable"


# ------------------------------------------------------------------ the song's audio


@dataclass
class SongClips:
    """One song decoded once (16 kHz mono) and cut into the windows the audio-LM hears."""

    spans: list[tuple[float, float]]
    clips: list[Any]  # float32 arrays, one per window


def song_clips(source: str, processed_s: float, window_s: float, min_clip_s: float) -> SongClips:
    """Raises `mfpipe.audio.AudioError` when the file cannot be decoded."""
    from . import audio
    from .backends.audiolm import MAX_WINDOWS, SAMPLE_RATE, split_windows, window_clip

    samples = audio.load_mono(source, SAMPLE_RATE, max_seconds=processed_s)
    spans = split_windows(processed_s, window_s, MAX_WINDOWS)
    return SongClips(spans, [window_clip(samples, s, e, min_clip_s) for s, e in spans])
