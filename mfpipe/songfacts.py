"""What an LLM is told about one song, from the upstream rows (ingest, mir, caption, lyrics).

Two kinds of input, kept apart on purpose:
- measured facts (`facts`): numbers from the MIR tools, written by us; the
  prompt tells the model to respect them;
- untrusted data (`untrusted`): the lyrics transcript and the surface
  captions. They carry free text from outside (a song can sing "ignore your
  instructions"), so they reach the prompt only as JSON strings in a block
  the instructions call data, never as instructions.

Never the file name or path: "Artist - Title (1987).mp3" would become artist,
title and year in the generated text. The facts are written as a listener
should know them: no tool names, no confidences (a weak key estimate becomes
a hedged tonal centre), chords per section with their time and Roman numerals,
passing chords shorter than `min_chord_s` left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Gap between two words that starts a new lyrics line.
_LINE_GAP_S = 1.0
_LINE_MAX_WORDS = 14


@dataclass
class SongInputs:
    facts: list[str]
    untrusted: dict[str, Any]
    present: list[str]  # upstream outputs this song had: caption, mir, lyrics
    notes: list[str] = field(default_factory=list)  # what was cut or missing

    def untrusted_json(self) -> str:
        # JSON strings escape quotes and newlines, and < > become \u003c \u003e, so no text
        # inside can close the block or forge its delimiters.
        text = json.dumps(self.untrusted, ensure_ascii=False, indent=1)
        return text.replace("<", "\\u003c").replace(">", "\\u003e")


def clock(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def meter_text(beats_per_bar: int) -> str:
    denominator = 8 if beats_per_bar in (6, 9, 12) else 4
    return f"{beats_per_bar}/{denominator}"


def chord_changes(chords: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(start, label) at each change of chord, "N" (no chord) dropped, repeats merged."""
    out: list[tuple[float, str]] = []
    for span in chords or []:
        label = span.get("label")
        if not label or label == "N":
            continue
        if not out or out[-1][1] != label:
            out.append((float(span.get("start") or 0.0), label))
    return out


def mir_facts(mir: dict[str, Any], max_changes: int, notes: list[str], *, min_chord_s: float = 0.0,
              key_hedge_below: float | None = None) -> list[str]:
    """The measured facts, written as what a listener should know (no tool names, no confidences)."""
    facts = []
    if mir.get("bpm"):
        facts.append(f"Tempo: {mir['bpm']:.1f} BPM")
    if mir.get("meter"):
        facts.append(f"Meter: {mir['meter']} beats per bar ({meter_text(mir['meter'])})")
    hedged = key_is_weak(mir, key_hedge_below)
    if mir.get("key"):
        if hedged:
            facts.append(f"Key: uncertain. The tonal centre is probably {mir['key']}, but the music may be modal or "
                         "outside major and minor: say it is centred on "
                         f"{mir['key']}, never name a firm major or minor key")
        else:
            facts.append(f"Key: {mir['key']} {mir.get('mode') or ''}".rstrip())
    facts += chord_facts(mir, max_changes, notes, min_chord_s=min_chord_s, numerals=not hedged)
    if mir.get("loudness_lufs") is not None:
        facts.append(f"Overall level: {loudness_words(mir['loudness_lufs'])}")
    form = form_text(mir.get("sections") or [])
    if form:
        facts.append("Form (sections; the same letter is the same music repeated; names are guesses): " + form)
    return facts


def key_is_weak(mir: dict[str, Any], hedge_below: float | None) -> bool:
    """The key estimate is too weak to state as a major or minor key (modal, raga, atonal music)."""
    strength = mir.get("key_strength")
    return hedge_below is not None and strength is not None and float(strength) < hedge_below


def loudness_words(lufs: float) -> str:
    """Integrated loudness as a listener hears the master (the number stays out of the text)."""
    if lufs > -9:
        return "very loud, a heavily compressed modern master"
    if lufs > -13:
        return "loud, a compressed modern master"
    if lufs > -18:
        return "moderate, with room for dynamics"
    return "quiet, a wide dynamic range"


# Roman numerals of the scale degrees (semitones above the tonic); chromatic degrees get a flat or sharp.
_DEGREES = {"major": {0: "I", 1: "bII", 2: "II", 3: "bIII", 4: "III", 5: "IV", 6: "#IV", 7: "V", 8: "bVI",
                      9: "VI", 10: "bVII", 11: "VII"},
            "minor": {0: "I", 1: "bII", 2: "II", 3: "III", 4: "#III", 5: "IV", 6: "#IV", 7: "V", 8: "VI",
                      9: "#VI", 10: "VII", 11: "#VII"}}


def roman_numeral(label: str, tonic: str | None, mode: str | None) -> str | None:
    """'Am' in C major -> 'vi', 'E7' in A minor -> 'V7', 'Bbmaj7' in C major -> 'bVIImaj7'; None without a key."""
    from .mir.labels import chord_triad, pitch_class

    triad = chord_triad(label or "")
    tonic_pc = pitch_class(tonic) if tonic else None
    if triad is None or tonic_pc is None or mode not in _DEGREES:
        return None
    root, quality = triad
    numeral = _DEGREES[mode][(root - tonic_pc) % 12]
    suffix = _quality_suffix(label.split("/", 1)[0])
    if suffix.startswith(("dim", "°")):
        return numeral.lower() + "°" + suffix.removeprefix("dim").removeprefix("°")
    if suffix.startswith(("m7b5", "hdim", "ø")):
        return numeral.lower() + "ø7"
    if quality == "min":
        return numeral.lower() + (suffix[3:] if suffix.startswith("min") else suffix[1:])
    return numeral + suffix


def _quality_suffix(body: str) -> str:
    """What follows the root of a chord symbol: 'Abmaj7' -> 'maj7', 'F#m' -> 'm'."""
    i = 1
    while i < len(body) and body[i] in "#b♯♭":
        i += 1
    return body[i:]


def chord_spans(chords: list[dict[str, Any]], min_chord_s: float) -> list[tuple[float, float, str]]:
    """(start, end, label) with "N" dropped, chords shorter than `min_chord_s` dropped (passing or
    mis-heard chords invite wrong theory), and neighbours of the same label merged."""
    out: list[tuple[float, float, str]] = []
    for span in chords or []:
        label = span.get("label")
        start, end = float(span.get("start") or 0.0), float(span.get("end") or 0.0)
        if not label or label in ("N", "X") or end - start < min_chord_s:
            continue
        if out and out[-1][2] == label and start - out[-1][1] < max(min_chord_s, 0.5):
            out[-1] = (out[-1][0], end, label)
        else:
            out.append((start, end, label))
    return out


def _cycle(labels: list[str]) -> tuple[list[str], int]:
    """The shortest repeating pattern of a chord sequence and how many times it plays whole."""
    for period in range(1, len(labels) // 2 + 1):
        if all(labels[i] == labels[i % period] for i in range(len(labels))):
            return labels[:period], len(labels) // period
    return labels, 1


def section_chords(spans: list[tuple[float, float, str]], start: float, end: float, key: str | None,
                   mode: str | None, max_changes: int, beats_per_bar: float | None) -> str | None:
    """One section's harmony: each chord with its Roman numeral, total time and first entry; the order
    (as a loop when it repeats); the harmonic rhythm."""
    inside = [(max(s, start), min(e, end), label) for s, e, label in spans if e > start and s < end]
    inside = [(s, e, label) for s, e, label in inside if e - s > 0.05]
    if not inside:
        return None
    totals: dict[str, float] = {}
    first: dict[str, float] = {}
    for s, e, label in inside:
        totals[label] = totals.get(label, 0.0) + (e - s)
        first.setdefault(label, s)
    parts = []
    for label, total in totals.items():
        numeral = roman_numeral(label, key, mode)
        named = f"{label} ({numeral})" if numeral else label
        parts.append(f"{named} {total:.1f} s, first at {clock(first[label])}")
    order = [label for _, _, label in inside]
    pattern, times = _cycle(order)
    shown = pattern[:max_changes] if max_changes else pattern
    more = " ..." if len(shown) < len(pattern) else ""
    sequence = "-".join(shown) + more + (f" (played {times} times)" if times > 1 else "")
    lengths = sorted(e - s for s, e, _ in inside)
    typical = lengths[len(lengths) // 2]
    bars = f" (about {_bars(typical / beats_per_bar)})" if beats_per_bar else ""
    return f"{'; '.join(parts)}. Order: {sequence}. Harmonic rhythm: a chord lasts about {typical:.1f} s{bars}"


def _bars(n: float) -> str:
    text = f"{n:.1f}".removesuffix(".0")
    return f"{text} bar" + ("" if text == "1" else "s")


def chord_facts(mir: dict[str, Any], max_changes: int, notes: list[str], *, min_chord_s: float = 0.0,
                numerals: bool = True) -> list[str]:
    """The chords per section (or over the whole song without a measured form)."""
    spans = chord_spans(mir.get("chords") or [], min_chord_s)
    if not spans:
        return []
    dropped = len(chord_spans(mir.get("chords") or [], 0.0)) - len(spans)
    if dropped > 0:
        notes.append(f"{dropped} chord(s) shorter than {min_chord_s:g} s left out of the prompt")
    key, mode = (mir.get("key"), mir.get("mode")) if numerals else (None, None)
    beat_s = 60.0 / mir["bpm"] if mir.get("bpm") else None
    bar_s = beat_s * mir["meter"] if beat_s and mir.get("meter") else None
    vocabulary = list(dict.fromkeys(label for _, _, label in spans))
    facts = [f"Chords heard (the only chord names to use): {', '.join(vocabulary)}"
             + (f" (Roman numerals below are in {key} {mode})" if key and mode else "")]
    sections = mir.get("sections") or []
    bounds = [(float(s["start"]), float(s["end"]), f"section {s['label']}" + (f" ({s['name']}-like)"
                                                                             if s.get("name") else ""))
              for s in sections] or [(spans[0][0], spans[-1][1], "")]
    for start, end, what in bounds:
        line = section_chords(spans, start, end, key, mode, max_changes, bar_s)
        if line:
            where = f"in {what}, " if what else "over the whole song, "
            facts.append(f"Chords {where}{clock(start)}-{clock(end)}: {line}")
    return facts


def form_text(sections: list[dict[str, Any]], max_sections: int = 32) -> str:
    """"0:00-0:10 A (intro-like), 0:10-0:30 B, ..." from the mir stage's sections."""
    parts = []
    for sec in sections[:max_sections]:
        name = f" ({sec['name']}-like)" if sec.get("name") else ""
        parts.append(f"{clock(sec['start'])}-{clock(sec['end'])} {sec['label']}{name}")
    more = " ..." if len(sections) > max_sections else ""
    return ", ".join(parts) + more


def structure_items(sections: list[dict[str, Any]]) -> list[str]:
    """The measured form as metadata.structure: each section's name, or "section A" without one."""
    return [sec.get("name") or f"section {sec['label']}" for sec in sections]


INSTRUMENTAL = "instrumental (no vocals)"  # metadata.vocal_character of a song with no voice


def vocal_facts(lyrics: dict[str, Any] | None, lines: list[str]) -> list[str]:
    """What is known about the voice: where it is, its language, why no words; or that nobody listened."""
    if not lyrics:
        return ["Vocals: not analysed (nothing says whether there is a voice): do not claim vocals or their "
                "absence unless the window descriptions mention them"]
    facts = []
    regions = lyrics.get("vocal_regions") or []
    if is_instrumental(lyrics, lines):
        return ["Vocals: none, an instrumental. Say so, and name the instrument that carries the melody"]
    if regions:
        shown = ", ".join(f"{clock(r['start'])}-{clock(r['end'])}" for r in regions[:16])
        facts.append(f"Vocals: voice heard at {shown}" + (" ..." if len(regions) > 16 else ""))
    outcome = lyrics.get("outcome")
    if outcome == "language_unsupported":
        facts.append(f"Lyrics: sung in {lyrics.get('language') or 'a language'} that could not be transcribed: "
                     "no words are known; do not invent any")
    elif not lines:
        facts.append("Lyrics: no sung or spoken words could be made out")
    elif lyrics.get("language"):
        facts.append(f"Lyrics language: {lyrics['language']}")
    return facts


def is_instrumental(lyrics: dict[str, Any] | None, lines: list[str] | None = None) -> bool:
    """The lyrics stage heard no voice (a song it never analysed is not instrumental: unknown)."""
    if not lyrics:
        return False
    regions = lyrics.get("vocal_regions") or []
    return lyrics.get("has_vocals") is False or (not regions and not lines and "vocal_regions" in lyrics)


def lyrics_lines(lyrics: dict[str, Any], max_chars: int, notes: list[str]) -> list[str]:
    """Timed lines "[0:12.5] words ..." from word timestamps, else the plain text; at most max_chars."""
    words = lyrics.get("words") or []
    lines: list[str] = []
    if words:
        current: list[str] = []
        start = prev_end = None
        for w in words:
            gap = (w["start"] - prev_end) if prev_end is not None else 0.0
            if current and (gap > _LINE_GAP_S or len(current) >= _LINE_MAX_WORDS):
                lines.append(f"[{clock(start)}] {' '.join(current)}")
                current = []
            if not current:
                start = w["start"]
            current.append(str(w["word"]).strip())
            prev_end = w["end"]
        if current:
            lines.append(f"[{clock(start)}] {' '.join(current)}")
    elif (lyrics.get("text") or "").strip():
        lines = [line.strip() for line in lyrics["text"].splitlines() if line.strip()]
    kept, used = [], 0
    for line in lines:
        if used + len(line) > max_chars:
            notes.append(f"lyrics cut to {used} of {sum(map(len, lines))} characters")
            break
        kept.append(line)
        used += len(line)
    return kept


def caption_lines(caption: dict[str, Any], max_windows: int, notes: list[str]) -> list[str]:
    windows = caption.get("windows") or []
    shown = windows[:max_windows]
    if len(windows) > len(shown):
        notes.append(f"surface captions cut to the first {len(shown)} of {len(windows)} windows")
    return [f"[{clock(w['start'])}-{clock(w['end'])}] {w['text'].strip()}" for w in shown if w.get("text")]


def measured(row: dict[str, Any]) -> dict[str, Any] | None:
    """The facts the checks hold text against: the MIR row, plus what the lyrics stage heard
    (`has_vocals`, the vocal regions, the words' times) and the analysed duration; None when
    nothing was measured."""
    facts = dict(row.get("mir") or {})
    lyrics = row.get("lyrics")
    if lyrics and lyrics.get("has_vocals") is not None:
        facts["has_vocals"] = bool(lyrics["has_vocals"])
    if lyrics and lyrics.get("vocal_regions"):
        facts["vocal_regions"] = lyrics["vocal_regions"]
    if lyrics and lyrics.get("words"):
        facts["words"] = lyrics["words"]
    if not facts:
        return None
    if row.get("processed_s") is not None:
        facts["duration_s"] = float(row["processed_s"])
    return facts


def song_inputs(row: dict[str, Any], *, max_lyrics_chars: int, max_caption_windows: int,
                max_chord_changes: int, min_chord_s: float = 0.0, key_hedge_below: float | None = None) -> SongInputs:
    """The prompt's facts and data for one song. Never the file name or path: a name like "Artist - Title
    (1987).mp3" would become artist, title and year in the text."""
    notes: list[str] = []
    present = [name for name in ("caption", "mir", "lyrics") if row.get(name)]
    facts = []
    if row.get("processed_s") is not None:
        cut = " (the rest of the file is not analysed)" if row.get("truncated") else ""
        facts.append(f"Duration analysed: {clock(row['processed_s'])} (m:ss){cut}")
    mir = row.get("mir") or {}
    if mir:
        facts += mir_facts(mir, max_chord_changes, notes, min_chord_s=min_chord_s, key_hedge_below=key_hedge_below)
    untrusted: dict[str, Any] = {}
    if row.get("caption"):
        untrusted["window_descriptions"] = caption_lines(row["caption"], max_caption_windows, notes)
    lyrics = row.get("lyrics")
    lines = lyrics_lines(lyrics, max_lyrics_chars, notes) if lyrics and lyrics.get("has_vocals", True) else []
    if lyrics:
        untrusted["lyrics"] = lines
    facts += vocal_facts(lyrics, lines)
    return SongInputs(facts=facts, untrusted=untrusted, present=present, notes=notes)


@dataclass(frozen=True)
class SkillPlan:
    """What one song is asked for one skill: the skill's brief (a fallback where the song lacks what the
    skill asks about) and how many questions."""

    skill: str  # the QA skill the items are stored under
    brief: str  # the prompt's description to use: the skill, or "<skill>.instrumental" / "<skill>.single"
    n_open: int
    n_choice: int


SKILL_NAMES = ("temporal", "attribute", "harmony_theory", "lyric_vocal", "comparative_structural")


def skill_plan(row: dict[str, Any], n_open: int, n_choice: int, fallback_open: int,
               fallback_choice: int) -> list[SkillPlan]:
    """Per-song item counts: an instrumental gets a few questions on its melody instead of lyrics and
    vocals; a song of one section (one letter in its measured form) a few on how it develops instead of
    comparing sections."""
    fallback = (min(n_open, fallback_open), min(n_choice, fallback_choice))
    labels = {sec.get("label") for sec in (row.get("mir") or {}).get("sections") or []}
    out = []
    for skill in SKILL_NAMES:
        brief, counts = skill, (n_open, n_choice)
        if skill == "lyric_vocal" and is_instrumental(row.get("lyrics")):
            brief, counts = f"{skill}.instrumental", fallback
        elif skill == "comparative_structural" and len(labels) == 1:
            brief, counts = f"{skill}.single", fallback
        if counts[0] or counts[1]:
            out.append(SkillPlan(skill, brief, *counts))
    return out
