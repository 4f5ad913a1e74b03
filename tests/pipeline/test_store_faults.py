"""Errors of the output folder itself end the run with one clear line (exit 1), leave nothing half-written,
and the rerun after the fault is fixed completes: a real full disk (a small tmpfs, in a mount namespace of
the test's own) under a real run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from support.helpers import read_dir, tone_song

pytestmark = pytest.mark.slow


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare -m) for a small tmpfs")
def test_a_full_output_disk_ends_the_run_in_one_line_and_the_rerun_completes(tmp_path):
    songs = tmp_path / "songs"
    for i in range(12):
        tone_song(songs / f"s{i:02d}.wav", 3.0, seed=i)
    out, keep = tmp_path / "out", tmp_path / "kept"
    out.mkdir()
    run = (f"{sys.executable} -m mfpipe.pipeline.cli run --stage ingest --profile cpu --input {songs} "
           f"--output {out} --set run.shard_max_rows=1 --set run.flush_seconds=0.1 "
           f"--set ingest.resources.batch_size=1")
    script = "\n".join([
        f"mount -t tmpfs -o size=96k tmpfs {out}",
        f"{run} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc",
        f"find {out} -type f > {tmp_path}/full.files",
        f"mount -o remount,size=64m {out}",  # the space is freed: the data stays
        f"{run} > {tmp_path}/again.out 2> {tmp_path}/again.err; echo $? > {tmp_path}/again.rc",
        f"cp -r {out} {keep}",
    ])
    subprocess.run(["unshare", "-m", "sh", "-c", script], timeout=900, check=True,
                   env={**os.environ, "PYTHONUNBUFFERED": "1", "MFPIPE_PROGRESS": "0"})
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", full_err[-3000:]
    errors = [line for line in full_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write to the output folder" in errors[0], full_err[-3000:]
    assert "No space left on device" in " ".join(full_err.split()) and "Traceback" not in full_err
    leftovers = [f for f in (tmp_path / "full.files").read_text().split() if "/." in f.split(str(out))[-1]
                 and not f.endswith(".mfpipe.lock")]
    assert not leftovers, leftovers  # nothing half-written: no hidden temporaries

    again_err = (tmp_path / "again.err").read_text()
    assert (tmp_path / "again.rc").read_text().strip() == "0", again_err[-3000:]
    rows = read_dir(keep / "ingest")
    assert len(rows) == 12 and rows["song_id"].is_unique  # every song once: resumed, not redone twice
