"""Songs with known truth, synthesized with numpy: the ground truth for MIR tests and benchmarks.

A song is drums with an accented downbeat, a bass on the chord roots, a
chord instrument and a melody drawn from the key's scale (harmonic minor in
minor keys, so the leading tone is there and the key does not read as the
relative major). Tempo, meter, key, mode and the chord of every bar are known
exactly. No soundfont, no Debian package: just numpy, deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfpipe.mir.labels import chord_triad, pitch_class

RATE = 44100
_INTERVALS = {"": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10)}
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


class Timing:
    """Beat and bar lengths from `bpm` and `meter` (for the song specs here and in form_synth)."""

    bpm: float
    meter: int

    @property
    def beat_s(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_s(self) -> float:
        return self.meter * self.beat_s


@dataclass
class SongSpec(Timing):
    bpm: float
    meter: int
    key: str  # tonic, e.g. "A"
    mode: str  # "major" | "minor"
    progression: list[str]  # one chord per bar, repeated to fill `bars`
    bars: int = 16
    seed: int = 0
    name: str = ""

    @property
    def duration_s(self) -> float:
        return self.bars * self.bar_s + 1.0  # one second of tail after the last bar

    def chord_of_bar(self, bar: int) -> str:
        return self.progression[bar % len(self.progression)]

    def truth(self) -> dict[str, Any]:
        """The facts the song was written with, in the shape of examples/truth.json."""
        return {
            "name": self.name, "bpm": self.bpm, "meter": self.meter, "key": self.key, "mode": self.mode,
            "chords": list(self.progression), "bars": self.bars, "duration_s": round(self.duration_s, 3),
            "chord_timeline": [{"start": round(b * self.bar_s, 3), "end": round((b + 1) * self.bar_s, 3),
                                "label": self.chord_of_bar(b)} for b in range(self.bars)],
        }


def _chord_pitches(label: str) -> list[int]:
    """A chord label → its pitch classes, root first."""
    root_pc = pitch_class(label)
    if root_pc is None or chord_triad(label) is None:
        raise ValueError(f"cannot voice chord {label!r}")
    root_len = 2 if len(label) > 1 and label[1] in "#b" else 1
    quality = label[root_len:]
    if quality not in _INTERVALS:
        raise ValueError(f"unknown chord quality in {label!r}")
    return [(root_pc + i) % 12 for i in _INTERVALS[quality]]


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _midi(pc: int, octave: int) -> int:
    return 12 * (octave + 1) + pc


@dataclass
class _Mix:
    rate: int
    samples: int
    buffer: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.buffer = np.zeros(self.samples, dtype=np.float64)

    def add(self, start_s: float, sound: np.ndarray) -> None:
        start = int(round(start_s * self.rate))
        end = min(self.samples, start + len(sound))
        if end > start:
            self.buffer[start:end] += sound[: end - start]


def _tone(midi: float, seconds: float, *, partials: int, tilt: float, decay: float, rate: int,
          level: float) -> np.ndarray:
    """A plucked/struck harmonic tone: partials falling off by `tilt`, exponential decay."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = _hz(midi)
    wave = np.zeros_like(t)
    for k in range(1, partials + 1):
        if k * f0 < rate / 2 - 1000:
            wave += np.sin(2 * np.pi * k * f0 * t) / k ** tilt
    envelope = np.exp(-t / decay) * np.minimum(1.0, t / 0.005)
    release = np.minimum(1.0, (t[-1] - t) / 0.03) if len(t) else t  # no click at the note's end
    return level * wave * envelope * release


def _kick(rate: int, level: float) -> np.ndarray:
    t = np.arange(int(0.35 * rate)) / rate
    freq = 45 + 110 * np.exp(-t / 0.03)  # pitch drop: the "thump"
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return level * np.sin(phase) * np.exp(-t / 0.12)


def _snare(rate: int, level: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.2 * rate)) / rate
    noise = np.diff(rng.standard_normal(len(t) + 1))  # brighter than white
    body = np.sin(2 * np.pi * 190 * t)
    return level * (0.6 * noise * np.exp(-t / 0.05) + 0.5 * body * np.exp(-t / 0.04))


def _hat(rate: int, level: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.06 * rate)) / rate
    noise = np.diff(rng.standard_normal(len(t) + 2), n=2)  # high-passed
    return level * noise * np.exp(-t / 0.015)


def render(spec: SongSpec, rate: int = RATE) -> np.ndarray:
    """The song as float32 mono at `rate`, peak at -1 dBFS."""
    rng = np.random.default_rng(spec.seed)
    mix = _Mix(rate, int(spec.duration_s * rate))
    scale = _MAJOR if spec.mode == "major" else _HARMONIC_MINOR
    tonic = pitch_class(spec.key)
    if tonic is None:
        raise ValueError(f"unknown key {spec.key!r}")
    for bar in range(spec.bars):
        t0 = bar * spec.bar_s
        chord = _chord_pitches(spec.chord_of_bar(bar))
        _drums(mix, spec, t0, rng)
        _bass(mix, spec, t0, chord[0])
        _comp(mix, spec, t0, chord)
        _melody(mix, spec, t0, chord, [(tonic + s) % 12 for s in scale], rng)
    out = mix.buffer / max(1e-9, float(np.abs(mix.buffer).max())) * 0.89
    return out.astype(np.float32)


def _drums(mix: _Mix, spec: SongSpec, t0: float, rng: np.random.Generator) -> None:
    beat = spec.beat_s
    mix.add(t0, _kick(mix.rate, 1.0))  # the downbeat: the loudest hit of the bar
    if spec.meter == 3:
        for b in (1, 2):
            mix.add(t0 + b * beat, _snare(mix.rate, 0.25, rng))
    else:
        for b in range(1, spec.meter):
            if b % 2 == 0:
                mix.add(t0 + b * beat, _kick(mix.rate, 0.6))
            else:
                mix.add(t0 + b * beat, _snare(mix.rate, 0.55, rng))
    for b in range(spec.meter):
        for half in (0.0, 0.5):
            mix.add(t0 + (b + half) * beat, _hat(mix.rate, 0.10 if half else 0.16, rng))


def _bass(mix: _Mix, spec: SongSpec, t0: float, root: int) -> None:
    beat = spec.beat_s
    note = _midi(root, 2)
    if note > 45:  # keep it low: A2 and below
        note -= 12
    # Root on the downbeat (long), and again half-way through 4/4 bars.
    hits = [(0, 1.8 if spec.meter == 4 else 0.9)] + ([(2, 1.8)] if spec.meter == 4 else [])
    for b, length in hits:
        mix.add(t0 + b * beat, _tone(note, length * beat, partials=6, tilt=1.2, decay=0.6,
                                     rate=mix.rate, level=0.55 if b == 0 else 0.45))


def _comp(mix: _Mix, spec: SongSpec, t0: float, chord: list[int]) -> None:
    """The chord instrument: a full strike on the downbeat, lighter ones after."""
    beat = spec.beat_s
    voicing = [_midi(pc, 4) if _midi(pc, 4) >= _midi(chord[0], 4) else _midi(pc, 5) for pc in chord]
    for b in range(spec.meter):
        level = 0.16 if b == 0 else 0.10
        for note in voicing:
            mix.add(t0 + b * beat, _tone(note, 0.95 * beat, partials=5, tilt=1.5, decay=0.5,
                                         rate=mix.rate, level=level))


def _melody(mix: _Mix, spec: SongSpec, t0: float, chord: list[int], scale: list[int],
            rng: np.random.Generator) -> None:
    """One note per beat: a chord tone on the downbeat, scale tones after (in minor keys the
    harmonic-minor scale, so the leading tone is heard as well as in the V7 chord)."""
    beat = spec.beat_s
    for b in range(spec.meter):
        pc = chord[int(rng.integers(len(chord)))] if b == 0 else scale[int(rng.integers(len(scale)))]
        mix.add(t0 + b * beat, _tone(_midi(pc, 5), 0.9 * beat, partials=3, tilt=2.0, decay=0.4,
                                     rate=mix.rate, level=0.12))


# Songs the tests and the benchmark use: several tempi, 3/4 and 4/4, major and minor keys.
TEST_SONGS = [
    SongSpec(120, 4, "C", "major", ["C", "G", "Am", "F"], seed=1, name="c_major_120"),
    SongSpec(96, 3, "A", "minor", ["Am", "Dm", "E7", "Am"], seed=2, name="a_minor_waltz_96"),
    SongSpec(84, 4, "G", "major", ["G", "Em", "C", "D"], seed=3, name="g_major_84"),
    SongSpec(138, 4, "D", "minor", ["Dm", "Gm", "A7", "Dm"], seed=4, name="d_minor_138"),
    SongSpec(144, 3, "Bb", "major", ["Bb", "Eb", "F7", "Bb"], seed=5, name="bb_major_waltz_144"),
    SongSpec(104, 4, "F#", "minor", ["F#m", "Bm", "C#7", "F#m"], seed=6, name="f_sharp_minor_104"),
]
