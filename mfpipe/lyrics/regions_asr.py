"""ASR on the vocal regions only: cut, batch, transcribe, shift back to song time.

`transcribe_regions(asr, audios, regions)` takes an existing `mfpipe.backends.asr.Asr`
(any backend), cuts every song's vocal regions with `pad_s` of context (overlapping
clips merged), sends the clips of ALL songs to one `asr.transcribe` call (the NeMo
backend batches them; faster-whisper runs them in turn), and shifts each word by its
clip's offset, so word times are song-absolute. A song with no regions (an
instrumental) costs no ASR call and gets no words. A clip that fails marks its song's
result with `error` (the other songs are unaffected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import vad as vad_mod

MIN_CLIP_S = 0.2  # shorter clips are not sent (Asr rejects clips under 0.1 s)


@dataclass
class GatedTranscript:
    text: str = ""
    words: list[Any] = field(default_factory=list)  # mfpipe.backends.asr.WordStamp, song-absolute
    language: str | None = None
    error: str | None = None
    clips: int = 0
    asr_audio_s: float = 0.0  # seconds of audio the recogniser was given for this song

    def word_dicts(self) -> list[dict[str, Any]]:
        return [{"word": w.word, "start": w.start, "end": w.end} for w in self.words]


def transcribe_regions_cfg(asr: Any, audios: Sequence[np.ndarray], regions: Sequence[Sequence[Any] | None],
                           cfg: vad_mod.VadConfig) -> list[GatedTranscript]:
    """`transcribe_regions` with the padding and joining of a VadConfig."""
    return transcribe_regions(asr, audios, regions, pad_s=cfg.asr_pad_s, join_gap_s=cfg.asr_join_gap_s,
                              max_clip_s=cfg.asr_max_clip_s)


def transcribe_regions(asr: Any, audios: Sequence[np.ndarray], regions: Sequence[Sequence[Any] | None], *,
                       pad_s: float = 0.5, join_gap_s: float = 6.0, max_clip_s: float = 28.0,
                       rate: int = vad_mod.SAMPLE_RATE) -> list[GatedTranscript]:
    """One GatedTranscript per song. `regions[i]` None means "no VAD": the whole song is one clip.

    `pad_s`, `join_gap_s`, `max_clip_s`: see `vad.cut_regions` (VadConfig's asr_* fields)."""
    from ..backends.asr import WordStamp, clamp_words

    if len(audios) != len(regions):
        raise ValueError(f"{len(audios)} songs but {len(regions)} region lists")
    clips: list[vad_mod.Clip] = []
    for song, (audio, regs) in enumerate(zip(audios, regions)):
        if regs is None:
            regs = [{"start": 0.0, "end": len(audio) / rate}]
        cut = vad_mod.cut_regions(audio, regs, pad_s, join_gap_s=join_gap_s, max_clip_s=max_clip_s, song=song,
                                  rate=rate)
        clips += [c for c in cut
                  if len(c.audio) >= MIN_CLIP_S * rate]
    out = [GatedTranscript() for _ in audios]
    if not clips:
        return out
    transcripts = asr.transcribe([c.audio for c in clips])
    texts: list[list[str]] = [[] for _ in audios]
    for clip, tr in zip(clips, transcripts):
        song = out[clip.song]
        song.clips += 1
        song.asr_audio_s += len(clip.audio) / rate
        if tr.error is not None:
            song.error = song.error or f"clip at {clip.offset:.2f} s: {tr.error}"
            continue
        shifted = [WordStamp(w.word, clip.to_song(w.start), clip.to_song(w.end)) for w in tr.words]
        song.words += clamp_words(shifted, clip.offset, clip.end)
        if tr.text.strip():
            texts[clip.song].append(tr.text.strip())
        song.language = song.language or tr.language
    for song, parts in zip(out, texts):
        song.text = " ".join(parts)
        song.words.sort(key=lambda w: (w.start, w.end))
        song.asr_audio_s = round(song.asr_audio_s, 3)
    return out
