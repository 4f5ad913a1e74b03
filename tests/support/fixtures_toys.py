"""The toy stages of `support.toy_stages`, reachable from a CLI run as a plugin is: a dist-info that
declares them as `mfpipe.stages` entry points, and the tests folder on PYTHONPATH (so Ray's workers
import them too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TOYS = {"toy_double": "DoubleStage", "toy_reader": "ReaderStage", "toy_need": "NeedStage", "toy_sink": "SinkStage",
        "toy_crash": "CrashStage", "toy_gpu_a": "GpuAStage", "toy_gpu_b": "GpuBStage", "toy_gpu_c": "GpuCStage",
        "toy_late": "LateStage", "toy_gpu_late": "GpuLateStage", "toy_both": "BothStage"}


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("toy-site")
    dist = site / "mfpipe_toys-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mfpipe-toys\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = support.toy_stages:{cls}" for name, cls in TOYS.items())
    (dist / "entry_points.txt").write_text(f"[mfpipe.stages]\n{lines}\n")
    return site


@pytest.fixture(scope="session")
def toy_env(toy_site) -> dict[str, str]:
    """The environment of a CLI run that has the toy stages."""
    path = os.pathsep.join(filter(None, [str(toy_site), str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def toys_on_path(monkeypatch):
    """In-process runs: Ray's workers start from this environment and must import the toy stages."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


TOY_SONGS = 8  # 2 s, 3 s, ... 9 s


@pytest.fixture(scope="module")
def toy_songs(tmp_path_factory) -> Path:
    """Eight short tone songs (2 s to 9 s): toy_double rejects the shortest ones on request."""
    from .helpers import tone_song

    folder = tmp_path_factory.mktemp("toy-songs")
    for i in range(TOY_SONGS):
        tone_song(folder / f"s{i}.wav", 2.0 + i, seed=i)
    return folder
