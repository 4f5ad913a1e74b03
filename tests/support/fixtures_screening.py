"""Fixtures for the fingerprint tests: one rendered song, its copies, unrelated songs and an evaluation clip.

Rendered once per session with the project's renderers (`support.render_mir`, `support.render_form`) at
32 kHz (short songs: the suite's time budget); ffmpeg makes the MP3s at 128 kbit/s.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from support.render_form import FormSpec, Part, Texture, render_form
from support.render_mir import SongSpec, render

RATE = 32000
PROGRESSION = ("C", "G", "Am", "F")


@dataclass(frozen=True)
class ScreeningSongs:
    folder: Path  # the corpus inputs: the original, its four copies, three unrelated songs
    original: Path
    copies: dict[str, Path]  # how it was changed → file
    unrelated: dict[str, Path]  # what it is → file
    clips: Path  # a folder with one evaluation clip: 10 s from the middle of the original, re-encoded
    clip_start_s: float

    @property
    def group(self) -> set[Path]:
        return {self.original, *self.copies.values()}


def _mp3(wav: Path, dest: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-b:a", "128k", str(dest)], check=True)
    return dest


def _arrangement(texture: Texture, seed: int) -> np.ndarray:
    """The original's chord progression, key and tempo in another arrangement."""
    part = Part("A", "verse", PROGRESSION, 12, texture)
    return render_form(FormSpec("arrangement", 120, 4, "C", "major", [part], ["A"], seed=seed), RATE)


@pytest.fixture(scope="session")
def screening_songs(tmp_path_factory) -> ScreeningSongs:
    root = tmp_path_factory.mktemp("screening")
    folder, clips, scratch = root / "songs", root / "evals", root / "scratch"
    for d in (folder, clips, scratch):
        d.mkdir()
    song = render(SongSpec(120, 4, "C", "major", list(PROGRESSION), bars=15, seed=1), RATE)  # 31 s
    # Named so that copies come first in input order: the original must win on the keep order, not on arrival.
    original = folder / "original.wav"
    sf.write(original, song, RATE, subtype="PCM_16")
    copies = {"mp3 128k": _mp3(original, folder / "copy_1_128k.mp3")}
    trimmed = folder / "copy_2_trimmed.wav"
    sf.write(trimmed, song[3 * RATE + 123:], RATE, subtype="PCM_16")  # 3 s (and a few samples) off the start
    louder = folder / "copy_3_plus2db.flac"
    sf.write(louder, np.clip(song * 10 ** (2 / 20), -1, 1), RATE, subtype="PCM_16")
    resampled = folder / "copy_4_22k.wav"
    sf.write(resampled, soxr.resample(song, RATE, 22050), 22050, subtype="PCM_16")
    copies.update({"trimmed 3 s": trimmed, "+2 dB": louder, "22.05 kHz": resampled})
    unrelated = {"same progression, other arrangement (a)": folder / "same_progression_a.wav",
                 "same progression, other arrangement (b)": folder / "same_progression_b.wav",
                 "another song": folder / "zz_other.wav"}
    sf.write(unrelated["same progression, other arrangement (a)"],
             _arrangement(Texture(drums="full", comp="strum", melody="beat"), seed=5), RATE, subtype="PCM_16")
    sf.write(unrelated["same progression, other arrangement (b)"],
             _arrangement(Texture(drums="light", comp="arp", melody="eighths", melody_octave=6, partials=6), seed=6),
             RATE, subtype="PCM_16")
    sf.write(unrelated["another song"], render(SongSpec(84, 4, "G", "major", ["G", "Em", "C", "D"], bars=8, seed=3),
                                               RATE), RATE, subtype="PCM_16")
    start = 12.345
    clip_wav = scratch / "clip.wav"
    sf.write(clip_wav, song[int(start * RATE):int((start + 10) * RATE)], RATE, subtype="PCM_16")
    _mp3(clip_wav, clips / "eval_clip.mp3")
    return ScreeningSongs(folder, original, copies, unrelated, clips, start)
