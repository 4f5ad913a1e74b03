"""What an LLM is told about one song, from the upstream rows (ingest, mir, caption, lyrics).

Two kinds of input, kept apart on purpose:
- measured facts (`facts`): numbers from the MIR tools, written by us; the
  prompt tells the model to respect them;
- untrusted data (`untrusted`): the file name, the lyrics transcript and the
  surface captions. They carry free text from outside (a song can sing
  "ignore your instructions"), so they reach the prompt only as JSON strings
  in a block the instructions call data, never as instructions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
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


def mir_facts(mir: dict[str, Any], max_changes: int, notes: list[str]) -> list[str]:
    facts = []
    if mir.get("bpm"):
        facts.append(f"Tempo: {mir['bpm']:.1f} BPM")
    if mir.get("meter"):
        facts.append(f"Meter: {mir['meter']} beats per bar ({meter_text(mir['meter'])})")
    if mir.get("key"):
        strength = f" (key strength {mir['key_strength']:.2f})" if mir.get("key_strength") is not None else ""
        facts.append(f"Key: {mir['key']} {mir.get('mode') or ''}".rstrip() + strength)
    changes = chord_changes(mir.get("chords") or [])
    if changes:
        vocabulary = list(dict.fromkeys(label for _, label in changes))
        facts.append(f"Chords heard (the only chord names to use): {', '.join(vocabulary)}")
        shown = changes[:max_changes]
        facts.append("Chord changes: " + ", ".join(f"{clock(t)} {label}" for t, label in shown)
                     + (" ..." if len(changes) > len(shown) else ""))
        if len(changes) > len(shown):
            notes.append(f"chord timeline cut to the first {len(shown)} of {len(changes)} changes")
    if mir.get("loudness_lufs") is not None:
        facts.append(f"Integrated loudness: {mir['loudness_lufs']:.1f} LUFS")
    form = form_text(mir.get("sections") or [])
    if form:
        facts.append("Form (measured sections; the same letter is the same music repeated; names are guesses): "
                     + form)
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


def vocal_facts(lyrics: dict[str, Any], lines: list[str]) -> list[str]:
    """What the lyrics stage measured about the voice: where it is, its language, why no words."""
    facts = []
    regions = lyrics.get("vocal_regions") or []
    if lyrics.get("has_vocals") is False or (not regions and not lines and "vocal_regions" in lyrics):
        return ["Vocals: none detected (voice-activity detector): an instrumental. Say so, and name the "
                "instrument that carries the melody"]
    if regions:
        shown = ", ".join(f"{clock(r['start'])}-{clock(r['end'])}" for r in regions[:16])
        facts.append(f"Vocals: voice heard at {shown}" + (" ..." if len(regions) > 16 else ""))
    outcome = lyrics.get("outcome")
    if outcome == "language_unsupported":
        facts.append(f"Lyrics: sung in {lyrics.get('language') or 'a language'} the recogniser does not cover: "
                     "no words are known; do not invent any")
    elif not lines:
        facts.append("Vocals: the speech recogniser found no sung or spoken words")
    elif lyrics.get("language"):
        facts.append(f"Lyrics language: {lyrics['language']}")
    return facts


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
    """The facts the consistency checks hold text against: the MIR row, plus whether a voice was
    heard (the lyrics stage's voice detector); None when neither was measured."""
    facts = dict(row.get("mir") or {})
    lyrics = row.get("lyrics")
    if lyrics and lyrics.get("has_vocals") is not None:
        facts["has_vocals"] = bool(lyrics["has_vocals"])
    return facts or None


def song_inputs(row: dict[str, Any], *, max_lyrics_chars: int, max_caption_windows: int,
                max_chord_changes: int) -> SongInputs:
    notes: list[str] = []
    present = [name for name in ("caption", "mir", "lyrics") if row.get(name)]
    facts = []
    if row.get("processed_s") is not None:
        cut = " (the rest of the file is not analysed)" if row.get("truncated") else ""
        facts.append(f"Duration analysed: {clock(row['processed_s'])} (m:ss){cut}")
    mir = row.get("mir") or {}
    facts += mir_facts(mir, max_chord_changes, notes) if mir else []
    untrusted: dict[str, Any] = {"file_name": PurePosixPath(str(row.get("source") or "")).name}
    if row.get("caption"):
        untrusted["window_descriptions"] = caption_lines(row["caption"], max_caption_windows, notes)
    lyrics = row.get("lyrics")
    if lyrics:
        lines = lyrics_lines(lyrics, max_lyrics_chars, notes) if lyrics.get("has_vocals", True) else []
        untrusted["lyrics"] = lines
        facts += vocal_facts(lyrics, lines)
    return SongInputs(facts=facts, untrusted=untrusted, present=present, notes=notes)
