"""The htdemucs architecture with RANDOM weights (no model hub): the stand-in vocal separator of tests
and rehearsals. It runs the same arithmetic as the trained model, so shapes, chunking, sample rates,
offsets and timings are real; its stems are noise, and the marker beside the file says so."""

from __future__ import annotations

from pathlib import Path

from ..lyrics.separation import SOURCES, save_model
from . import preparer

NAME = "htdemucs-random"


def build_random_htdemucs(path: Path, *, seed: int = 0) -> Path:
    """The real htdemucs architecture (4 sources, ~27M parameters) with RANDOM weights, saved to `path`.

    Runs the same arithmetic as the trained model (so timings and shapes are real); its stems are noise."""
    from fractions import Fraction

    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    # The pretrained htdemucs was trained on 7.8 s segments (the class default is 10 s).
    model = HTDemucs(sources=list(SOURCES), segment=Fraction(39, 5))
    return save_model(model, path, random_weights=True,
                      about="htdemucs architecture with RANDOM weights built by mfpipe: its stems are noise")



@preparer(NAME, profiles=())
def prepare_random_htdemucs(root: Path) -> Path:
    """htdemucs architecture with RANDOM weights (tests, rehearsals; --only); its stems are noise."""
    path = root / NAME / f"{NAME}.th"
    return path if path.is_file() else build_random_htdemucs(path)
