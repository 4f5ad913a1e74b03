"""Which torch device a model runs on: one rule for every backend."""

from __future__ import annotations


def pick_device(device: str) -> str:
    """`auto` → "cuda" when a GPU is visible to this process (Ray sets CUDA_VISIBLE_DEVICES for a
    worker that asked for GPUs), else "cpu"; anything else as given ("cpu", "cuda", "cuda:1")."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
