#!/usr/bin/env python3
"""The CUDA major of every GPU library an install would put in each environment, read from PyPI.

    python3 scripts/cuda_majors.py --torch torch==2.13.0 --extras all,test --vllm vllm==0.33.0 [--json]

Resolves, without installing anything and without a GPU, what `scripts/install.sh` installs on a GPU
machine: `.venv` (the torch spec, then the project with its extras under constraints.txt) and
`.venv-vllm` (the vLLM spec, which brings its own torch). pip's resolver runs against PyPI itself
(`pip install --dry-run --report`; local wheel folders and pip caps of this machine are ignored, so the
answer is what a GPU machine gets), and each distribution's CUDA major is read from its metadata:
the `Environment :: GPU :: NVIDIA CUDA :: N` classifiers, a `-cuN` name, the version of the packages
whose version is the CUDA version (cuda-toolkit, cuda-bindings, nvidia-cublas, ...), or, for torch, the
CUDA toolkit it requires. An environment is sound when every GPU library supports the CUDA major its
torch is built for; the exit status is 1 when one does not (e.g. CTranslate2's wheels, classified CUDA 12,
beside a CUDA 13 torch). Standard library only: install.sh runs it before any venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Distributions whose own version is the CUDA version they are built for.
VERSION_IS_CUDA = {"cuda-toolkit", "cuda-bindings", "cuda-python", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc",
                   "nvidia-cuda-cupti", "nvidia-cuda-nvcc", "nvidia-cublas", "nvidia-nvjitlink", "nvidia-nvtx",
                   "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl"}
_CLASSIFIER = re.compile(r"^Environment :: GPU :: NVIDIA CUDA :: (\d+)")
_SUFFIX = re.compile(r"-cu(\d{2})$")
_LOCAL = re.compile(r"\+cu(\d{2})\d")
_TOOLKIT_PIN = re.compile(r"^(cuda-toolkit|nvidia-cuda-runtime(?:-cu\d+)?)\b.*?==\s*(\d+)\.")
_CU_REQ = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d{2})\b")


@dataclass
class Library:
    name: str
    version: str
    majors: list[int]  # the CUDA majors it supports (empty: not tied to one)
    evidence: str


@dataclass
class EnvReport:
    env: str
    torch: str | None
    major: int | None  # the CUDA major of the env's torch
    libraries: list[Library] = field(default_factory=list)
    mismatched: list[Library] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.major is not None and not self.mismatched


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_majors(metadata: dict) -> tuple[list[int], str]:
    """(the CUDA majors a distribution supports, how we know) from its core metadata; ([], "") when its
    metadata ties it to none."""
    name, version = _canonical(metadata["name"]), str(metadata["version"])
    classified = sorted({int(m.group(1)) for c in metadata.get("classifier", []) if (m := _CLASSIFIER.match(c))})
    if classified:
        return classified, "classifier"
    if m := _SUFFIX.search(name):
        return [int(m.group(1))], "name"
    if m := _LOCAL.search(version):
        return [int(m.group(1))], "local version"
    if name in VERSION_IS_CUDA:
        return [int(version.split(".")[0])], "version"
    if name == "torch":
        for req in metadata.get("requires_dist", []):
            if "extra ==" in req:
                continue
            if (m := _TOOLKIT_PIN.match(req)) or (m := _CU_REQ.match(req)):
                return [int(m.groups()[-1])], "requires " + re.sub(r"\[.*?\]", "", req.split(";")[0]).strip()
    return [], ""


def judge(env: str, distributions: list[dict]) -> EnvReport:
    """The GPU libraries of one resolved environment and whether they agree with its torch."""
    libs = []
    torch = None
    for meta in distributions:
        majors, evidence = cuda_majors(meta)
        if _canonical(meta["name"]) == "torch":
            torch = meta
        if majors:
            libs.append(Library(_canonical(meta["name"]), str(meta["version"]), majors, evidence))
    major = None
    if torch is not None:
        found, _ = cuda_majors(torch)
        major = found[0] if found else None
    report = EnvReport(env, f"torch {torch['version']}" if torch else None, major, sorted(libs, key=lambda x: x.name))
    report.mismatched = [lib for lib in report.libraries if major is None or major not in lib.majors]
    return report


def resolve(requirements: list[str], python: str = sys.executable) -> list[dict]:
    """The distributions pip would install for `requirements` on a fresh env, from PyPI itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *requirements]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve {' '.join(requirements)}:\n{proc.stderr[-3000:]}")
        return [item["metadata"] for item in json.loads(report.read_text())["install"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch spec installed first into .venv")
    parser.add_argument("--extras", default="all,test", help="the project's extras on a GPU machine")
    parser.add_argument("--vllm", default=None, help="the vLLM spec of .venv-vllm (omit to skip that env)")
    parser.add_argument("--add", action="append", default=[], help="another requirement for .venv (a what-if)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = parser.parse_args()

    sets = {".venv": [args.torch, "-c", "constraints.txt", f".[{args.extras}]", *args.add]}
    if args.vllm:
        sets[".venv-vllm"] = [args.vllm]
    with ThreadPoolExecutor(len(sets)) as pool:  # the resolutions wait on the network: side by side
        resolved = list(pool.map(resolve, sets.values()))
    reports = [judge(env, distributions) for env, distributions in zip(sets, resolved)]
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=2))
    else:
        for r in reports:
            verdict = f"one CUDA major: {r.major}" if r.ok else "MIXED CUDA majors"
            print(f"{r.env}: {r.torch} is built for CUDA {r.major}; {verdict}")
            for lib in r.libraries:
                flag = "   <-- not CUDA " + str(r.major) if lib in r.mismatched else ""
                print(f"  {lib.name} {lib.version}: CUDA {'/'.join(map(str, lib.majors))} ({lib.evidence}){flag}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
