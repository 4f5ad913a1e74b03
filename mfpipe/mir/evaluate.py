"""Scoring MIR output against known truth: chord frames, beat/downbeat times.

Used by the tests and the benchmark; the quality filter can use the same
measures to compare a caption's claims with the MIR facts.
"""

from __future__ import annotations

import numpy as np

from .labels import chord_triad


def frame_agreement(reference: list[dict], estimate: list[dict], *, hop_s: float = 0.1) -> float:
    """Fraction of the reference's chord frames (every `hop_s`) where the estimate names the same triad.

    Both are lists of {start, end, label}. Frames where the reference has no chord are
    not counted; frames the estimate does not cover count as wrong.
    """
    if not reference:
        return 0.0
    end = max(span["end"] for span in reference)
    hits = total = 0
    for i in range(int(end / hop_s)):
        t = (i + 0.5) * hop_s
        want = _label_at(reference, t)
        if want is None or chord_triad(want) is None:
            continue
        total += 1
        got = _label_at(estimate, t)
        hits += got is not None and chord_triad(got) == chord_triad(want)
    return hits / total if total else 0.0


def _label_at(spans: list[dict], t: float) -> str | None:
    for span in spans:
        if span["start"] <= t < span["end"]:
            return span["label"]
    return None


def matched_fraction(times: list[float], reference: list[float], tolerance_s: float = 0.07) -> float:
    """Fraction of `reference` times with an estimate within `tolerance_s` (beat-tracking recall)."""
    if not reference or not times:
        return 0.0
    distance = np.abs(np.asarray(reference, float)[:, None] - np.asarray(times, float)[None, :])
    return float(np.mean(distance.min(axis=1) <= tolerance_s))
