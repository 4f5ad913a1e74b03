"""A stage from another installed distribution (an entry point of `mfpipe.stages`) brings its config
section with it, and its resources take effect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from support.helpers import read_dir, run_mfpipe, tone_song

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The plugin 'installed': its package on the path and a dist-info that declares the entry point."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "mfpipe_toyplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mfpipe-toyplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mfpipe.stages]\ntoy_scale = mfpipe_toyplugin:ScaleStage\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")])}


def test_the_plugins_section_is_part_of_the_config(plugin_env):
    shown = yaml.safe_load(run_mfpipe("config", "show", "--profile", "cpu", "--set", "toy_scale.factor=3",
                                      env=plugin_env).stdout)
    assert shown["toy_scale"] == {"resources": {"cpus": 0.5, "gpus": 0.0, "batch_size": 2, "concurrency": None,
                                                "gpu_memory_gb": None}, "factor": 3.0}
    assert "toy_scale" in run_mfpipe("stages", env=plugin_env).stdout
    documented = run_mfpipe("config", "show", "--docs", "--profile", "cpu", env=plugin_env).stdout
    assert "# What the song's duration is multiplied by." in documented
    # Without the plugin there is no such section, and saying otherwise is an error.
    missing = run_mfpipe("config", "show", "--set", "toy_scale.factor=3", check=False)
    assert missing.returncode == 2 and "unknown config key 'toy_scale.factor'" in missing.stderr


@pytest.mark.slow
def test_the_plugin_stage_runs_with_its_own_settings_and_resources(plugin_env, tmp_path):
    songs = tmp_path / "songs"
    for i in range(3):
        tone_song(songs / f"s{i}.wav", 2.0 + i, seed=i)
    out = tmp_path / "out"
    run_mfpipe("run", "--stage", "toy_scale", "--input", str(songs), "--output", str(out), "--profile", "cpu",
               "--set", "toy_scale.factor=3", "--set", "toy_scale.resources.cpus=1.5",
               "--set", "run.schedule=barrier", env=plugin_env)  # its own phase: nothing shares its CPUs
    rows = read_dir(out / "toy_scale")
    ingest = read_dir(out / "ingest").set_index("song_id")["duration_s"]
    assert len(rows) == 3
    assert all(abs(r.scaled - 3 * ingest[r.song_id]) < 1e-6 for r in rows.itertuples())
    assert set(rows["worker_cpus"]) == {1.5}  # the worker asked Ray for what its section says
