"""GPU memory in GiB: what a model needs, and what a GPU has. The run's plan counts bytes with these.

A stage worker's need is its weights plus working memory (the KV cache and activations of one batch);
a vLLM server's is its weights per GPU plus the least KV cache worth serving with. Weights are read,
in order, from the checkpoint's own index (`model.safetensors.index.json`: `metadata.total_size`) or
its weight files, for a local model or one already in the Hugging Face cache; else from the sizes of
the production models listed here (their published checkpoints); else the need is unknown and the plan
falls back to the declared GPU shares. A GPU's memory comes from `run.gpu_memory_gb` (declared GPUs),
`nvidia-smi` (this machine's GPUs), or Ray's `accelerator_type:*` resource (a cluster's GPU nodes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.nemo", "*.th", "*.pt", "*.gguf")
# Weights of the production models as published (bytes on disk = bytes in GPU memory at their dtype).
KNOWN_WEIGHTS_GIB = {
    "nvidia/music-flamingo-2601-hf": 15.8,  # ~8.5 B parameters, bf16 (~17 GB)
    "openai/gpt-oss-120b": 60.8,  # MXFP4 experts + bf16 rest (~65 GB)
    "nvidia/parakeet-tdt-0.6b-v3": 2.3,  # 0.6 B parameters, fp32 .nemo (~2.5 GB)
    "nvidia/parakeet-tdt-0.6b-v2": 2.3,
    "openai/whisper-large-v3": 2.9,  # 1.55 B parameters, fp16 (~3.1 GB)
    "htdemucs": 0.2,  # 27 M parameters, fp32 (a bag of one model)
}
# Ray's accelerator types (the `accelerator_type:X` node resource) -> memory per GPU.
ACCELERATOR_GIB = {"H200": 141.0, "H100": 80.0, "H800": 80.0, "B200": 180.0, "A100-80G": 80.0, "A100-40G": 40.0,
                   "A100": 40.0, "L40S": 48.0, "L40": 48.0, "A10G": 24.0, "L4": 24.0, "T4": 16.0, "V100": 16.0}
# What one process holds on a GPU beyond the allocator (CUDA context, cuBLAS workspaces).
CUDA_CONTEXT_GIB = 0.75


@dataclass(frozen=True)
class GpuMemory:
    gib: float
    source: str  # how it is known, for the banner


def checkpoint_gib(ref: str) -> GpuMemory | None:
    """A model's weight size from its own files (local, or in the Hugging Face cache); None if unreadable."""
    from .backends import refs

    try:
        location = refs.resolve(ref)
    except FileNotFoundError:
        return None
    if location.local:
        return _local_weights(Path(location.location), ref)
    try:
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(location.location, "model.safetensors.index.json")
    except Exception:  # noqa: BLE001 - no cache, an odd id: unknown
        return None
    if isinstance(index, str):
        total = _index_total(Path(index))
        if total:
            return GpuMemory(total / GIB, f"checkpoint index of {ref}")
    return None


def weights_gib(ref: str) -> GpuMemory | None:
    """The checkpoint's size when readable, else the published size of a known production model."""
    found = checkpoint_gib(ref)
    if found is not None:
        return found
    if ref in KNOWN_WEIGHTS_GIB:
        return GpuMemory(KNOWN_WEIGHTS_GIB[ref], f"published size of {ref}")
    return None


def kv_bytes_per_token(ref: str, default: int) -> int:
    """KV-cache bytes per token of a decoder (2 x layers x KV heads x head dim x 2 bytes) from the model's
    config.json when it is readable; `default` otherwise."""
    config = _read_config(ref)
    text = (config or {}).get("text_config") or config or {}
    try:
        layers = int(text["num_hidden_layers"])
        heads = int(text.get("num_key_value_heads") or text["num_attention_heads"])
        head_dim = int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"])
    except (KeyError, TypeError, ZeroDivisionError):
        return default
    return 2 * layers * heads * head_dim * 2


def gpu_memory_per_gpu(declared: float | None, cluster: dict[str, float] | None = None,
                       local: bool = True) -> GpuMemory | None:
    """Memory of one GPU: declared (`run.gpu_memory_gb`), this machine's GPUs (a local run), or the
    cluster's accelerator type; None when nothing says."""
    if declared:
        return GpuMemory(float(declared), "run.gpu_memory_gb")
    if local:
        found = _nvidia_smi_gib()
        if found:
            return GpuMemory(found, "nvidia-smi")
    for key in cluster or {}:
        if key.startswith("accelerator_type:"):
            kind = key.split(":", 1)[1]
            for name, gib in ACCELERATOR_GIB.items():
                if kind.upper().startswith(name):
                    return GpuMemory(gib, f"Ray accelerator type {kind}")
    return None


# ------------------------------------------------------------------ helpers


def _local_weights(path: Path, ref: str) -> GpuMemory | None:
    if path.is_file():
        return GpuMemory(path.stat().st_size / GIB, f"size of {path.name}")
    index = path / "model.safetensors.index.json"
    if index.is_file() and (total := _index_total(index)):
        return GpuMemory(total / GIB, f"checkpoint index of {ref}")
    files = [f for pattern in WEIGHT_FILES for f in path.glob(pattern)]
    if not files:
        return None
    return GpuMemory(sum(f.stat().st_size for f in files) / GIB, f"weight files of {ref}")


def _index_total(index: Path) -> int | None:
    try:
        return int(json.loads(index.read_text())["metadata"]["total_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_config(ref: str) -> dict | None:
    from .backends import refs

    try:
        location = refs.resolve(ref)
        if location.local:
            path = Path(location.location) / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(location.location, "config.json")
            path = Path(cached) if isinstance(cached, str) else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else None
    except Exception:  # noqa: BLE001 - unreadable: the caller's default
        return None


def _nvidia_smi_gib() -> float | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        values = [float(v) for v in out.stdout.split() if v.strip()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return min(values) / 1024 if out.returncode == 0 and values else None  # MiB; the smallest GPU bounds
