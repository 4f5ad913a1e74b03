"""Vocal activity per song with Silero VAD, and cutting the active regions out for ASR.

`VoiceActivity(cfg).detect(audio_16k)` gives the song's `vocal_regions`
(`[{start, end}]`, seconds, song-absolute, merged across short gaps) and `has_vocals`.
`cut_regions(audio, regions, pad_s)` cuts each region with `pad_s` of context on both
sides (clips that overlap after padding are merged) and records each clip's offset, so
`Clip.to_song(t)` maps a time inside a clip back to the song.

Silero VAD (PyPI `silero-vad` 6.x) ships its weights in the wheel, so this runs offline.
Three forms of the same model are selectable: `sequence` (the batched ONNX export, one
onnxruntime call per ~16 s block: ~0.0013 s per audio second on one thread here),
`onnx` (per-32 ms-frame ONNX, ~0.0045 s/s) and `jit` (TorchScript, ~0.0065 s/s). All
three gave the same regions on the test mixes. Silero is a speech detector: a voice
well under the music (about -6 dB) is often missed in a full mix, which is why the
lyrics path can run it on a separated vocal stem (`separation.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Section

SAMPLE_RATE = 16000


class VadConfig(Section):
    """Voice activity detection and region padding for the lyrics path."""


    enabled: bool = Field(True, description="Run VAD; off: the whole song is one region (ASR sees everything).")
    model: Literal["sequence", "onnx", "jit"] = Field(
        "sequence", description="Silero VAD form: batched ONNX ('sequence', fastest), per-frame ONNX, or TorchScript.")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Speech probability above which a 32 ms frame is speech.")
    neg_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Probability below which speech ends (None: threshold - 0.15, Silero's default).")
    min_speech_s: float = Field(0.25, ge=0.0, description="Speech stretches shorter than this are dropped.")
    min_silence_s: float = Field(0.3, ge=0.0, description="Silence needed to end a speech stretch.")
    speech_pad_s: float = Field(0.03, ge=0.0, description="Padding Silero itself adds to each stretch.")
    max_speech_s: float = Field(
        60.0, gt=0.0, description="Longer stretches are split (at a pause when possible) so no clip grows unbounded.")
    merge_gap_s: float = Field(1.0, ge=0.0, description="Regions closer than this are merged into one vocal region.")
    min_vocal_s: float = Field(
        0.5, ge=0.0, description="has_vocals needs at least this many voiced seconds in total.")
    asr_pad_s: float = Field(
        0.5, ge=0.0, description="Context added on both sides of a region when it is cut out for ASR.")
    asr_join_gap_s: float = Field(
        6.0, ge=0.0, description="Regions closer than this share one ASR clip (more context, fewer calls).")
    asr_max_clip_s: float = Field(
        28.0, gt=0.0, description="Joined ASR clips stay within this length (Whisper's window is 30 s).")


@dataclass
class VadResult:
    vocal_regions: list[dict[str, float]]  # [{start, end}], seconds, song-absolute
    has_vocals: bool
    voiced_s: float
    duration_s: float
    error: str | None = None


@dataclass
class Clip:
    """A cut of a song: `audio` starts at `offset` seconds; `regions` are the vocal regions inside it."""

    song: int
    offset: float
    audio: np.ndarray
    regions: list[dict[str, float]] = field(default_factory=list)
    rate: int = SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.offset + len(self.audio) / self.rate

    def to_song(self, t: float) -> float:
        """A time inside the clip (seconds from its start) as song-absolute seconds."""
        return self.offset + t


# ------------------------------------------------------------------ region arithmetic ---


def span(r: Any) -> tuple[float, float]:
    if isinstance(r, Mapping):
        return float(r["start"]), float(r["end"])
    if isinstance(r, (tuple, list)):
        return float(r[0]), float(r[1])
    return float(r.start), float(r.end)


def merge_regions(regions: Iterable[Any], gap_s: float = 0.0) -> list[dict[str, float]]:
    """Sorted regions with overlaps (and gaps up to `gap_s`) merged."""
    spans = sorted(span(r) for r in regions)
    out: list[list[float]] = []
    for start, end in spans:
        if end <= start:
            continue
        if out and start - out[-1][1] <= gap_s:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [{"start": round(a, 3), "end": round(b, 3)} for a, b in out]


def pad_regions(regions: Iterable[Any], pad_s: float, duration_s: float) -> list[dict[str, float]]:
    """Each region widened by `pad_s` on both sides, kept inside [0, duration], overlaps merged."""
    padded = [(max(0.0, a - pad_s), min(duration_s, b + pad_s)) for a, b in map(span, regions)]
    return merge_regions(padded, 0.0)


def regions_seconds(regions: Iterable[Any]) -> float:
    return float(sum(b - a for a, b in map(span, regions)))


def in_regions(t0: float, t1: float, regions: Sequence[Any], tolerance_s: float = 0.0) -> int | None:
    """Index of the region that holds [t0, t1] (most overlap; touching counts, within `tolerance_s`), else None."""
    best, best_overlap = None, -1.0
    for i, (a, b) in enumerate(map(span, regions)):
        a, b = a - tolerance_s, b + tolerance_s
        if t1 < a or t0 > b:
            continue
        overlap = min(t1, b) - max(t0, a)
        if overlap > best_overlap:
            best, best_overlap = i, overlap
    return best


def join_spans(spans: Sequence[dict[str, float]], join_gap_s: float, max_clip_s: float) -> list[dict[str, float]]:
    """Neighbouring spans joined when the gap between them is at most `join_gap_s` and the joined
    span stays within `max_clip_s` (a span already longer stays as it is)."""
    out: list[dict[str, float]] = []
    for item in spans:
        if out and item["start"] - out[-1]["end"] <= join_gap_s and item["end"] - out[-1]["start"] <= max_clip_s:
            out[-1] = {"start": out[-1]["start"], "end": item["end"]}
        else:
            out.append(dict(item))
    return out


def cut_regions(audio: np.ndarray, regions: Sequence[Any], pad_s: float = 0.5, *, join_gap_s: float = 0.0,
                max_clip_s: float = math.inf, song: int = 0, rate: int = SAMPLE_RATE) -> list[Clip]:
    """Clips of `audio` covering each region plus `pad_s` of context (overlapping clips merged).

    Regions closer than `join_gap_s` share a clip while it stays under `max_clip_s` (fewer, longer
    clips give a recogniser more context; longer instrumental gaps are still cut out). Each clip
    records its song-absolute `offset` and the (unpadded) regions it holds."""
    duration = len(audio) / rate
    clips = []
    for cut in join_spans(pad_regions(regions, pad_s, duration), join_gap_s, max_clip_s):
        a = int(math.floor(cut["start"] * rate))
        b = min(len(audio), int(math.ceil(cut["end"] * rate)))
        if b <= a:
            continue
        inside = [{"start": s, "end": e} for s, e in map(span, regions)
                  if e > cut["start"] and s < cut["end"]]
        clips.append(Clip(song=song, offset=a / rate, audio=audio[a:b], regions=inside, rate=rate))
    return clips


# ------------------------------------------------------------------ the detector ---


class VoiceActivity:
    """Silero VAD with a `VadConfig`; one instance per worker (the model is small: ~2 MB)."""

    def __init__(self, cfg: VadConfig | None = None):
        self.cfg = cfg or VadConfig()
        self._model = _load(self.cfg.model)

    def settings(self) -> dict[str, Any]:
        return self.cfg.model_dump()

    @staticmethod
    def tool_versions() -> list[tuple[str, str]]:
        from importlib.metadata import version

        return [("silero-vad", version("silero-vad")), ("onnxruntime", version("onnxruntime"))]

    def speech_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Per-frame (512 samples = 32 ms) speech probability."""
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if self.cfg.model == "sequence":
            return self._model.audio_forward(x, sampling_rate=SAMPLE_RATE)
        import torch

        self._model.reset_states()
        probs = []
        with torch.inference_mode():
            t = torch.from_numpy(x)
            for s in range(0, len(x), 512):
                chunk = t[s:s + 512]
                if len(chunk) < 512:
                    chunk = torch.nn.functional.pad(chunk, (0, 512 - len(chunk)))
                probs.append(float(self._model(chunk, SAMPLE_RATE)))
        return np.asarray(probs, dtype=np.float32)

    def detect(self, audio: np.ndarray) -> VadResult:
        """Vocal regions of one song (16 kHz mono float32)."""
        duration = len(audio) / SAMPLE_RATE if isinstance(audio, np.ndarray) else 0.0
        problem = _problem(audio)
        if problem:
            return VadResult([], False, 0.0, duration, error=problem)
        if not self.cfg.enabled:
            whole = [{"start": 0.0, "end": round(duration, 3)}]
            return VadResult(whole, True, duration, duration)
        from silero_vad.utils_vad import get_speech_timestamps_from_probs

        c = self.cfg
        stamps = get_speech_timestamps_from_probs(
            self.speech_probabilities(audio).tolist(), sampling_rate=SAMPLE_RATE, threshold=c.threshold,
            neg_threshold=c.neg_threshold, min_speech_duration_ms=int(c.min_speech_s * 1000),
            min_silence_duration_ms=int(c.min_silence_s * 1000), speech_pad_ms=int(c.speech_pad_s * 1000),
            max_speech_duration_s=c.max_speech_s, return_seconds=False, audio_length_samples=len(audio))
        raw = [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
        regions = merge_regions(raw, c.merge_gap_s)
        voiced = regions_seconds(raw)
        return VadResult(regions, voiced >= c.min_vocal_s and bool(regions), voiced, duration)


def _problem(audio: Any) -> str | None:
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        return "audio must be a 1-D numpy array of 16 kHz mono samples"
    if not np.isfinite(audio).all():
        return "audio has non-finite samples (NaN or Inf)"
    return None


def _load(form: str):
    """The Silero model. Importing silero_vad sets torch's global thread count to 1: put it back."""
    import torch

    threads = torch.get_num_threads()
    try:
        import warnings

        import silero_vad

        warnings.filterwarnings("ignore", message="path is deprecated", category=DeprecationWarning,
                                module="silero_vad")

        if form == "sequence":
            return silero_vad.load_silero_vad(sequence=True)
        return silero_vad.load_silero_vad(onnx=(form == "onnx"))
    finally:
        torch.set_num_threads(threads)
