"""Resume after SIGKILL is exact: same song_ids, no duplicates, no half-written shard."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from support.helpers import MFPIPE, read_dir, run_mfpipe, tone_song

pytestmark = pytest.mark.slow

N_SONGS = 120
SETTINGS = ["--set", "profile=cpu", "--set", "ingest.resources.batch_size=1",
            "--set", "run.shard_max_rows=3", "--set", "run.flush_seconds=0.5"]


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for i in range(N_SONGS):
        tone_song(folder / f"song_{i:03d}.wav", 8.0, seed=1000 + i)
    return folder


def _leftover_ray(pgid: int) -> None:
    """Ray processes the killed driver started keep its process group: end them too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_mid_stage_then_resume_equals_uninterrupted_run(songs, tmp_path):
    clean = tmp_path / "clean"
    run_mfpipe("run", "--stage", "ingest", "--input", str(songs), "--output", str(clean), *SETTINGS)
    expected = read_dir(clean / "ingest")
    assert len(expected) == N_SONGS

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*MFPIPE, "run", "--stage", "ingest", "--input", str(songs), "--output",
                             str(killed), *SETTINGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((killed / "ingest").glob("part-*.parquet"))) < 3:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed; make it longer")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-stage, as under the OOM killer
    proc.wait()
    _leftover_ray(proc.pid)
    partial = read_dir(killed / "ingest")
    assert 0 < len(partial) < N_SONGS, "the kill should land mid-stage"

    rerun = run_mfpipe("run", "--stage", "ingest", "--input", str(songs), "--output", str(killed), *SETTINGS)
    assert f"{len(partial)} already done" in rerun.stderr
    resumed = read_dir(killed / "ingest")
    assert resumed["song_id"].is_unique
    assert sorted(resumed["song_id"]) == sorted(expected["song_id"])
    assert sorted(resumed["source"]) == sorted(expected["source"])
    cols = [c for c in expected.columns if c != "provenance"]
    a = expected[cols].sort_values("song_id").reset_index(drop=True)
    b = resumed[cols].sort_values("song_id").reset_index(drop=True)
    assert a.equals(b)
    assert read_dir(killed / "rejects" / "ingest").empty
    # Every shard is whole, and no temporary is left behind.
    for shard in (killed / "ingest").glob("*.parquet"):
        pq.read_table(shard)
    assert not list(killed.rglob(".tmp-*"))
