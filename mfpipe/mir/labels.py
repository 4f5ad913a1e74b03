"""Pitch-class and chord-label helpers, the one place mfpipe reads note and chord names.

The MIR stage writes keys with the spelling of `schemas.mir.PITCH_CLASSES`; tools
and people spell them other ways (A#, Db, Gb, "F sharp", "E-flat"). Chord labels
from Chordino carry extensions, inversions and slash basses ("Fmaj7", "C/E",
"Am7b5"); every comparison of chords (the MIR tests, the consistency checks of
captions, the quality filter, MF-Think's step checks) is done on the root and
the third, the usual major/minor reduction of chord-recognition evaluation:
a diminished chord counts as minor, augmented and suspended ones as major. That
is the lenient reading on purpose: Chordino itself often tells B minor from B
diminished only by a faint fifth, and the checks flag only clear contradictions.
"""

from __future__ import annotations

import re

from ..schemas.mir import PITCH_CLASSES

_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ROOT = re.compile(r"^([A-G])([#b♯♭]*)")
_WORD_ACCIDENTAL = re.compile(r"^([A-Ga-g])[- ]?(sharp|flat)\b", re.I)
# Qualities whose third is minor; every other chord Chordino names has a major third
# (or, for sus chords, none: they count as major, like most evaluations do).
_MINOR_QUALITIES = ("m", "min", "dim", "m7b5", "hdim")


def pitch_class(name: str) -> int | None:
    """`"Eb"`, `"D#"`, `"e♭"`, `"E-flat"`, `"D sharp"` → 3; None for anything that is not a note name."""
    name = name.strip()
    word = _WORD_ACCIDENTAL.match(name)
    if word:
        name = word.group(1) + ("#" if word.group(2).lower() == "sharp" else "b")
    match = _ROOT.match(name[:1].upper() + name[1:])
    if not match:
        return None
    letter, accidentals = match.groups()
    shift = accidentals.count("#") + accidentals.count("♯") - accidentals.count("b") - accidentals.count("♭")
    return (_NATURAL[letter] + shift) % 12


def spell_key(name: str) -> str | None:
    """A tonic in the project's one spelling per pitch class (C C# D Eb E F F# G Ab A Bb B)."""
    pc = pitch_class(name)
    return None if pc is None else PITCH_CLASSES[pc]


def chord_triad(label: str) -> tuple[int, str] | None:
    """A chord label → (root pitch class, "maj" | "min"); None for no chord ("N", "X", "")."""
    label = label.strip()
    if not label or label in ("N", "X"):
        return None
    label = label.split("/", 1)[0]  # the bass note of an inversion does not change the triad
    match = _ROOT.match(label)
    if not match:
        return None
    root = pitch_class(match.group(0))
    quality = label[match.end():]
    is_minor = quality.startswith(_MINOR_QUALITIES) and not quality.startswith("maj")
    return (root, "min" if is_minor else "maj") if root is not None else None


def triad_name(triad: tuple[int, str] | None) -> str:
    """(9, "min") → "Am"; None → "N"."""
    if triad is None:
        return "N"
    root, quality = triad
    return PITCH_CLASSES[root] + ("m" if quality == "min" else "")
