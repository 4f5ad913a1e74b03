"""No silent CPU: a worker that holds a GPU and finds no usable CUDA fails its stage at once with the
cause; only a declared rehearsal (`run.cpu_rehearsal`) runs GPU stages on the CPU, and says so."""

from __future__ import annotations

import pytest

from mfpipe import devices
from support.helpers import read_dir, run_mfpipe, tone_song


@pytest.fixture
def no_rehearsal(monkeypatch):
    monkeypatch.delenv(devices.REHEARSAL_ENV, raising=False)


def test_a_worker_given_a_gpu_without_cuda_refuses_with_the_cause(monkeypatch, no_rehearsal):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(devices.NoCudaError) as err:
        devices.pick_device("auto")
    text = str(err.value)
    assert "was given GPU(s) 0" in text and "CPU build" in text and "run.cpu_rehearsal" in text
    with pytest.raises(devices.NoCudaError):
        devices.pick_device("cuda")


def test_cpu_is_chosen_only_when_no_gpu_was_given_or_in_a_rehearsal(monkeypatch, no_rehearsal):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.pick_device("auto") == "cpu"  # a CPU worker on a CPU box
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert devices.pick_device("cpu") == "cpu"  # the user's choice
    monkeypatch.setenv(devices.REHEARSAL_ENV, "1")
    assert devices.pick_device("auto") == "cpu" and devices.pick_device("cuda:1") == "cpu"
    assert devices.worker_env() == {devices.REHEARSAL_ENV: "1"}


@pytest.mark.slow
def test_production_caption_on_a_declared_gpu_fails_at_setup(tmp_path, tiny_mf):
    """`--profile production --stage caption` on a Ray that declares a GPU this box lacks: Ray hands the
    worker GPU 0, there is no CUDA: the stage fails at once and no song is captioned on the CPU. (The same
    run declared as a rehearsal, `run.cpu_rehearsal`, runs on the CPU: tests/e2e/test_production_rehearsal.py.)"""
    songs = tmp_path / "songs"
    tone_song(songs / "a.wav", 4.0, seed=1)
    refused = run_mfpipe("run", "--profile", "production", "--stage", "caption", "--input", str(songs),
                         "--set", "run.num_gpus=1", "--set", "run.num_cpus=8",  # what a GPU node declares
                         "--set", f"caption.model={tiny_mf}", "--set", "caption.max_new_tokens=4",
                         "--output", str(tmp_path / "refused"), check=False, timeout=600)
    assert refused.returncode == 1, refused.stderr[-3000:]
    text = " ".join(refused.stderr.split())
    assert "caption failed" in text and "cannot use CUDA" in text and "CPU build" in text, text[-3000:]
    assert read_dir(tmp_path / "refused" / "caption").empty  # nothing ran on the CPU
