"""Does generated text contradict the MIR facts? Flags for tempo, key, mode, meter and chords.

Used by `synthesize` (it stores the flags with each row) and by the quality
filter (it drops flagged items). The checks read only clear statements and
stay quiet when unsure: a missed contradiction costs less than a wrongly
dropped caption, and the MIR tools are not perfect either.

What counts as a contradiction (tolerances in the `consistency` config section):
- tempo: a stated BPM ("120 BPM", "tempo of 96") farther from the MIR tempo than
  max(bpm_tolerance_abs, bpm_tolerance_pct % of it). Half or double the MIR
  tempo is accepted only when the same sentence says "half-time" or
  "double-time" (beat trackers and listeners disagree by octaves; an unmarked
  60 for a 120 BPM song is still a contradiction).
- key / mode: a key statement ("in A minor", "key of F# major", "the E minor
  tonality") whose tonic differs from the MIR key (enharmonics are equal, a
  relative major/minor is a different key) → `key`; same tonic, other mode →
  `mode`. Mentions after "relative", "parallel", "modulates to", "borrowed"
  are not claims about the song's key and are skipped.
- meter: "3/4", "6/8 time", "triple meter", "waltz time", "common time" against
  the MIR beats per bar. Duple and quadruple are one family (2 ↔ 4: downbeat
  trackers do not separate them); 6/8 agrees with 2, 3 or 6; 12/8 with 4 or 12;
  9/8 with 3 or 9.
- structure: a time (m:ss) that a sentence gives for a section change or a
  return ("the chorus returns at 1:20", "a bridge from 2:05 to 2:40") with
  no measured section boundary within `structure_tolerance_s` of it.
- vocals: singing, a singer or lyrics claimed for a song whose voice detector heard
  no voice (`has_vocals` false in the facts), unless the sentence negates it
  ("no vocals", "instrumental", "without lyrics").
- chords: chord names Chordino never reported. Names are read from chord
  symbols with a quality (Am, E7, F#m7, Bbmaj7, G/B), from progressions
  ("C–G–Am–F", "C - G - Am - F"), from lists next to the word "chords"
  ("the chords C, G, Am and F") and from prose ("the D minor chord"). A name
  matches when root (enharmonic) and triad family (major, minor, diminished,
  augmented, suspended) match a Chordino label: E7 agrees with E, Em does not.
  Roman numerals are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import ConfigDict, Field

from .config import Section
from .mir.labels import chord_triad, pitch_class, triad_name
from .schemas.mir import PITCH_CLASSES
from .schemas.synthesize import ConsistencyFlag


class ConsistencyConfig(Section):
    """Tolerances of the checks that compare generated text with the MIR facts; shared by synthesize (flags),
    the quality filter (drops) and MF-Think's step checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bpm_tolerance_pct: float = Field(4.0, ge=0, description="A stated BPM agrees with MIR within "
                                     "max(bpm_tolerance_abs, this % of the MIR tempo).")
    bpm_tolerance_abs: float = Field(2.0, ge=0, description="...or within this many BPM.")
    allow_half_double_time: bool = Field(True, description="Accept half / double the MIR tempo when the sentence "
                                         "itself says half-time / double-time.")
    structure_tolerance_s: float = Field(4.0, ge=0, description="A stated section change or return (a time next "
                                         "to 'chorus', 'bridge', 'returns', ...) agrees with the measured form when "
                                         "a section boundary lies within this many seconds of it.")
    time_tolerance_s: float = Field(2.0, ge=0, description="A time (m:ss) in generated text is grounded when a "
                                    "measured moment (section edge, chord change, vocal region edge, sung word, "
                                    "window edge) lies within this many seconds of it (`ungrounded_time`).")
    chord_time_tolerance_s: float = Field(2.0, ge=0, description="A chord named together with a time is checked "
                                          "against the chords sounding within this many seconds of that time (or "
                                          "within a stated range), not against the whole song's chords.")
    key_hedge_below: float | None = Field(0.5, ge=0, le=1, description="A key estimate weaker than this is "
                                          "hedged in the prompts (a tonal centre, no major/minor: modal or raga "
                                          "music) and a stated mode is not flagged; None: never hedge.")


# ------------------------------------------------------------------ pitch helpers

_ACC = r"(?:#|♯|b|♭|[- ]sharp|[- ]flat)"


def key_name(pc: int, mode: str | None) -> str:
    return f"{PITCH_CLASSES[pc]} {mode}" if mode else PITCH_CLASSES[pc]


def parse_key(text: str | None) -> tuple[int, str | None] | None:
    """'C major', 'F# minor', 'Bb', 'Am', 'E-flat minor' → (pitch class, mode or None)."""
    if not text:
        return None
    m = re.fullmatch(rf"\s*([A-Ga-g])({_ACC})?\s*(major|minor|maj|min|m)?\s*", text.strip())
    if not m:
        return None
    mode = {"major": "major", "maj": "major", "minor": "minor", "min": "minor", "m": "minor"}.get(
        (m.group(3) or "").lower())
    return pitch_class(m.group(1) + (m.group(2) or "")), mode


# ------------------------------------------------------------------ chords

# Quality suffixes, longest first so "maj7" is not read as "m".
_QUALITY = r"(?:maj13|maj11|maj9|maj7|maj|min7|min|m7b5|mMaj7|m13|m11|m9|m7|m6|m|dim7|dim|°7|°|ø7|ø|aug|\+|sus2|sus4|sus|add9|add11|13|11|9|7|6|5)"
_CHORD = rf"[A-G](?:#|♯|b|♭)?{_QUALITY}?(?:/[A-G](?:#|♯|b|♭)?)?"
_CHORD_WITH_QUALITY = re.compile(rf"(?<![\w#♯♭/])([A-G](?:#|♯|b|♭)?{_QUALITY}(?:/[A-G](?:#|♯|b|♭)?)?)(?![\w#♯♭+°ø])")
_SEP = r"\s*(?:–|—|-|→|->|\|)\s*"
_PROGRESSION = re.compile(rf"(?<![\w#♯♭/])({_CHORD}(?:{_SEP}{_CHORD})+)(?![\w#♯♭+°ø])")
_LIST = rf"{_CHORD}(?:\s*,\s*(?:and\s+)?{_CHORD}|\s+and\s+{_CHORD})+"
_LIST_AFTER = re.compile(rf"\bchords?\s*(?:of|:|are|were|such as|like|including|include|includes)?\s*({_LIST})(?![\w#♯♭+°ø])")
_LIST_BEFORE = re.compile(rf"(?<![\w#♯♭/])({_LIST})\s+chords?\b")
_PROSE_CHORD = re.compile(rf"\b(?:the\s+|an?\s+)?([A-G])({_ACC})?[- ](major|minor|diminished|augmented)\s+(?:chord|triad|seventh|7th)\b")
_BARE_CHORD = re.compile(r"\bthe\s+([A-G](?:#|♯|b|♭)?)\s+chord\b")


def chords_in_text(text: str) -> list[str]:
    """Chord names a text states, as written."""
    found: list[str] = []
    for pattern in (_PROGRESSION, _LIST_AFTER, _LIST_BEFORE):
        for m in pattern.finditer(text):
            found.extend(re.findall(_CHORD, m.group(1)))
    found.extend(m.group(1) for m in _CHORD_WITH_QUALITY.finditer(text))
    for m in _PROSE_CHORD.finditer(text):
        suffix = {"major": "", "minor": "m", "diminished": "dim", "augmented": "aug"}[m.group(3).lower()]
        found.append(m.group(1) + _accidental_symbol(m.group(2)) + suffix)
    found.extend(m.group(1) for m in _BARE_CHORD.finditer(text))
    return list(dict.fromkeys(found))


def _accidental_symbol(acc: str | None) -> str:
    a = (acc or "").strip(" -").lower()
    return "#" if a in ("#", "♯", "sharp") else "b" if a in ("b", "♭", "flat") else ""


# ------------------------------------------------------------------ statements in prose

# Sentence ends: . ! ? followed by a space (so "120.5 BPM" and "b.p.m." stay whole) or a newline.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_HALF_DOUBLE = re.compile(r"\b(half|double)[- ]?time\b", re.I)
_BPM = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*(?:bpm|b\.p\.m\.?|beats per minute|beats a minute)", re.I)
_TEMPO = re.compile(r"\btempo\s+(?:of|is|at|around|near|sits at|hovers around)\s+(?:about|around|roughly|approximately|~)?\s*(\d{2,3}(?:\.\d+)?)\b(?!\s*(?:%|percent|seconds|s\b|bars|minutes))", re.I)

_KEY = re.compile(rf"(?<![\w#♯♭])([A-G])({_ACC})?[- ]?(major|minor)\b")
_KEY_BEFORE = re.compile(r"(?:\bkey(?:\s+of|\s+is|:)?|\btonality(?:\s+of)?|\btonal cent(?:er|re)(?:\s+of)?|"
                         r"\bcent(?:ered|red)\s+(?:on|in)|\b(?:set|written|played|performed|sits|rooted|is|stays|remains|sung)\s+in|"
                         r"^in|[,;(]\s*in|\bin)\s*(?:the\s+)?$", re.I)
_KEY_AFTER = re.compile(r"^\s*(?:key|tonality|tonal cent(?:er|re)|home key)\b", re.I)
_NOT_KEY_AFTER = re.compile(r"^\s*(?:chord|triad|seventh|7th|arpeggio|scale|pentatonic|sixth|ninth|add|progression|riff|lick)", re.I)
_NOT_KEY_BEFORE = re.compile(r"\b(?:relative|parallel|modulat\w*|modulation\s+to|shifts?\s+to|moves?\s+to|borrow\w*|"
                             r"dominant|subdominant|secondary|toward|towards|versus|vs\.?|from|into|not|than)\b[^.]{0,24}$", re.I)

_METER = re.compile(r"(?<![\d/.])(2|3|4|5|6|7|9|12)/(2|4|8|16)(?![\d/])")
_METER_AFTER = re.compile(r"^\s*(?:time|meter|metre|signature|feel|groove|pulse|bars?|waltz|rhythm|swing|shuffle|count)\b", re.I)
_METER_BEFORE = re.compile(r"(?:\bin|\bsignature(?:\s+of|\s+is|:)?|\bmeter(?:\s+of|\s+is|:)?|\bmetre(?:\s+of|\s+is|:)?|\ba|\bits)\s*$", re.I)
_METER_WORDS = re.compile(r"\b(triple|duple|quadruple|waltz|common|compound duple|compound triple)[- ](?:time|meter|metre)\b", re.I)
_METER_WORD_VALUE = {"triple": 3, "waltz": 3, "duple": 2, "quadruple": 4, "common": 4,
                     "compound duple": 6, "compound triple": 9}
# Beats per bar that a stated numerator agrees with (see the module doc).
_METER_OK = {2: {2, 4}, 4: {4, 2}, 3: {3}, 6: {6, 2, 3}, 12: {12, 4}, 9: {9, 3}, 5: {5}, 7: {7}}


_TIME = re.compile(r"(?<![\d:])(\d{1,2}):([0-5]\d(?:\.\d+)?)(?![\d:])")
_SECTION_WORDS = re.compile(r"\b(?:sections?|verses?|chorus(?:es)?|refrains?|bridges?|intro|outro|interlude|"
                            r"breakdown|pre-chorus|coda|returns?|comes back|repeats?|reprise|transitions?|"
                            r"the form|part [A-H]\b|section [A-H]\b)", re.I)


def stated_section_times(text: str) -> list[tuple[float, str]]:
    """(seconds, the sentence) for every time a sentence gives for a section change or return."""
    out = []
    for sentence in sentences(text):
        if not _SECTION_WORDS.search(sentence):
            continue
        for m in _TIME.finditer(sentence):
            out.append((int(m.group(1)) * 60 + float(m.group(2)), sentence.strip()))
    return out


_VOCAL_CLAIM = re.compile(r"\b(?:sings?|sung|singing|singers?|vocalists?|vocals?|lyrics?|rapp(?:ed|ing|er)|"
                          r"choir|voices?|chant(?:s|ed|ing)?|crooner|verses? of (?:the )?lyrics)\b", re.I)
_VOCAL_NEGATED = re.compile(r"\b(?:no|not|never|without|absence|absent|lacks?|lacking|instrumental|none|nor|"
                            r"wordless|free of)\b", re.I)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def stated_tempi(text: str) -> list[tuple[float, bool, str]]:
    """(BPM, the sentence says half/double time, the words) for each tempo statement."""
    out = []
    for sentence in sentences(text):
        marked = bool(_HALF_DOUBLE.search(sentence))
        seen: set[int] = set()
        for pattern in (_BPM, _TEMPO):
            for m in pattern.finditer(sentence):
                if m.start(1) in seen:
                    continue
                seen.add(m.start(1))
                out.append((float(m.group(1)), marked, m.group(0).strip()))
    return out


def stated_keys(text: str) -> list[tuple[int, str, str]]:
    """(pitch class, mode, the words) for each statement of the song's key."""
    out = []
    for sentence in sentences(text):
        for m in _KEY.finditer(sentence):
            before, after = sentence[: m.start()], sentence[m.end():]
            if _NOT_KEY_AFTER.match(after) or _NOT_KEY_BEFORE.search(before):
                continue
            if not (_KEY_BEFORE.search(before) or _KEY_AFTER.match(after)):
                continue
            out.append((pitch_class(m.group(1) + (m.group(2) or "")), m.group(3).lower(), m.group(0)))
    return out


def stated_meters(text: str) -> list[tuple[int, str]]:
    """(beats per bar as written, the words) for each meter statement."""
    out = []
    for m in _METER.finditer(text):
        before, after = text[: m.start()], text[m.end():]
        if _METER_AFTER.match(after) or _METER_BEFORE.search(before):
            out.append((int(m.group(1)), m.group(0)))
    for m in _METER_WORDS.finditer(text):
        out.append((_METER_WORD_VALUE[m.group(1).lower()], m.group(0)))
    return out


# ------------------------------------------------------------------ the checks


def _mir_dict(mir: Any) -> dict[str, Any]:
    if mir is None:
        return {}
    if hasattr(mir, "model_dump"):
        return mir.model_dump()
    return dict(mir)


def _mir_chords(mir: dict[str, Any], window: tuple[float, float] | None = None) -> set[tuple[int, str]]:
    """The triads of the song's chords (those sounding within `window`, when given)."""
    chords = set()
    for span in mir.get("chords") or []:
        if window and not (float(_get(span, "end")) > window[0] and float(_get(span, "start")) < window[1]):
            continue
        label = _get(span, "label")
        parsed = chord_triad(label or "")
        if parsed is not None:
            chords.add(parsed)
    return chords


def bpm_agrees(stated: float, mir_bpm: float, tol: ConsistencyConfig, half_double: bool = False) -> bool:
    def close(target: float) -> bool:
        return abs(stated - target) <= max(tol.bpm_tolerance_abs, tol.bpm_tolerance_pct / 100 * target)

    if close(mir_bpm):
        return True
    return half_double and tol.allow_half_double_time and (close(mir_bpm / 2) or close(mir_bpm * 2))


def meter_agrees(stated: int, mir_meter: int) -> bool:
    return mir_meter in _METER_OK.get(stated, {stated})


def _flag(field: str, check: str, stated: str, expected: str, message: str) -> ConsistencyFlag:
    return ConsistencyFlag(field=field, check=check, stated=stated, expected=expected, message=message)


def check_text(text: str | None, mir: Any, field: str, tol: ConsistencyConfig = ConsistencyConfig()) -> list[ConsistencyFlag]:
    """Contradictions between one piece of prose and the MIR facts."""
    facts = _mir_dict(mir)
    if not text or not facts:
        return []
    flags: list[ConsistencyFlag] = []
    bpm = facts.get("bpm")
    if bpm:
        for value, marked, words in stated_tempi(text):
            if not bpm_agrees(value, bpm, tol, half_double=marked):
                flags.append(_flag(field, "bpm", words, f"{bpm:.1f} BPM",
                                   f"says {words}; the beat tracker measured {bpm:.1f} BPM"))
    flags.extend(_key_flags(field, [(pc, mode, words) for pc, mode, words in stated_keys(text)], facts, tol))
    meter = facts.get("meter")
    if meter:
        for value, words in stated_meters(text):
            if not meter_agrees(value, meter):
                flags.append(_flag(field, "meter", words, f"{meter} beats per bar",
                                   f"says {words}; the downbeat tracker counted {meter} beats per bar"))
    flags.extend(_structure_flags(text, facts, field, tol))
    if facts.get("has_vocals") is False:
        for sentence in sentences(text):
            claim = _VOCAL_CLAIM.search(sentence)
            if claim and not _VOCAL_NEGATED.search(sentence):
                flags.append(_flag(field, "vocals", claim.group(0), "no voice heard",
                                   f"speaks of {claim.group(0)!r} ({sentence.strip()[:100]!r}); the voice "
                                   "detector heard no voice in the song"))
    flags.extend(_chord_flags(text, facts, field, tol))
    return _unique(flags)


def _chord_flags(text: str, facts: dict[str, Any], field: str, tol: ConsistencyConfig) -> list[ConsistencyFlag]:
    """Chord names against the song's chords; in a sentence that gives a time (or a range), against the
    chords sounding then."""
    seen = _mir_chords(facts)
    if not seen:
        return []
    flags = []
    for sentence in sentences(text):
        named = chords_in_text(sentence)
        if not named:
            continue
        times = [int(m.group(1)) * 60 + float(m.group(2)) for m in _TIME.finditer(sentence)]
        window = _chord_window(times, tol.chord_time_tolerance_s)
        heard = _mir_chords(facts, window) if window else seen
        for name in named:
            parsed = chord_triad(name)
            if parsed is None or parsed in heard:
                continue
            if parsed not in seen:
                known = ", ".join(sorted(triad_name(c) for c in seen))
                flags.append(_flag(field, "chord", name, known,
                                   f"names the chord {name}, which Chordino never reported (it saw {known})"))
            else:
                then = ", ".join(sorted(triad_name(c) for c in heard)) or "no chord"
                where = f"{_clock(window[0] + tol.chord_time_tolerance_s)}" if len(times) == 1 else \
                    f"{_clock(min(times))}-{_clock(max(times))}"
                flags.append(_flag(field, "chord", name, then,
                                   f"names the chord {name} at {where}, where Chordino heard {then}"))
    return flags


def _chord_window(times: list[float], tolerance: float) -> tuple[float, float] | None:
    """The span a sentence's times name: one time +- tolerance, or the range of several."""
    if not times:
        return None
    return min(times) - tolerance, max(times) + tolerance


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _structure_flags(text: str, facts: dict[str, Any], field: str, tol: ConsistencyConfig) -> list[ConsistencyFlag]:
    sections = facts.get("sections") or []
    if not sections:
        return []
    bounds = sorted({float(_get(s, "start")) for s in sections} | {float(_get(sections[-1], "end"))})
    flags = []
    for seconds, sentence in stated_section_times(text):
        nearest = min(bounds, key=lambda b: abs(b - seconds))
        if abs(nearest - seconds) > tol.structure_tolerance_s:
            stated = f"{int(seconds // 60)}:{seconds % 60:04.1f}"
            shown = ", ".join(f"{int(b // 60)}:{b % 60:04.1f}" for b in bounds[:12])
            flags.append(_flag(field, "structure", stated, f"section boundaries at {shown}",
                               f"places a section change at {stated} ({sentence[:120]!r}); the measured form has "
                               f"no boundary within {tol.structure_tolerance_s:g} s (nearest {nearest:.1f} s)"))
    return flags


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)


def _key_flags(field: str, stated: Iterable[tuple[int, str | None, str]], facts: dict[str, Any],
               tol: ConsistencyConfig | None = None) -> list[ConsistencyFlag]:
    mir_key = parse_key(facts.get("key"))
    if mir_key is None:
        return []
    mir_pc, mir_mode = mir_key[0], facts.get("mode") or mir_key[1]
    strength, hedge = facts.get("key_strength"), (tol or ConsistencyConfig()).key_hedge_below
    if hedge is not None and strength is not None and float(strength) < hedge:
        mir_mode = None  # a weak estimate: its tonal centre counts, its major/minor does not
    expected = key_name(mir_pc, mir_mode)
    flags = []
    for pc, mode, words in stated:
        if pc != mir_pc:
            flags.append(_flag(field, "key", words, expected, f"says {words}; the key estimate is {expected}"))
        elif mode and mir_mode and mode != mir_mode:
            flags.append(_flag(field, "mode", words, expected, f"says {words}; the key estimate is {expected}"))
    return flags


def check_metadata(metadata: Any, mir: Any, tol: ConsistencyConfig = ConsistencyConfig()) -> list[ConsistencyFlag]:
    """The structured fields (bpm, key, meter) and the theory notes against MIR."""
    meta = _mir_dict(metadata)
    facts = _mir_dict(mir)
    if not meta or not facts:
        return []
    flags: list[ConsistencyFlag] = []
    bpm, stated_bpm = facts.get("bpm"), meta.get("bpm")
    if bpm and stated_bpm and not bpm_agrees(float(stated_bpm), bpm, tol):
        flags.append(_flag("metadata.bpm", "bpm", f"{float(stated_bpm):g}", f"{bpm:.1f} BPM",
                           f"metadata bpm {float(stated_bpm):g}; the beat tracker measured {bpm:.1f} BPM"))
    key = parse_key(meta.get("key"))
    if key is not None:
        flags.extend(_key_flags("metadata.key", [(key[0], key[1], meta["key"])], facts, tol))
    meter, stated_meter = facts.get("meter"), meta.get("meter")
    m = re.fullmatch(r"\s*(\d+)\s*/\s*\d+\s*", stated_meter or "")
    if meter and m and not meter_agrees(int(m.group(1)), meter):
        flags.append(_flag("metadata.meter", "meter", stated_meter, f"{meter} beats per bar",
                           f"metadata meter {stated_meter}; the downbeat tracker counted {meter} beats per bar"))
    flags.extend(check_text(meta.get("theory"), facts, "metadata.theory", tol))
    return flags


def check_answer(answer: str | None, mir: Any, field: str, tol: ConsistencyConfig = ConsistencyConfig()) -> list[ConsistencyFlag]:
    """A QA answer: prose rules, plus terse answers that are only a key ("A minor") or a meter ("3/4")."""
    flags = check_text(answer, mir, field, tol)
    facts = _mir_dict(mir)
    if flags or not answer or not facts:
        return flags
    terse = answer.strip().rstrip(".")
    key = parse_key(terse) if re.search(r"(major|minor)$", terse, re.I) else None
    if key is not None:
        return _key_flags(field, [(key[0], key[1], terse)], facts, tol)
    m = re.fullmatch(r"(\d+)/(\d+)(?:\s+time)?", terse)
    meter = facts.get("meter")
    if m and meter and not meter_agrees(int(m.group(1)), meter):
        return [_flag(field, "meter", terse, f"{meter} beats per bar",
                      f"answers {terse}; the downbeat tracker counted {meter} beats per bar")]
    return []


def check_song(caption: str | None, metadata: Any, qa: Iterable[Any], mir: Any,
               tol: ConsistencyConfig = ConsistencyConfig()) -> list[ConsistencyFlag]:
    """Every flag for one synthesized song: caption, metadata, QA answers (not the
    questions or the wrong options of multiple-choice items, which may name other values)."""
    flags = check_text(caption, mir, "caption", tol)
    flags += check_metadata(metadata, mir, tol)
    for i, item in enumerate(qa or []):
        answer = item.get("answer") if isinstance(item, dict) else getattr(item, "answer", None)
        flags += check_answer(answer, mir, f"qa[{i}].answer", tol)
    return flags


def _unique(flags: list[ConsistencyFlag]) -> list[ConsistencyFlag]:
    seen, out = set(), []
    for f in flags:
        key = (f.field, f.check, f.stated)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
