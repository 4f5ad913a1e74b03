"""Synthetic fingerprint corpora, for the index tests and the grouping benchmark (no audio needed).

Made from a few real fingerprints so they keep Chromaprint's structure (neighbouring
sub-fingerprints share most bits, repeated sections repeat values):

- an unrelated song is a few real fingerprints one after the other, each XOR-ed with a
  random 32-bit mask of its own (about half of every value's bits differ from any other
  song's, as between unrelated recordings);
- a copy is another song with every bit flipped with probability `ber` (a re-encode),
  a few seconds cut from its start or end (a trim), and a random arrival place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfpipe.fingerprint import ITEM_S


@dataclass
class SyntheticCorpus:
    prints: list[np.ndarray]  # in arrival order
    copy_of: dict[int, int]  # index of a copy → index of the song it copies


def unrelated(bases: list[np.ndarray], rng: np.random.Generator, parts: int) -> np.ndarray:
    picks = rng.integers(0, len(bases), size=parts)
    masks = rng.integers(0, 2**32, size=parts, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bases[p] ^ m for p, m in zip(picks, masks)])


def copy(fp: np.ndarray, rng: np.random.Generator, ber: float, max_trim_s: float) -> np.ndarray:
    flips = rng.random((len(fp), 32)) < ber
    noise = (flips.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1).astype(np.uint32)
    trim = int(rng.integers(0, int(max_trim_s / ITEM_S) + 1))
    out = fp ^ noise
    return out[trim:] if rng.random() < 0.5 else out[: len(out) - trim]


def corpus(bases: list[np.ndarray], n: int, *, copies: float = 0.2, parts: int = 4, ber: float = 0.03,
           max_trim_s: float = 3.0, seed: int = 0) -> SyntheticCorpus:
    """`n` fingerprints, a share `copies` of them copies of earlier ones (each of a different song)."""
    rng = np.random.default_rng(seed)
    n_copies = int(n * copies)
    originals = [unrelated(bases, rng, parts) for _ in range(n - n_copies)]
    sources = rng.choice(len(originals), size=n_copies, replace=False)
    made = [copy(originals[s], rng, ber, max_trim_s) for s in sources]
    order = rng.permutation(n)
    prints: list[np.ndarray] = [np.zeros(0, np.uint32)] * n
    place = {}
    for slot, k in zip(order, range(n)):
        prints[slot] = originals[k] if k < len(originals) else made[k - len(originals)]
        place[k] = int(slot)
    copy_of = {place[len(originals) + i]: place[int(s)] for i, s in enumerate(sources)}
    return SyntheticCorpus(prints, copy_of)
