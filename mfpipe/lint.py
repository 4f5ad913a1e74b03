"""Checks of captions and QA items against measured facts: what `mfpipe check` reports, and the gate
synthesize and MF-Think put their items through.

Besides the contradiction checks of `mfpipe.consistency` (bpm, key, mode, meter, chord, structure,
vocals), five checks of corpus quality, each reading clear cases only:

- `leaky_question`: a question that states what it asks: it contains its own answer, or it gives a
  key, tempo or meter as a premise ("In this A-minor waltz, which chord is the dominant?") that the
  listener should find by ear. A question that offers the alternatives ("C major or A minor?") does
  not leak.
- `tool_mention`: prose that cites the machinery instead of describing the music: tools (a beat
  tracker, a key estimator, Chordino, a transcript, a voice detector), measurements and confidences
  ("key strength 0.90", "was detected", LUFS), the 30-second windows or their descriptions, "the
  data".
- `unsupported_identity`: a year, artist, album or title that no fact supplies (a file named
  "Artist - Title (1987).mp3" must not become them).
- `ungrounded_time`: a time (m:ss) that is no measured moment: not near a section boundary, a chord
  change, the start or end of a vocal region, a sung word, or a 30 s window's edge (a window's event
  gets its window's range); or one after the song's end.
- `distractor` (multiple choice): wrong options of another type than the answer, numbers less than
  15 % apart, half or double the tempo, the relative key, or an option the facts say is true too.

Facts: the MIR row's fields (bpm, meter, key, mode, key_strength, chords, sections), plus
`has_vocals`, `vocal_regions`, `words` and `duration_s` where known (`mfpipe.songfacts.measured`
builds them from a song's rows), and `title`, `artist`, `album`, `year` where a curator knows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from .config import Section
from .consistency import (
    ConsistencyConfig,
    check_answer,
    check_text,
    parse_key,
    sentences,
)
from .rewards import normalise

QUALITY_CHECKS = ("leaky_question", "tool_mention", "unsupported_identity", "ungrounded_time", "distractor")
CONTRADICTION_CHECKS = ("bpm", "key", "mode", "meter", "chord", "structure", "vocals")
WINDOW_S = 30.0  # the surface captions' window (audio.window_s): a window's edges are grounded times


@dataclass(frozen=True)
class Flag:
    check: str
    message: str
    field: str = ""

    def as_json(self) -> dict[str, str]:
        where = f"{self.field}: " if self.field else ""
        return {"check": self.check, "message": f"{where}{self.message}"}


# ------------------------------------------------------------------ tool_mention

_TOOL_WORDS = re.compile(
    r"\b(?:beat[- ]?track(?:er|ing)|downbeat[- ]track(?:er|ing)|key[- ](?:estimat\w*|detect\w*|finder|strength|"
    r"confidence|profile)|chord[- ](?:recogni[sz]\w*|detect\w*|estimat\w*|extract\w*)|chordino|nnls[- ]chroma|madmom|"
    r"essentia|librosa|demucs|silero|parakeet|(?:speech|lyrics?|voice)[- ](?:recogni[sz]\w*|detector|transcri\w*)|"
    r"transcripts?|transcribed|voice[- ]activity|signal[- ]analysis|analysis tools?|the (?:analysis|algorithm|"
    r"detector|tracker|estimator)s?|(?:was|were|been|being) (?:measured|detected|estimated|computed|calculated|"
    r"transcribed)|measured (?:at|as|by|to be|tempo|key|bpm)|estimated (?:tempo|key|bpm|at)|"
    r"(?:confidence|strength|probability)(?: score)?(?: of)? (?:0?\.\d+|1\.0+)|window descriptions?|"
    r"(?:surface|automatic) captions?|\d+[- ]second (?:windows?|clips?|excerpts?)|(?:first|second|third|last|next|"
    r"previous|each|every) window|window \d+|according to the (?:facts|data|analysis|measurements?|metadata)|"
    r"the (?:facts|data|metadata|measurements?) (?:say|says|show|shows|indicate|indicates|suggest|suggests))\b",
    re.I)
_TOOL_ACRONYMS = re.compile(r"\b(?:MIR|ASR|VAD|LUFS|dBFS)\b")


def tool_mentions(text: str) -> list[str]:
    """The words of a text that cite tools, measurements, windows or data, as written."""
    found = [m.group(0) for m in _TOOL_WORDS.finditer(text or "")]
    found += [m.group(0) for m in _TOOL_ACRONYMS.finditer(text or "")]
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------ unsupported_identity

_YEAR = re.compile(r"(?<![\d:./-])(1[89]\d\d|20\d\d)(?![\d:./]|s\b|'s\b|\s*(?:bpm|hz|khz|ms|seconds|s)\b)", re.I)
_NAME = r"((?:[A-Z][\w'’&-]*)(?:[ \t]+(?:[A-Z][\w'’&-]*|&|of|the|and)(?=[ \t]+[A-Z]|\b))*)"
_ARTIST = re.compile(
    rf"\b(?:(?:performed|sung|recorded|written|composed|produced|released|covered|rapped)(?:\s+[\w']+){{0,3}}?\s+by|"
    rf"(?:song|track|single|album|record|hit|tune|ballad|anthem|release|piece|composition)\s+(?:by|from)|"
    rf"(?:artist|band|singer|songwriter|rapper|duo|group|composer|producer)(?:'s)?(?:\s+called|\s+named)?)"
    rf"\s+(?:the\s+)?{_NAME}")
_TITLE = re.compile(r"\b(?:titled|entitled|called|named|song|track|single|tune|album|record|LP|EP)\s*,?\s*"
                    r"[\"“'‘]([^\"”’]{2,80})[\"”'’]")
_ALBUM = re.compile(r"\b(?:(?:the|his|her|their|its|this|an?)\s+(?:debut\s+|studio\s+|live\s+)?(?:album|LP)\b|"
                    r"album\s+(?:titled|called|named)|from the record)", re.I)


def identity_claims(text: str) -> list[tuple[str, str]]:
    """(kind, what) for each year, artist, title or album a text names."""
    out: list[tuple[str, str]] = []
    out += [("year", m.group(1)) for m in _YEAR.finditer(text or "")]
    out += [("artist", m.group(1).strip()) for m in _ARTIST.finditer(text or "")]
    out += [("title", m.group(1).strip()) for m in _TITLE.finditer(text or "")]
    out += [("album", m.group(0).strip()) for m in _ALBUM.finditer(text or "")]
    return list(dict.fromkeys(out))


def _supplied(kind: str, what: str, facts: dict[str, Any]) -> bool:
    known = [str(facts.get(k) or "") for k in ("title", "artist", "album", "year")]
    said = normalise(what)
    return any(k and (said == normalise(k) or normalise(k) in said or (said and said in normalise(k)))
               for k in known) if said else False


# ------------------------------------------------------------------ ungrounded_time

_TIME = re.compile(r"(?<![\d:.])(\d{1,2}):([0-5]\d(?:\.\d+)?)(?![\d:])")


def times_in(text: str) -> list[tuple[float, str]]:
    return [(int(m.group(1)) * 60 + float(m.group(2)), m.group(0)) for m in _TIME.finditer(text or "")]


def grounded_times(facts: dict[str, Any], window_s: float = WINDOW_S) -> list[float]:
    """Every moment the facts measured: section edges, chord changes, vocal regions, sung words,
    window edges; empty when the facts time nothing."""
    times: set[float] = set()
    for sec in facts.get("sections") or []:
        times.update((float(_get(sec, "start")), float(_get(sec, "end"))))
    for chord in facts.get("chords") or []:
        if _get(chord, "label") not in (None, "", "N", "X"):
            times.update((float(_get(chord, "start")), float(_get(chord, "end"))))
    for region in facts.get("vocal_regions") or []:
        times.update((float(_get(region, "start")), float(_get(region, "end"))))
    for word in facts.get("words") or []:
        times.add(float(_get(word, "start")))
    duration = facts.get("duration_s")
    if times or duration:
        end = float(duration) if duration else max(times)
        times.update(i * window_s for i in range(int(end // window_s) + 1))
        times.update((0.0, end))
    return sorted(times)


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)


# ------------------------------------------------------------------ leaky_question and distractor

_PREMISE_KEY = re.compile(r"(?<![\w#♯♭])[A-G](?:#|b|♯|♭)?[- ](?:major|minor)\b(?!\s*(?:chord|triad|seventh|7th|"
                          r"scale|pentatonic|arpeggio))", re.I)
_PREMISE_BPM = re.compile(r"\b\d{2,3}(?:\.\d+)?\s*(?:bpm|beats per minute)\b", re.I)
_PREMISE_METER = re.compile(r"(?<![\d/.])(?:2|3|4|5|6|7|9|12)/(?:2|4|8|16)(?![\d/])|\b(?:triple|duple|quadruple|"
                            r"compound)[- ](?:meter|metre|time)\b", re.I)
_ALTERNATIVES = re.compile(r"\bor\b|\bwhich of\b|\beither\b|\bversus\b|\bvs\.?", re.I)
_YES_NO = {"yes", "no", "true", "false", "none"}
# A number alone or a tempo ("96", "about 96 BPM"); other numbers (bars, sections, times) are not compared.
_NUMBER = re.compile(r"^\s*(?:about|around|roughly|approximately|~)?\s*(\d+(?:\.\d+)?)\s*"
                     r"(?:bpm|beats per minute|beats a minute)?\s*\.?\s*$", re.I)
_TIME_OPTION = re.compile(r"\d{1,2}:[0-5]\d")
_METER_OPTION = re.compile(r"^\s*\d+/\d+")
_CHORD_OPTION = re.compile(r"^\s*[A-G](?:#|b|♯|♭)?(?:m|maj|min|dim|aug|sus|add|\d)*\d*(?:/[A-G](?:#|b)?)?"
                           r"\s*(?:chord)?\s*$")
_TEMPO_RATIO_TOL = 0.04


def premises(question: str) -> list[str]:
    """Keys, tempi and meters a question states as given (none when it offers alternatives)."""
    if _ALTERNATIVES.search(question or ""):
        return []
    found = []
    for pattern in (_PREMISE_KEY, _PREMISE_BPM, _PREMISE_METER):
        found += [m.group(0).strip() for m in pattern.finditer(question or "")]
    return found


def _contains_answer(question: str, answer: str, options: Sequence[str]) -> bool:
    said, asked = normalise(answer), normalise(question)
    if len(said) < 3 or said in _YES_NO or not asked:
        return False
    if not re.search(rf"(?<!\S){re.escape(said)}(?!\S)", asked):
        return False
    # A question that offers alternatives, or lists every option, names the answer among them: that is
    # a choice, not a leak.
    if not options and _ALTERNATIVES.search(question):
        return False
    others = [normalise(o) for o in options if normalise(o) != said]
    return not others or not all(o and o in asked for o in others)


def _option_type(text: str) -> str:
    if parse_key(re.sub(r"\s*key$", "", text.strip(), flags=re.I)) and re.search(r"major|minor", text, re.I):
        return "key"
    if _TIME_OPTION.search(text):
        return "time"
    if _METER_OPTION.match(text):
        return "meter"
    if _CHORD_OPTION.match(text):
        return "chord"
    if _NUMBER.match(text):
        return "number"
    return "text"


def _relative(pc: int, mode: str | None) -> tuple[int, str] | None:
    if mode == "major":
        return (pc + 9) % 12, "minor"
    if mode == "minor":
        return (pc + 3) % 12, "major"
    return None


def distractor_problems(answer: str, options: Sequence[str], facts: dict[str, Any] | None) -> list[str]:
    """What is wrong with a multiple-choice item's wrong options (see the module doc)."""
    wrong = [o for o in options if normalise(o) != normalise(answer)]
    if not wrong or len(wrong) == len(options):
        return []
    problems = []
    kind = _option_type(answer)
    if kind != "text":
        odd = [o for o in wrong if _option_type(o) != kind]
        if odd:
            problems.append(f"option(s) {odd} are not of the answer's type ({kind})")
    if kind == "number":
        values = [float(_NUMBER.match(o).group(1)) for o in options if _option_type(o) == "number"]
        close = [(a, b) for i, a in enumerate(values) for b in values[i + 1:] if a and b and
                 abs(a - b) / max(a, b) < 0.15]
        if close:
            problems.append(f"numbers less than 15 % apart: {close[0][0]:g} and {close[0][1]:g}")
        right = float(_NUMBER.match(answer).group(1))
        halves = [o for o in wrong if _option_type(o) == "number" and right and any(
            abs(float(_NUMBER.match(o).group(1)) / right - r) <= _TEMPO_RATIO_TOL * r for r in (0.5, 2.0))]
        if halves and re.search(r"bpm|tempo|beats", answer + " ".join(options), re.I):
            problems.append(f"option(s) {halves} are half or double the tempo (a listener may hear either)")
    if kind == "key":
        key = parse_key(answer.replace(" key", ""))
        relative = _relative(*key) if key else None
        if relative and any(parse_key(o.replace(" key", "")) == relative for o in wrong):
            problems.append("an option is the relative major or minor of the answer (the same notes)")
    problems += _also_true(wrong, facts or {})
    return problems


def _also_true(wrong: Sequence[str], facts: dict[str, Any]) -> list[str]:
    """Wrong options that the facts say are true (the measured key, tempo or meter)."""
    out = []
    measured_key = parse_key(f"{facts.get('key')} {facts.get('mode') or ''}") if facts.get("key") else None
    for option in wrong:
        kind = _option_type(option)
        if kind == "key" and measured_key and parse_key(option.replace(" key", "")) == measured_key:
            out.append(f"the wrong option {option!r} is the measured key")
        elif kind == "number" and facts.get("bpm") and re.search(r"bpm", option, re.I):
            value = float(_NUMBER.match(option).group(1))
            if abs(value - float(facts["bpm"])) <= max(2.0, 0.04 * float(facts["bpm"])):
                out.append(f"the wrong option {option!r} is the measured tempo")
    return out


# ------------------------------------------------------------------ the checks


def quality_flags(text: str, facts: dict[str, Any] | None, field: str, tol: ConsistencyConfig,
                  window_s: float = WINDOW_S) -> list[Flag]:
    """tool_mention, unsupported_identity and ungrounded_time on one piece of prose."""
    facts = facts or {}
    flags = [Flag("tool_mention", f"cites {words!r} instead of describing what is heard", field)
             for words in tool_mentions(text)]
    for kind, what in identity_claims(text):
        if not _supplied(kind, what, facts):
            article = "an" if kind[0] in "aeiou" else "a"
            flags.append(Flag("unsupported_identity", f"names {article} {kind} ({what!r}) that no fact supplies",
                              field))
    grounded = grounded_times(facts, window_s)
    end = facts.get("duration_s")
    for seconds, written in times_in(text):
        if end and seconds > float(end) + tol.time_tolerance_s:
            flags.append(Flag("ungrounded_time", f"gives {written}, after the end of the song "
                                                 f"({_clock(float(end))})", field))
        elif grounded and min(abs(t - seconds) for t in grounded) > tol.time_tolerance_s:
            nearest = min(grounded, key=lambda t: abs(t - seconds))
            flags.append(Flag("ungrounded_time", f"gives {written}, which is no measured moment (no section edge, "
                                                 f"chord change, vocal entry, sung word or window edge within "
                                                 f"{tol.time_tolerance_s:g} s; nearest {_clock(nearest)})", field))
    return flags


def question_flags(question: str, answer: str, options: Sequence[str], facts: dict[str, Any] | None,
                   field: str) -> list[Flag]:
    """leaky_question and distractor on one QA item."""
    flags = []
    if _contains_answer(question, answer, options):
        flags.append(Flag("leaky_question", f"the question contains its answer ({answer!r})", field))
    given = premises(question)
    if given:
        flags.append(Flag("leaky_question", f"the question gives away {', '.join(repr(g) for g in given)}, which "
                                            "a listener should find by ear", field))
    if options:
        flags += [Flag("distractor", p, field) for p in distractor_problems(answer, options, facts)]
    return flags


def contradiction_flags(text: str, facts: dict[str, Any] | None, field: str, tol: ConsistencyConfig,
                        answer: bool = False) -> list[Flag]:
    if not facts:
        return []
    check = check_answer if answer else check_text
    return [Flag(f.check, f.message, field) for f in check(text, facts, field, tol)]


def check_caption(caption: str, facts: dict[str, Any] | None, tol: ConsistencyConfig = ConsistencyConfig(),
                  checks: Iterable[str] | None = None, field: str = "caption") -> list[Flag]:
    flags = contradiction_flags(caption, facts, field, tol) + quality_flags(caption, facts, field, tol)
    return _only(flags, checks)


def check_qa(question: str, answer: str, options: Sequence[str] | None, facts: dict[str, Any] | None,
             tol: ConsistencyConfig = ConsistencyConfig(), checks: Iterable[str] | None = None,
             field: str = "") -> list[Flag]:
    """Every check of one QA item: the answer against the facts, the question's leaks, the options,
    and tools, identities and times in the question and the answer."""
    prefix = f"{field}." if field else ""
    flags = contradiction_flags(answer, facts, f"{prefix}answer", tol, answer=True)
    flags += question_flags(question, answer, list(options or []), facts, f"{prefix}question")
    flags += quality_flags(question, facts, f"{prefix}question", tol)
    flags += quality_flags(answer, facts, f"{prefix}answer", tol)
    return _only(flags, checks)


def check_step(text: str, facts: dict[str, Any] | None, tol: ConsistencyConfig = ConsistencyConfig(),
               checks: Iterable[str] | None = None) -> list[Flag]:
    """A reasoning step: tools, identities and times (its contradictions are the step check's)."""
    return _only(quality_flags(text, facts, "", tol), checks)


def check_item(item: dict[str, Any], facts: dict[str, Any] | None,
               tol: ConsistencyConfig = ConsistencyConfig()) -> list[Flag]:
    """One item of `mfpipe check`: a caption, a QA pair, or both."""
    flags: list[Flag] = []
    if item.get("caption"):
        flags += check_caption(str(item["caption"]), facts, tol)
    if item.get("question") is not None or item.get("answer") is not None:
        flags += check_qa(str(item.get("question") or ""), str(item.get("answer") or ""),
                          [str(o) for o in item.get("options") or []], facts, tol)
    return _unique(flags)


def _only(flags: list[Flag], checks: Iterable[str] | None) -> list[Flag]:
    if checks is None:
        return _unique(flags)
    wanted = set(checks)
    return _unique([f for f in flags if f.check in wanted])


def _unique(flags: list[Flag]) -> list[Flag]:
    return list(dict.fromkeys(flags))


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def offending_sentences(text: str, facts: dict[str, Any] | None, tol: ConsistencyConfig,
                        checks: Iterable[str]) -> list[str]:
    """The sentences of a text that carry the flags (a gate drops them after its one repair)."""
    wanted = set(checks)
    return [s for s in sentences(text) if any(f.check in wanted for f in check_caption(s, facts, tol, wanted))]


# ------------------------------------------------------------------ the gate of synthesize and think


class GateConfig(Section):
    """Which checks gate generated items, and whether a flagged part gets one repair request."""

    checks: list[str] = Field(default_factory=lambda: list(QUALITY_CHECKS), description="Checks (mfpipe.lint) "
                              f"that gate items: any of {', '.join(QUALITY_CHECKS + CONTRADICTION_CHECKS)}. The "
                              "contradiction checks are off by default here: the filter and the step checks "
                              "act on them.")
    repair: bool = Field(True, description="A part with flagged items gets one repair request that names the "
                         "problems; what is still flagged after it is dropped, with the reason.")

    @field_validator("checks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(QUALITY_CHECKS + CONTRADICTION_CHECKS))
        if unknown:
            raise ValueError(f"unknown checks {unknown}; known: {', '.join(QUALITY_CHECKS + CONTRADICTION_CHECKS)}")
        return value


class ItemGate:
    """The gate's view of one song's drafts (synthesize's caption and QA parts): their flags, the drafts
    with what is still flagged dropped, and what became of each flag."""

    def __init__(self, facts: dict[str, Any] | None, tol: ConsistencyConfig, checks: Iterable[str]):
        self.facts, self.tol, self.checks = facts, tol, list(checks)

    def flags(self, part: str, draft: Any) -> list[tuple[str, Flag]]:
        """(where, flag) for a part's draft: the caption, or each open and multiple-choice item."""
        if part == "caption":
            return [("caption", f) for f in check_caption(draft.caption, self.facts, self.tol, self.checks, "")]
        out = []
        for where, question, answer, options in self._items(part, draft):
            out += [(where, f) for f in check_qa(question, answer, options, self.facts, self.tol, self.checks)]
        return out

    @staticmethod
    def _items(part: str, draft: Any) -> list[tuple[str, str, str, list[str]]]:
        items = [(f"{part} open question {i + 1}", q.question, q.answer, [])
                 for i, q in enumerate(getattr(draft, "open", None) or [])]
        for i, q in enumerate(getattr(draft, "multiple_choice", None) or []):
            answer = q.options["ABCDEF".index(q.correct)] if q.correct in "ABCDEF"[:len(q.options)] else ""
            items.append((f"{part} multiple-choice question {i + 1}", q.question, answer, list(q.options)))
        return items

    def drop(self, part: str, draft: Any, flags: list[tuple[str, Flag]], notes: list[str]) -> Any:
        """The draft without what is flagged: a caption without its flagged sentences, a QA part without
        its flagged items (a note says what went)."""
        if not flags:
            return draft
        if part == "caption":
            text = draft.caption
            cut = offending_sentences(text, self.facts, self.tol, self.checks)
            for sentence in cut:
                text = text.replace(sentence, "")
            notes.append(f"caption: {len(cut)} sentence(s) dropped by the checks "
                         f"({', '.join(sorted({f.check for _, f in flags}))})")
            return draft.model_copy(update={"caption": " ".join(text.split())})
        bad = {where for where, _ in flags}
        kept_open = [q for i, q in enumerate(getattr(draft, "open", None) or [])
                     if f"{part} open question {i + 1}" not in bad]
        kept_choice = [q for i, q in enumerate(getattr(draft, "multiple_choice", None) or [])
                       if f"{part} multiple-choice question {i + 1}" not in bad]
        update = {k: v for k, v in (("open", kept_open), ("multiple_choice", kept_choice)) if hasattr(draft, k)}
        notes.append(f"{part}: {len(bad)} item(s) dropped by the checks "
                     f"({', '.join(sorted({f.check for _, f in flags}))})")
        return draft.model_copy(update=update)

    @staticmethod
    def outcomes(first: list[tuple[str, Flag]], after: list[tuple[str, Flag]] | None) -> list[Any]:
        """A GateEvent per flag: `repaired` when the repair removed it, else `dropped` (after=None: no
        repair was made); new flags the repair brought are dropped too."""
        from .schemas.synthesize import GateEvent

        def event(where: str, flag: Flag, outcome: str) -> GateEvent:
            return GateEvent(field=where, check=flag.check, outcome=outcome, message=flag.message[:500])

        if after is None:
            return [event(w, f, "dropped") for w, f in first]
        still = {(w, f.check) for w, f in after}
        seen = {(w, f.check) for w, f in first}
        events = [event(w, f, "dropped" if (w, f.check) in still else "repaired") for w, f in first]
        events += [event(w, f, "dropped") for w, f in after if (w, f.check) not in seen]
        return events
