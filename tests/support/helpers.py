"""Test helpers: synthesized songs, running the real `mfpipe` CLI, reading stage outputs.

(A module of its own, not conftest.py: test folders have conftest files of their own.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
MFPIPE = [sys.executable, "-m", "mfpipe.pipeline.cli"]


def tone_song(path: Path, seconds: float, *, sr: int = 22050, channels: int = 1, base_hz: float = 220.0,
              fmt: str | None = None, subtype: str | None = None, seed: int = 0) -> Path:
    """A short deterministic 'song': a few notes with an envelope, distinct per seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    notes = base_hz * 2 ** (rng.integers(0, 12, size=max(1, int(seconds * 2))) / 12)
    idx = np.minimum((t * 2).astype(int), len(notes) - 1)
    env = 0.5 + 0.5 * np.cos(2 * np.pi * 2 * t) ** 2
    mono = (0.3 * env * np.sin(2 * np.pi * notes[idx] * t)).astype(np.float32)
    data = np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    return path


def run_mfpipe(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (its own Ray, as a user would)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([*MFPIPE, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"mfpipe {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_dir(path: Path):
    """All shards of a stage folder as one pandas frame (empty frame if none)."""
    files = sorted(path.glob("part-*.parquet"))
    if not files:
        import pandas as pd

        return pd.DataFrame()
    return pq.read_table(files).to_pandas()
