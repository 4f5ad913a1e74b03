"""MIR back-fill helpers: the tools on one decoded array, label helpers, songs with known truth.

Heavy imports (madmom, essentia, vamp) happen when `MirAnalyzer` is built, not here.
"""

from .analysis import SAMPLE_RATE, MirAnalyzer, MirFacts

__all__ = ["SAMPLE_RATE", "MirAnalyzer", "MirFacts"]
