"""Lyrics: where a voice is heard, the song's language, and the words sung, with word timestamps.

Per batch of songs (decoded once to 16 kHz mono), `mfpipe.lyrics.core` runs, in order:
1. vocal separation (Demucs htdemucs, production; off in the cpu profile, and the banner says so):
   the vocal stem is what the voice detector and the recogniser hear; it is not written unless asked;
2. voice activity (Silero VAD): `vocal_regions` and `has_vocals`; an instrumental costs no ASR time
   and gets no words;
3. the song's language from its voiced audio (a multilingual Whisper's language ID) and the
   decision: the configured recogniser where it covers the language (Parakeet TDT 0.6B v3: 25
   European languages), the fallback model for the rest where one is set, else the outcome
   `language_unsupported` with no words: never an English transcript of a song in another language;
4. ASR on the vocal regions only (padded, nearby regions joined), timestamps song-absolute;
5. the hallucination guard: words outside the regions, known filler phrases, n-gram loops inside
   one region (a chorus repeated across sections is not a loop) and implausible word rates are
   removed; the row lists what was removed and why.
Speech recognisers are trained on speech, not singing: expect misses on sung lines; the row's
provenance names the models that made it.
"""

from __future__ import annotations

from typing import Any

from mfpipe import audio
from mfpipe.backends import refs
from mfpipe.backends.asr import Asr, AsrSettings
from mfpipe.gpumemory import CUDA_CONTEXT_GIB, GpuMemory, weights_gib
from mfpipe.lyrics.core import LyricsCoreConfig
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Stage, StageConfig, StageSettings
from mfpipe.schemas import LyricsRecord, ModelRef, Reject, ToolVersion

# Demucs' segments of a batch of songs, the recognisers' batches and their activations.
LYRICS_WORKING_GIB = 2.0


class LyricsConfig(AsrSettings, LyricsCoreConfig, StageConfig):
    """Lyrics: vocal separation, voice activity, language, ASR on the vocal regions, a hallucination guard."""

    def gpu_memory_estimate(self) -> GpuMemory | None:
        """The models one worker holds on its GPU (the recogniser, Demucs, a transformers Whisper for language
        ID and the fallback, loaded once when they are the same) + working memory + CUDA's own."""
        models = [self.model]
        if self.separation.enabled:
            models.append(self.separation.model)
        if self.language.backend == "transformers":
            models += [m for m in (self.language.detector_model, self.language.fallback_model) if m]
        sizes = [weights_gib(m) for m in dict.fromkeys(models)]
        if any(size is None for size in sizes):
            return None
        gib = sum(size.gib for size in sizes) + LYRICS_WORKING_GIB + CUDA_CONTEXT_GIB
        return GpuMemory(round(gib, 2), " + ".join(size.source for size in sizes) + " + working memory")


@register
class LyricsStage(Stage):
    name = "lyrics"
    record = LyricsRecord
    requires = ("ingest",)
    columns = {"ingest": ("song_id", "source", "processed_s")}
    config_model = LyricsConfig
    summary = "voice regions (Silero VAD, on a Demucs vocal stem), language, lyrics with word timestamps"

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        cfg = settings.own
        notes = refs.stand_in_notes(cfg.model, "uses a RANDOM-WEIGHT speech recogniser: the lyrics are noise")
        if not cfg.separation.enabled:
            notes.append("vocal separation is off (lyrics.separation.enabled): the voice detector and the "
                         "recogniser hear the whole mix")
        else:
            notes += refs.stand_in_notes(cfg.separation.model, "separates vocals with a RANDOM-WEIGHT htdemucs "
                                         "stand-in: the stem is noise, made only to exercise the code path")
        return notes

    @classmethod
    def counts(cls, record: LyricsRecord) -> dict[str, int]:
        return {"with_vocals": int(record.has_vocals), record.outcome: 1}

    def setup(self) -> None:
        from mfpipe.lyrics.core import LyricsCore

        cfg = self.cfg
        self.asr = Asr.from_config(cfg)
        fallback = None
        if cfg.language.fallback_model:
            fallback = Asr(cfg.language.backend, cfg.language.fallback_model, device=cfg.device, language=None,
                           compute_type=cfg.compute_type, no_speech_threshold=cfg.no_speech_threshold)
        self.fallback = fallback
        self.core = LyricsCore(cfg, asr=self.asr, fallback_asr=fallback)
        self.model_refs = [self.asr.model_ref("lyrics_asr")]
        if fallback is not None:
            self.model_refs.append(fallback.model_ref("lyrics_asr_fallback"))
        if self.core.separator is not None:
            self.model_refs.append(ModelRef(role="vocal_separator", name=cfg.separation.model,
                                            random_weights=self.core.separator.random_weights))
        if self.core.detector is not None:
            self.model_refs.append(ModelRef(role="language_id", name=cfg.language.detector_model))
        self.model_refs.append(ModelRef(role="voice_activity", name=f"silero-vad ({cfg.vad.model})"))
        self.provenance_settings = self.settings_text({**self.asr.settings(), **cfg.model_dump(
            mode="json", include={"separation", "vad", "language", "guard", "asr_input"})})
        self.notes = []
        if self.asr.random_weights:
            self.notes.append("random-weight recogniser: the text is NOISE")
        if self.core.separator is not None and self.core.separator.random_weights:
            self.notes.append("random-weight vocal separator: the vocal stem is NOISE (a stand-in for htdemucs)")

    def tool_versions(self) -> list[ToolVersion]:
        from importlib.metadata import version

        tools = [ToolVersion(name=n, version=v) for n, v in self.asr.tool_versions()]
        tools.append(ToolVersion(name="silero-vad", version=version("silero-vad")))
        if self.core.separator is not None:
            tools.append(ToolVersion(name="demucs", version=version("demucs")))
        return tools

    def process_batch(self, rows: list[dict[str, Any]]) -> list[LyricsRecord | Reject]:
        from mfpipe.backends.asr import SAMPLE_RATE

        results: dict[int, LyricsRecord | Reject] = {}
        decoded: dict[int, Any] = {}
        for n, row in enumerate(rows):
            try:
                decoded[n] = audio.load_mono(row["source"], SAMPLE_RATE, max_seconds=row["processed_s"])
            except audio.AudioError as exc:
                results[n] = self.reject(row, exc.kind, exc.message)
        order = list(decoded)
        for n, song in zip(order, self.core.process([decoded[n] for n in order])):
            results[n] = self._record(rows[n], song)
        return [results[n] for n in range(len(rows))]

    def _record(self, row: dict[str, Any], song) -> LyricsRecord | Reject:
        if song.outcome == "error":
            return self.reject(row, "lyrics_failed", song.error or "the lyrics path failed", retryable=True)
        notes = list(self.notes)
        if song.decision is not None:
            notes.append(f"language: {song.decision.reason}")
        if song.outcome == "fallback" and self.fallback is None:
            notes.append("the language needs lyrics.language.fallback_model, which is not set: no words")
        wrote = None
        if song.words:
            by_fallback = song.outcome == "fallback" and self.fallback is not None
            wrote = (self.fallback if by_fallback else self.asr).location.ref
        outcome = song.outcome if song.outcome in ("no_vocals", "language_unsupported", "fallback") else "ok"
        if outcome == "fallback" and self.fallback is None:
            outcome = "language_unsupported"
        return LyricsRecord(
            song_id=row["song_id"], source=row["source"],
            provenance=self.provenance(notes=notes),
            text=song.text, words=song.words, has_vocals=song.has_vocals, vocal_regions=song.vocal_regions,
            language=song.language, language_confidence=song.language_confidence or None, outcome=outcome,
            words_model=wrote, separated=song.separated,
            removed=[{k: r[k] for k in ("rule", "text", "start", "end")} for r in song.removed],
        )

