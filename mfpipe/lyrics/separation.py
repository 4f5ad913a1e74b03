"""Vocal separation with Demucs (htdemucs) before voice activity and ASR.

`VocalSeparator(cfg).separate(audios, rates)` returns, per song, the vocal stem as
16 kHz mono float32 (what VAD and ASR take), time-aligned with the input sample for
sample (same start, same duration), and optionally writes the 44.1 kHz stereo stem.

- Input: any rate, mono `(n,)` or stereo `(2, n)` / `(n, 2)`; resampled with soxr to the
  model's rate (44.1 kHz for htdemucs) and made stereo (mono is duplicated).
- Each song is normalised as Demucs' own `separate` does (minus the mono mix's mean,
  divided by its std) and scaled back afterwards.
- Long songs go through `demucs.apply.apply_model` with `split=True`: windows of
  `segment_s` (the model's training length when None) overlapping by `overlap`, blended
  with Demucs' triangular weights; `shifts` random time shifts are averaged (seeded, so a
  rerun gives the same stem).
- Batching: songs are sorted by length and grouped (`batch_songs` at most, and at most
  `max_batch_s` of padded audio per call), so one forward pass carries several songs'
  windows. The tracks stay in host memory; only the windows go to the device.
- Device: `auto` picks cuda when torch sees one.

Production loads the pretrained model by name (`demucs.pretrained.get_model("htdemucs")`,
weights that Demucs downloads itself at run time). A local model file (written by
`save_model`, e.g. the random-weight stand-in of `mfpipe.localmodels.htdemucs`) loads with
no network; a `<file>.mfpipe-model.json` beside it marking `random_weights` makes every
result say so (`SeparationResult.random_weights`), so banners and provenance can warn
that the stem is noise.

Speed (`bench/lyrics.py`; shared 2-core box, one thread, CPU torch 2.13, the real htdemucs
architecture with random weights): ~0.67 CPU-s per audio second with shifts=0 or 1 (one
shifted pass costs about the same as none) -- 30x Whisper tiny.en's cost, so on CPU
separation is for the GPU production path, not the cpu profile.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soxr
from pydantic import Field

from ..config import Section
from ..devices import pick_device
from ..localmodels import MARKER

OUTPUT_RATE = 16000
DEFAULT_MODEL = "htdemucs"
SOURCES = ["drums", "bass", "other", "vocals"]

log = logging.getLogger(__name__)


class SeparationConfig(Section):
    """Vocal separation (Demucs) in front of VAD and ASR."""


    enabled: bool = Field(True, description="Separate the vocals first; off: VAD and ASR get the full mix.")
    model: str = Field(
        DEFAULT_MODEL,
        description="A Demucs pretrained name (downloaded at run time, e.g. htdemucs, htdemucs_ft) "
                    "or a local model file written by mfpipe.lyrics.separation.save_model.")
    stem: str = Field("vocals", description="The source to keep.")
    segment_s: float | None = Field(
        None, gt=0.0, description="Window length in seconds (None: the model's training segment, 7.8 s for htdemucs).")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Fraction of each window shared with the next.")
    shifts: int = Field(1, ge=0, description="Random time shifts averaged (0: none; Demucs' CLI uses 1).")
    seed: int = Field(0, description="Seed for the shifts, so a rerun gives the same stem.")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:N.")
    batch_songs: int = Field(4, ge=1, description="At most this many songs per forward pass.")
    max_batch_s: float = Field(
        1800.0, gt=0.0, description="At most this many seconds of (padded) audio per batch, to bound memory.")
    write_stem: bool = Field(False, description="Also write the separated stem to stem_dir.")
    stem_dir: str | None = Field(None, description="Where stems are written (required when write_stem).")
    stem_format: Literal["flac", "wav"] = Field("flac", description="File format of written stems.")


@dataclass
class SeparationResult:
    vocals: np.ndarray  # float32 mono at `rate`, aligned with the input
    rate: int
    duration_s: float
    model: str
    random_weights: bool
    compute_s: float = 0.0  # this song's share of its batch's wall time
    stem_path: str | None = None
    error: str | None = None


def save_model(model: Any, path: Path, *, random_weights: bool, about: str = "") -> Path:
    """Write a Demucs model (class, init arguments, weights) to `path`, with a provenance marker."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args, kwargs = model._init_args_kwargs
    torch.save({"klass": model.__class__, "args": args, "kwargs": kwargs,
                "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
    info = {"name": path.stem, "random_weights": random_weights, "about": about}
    path.with_name(f"{path.name}.{MARKER}").write_text(json.dumps(info,
                                        indent=2))
    return path


def load_separator_model(ref: str) -> tuple[Any, bool]:
    """(model, random_weights) for a configured model: a local file, else a Demucs pretrained name."""
    from ..backends import refs

    location = refs.resolve(ref)
    if location.local:
        from demucs.states import load_model

        return load_model(location.location), location.random_weights
    from demucs.pretrained import get_model

    return get_model(location.location), False  # model hub at run time (production)


def _as_channels_first(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim == 2:
        if a.shape[0] <= 2 < a.shape[1]:
            return a
        if a.shape[1] <= 2 < a.shape[0]:
            return a.T
    raise ValueError(f"audio must be (n,), (channels, n) or (n, channels) with 1-2 channels; got {a.shape}")


def _problem(audio: Any, rate: int) -> str | None:
    if not isinstance(audio, np.ndarray):
        return "audio must be a numpy array"
    try:
        a = _as_channels_first(audio)
    except ValueError as exc:
        return str(exc)
    if a.shape[1] < 0.1 * rate:
        return f"audio of {a.shape[1] / rate:.3f} s is too short to separate"
    if not np.isfinite(a).all():
        return "audio has non-finite samples (NaN or Inf)"
    return None


class VocalSeparator:
    """Demucs vocal separation with a `SeparationConfig`; one per worker (htdemucs: ~27M params)."""

    def __init__(self, cfg: SeparationConfig | None = None, *, model: Any = None, random_weights: bool | None = None):
        """`model` overrides `cfg.model` with an already-built Demucs-like module (tests)."""
        self.cfg = cfg or SeparationConfig()
        if model is None:
            model, rw = load_separator_model(self.cfg.model)
        else:
            rw = False
        self.model = model.eval()
        self.random_weights = rw if random_weights is None else random_weights
        self.device = pick_device(self.cfg.device)
        # Onto its device once: apply_model would otherwise move a bag's models there and back on every
        # call (a copy of the weights each way per batch of songs).
        self.model.to(self.device)
        if self.cfg.stem not in self.model.sources:
            raise ValueError(f"model has no {self.cfg.stem!r} source (it has {self.model.sources})")
        self.stem_index = self.model.sources.index(self.cfg.stem)
        self.rate = int(self.model.samplerate)
        self.channels = int(self.model.audio_channels)
        if self.cfg.write_stem and not self.cfg.stem_dir:
            raise ValueError("separation.write_stem needs separation.stem_dir")

    # ------------------------------------------------------------ provenance
    def settings(self) -> dict[str, Any]:
        keys = ("model", "stem", "segment_s", "overlap", "shifts", "seed", "batch_songs")
        return {k: getattr(self.cfg, k) for k in keys} | {"device": self.device, "random_weights": self.random_weights}

    @staticmethod
    def tool_versions() -> list[tuple[str, str]]:
        from importlib.metadata import version

        return [("demucs", version("demucs")), ("torch", version("torch")), ("soxr", version("soxr"))]

    # ------------------------------------------------------------ separation
    def _to_model_input(self, audio: np.ndarray, rate: int) -> np.ndarray:
        a = _as_channels_first(audio)
        if rate != self.rate:
            a = soxr.resample(a.T, rate, self.rate, quality="HQ").T
        if a.shape[0] < self.channels:
            a = np.repeat(a[:1], self.channels, axis=0)
        elif a.shape[0] > self.channels:
            a = a.mean(axis=0, keepdims=True)
        return np.ascontiguousarray(a, dtype=np.float32)

    def _batches(self, lengths: dict[int, int]) -> list[list[int]]:
        order = sorted(lengths, key=lambda i: lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches:
                cur = batches[-1]
                padded_s = max(lengths[j] for j in cur + [i]) * (len(cur) + 1) / self.rate
                if len(cur) < self.cfg.batch_songs and padded_s <= self.cfg.max_batch_s:
                    cur.append(i)
                    continue
            batches.append([i])
        return batches

    def _run(self, tracks: list[np.ndarray]) -> list[np.ndarray]:
        """Model-rate stems (channels, n) for same-batch tracks (channels, n_i)."""
        import torch
        from demucs.apply import apply_model

        longest = max(t.shape[1] for t in tracks)
        batch = np.zeros((len(tracks), self.channels, longest), dtype=np.float32)
        stats = []
        for k, t in enumerate(tracks):
            ref = t.mean(axis=0)
            mean, std = float(ref.mean()), float(ref.std()) + 1e-8
            batch[k, :, : t.shape[1]] = (t - mean) / std
            stats.append((mean, std))
        state = random.getstate()
        random.seed(self.cfg.seed)  # apply_model draws its shifts from `random`
        try:
            with torch.inference_mode():
                out = apply_model(self.model, torch.from_numpy(batch), shifts=self.cfg.shifts, split=True,
                                  overlap=self.cfg.overlap, segment=self.cfg.segment_s, device=self.device,
                                  progress=False)
        finally:
            random.setstate(state)
        stems = out[:, self.stem_index].cpu().numpy()
        return [stems[k, :, : t.shape[1]] * std + mean for k, (t, (mean, std)) in enumerate(zip(tracks, stats))]

    def separate(self, audios: Sequence[np.ndarray], rates: int | Sequence[int],
                 names: Sequence[str] | None = None) -> list[SeparationResult]:
        """One result per song, in order; a song that fails gets `error` set and does not stop the others."""
        rates = [rates] * len(audios) if isinstance(rates, int) else list(rates)
        results: list[SeparationResult | None] = [None] * len(audios)
        tracks: dict[int, np.ndarray] = {}
        for i, (audio, rate) in enumerate(zip(audios, rates)):
            problem = _problem(audio, rate)
            if problem:
                results[i] = self._failed(problem, audio, rate)
                continue
            tracks[i] = self._to_model_input(audio, rate)
        for group in self._batches({i: t.shape[1] for i, t in tracks.items()}):
            started = time.perf_counter()
            try:
                stems = self._run([tracks[i] for i in group])
            except Exception as exc:  # noqa: BLE001 - one song at a time to find the bad one
                if len(group) == 1:
                    results[group[0]] = self._failed(f"{type(exc).__name__}: {exc}"[:500], audios[group[0]],
                                                     rates[group[0]])
                    continue
                log.warning("separation batch of %d songs failed (%s); retrying one by one", len(group), exc)
                for i in group:
                    results[i] = self.separate([audios[i]], [rates[i]], [names[i]] if names else None)[0]
                continue
            share = (time.perf_counter() - started) / len(group)
            for i, stem in zip(group, stems):
                results[i] = self._result(stem, rates[i], audios[i], share, names[i] if names else f"song{i}")
        return results  # type: ignore[return-value]

    def _result(self, stem: np.ndarray, in_rate: int, audio: np.ndarray, seconds: float, name: str) -> SeparationResult:
        n_in = _as_channels_first(audio).shape[1]
        duration = n_in / in_rate
        mono = stem.mean(axis=0)
        vocals = soxr.resample(mono, self.rate, OUTPUT_RATE, quality="HQ") if self.rate != OUTPUT_RATE else mono
        n_out = int(round(duration * OUTPUT_RATE))  # exactly the input's duration at 16 kHz
        vocals = vocals[:n_out] if len(vocals) >= n_out else np.pad(vocals, (0, n_out - len(vocals)))
        path = None
        if self.cfg.write_stem:
            path = self._write(stem, name)
        return SeparationResult(vocals=np.ascontiguousarray(vocals, dtype=np.float32), rate=OUTPUT_RATE,
                                duration_s=duration, model=self.cfg.model, random_weights=self.random_weights,
                                compute_s=seconds, stem_path=path)

    def _write(self, stem: np.ndarray, name: str) -> str:
        import soundfile as sf

        folder = Path(self.cfg.stem_dir)  # type: ignore[arg-type]
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "song"
        path = folder / f"{safe}.{self.cfg.stem}.{self.cfg.stem_format}"
        peak = float(np.abs(stem).max()) if stem.size else 0.0
        data = stem.T / peak if peak > 1.0 else stem.T  # no clipping in PCM files
        sf.write(path, data, self.rate, subtype="PCM_16")
        return str(path)

    def _failed(self, error: str, audio: Any, rate: int) -> SeparationResult:
        try:
            duration = _as_channels_first(audio).shape[1] / rate
        except (ValueError, TypeError, AttributeError):
            duration = 0.0
        return SeparationResult(vocals=np.zeros(0, dtype=np.float32), rate=OUTPUT_RATE, duration_s=duration,
                                model=self.cfg.model, random_weights=self.random_weights, error=error)
