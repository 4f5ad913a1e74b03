"""Render the bundled example songs (FluidSynth + a General MIDI soundfont + espeak-ng).

The songs are committed; this script is the recipe, with the facts each song
was written with (tempo, meter, key, chords per bar, lyrics) saved to
`truth.json` so tests and curators can check what the pipeline says.

    apt-get install fluidsynth fluid-soundfont-gm espeak-ng
    .venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
RATE = 44100
NOTE = {"C": 0, "C#": 1, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}
QUALITY = {"": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10)}


@dataclass
class Song:
    file: str
    title: str
    bpm: float
    meter: int
    key: str
    mode: str
    chords: list[str]  # one per bar, repeated to fill `bars`
    bars: int
    programs: dict[str, int]  # role -> General MIDI program
    style: str
    lyrics: str | None = None
    lyrics_bar: int = 4
    genre: str = ""
    instruments: list[str] = field(default_factory=list)
    sample_rate: int = RATE  # the file's rate (the render is always at RATE)


SONGS = [
    Song("harbor_lights.mp3", "Harbor Lights", 120, 4, "C", "major", ["C", "G", "Am", "F"], 28,
         {"chords": 0, "bass": 33, "lead": 73}, "pop",
         lyrics="Harbor lights are shining. Carry me back home tonight. "
                "The river knows my name, and the morning brings me home.",
         genre="pop", instruments=["drums", "electric bass", "piano", "flute", "spoken vocal"]),
    Song("anna_waltz.flac", "Waltz for Anna", 90, 3, "A", "minor", ["Am", "Dm", "E7", "Am"], 24,
         {"chords": 0, "bass": 42, "lead": 40}, "waltz",
         genre="classical waltz", instruments=["piano", "cello", "violin", "light percussion"]),
    Song("night_drive.ogg", "Night Drive", 128, 4, "E", "minor", ["Em", "Am", "B7", "Em"], 24,
         {"chords": 4, "bass": 38, "lead": 81}, "electro",
         genre="synth-pop", instruments=["drums", "synth bass", "electric piano", "synth lead"]),
    Song("slow_tide.flac", "Slow Tide", 76, 4, "F", "major", ["F", "Dm", "Bb", "C"], 24,
         {"chords": 24, "bass": 32, "lead": 48}, "ballad",
         genre="acoustic ballad", instruments=["nylon guitar", "acoustic bass", "strings", "soft drums"],
         sample_rate=22050),
]


def chord_pitches(name: str, octave: int) -> list[int]:
    root = name[:2] if len(name) > 1 and name[1] in "#b" else name[:1]
    quality = name[len(root):]
    base = 12 * (octave + 1) + NOTE[root]
    return [base + i for i in QUALITY[quality]]


def scale(key: str, mode: str) -> list[int]:
    steps = (0, 2, 4, 5, 7, 9, 11) if mode == "major" else (0, 2, 3, 5, 7, 8, 11)  # harmonic minor
    return [NOTE[key] + s for s in steps]


def build_midi(song: Song) -> mido.MidiFile:
    tpb = 480
    mid = mido.MidiFile(ticks_per_beat=tpb)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.bpm)))
    meta.append(mido.MetaMessage("time_signature", numerator=song.meter, denominator=4))
    mid.tracks.append(meta)
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)

    def note(ch: int, pitch: int, start: float, length: float, vel: int) -> None:
        on, off = int(start * tpb), int((start + length) * tpb)
        events.append((on, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
        events.append((off, 0, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))

    for ch, role in enumerate(("chords", "bass", "lead")):
        events.append((0, -1, mido.Message("program_change", channel=ch, program=song.programs[role])))
    notes = scale(song.key, song.mode)
    rng = np.random.default_rng(len(song.title))
    for bar in range(song.bars):
        chord = song.chords[bar % len(song.chords)]
        t0 = bar * song.meter
        tones = chord_pitches(chord, 4)
        root = chord_pitches(chord, 2)[0]
        final = bar == song.bars - 1
        if song.style == "waltz":
            note(1, root, t0, 1.0, 100)  # oom
            for beat in (1, 2):  # pah pah
                for p in tones:
                    note(0, p, t0 + beat, 0.8, 62)
        else:
            for p in tones:
                note(0, p, t0, song.meter - 0.1, 70 if song.style != "electro" else 60)
            for beat in range(song.meter):
                pitch = root if beat % 2 == 0 else root + 7
                note(1, pitch, t0 + beat, 0.9, 100 if beat == 0 else 85)
        if final:
            continue
        # Lead: chord tones on strong beats, scale steps between; rests now and then.
        for beat in range(song.meter):
            if rng.random() < 0.2:
                continue
            if beat == 0:
                pitch = tones[rng.integers(len(tones))] + 12
            else:
                degree = notes[rng.integers(len(notes))]
                pitch = 72 + degree
            note(2, pitch, t0 + beat, 0.9, 80)
        # Drums (channel 9): a downbeat-heavy pattern per style.
        if song.style == "waltz":
            note(9, 36, t0, 0.2, 90)
            note(9, 42, t0 + 1, 0.2, 45)
            note(9, 42, t0 + 2, 0.2, 45)
        else:
            for beat in range(song.meter):
                note(9, 36 if beat % 2 == 0 else 38, t0 + beat, 0.2, 110 if beat == 0 else 90)
                for half in (0.0, 0.5):
                    note(9, 42, t0 + beat + half, 0.1, 60 if song.style != "ballad" else 35)
    track = mido.MidiTrack()
    last = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - last))
        last = tick
    mid.tracks.append(track)
    return mid


def render(song: Song, workdir: Path) -> np.ndarray:
    midi_path = workdir / "song.mid"
    wav_path = workdir / "song.wav"
    build_midi(song).save(midi_path)
    subprocess.run(["fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(wav_path), SOUNDFONT,
                    str(midi_path)], check=True, capture_output=True)
    audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    assert rate == RATE
    seconds = song.bars * song.meter * 60.0 / song.bpm + 1.5  # keep the last chord's tail
    return audio[: int(seconds * RATE)].mean(axis=1)


def speak(text: str, workdir: Path) -> np.ndarray:
    wav = workdir / "voice.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(wav), text], check=True)
    voice, rate = sf.read(wav, dtype="float32")
    return soxr.resample(voice, rate, RATE)


def main() -> None:
    truth = []
    for song in SONGS:
        with tempfile.TemporaryDirectory() as tmp:
            mix = render(song, Path(tmp))
            if song.lyrics:
                voice = speak(song.lyrics, Path(tmp))
                start = int(song.lyrics_bar * song.meter * 60.0 / song.bpm * RATE)
                end = min(len(mix), start + len(voice))
                mix[start:end] = 0.45 * mix[start:end] + 0.9 * voice[: end - start] / max(1e-6, np.abs(voice).max())
        mix = 0.89 * mix / max(1e-6, float(np.abs(mix).max()))  # peak at -1 dBFS
        path = HERE / song.file
        fmt = {".mp3": "MP3", ".ogg": "OGG", ".flac": "FLAC"}[path.suffix]
        subtype = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS", "FLAC": "PCM_16"}[fmt]
        if song.sample_rate != RATE:
            mix = soxr.resample(mix, RATE, song.sample_rate)
        sf.write(path, mix, song.sample_rate, format=fmt, subtype=subtype)
        seconds = len(mix) / song.sample_rate
        bar_s = song.meter * 60.0 / song.bpm
        chords = [{"start": round(b * bar_s, 3), "end": round((b + 1) * bar_s, 3),
                   "label": song.chords[b % len(song.chords)]} for b in range(song.bars)]
        record = asdict(song) | {"duration_s": round(seconds, 3), "chord_timeline": chords}
        truth.append(record)
        print(f"{song.file}: {seconds:.1f} s, {path.stat().st_size / 1e6:.2f} MB")
    (HERE / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


if __name__ == "__main__":
    main()
