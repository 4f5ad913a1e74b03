"""Songs with a known FORM (sections and which of them repeat), for the song-form tests and benchmark.

Built on the numpy instruments of `tests/support/render_mir.py`: a form is a list of
sections; each section type (a `Part`: label, name, chord progression, bar
count, `Texture`) is rendered ONCE and pasted wherever it occurs, so repeats are
sample-identical. Parts differ in chords and in arrangement: drum pattern,
chord instrument (strummed, pad, arpeggio), melody rhythm and register, bass,
brightness and level, as sections of real songs do. The truth is the section
spans in seconds with their labels and names, and the beat/downbeat grid.
Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfpipe.mir.labels import pitch_class
from support import render_mir as synth
from support.render_mir import RATE, SongSpec, Timing

TAIL_S = 1.0  # ring-out after the last bar (as in synth.SongSpec)


@dataclass(frozen=True)
class Texture:
    """How one section type is arranged."""

    drums: str = "full"  # full | light (hats + soft kick) | drive (eighth kicks) | none
    comp: str = "strum"  # strum (every beat) | pad (one long chord a bar) | arp | none
    melody: str = "beat"  # beat (one note a beat) | eighths | long (one note a bar) | none
    melody_octave: int = 5
    bass: bool = True
    partials: int = 5  # of the chord instrument: its brightness
    gain: float = 1.0


@dataclass(frozen=True)
class Part:
    """A section type: every occurrence of `label` sounds the same."""

    label: str
    name: str | None  # intro | verse | chorus | bridge | outro | None (through-composed parts)
    progression: tuple[str, ...]  # one chord a bar, repeated to fill `bars`
    bars: int
    texture: Texture = field(default_factory=Texture)


@dataclass
class FormSpec(Timing):
    name: str
    bpm: float
    meter: int
    key: str
    mode: str
    parts: list[Part]
    order: list[str]  # labels of the sections, in time order
    seed: int = 0

    def part(self, label: str) -> Part:
        return next(p for p in self.parts if p.label == label)

    @property
    def bars(self) -> int:
        return sum(self.part(label).bars for label in self.order)

    @property
    def duration_s(self) -> float:
        return self.bars * self.bar_s + TAIL_S

    def sections(self) -> list[dict[str, Any]]:
        """The truth: {start, end, label, name} per section; the last one ends with the audio."""
        out, bar = [], 0
        for label in self.order:
            part = self.part(label)
            out.append({"start": bar * self.bar_s, "end": (bar + part.bars) * self.bar_s,
                        "label": label, "name": part.name})
            bar += part.bars
        if out:
            out[-1]["end"] = self.duration_s
        return out

    def beats(self) -> np.ndarray:
        return np.arange(self.bars * self.meter) * self.beat_s

    def downbeats(self) -> np.ndarray:
        return np.arange(self.bars) * self.bar_s

    def intervals_labels(self) -> tuple[np.ndarray, list[str]]:
        """The truth in mir_eval's shape."""
        sections = self.sections()
        return (np.array([[s["start"], s["end"]] for s in sections]), [s["label"] for s in sections])


def render_part(spec: FormSpec, part: Part, rate: int = RATE) -> np.ndarray:
    """One section type, unnormalised, with `TAIL_S` of ring-out (float64)."""
    index = [p.label for p in spec.parts].index(part.label)
    song = SongSpec(spec.bpm, spec.meter, spec.key, spec.mode, list(part.progression), bars=part.bars,
                    seed=spec.seed * 1000 + index, name=f"{spec.name}:{part.label}")
    rng = np.random.default_rng(song.seed)
    mix = synth._Mix(rate, round((part.bars * song.bar_s + TAIL_S) * rate))
    scale = synth._MAJOR if spec.mode == "major" else synth._HARMONIC_MINOR
    tonic = pitch_class(spec.key)
    if tonic is None:
        raise ValueError(f"unknown key {spec.key!r}")
    scale_pcs = [(tonic + s) % 12 for s in scale]
    tex = part.texture
    for bar in range(part.bars):
        t0 = bar * song.bar_s
        chord = synth._chord_pitches(song.chord_of_bar(bar))
        _drums(mix, song, t0, tex.drums, rng)
        if tex.bass:
            synth._bass(mix, song, t0, chord[0])
        _comp(mix, song, t0, chord, tex)
        _melody(mix, song, t0, chord, scale_pcs, tex, rng)
    return mix.buffer * tex.gain


def render_form(spec: FormSpec, rate: int = RATE) -> np.ndarray:
    """The whole song as float32 mono at `rate`, peak at -1 dBFS; repeats are identical copies."""
    total = round(spec.duration_s * rate)
    out = np.zeros(total + int(TAIL_S * rate) + 1, dtype=np.float64)
    rendered = {p.label: render_part(spec, p, rate) for p in spec.parts if p.label in spec.order}
    for section in spec.sections():
        audio = rendered[section["label"]]
        start = round(section["start"] * rate)
        end = min(len(out), start + len(audio))
        out[start:end] += audio[: end - start]  # the ring-out overlaps the next section
    out = out[:total]
    peak = float(np.abs(out).max()) if len(out) else 0.0
    return (out / max(peak, 1e-9) * 0.89).astype(np.float32)


# ------------------------------------------------------------------ arrangement variants


def _drums(mix, song: SongSpec, t0: float, style: str, rng: np.random.Generator) -> None:
    beat = song.beat_s
    if style == "none":
        return
    if style == "full":
        synth._drums(mix, song, t0, rng)
        return
    if style == "light":
        mix.add(t0, synth._kick(mix.rate, 0.45))
        for b in range(song.meter):
            mix.add(t0 + b * beat, synth._hat(mix.rate, 0.12, rng))
        return
    if style == "drive":
        for b in range(song.meter):
            mix.add(t0 + b * beat, synth._kick(mix.rate, 1.0 if b == 0 else 0.7))
            if b % 2 == 1 or song.meter == 3 and b:
                mix.add(t0 + b * beat, synth._snare(mix.rate, 0.7, rng))
            for q in (0.0, 0.25, 0.5, 0.75):
                mix.add(t0 + (b + q) * beat, synth._hat(mix.rate, 0.14 if q else 0.2, rng))
            mix.add(t0 + (b + 0.5) * beat, synth._kick(mix.rate, 0.35))
        return
    raise ValueError(f"unknown drum style {style!r}")


def _voicing(chord: list[int], octave: int) -> list[int]:
    root = synth._midi(chord[0], octave)
    return [synth._midi(pc, octave) if synth._midi(pc, octave) >= root else synth._midi(pc, octave + 1)
            for pc in chord]


def _comp(mix, song: SongSpec, t0: float, chord: list[int], tex: Texture) -> None:
    beat = song.beat_s
    if tex.comp == "none":
        return
    if tex.comp == "strum" and tex.partials == 5:
        synth._comp(mix, song, t0, chord)
        return
    voicing = _voicing(chord, 4)
    if tex.comp == "strum":
        for b in range(song.meter):
            for note in voicing:
                mix.add(t0 + b * beat, synth._tone(note, 0.95 * beat, partials=tex.partials, tilt=1.5,
                                                   decay=0.5, rate=mix.rate, level=0.16 if b == 0 else 0.10))
    elif tex.comp == "pad":
        for note in voicing + [voicing[0] - 12]:
            mix.add(t0, synth._tone(note, 0.98 * song.bar_s, partials=tex.partials, tilt=1.1, decay=4.0,
                                    rate=mix.rate, level=0.10))
    elif tex.comp == "arp":
        steps = song.meter * 2
        notes = voicing + [voicing[0] + 12]
        for i in range(steps):
            mix.add(t0 + i * beat / 2, synth._tone(notes[i % len(notes)], 0.5 * beat, partials=tex.partials,
                                                   tilt=1.3, decay=0.3, rate=mix.rate, level=0.13))
    else:
        raise ValueError(f"unknown comp style {tex.comp!r}")


def _melody(mix, song: SongSpec, t0: float, chord: list[int], scale: list[int], tex: Texture,
            rng: np.random.Generator) -> None:
    beat = song.beat_s
    if tex.melody == "none":
        return
    if tex.melody == "long":
        pc = chord[int(rng.integers(len(chord)))]
        mix.add(t0, synth._tone(synth._midi(pc, tex.melody_octave), 0.95 * song.bar_s, partials=4, tilt=1.6,
                                decay=1.5, rate=mix.rate, level=0.14))
        return
    per_beat = 2 if tex.melody == "eighths" else 1
    for i in range(song.meter * per_beat):
        pool = chord if i == 0 else scale
        pc = pool[int(rng.integers(len(pool)))]
        mix.add(t0 + i * beat / per_beat, synth._tone(synth._midi(pc, tex.melody_octave), 0.9 * beat / per_beat,
                                                      partials=3, tilt=2.0, decay=0.4, rate=mix.rate, level=0.12))


# ------------------------------------------------------------------ the forms

_SOFT = Texture(drums="none", comp="pad", melody="long", bass=False, partials=3, gain=0.6)
_VERSE = Texture(drums="light", comp="strum", melody="beat", partials=4, gain=0.8)
_CHORUS = Texture(drums="full", comp="pad", melody="eighths", melody_octave=5, partials=7, gain=1.0)
_BRIDGE = Texture(drums="light", comp="arp", melody="long", melody_octave=4, partials=4, gain=0.75)
_DRIVE = Texture(drums="drive", comp="strum", melody="eighths", melody_octave=6, partials=6, gain=1.0)


def pop_form(seed: int = 1) -> FormSpec:
    """Intro, verse, chorus, verse, chorus, bridge, chorus, outro: the pop verse-chorus form."""
    parts = [
        Part("A", "intro", ("C", "F", "C", "G"), 4, _SOFT),
        Part("B", "verse", ("Am", "F", "C", "G"), 8, _VERSE),
        Part("C", "chorus", ("F", "G", "C", "Am"), 8, _CHORUS),
        Part("D", "bridge", ("Dm", "Em", "F", "G7"), 8, _BRIDGE),
        Part("E", "outro", ("F", "C"), 4, Texture(drums="none", comp="strum", melody="none", partials=3, gain=0.6)),
    ]
    return FormSpec("pop_c_120", 120, 4, "C", "major", parts, list("ABCBCDCE"), seed=seed)


def rock_form(seed: int = 3) -> FormSpec:
    """A slower verse-chorus song with 16-bar verses, a double chorus and a solo."""
    parts = [
        Part("A", "intro", ("G", "D", "Em", "C"), 4, Texture(drums="none", comp="arp", melody="none", partials=4,
                                                            gain=0.6)),
        Part("B", "verse", ("G", "C", "G", "D"), 16, _VERSE),
        Part("C", "chorus", ("C", "D", "Em", "C", "G", "D", "C", "D"), 8, _DRIVE),
        Part("D", "bridge", ("Em", "Bm", "C", "D7"), 8, _BRIDGE),
        Part("E", "outro", ("G", "C", "G"), 6, _SOFT),
    ]
    return FormSpec("rock_g_84", 84, 4, "G", "major", parts, list("ABCBCDCCE"), seed=seed)


def aaba_form(seed: int = 2) -> FormSpec:
    """The 32-bar AABA song form (in 3/4), then the bridge and last A again."""
    parts = [
        Part("A", "verse", ("Am", "Dm", "E7", "Am", "F", "Dm", "E7", "Am"), 8, _VERSE),
        Part("B", "bridge", ("Dm", "Am", "Dm", "E7"), 8, _BRIDGE),
    ]
    return FormSpec("aaba_a_minor_waltz_96", 96, 3, "A", "minor", parts, list("AABABA"), seed=seed)


def through_composed_form(seed: int = 4) -> FormSpec:
    """Six different sections, none repeated."""
    parts = [
        Part("A", None, ("Dm", "A7"), 8, _SOFT),
        Part("B", None, ("Dm", "Gm", "A7", "Dm"), 8, _VERSE),
        Part("C", None, ("Bb", "F", "Gm", "A7"), 8, _CHORUS),
        Part("D", None, ("Gm", "Dm", "Eb", "A7"), 8, _BRIDGE),
        Part("E", None, ("F", "C", "Dm", "Bb"), 8, _DRIVE),
        Part("F", None, ("Dm", "Gm", "Dm", "A7"), 8, Texture(drums="light", comp="arp", melody="eighths",
                                                             melody_octave=6, partials=6, gain=0.8)),
    ]
    return FormSpec("through_composed_d_minor_138", 138, 4, "D", "minor", parts, list("ABCDEF"), seed=seed)


def minor_pop_form(seed: int = 6) -> FormSpec:
    """Verse-chorus in F# minor with a pre-chorus-less structure and a long outro."""
    parts = [
        Part("A", "intro", ("F#m", "D", "A", "E"), 4, Texture(drums="light", comp="pad", melody="none",
                                                              partials=3, gain=0.7)),
        Part("B", "verse", ("F#m", "Bm", "C#7", "F#m"), 8, _VERSE),
        Part("C", "chorus", ("D", "A", "E", "F#m"), 8, _CHORUS),
        Part("D", "bridge", ("Bm", "D", "E", "C#7"), 8, Texture(drums="none", comp="arp", melody="long",
                                                                partials=5, gain=0.7)),
        Part("E", "outro", ("F#m", "D", "A", "E"), 8, _SOFT),
    ]
    return FormSpec("minor_pop_f_sharp_104", 104, 4, "F#", "minor", parts, list("ABCBCDCE"), seed=seed)


def long_form(minutes: float = 20.0, seed: int = 7) -> FormSpec:
    """A 20-minute jam: verse-chorus cycles with bridges, to bound time and memory."""
    parts = [
        Part("A", "intro", ("E", "A", "E", "B"), 8, _SOFT),
        Part("B", "verse", ("E", "C#m", "A", "B"), 16, _VERSE),
        Part("C", "chorus", ("A", "B", "E", "C#m"), 16, _CHORUS),
        Part("D", "bridge", ("F#m", "A", "C#m", "B7"), 8, _BRIDGE),
        Part("E", "outro", ("E", "A"), 8, _SOFT),
    ]
    spec = FormSpec("long_e_major_128", 128, 4, "E", "major", parts, ["A"], seed=seed)
    cycle = ["B", "C", "B", "C", "D", "C"]
    target_bars = int(minutes * 60.0 / spec.bar_s)
    while spec.bars + 8 < target_bars:
        for label in cycle:
            if spec.bars + spec.part(label).bars + 8 > target_bars:
                break
            spec.order.append(label)
        else:
            continue
        break
    spec.order.append("E")
    return spec


def short_form(seconds: float = 20.0, seed: int = 8) -> FormSpec:
    """A fragment: about `seconds` of verse then chorus (or only a verse when it is very short)."""
    bar_s = 4 * 60.0 / 120
    bars = max(1, int((seconds - TAIL_S) / bar_s))
    first = max(1, bars // 2) if bars >= 4 else bars
    parts = [Part("A", "verse", ("Am", "F", "C", "G"), first, _VERSE)]
    order = ["A"]
    if bars - first > 0:
        parts.append(Part("B", "chorus", ("F", "G", "C", "Am"), bars - first, _CHORUS))
        order.append("B")
    return FormSpec(f"short_{int(seconds)}s", 120, 4, "A", "minor", parts, order, seed=seed)


def ballad_form(seed: int = 9) -> FormSpec:
    """A slow ballad (bars of 3.3 s: a boundary one bar off misses the 3 s window) whose verse and
    chorus share one arrangement: only chords and melody tell them apart."""
    same = Texture(drums="light", comp="strum", melody="beat", partials=5, gain=0.9)
    parts = [
        Part("A", "verse", ("D", "Bm", "G", "A"), 8, same),
        Part("B", "chorus", ("G", "A", "F#m", "Bm", "G", "A", "D", "D"), 8, same),
        Part("C", "bridge", ("Em", "F#m", "G", "A7"), 4, _BRIDGE),
    ]
    return FormSpec("ballad_d_72", 72, 4, "D", "major", parts, list("ABABCB"), seed=seed)


def variant(make, *, seed: int, bpm: float | None = None) -> FormSpec:
    """The same form with other random draws (melody, drum noise) and, optionally, another tempo."""
    spec = make(seed=seed)
    spec.name = f"{spec.name}_s{seed}" + (f"_{bpm:g}bpm" if bpm else "")
    if bpm:
        spec.bpm = bpm
    return spec


# The renders the method was tuned on ...
FORMS = [pop_form, rock_form, aaba_form, through_composed_form, minor_pop_form]
# ... and renders it was not tuned on (other draws and tempi, a ballad whose sections share a sound).
HELD_OUT = [
    lambda: variant(pop_form, seed=21, bpm=100),
    lambda: variant(aaba_form, seed=22, bpm=132),
    lambda: variant(through_composed_form, seed=23, bpm=90),
    ballad_form,
]
