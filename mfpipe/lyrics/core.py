"""The lyrics path for a batch of songs, from the parts in this package.

    separation (optional) -> VAD -> language -> ASR on the vocal regions -> guard

`LyricsCore(cfg, asr=...)` holds the models; `process(audios)` takes 16 kHz mono songs
and returns one `SongLyrics` per song with an `outcome`:
- `ok`: words were transcribed (possibly none survived the guard);
- `no_vocals`: VAD found no voice: no ASR call, no words;
- `language_unsupported`: the song's language is not one the ASR model covers and no
  fallback covers it: no words (never an English transcript of another language);
- `fallback`: the language needs `language.fallback_model`; this core does not load
  that model itself (`fallback_asr` may be given), else the song is left for it;
- `error`: a step failed for this song (`error` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Section
from .guard import GuardConfig, guard_words
from .language import LanguageConfig, LanguageDecision, LanguageDetector, LanguageGuess, decide
from .regions_asr import transcribe_regions_cfg
from .separation import SeparationConfig, VocalSeparator
from .vad import SAMPLE_RATE, VadConfig, VoiceActivity

Outcome = Literal["ok", "no_vocals", "language_unsupported", "fallback", "error"]


class LyricsCoreConfig(Section):
    """All settings of the lyrics path (the stage's config can embed this)."""


    separation: SeparationConfig = Field(
        default_factory=lambda: SeparationConfig(enabled=False),
        description="Vocal separation before VAD and ASR (off by default here; production turns it on).")
    vad: VadConfig = Field(default_factory=VadConfig, description="Voice activity and ASR clip cutting.")
    language: LanguageConfig = Field(default_factory=LanguageConfig, description="Language detection and routing.")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="Hallucination guard on the words.")
    asr_input: Literal["stem", "mix"] = Field(
        "stem", description="With separation on: ASR hears the vocal stem (stem) or the original mix (mix).")


@dataclass
class SongLyrics:
    outcome: Outcome
    text: str = ""
    words: list[dict[str, Any]] = field(default_factory=list)  # [{word, start, end}], song-absolute
    has_vocals: bool = False
    vocal_regions: list[dict[str, float]] = field(default_factory=list)
    language: str | None = None
    language_confidence: float = 0.0
    language_guess: LanguageGuess | None = None
    decision: LanguageDecision | None = None
    removed: list[dict[str, Any]] = field(default_factory=list)  # guard: {rule, text, start, end, ...}
    asr_audio_s: float = 0.0
    separated: bool = False
    separation_random_weights: bool = False
    error: str | None = None


class LyricsCore:
    def __init__(self, cfg: LyricsCoreConfig | None = None, *, asr: Any = None, fallback_asr: Any = None,
                 separator: VocalSeparator | None = None, vad: VoiceActivity | None = None,
                 detector: LanguageDetector | None = None):
        self.cfg = cfg or LyricsCoreConfig()
        self.asr = asr
        self.fallback_asr = fallback_asr
        self.separator = separator or (VocalSeparator(self.cfg.separation) if self.cfg.separation.enabled else None)
        self.vad = vad or VoiceActivity(self.cfg.vad)
        self.detector = detector or (LanguageDetector(self.cfg.language) if self.cfg.language.enabled else None)

    def process(self, audios: Sequence[np.ndarray]) -> list[SongLyrics]:
        n = len(audios)
        out: list[SongLyrics | None] = [None] * n
        listen = list(audios)  # what VAD (and language ID) hear
        rw = False
        if self.separator is not None:
            for i, res in enumerate(self.separator.separate(list(audios), SAMPLE_RATE)):
                if res.error:
                    out[i] = SongLyrics("error", error=f"separation: {res.error}")
                else:
                    listen[i] = res.vocals
                    rw = res.random_weights
        asr_audio = listen if (self.separator is not None and self.cfg.asr_input == "stem") else list(audios)
        todo: dict[int, list] = {}  # song -> regions, for the main ASR
        fallback: dict[int, list] = {}
        for i in range(n):
            if out[i] is not None:
                continue
            v = self.vad.detect(listen[i])
            if v.error:
                out[i] = SongLyrics("error", error=f"vad: {v.error}")
                continue
            base = dict(has_vocals=v.has_vocals, vocal_regions=v.vocal_regions, separated=self.separator is not None,
                        separation_random_weights=rw)
            if not v.has_vocals:
                out[i] = SongLyrics("no_vocals", **base)
                continue
            guess = self.detector.detect(listen[i], v.vocal_regions) if self.detector else None
            decision = decide(guess, self.cfg.language, has_vocals=True)
            song = SongLyrics("ok", language=decision.language or (guess.language if guess else None),
                              language_confidence=decision.confidence, language_guess=guess, decision=decision,
                              **base)
            out[i] = song
            if decision.action == "transcribe":
                todo[i] = v.vocal_regions
            elif decision.action == "fallback":
                song.outcome = "fallback"
                if self.fallback_asr is not None:
                    fallback[i] = v.vocal_regions
            else:
                song.outcome = "language_unsupported"
        for asr, group in ((self.asr, todo), (self.fallback_asr, fallback)):
            if not group or asr is None:
                continue
            order = list(group)
            results = transcribe_regions_cfg(asr, [asr_audio[i] for i in order], [group[i] for i in order],
                                             self.cfg.vad)
            for i, tr in zip(order, results):
                song = out[i]
                assert song is not None
                song.asr_audio_s = tr.asr_audio_s
                if tr.error:
                    song.outcome, song.error = "error", f"asr: {tr.error}"
                    continue
                kept = guard_words(tr.word_dicts(), song.vocal_regions, self.cfg.guard)
                song.words, song.removed = kept.words, kept.removed
                song.text = " ".join(w["word"] for w in kept.words)
                song.outcome = "ok"
                if song.language is None:
                    song.language = tr.language
        return out  # type: ignore[return-value]
