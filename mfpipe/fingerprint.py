"""Chromaprint audio fingerprints and how well two of them line up.

A fingerprint is Chromaprint's raw sub-fingerprint array: one 32-bit value per
`ITEM_S` (~0.124 s) of audio, each bit a comparison of chroma energies, so the
same recording gives nearly the same bits after re-encoding, resampling or a
change of level, and unrelated music differs in about every other bit. It is
the array `fpcalc -raw` prints (Debian's `libchromaprint-tools`), computed here
in-process by the same library (`libchromaprint`, through pyacoustid's
`chromaprint` module) from the samples ingest already decodes: no second
decode, no subprocess per song.

Two fingerprints are compared by their bit-error rate (BER) at an offset: the
fraction of differing bits over the frames they overlap. A trimmed copy or one
with silence added lines up at a non-zero offset; `align_near` checks the
offsets around one a candidate search proposed, `align_exhaustive` tries them
all (the reference the index is tested against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import audio

# Chromaprint's default algorithm works on 11025 Hz audio in frames of 4096 samples, one every
# 4096 / 3 = 1365 samples; each sub-fingerprint is one frame step.
CHROMAPRINT_RATE = 11025
FRAME_STEP = 1365
ITEM_S = FRAME_STEP / CHROMAPRINT_RATE
INSTALL_HINT = ("Chromaprint is not installed: install Debian's libchromaprint-tools (`apt-get install "
                "libchromaprint-tools`, which brings libchromaprint1; scripts/install.sh does), or set "
                "ingest.fingerprint=false to ingest without near-duplicate groups and --exclude")


class FingerprintUnavailable(RuntimeError):
    """libchromaprint cannot be loaded; the message says what to install."""


def chromaprint_module():
    """pyacoustid's ctypes binding of libchromaprint, or FingerprintUnavailable naming the package."""
    try:
        import chromaprint
    except ImportError as exc:
        raise FingerprintUnavailable(f"{INSTALL_HINT} ({exc})") from None
    return chromaprint


def chromaprint_version() -> str:
    lib = chromaprint_module()._libchromaprint
    return lib.chromaprint_get_version().decode()


class Fingerprinter:
    """Feeds decoded blocks to libchromaprint; `finish()` gives the raw sub-fingerprints.

    `max_seconds` bounds the span fingerprinted (ingest's analysed span); `skip_seconds` drops the
    first moments, to fingerprint the same audio at another phase of Chromaprint's frame grid."""

    def __init__(self, max_seconds: float | None = None, skip_seconds: float = 0.0):
        self._lib = chromaprint_module()
        self._ctx = self._lib.Fingerprinter()
        self.max_seconds = max_seconds
        self.skip_seconds = skip_seconds
        self._rate = 0
        self._seen = 0  # frames offered so far (skipped ones included)
        self._fed = 0

    def feed(self, block: np.ndarray, sample_rate: int) -> None:
        """One block of float32 samples, shape (frames, channels)."""
        if not self._rate:
            self._rate = sample_rate
            self._ctx.start(sample_rate, block.shape[1])
        first = max(0, round(self.skip_seconds * sample_rate) - self._seen)
        self._seen += block.shape[0]
        if self.max_seconds is not None:
            room = round(self.max_seconds * sample_rate) - self._fed
            block = block[first:first + max(0, room)]
        else:
            block = block[first:]
        if block.shape[0]:
            pcm = np.clip(np.rint(block * 32768.0), -32768, 32767).astype("<i2")
            self._ctx.feed(pcm.tobytes())  # interleaved frames, as libchromaprint wants them
            self._fed += block.shape[0]

    def finish(self) -> np.ndarray:
        """The sub-fingerprints (uint32); empty when the audio was too short for one."""
        if not self._fed:
            return np.zeros(0, np.uint32)
        encoded = self._ctx.finish()
        if not encoded:
            return np.zeros(0, np.uint32)
        raw, _ = self._lib.decode_fingerprint(encoded)
        return np.asarray(raw, dtype=np.int64).astype(np.uint32)


class FingerprintSink:
    """An `audio.scan_audio` sink: fingerprints of what the scan decodes, at `phases` evenly spaced
    offsets within one frame step. Each decode attempt starts afresh (the ffmpeg fallback).

    Two copies of a recording cut at different sample positions sit up to half a frame step apart on
    Chromaprint's grid, which costs a few percent of bit errors; several phases of a short evaluation
    clip let the best one line up closely with the song it was cut from."""

    def __init__(self, max_seconds: float | None = None, phases: int = 1):
        chromaprint_module()  # fail here, with what to install, not inside a decode
        self.max_seconds = max_seconds
        self.phases = phases
        self._printers: list[Fingerprinter] = []

    def __call__(self) -> Callable[[np.ndarray, int], None]:
        self._printers = [Fingerprinter(self.max_seconds, skip_seconds=k * ITEM_S / self.phases)
                          for k in range(self.phases)]

        def feed(block: np.ndarray, rate: int) -> None:
            for printer in self._printers:
                printer.feed(block, rate)

        return feed

    def results(self) -> list[np.ndarray]:
        return [p.finish() for p in self._printers] or [np.zeros(0, np.uint32)] * self.phases


def fingerprint_source(source: str, *, ffmpeg: str = "ffmpeg", max_seconds: float | None = None,
                       phases: int = 1) -> tuple[list[np.ndarray], audio.AudioScan]:
    """A file's fingerprints at `phases` grid offsets, and its scan (one decode). Raises
    audio.AudioError for files that are not usable audio."""
    sink = FingerprintSink(max_seconds, phases)
    scan = audio.scan_audio(source, ffmpeg, sink)
    return sink.results(), scan


# ------------------------------------------------------------------ comparing


@dataclass(frozen=True)
class Alignment:
    """How fingerprint `a` lines up with `b`: a[i] sits on b[i + offset]."""

    offset: int  # in sub-fingerprints
    overlap: int  # sub-fingerprints compared
    ber: float  # differing bits / compared bits

    @property
    def offset_s(self) -> float:
        return self.offset * ITEM_S

    @property
    def overlap_s(self) -> float:
        return self.overlap * ITEM_S


def overlapping(a: np.ndarray, b: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of a and b that face each other when a[i] sits on b[i + offset]."""
    start_a = max(0, -offset)
    start_b = max(0, offset)
    n = max(0, min(len(a) - start_a, len(b) - start_b))
    return a[start_a:start_a + n], b[start_b:start_b + n]


def ber_at(a: np.ndarray, b: np.ndarray, offset: int) -> Alignment:
    x, y = overlapping(a, b, offset)
    if not len(x):
        return Alignment(offset, 0, 1.0)
    errors = int(np.bitwise_count(np.bitwise_xor(x, y)).sum())
    return Alignment(offset, len(x), errors / (32.0 * len(x)))


def align_near(a: np.ndarray, b: np.ndarray, offset: int, spread: int = 1) -> Alignment:
    """The best alignment within `spread` sub-fingerprints of `offset` (lowest BER)."""
    tried = [ber_at(a, b, offset + d) for d in range(-spread, spread + 1)]
    return min(tried, key=lambda al: (al.ber, -al.overlap))


def align_exhaustive(a: np.ndarray, b: np.ndarray, min_overlap: int) -> Alignment | None:
    """The best alignment over every offset with at least `min_overlap` sub-fingerprints in common
    (all pairs of values at once: memory len(a) x len(b) bytes)."""
    if not len(a) or not len(b):
        return None
    errors = np.bitwise_count(a[:, None] ^ b[None, :])
    diagonal = (np.arange(len(b))[None, :] - np.arange(len(a))[:, None]) + (len(a) - 1)  # offset + len(a) - 1
    totals = np.bincount(diagonal.ravel(), weights=errors.ravel(), minlength=len(a) + len(b) - 1)
    offsets = np.arange(-(len(a) - 1), len(b))
    overlaps = np.minimum(len(a), len(b) - offsets) - np.maximum(0, -offsets)
    usable = overlaps >= max(1, min_overlap)
    if not usable.any():
        return None
    rates = np.where(usable, totals / (32.0 * np.maximum(overlaps, 1)), np.inf)
    best = int(np.argmin(rates))
    return Alignment(int(offsets[best]), int(overlaps[best]), float(rates[best]))
