"""Fixtures for the curator tests: ONE real output folder per session.

Ingest and MIR are real (the `mfpipe` CLI on the example songs, plus one
file that is not audio, so ingest has a real reject); caption, lyrics,
synthesize, filter and think outputs are written with the real record schemas
by `corpus.py` (their stages need models this suite does not start); the
export is made by the real CLI (`mfpipe run --stage export`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.corpus import Plan, write_llm_stages
from support.helpers import REPO, run_mfpipe

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def songs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("songs")
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix in (".flac", ".mp3", ".ogg"):
            shutil.copy(path, folder / path.name)
    (folder / "not_a_song.wav").write_bytes(b"RIFF....WAVEjunk" * 64)
    return folder


@pytest.fixture(scope="session")
def mir_out(tmp_path_factory, songs_dir) -> Path:
    """OUT with real ingest + mir outputs (kept pristine: tests copy it)."""
    out = tmp_path_factory.mktemp("mir-out") / "out"
    run_mfpipe("run", "--stage", "mir", "--input", str(songs_dir), "--output", str(out), "--set", "profile=cpu")
    return out


def copy_out(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".mfpipe.lock"))
    return dest


@pytest.fixture(scope="session")
def exported(tmp_path_factory, mir_out, songs_dir):
    """(OUT, what corpus.py made): every stage output, exported by the real CLI."""
    out = copy_out(mir_out, tmp_path_factory.mktemp("full") / "out")
    made = write_llm_stages(out, Plan())
    run_mfpipe("run", "--stage", "export", "--input", str(songs_dir), "--output", str(out), "--set", "profile=cpu")
    return out, made
