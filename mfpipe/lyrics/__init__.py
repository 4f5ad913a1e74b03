"""Lyrics that hold up on real songs: the parts the lyrics stage is built from.

- `vad`: vocal regions and `has_vocals` (Silero VAD), cutting regions out for ASR;
- `separation`: the vocal stem (Demucs htdemucs) before VAD/ASR;
- `language`: the song's language from its voiced audio, and the transcribe /
  fallback / `language_unsupported` decision;
- `regions_asr`: an `mfpipe.backends.asr.Asr` run on the vocal regions only;
- `guard`: hallucination rules on the word list;
- `core`: the parts in order for a batch of songs.

(Spoken lines over rendered music with known truth, for tests and benchmarks, are rendered by
`tests/support/render_voice.py`.)

Nothing heavy is imported here: each module loads its models when used.
"""
