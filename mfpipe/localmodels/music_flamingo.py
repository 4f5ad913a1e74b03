"""Tiny Music Flamingo models built here (no model hub): the cpu profile's stand-in and scripted judges.

Both use the real architecture (`MusicFlamingoForConditionalGeneration`, an
AF-Whisper encoder with 128 mel bins, the projector, a Qwen2 decoder), the real
processor, and the real checkpoint's prompt: its chat template, system prompt
included, and its special tokens (`<|im_start|>`, `<|im_end|>`, `<sound>`,
`<|sound_bos|>`, `<|sound_eos|>`), so a test sends the text production sends.
Only the sizes are tiny and the tokenizer is a byte-level BPE trained here.

- `build_tiny_music_flamingo`: RANDOM weights. Its text is noise and it never
  commits to a yes/no (P(yes)+P(no) ~ 0.01): the cpu profile's judgements come
  out "not judged".
- `build_scripted_judge`: weights SET so that it judges deterministically
  through the real judging code: it answers a yes/no question "yes", a 1-10
  score "9" and a multiple choice "A" — unless the prompt mentions a kazoo
  (`TRIGGER`), then "no", "2" and "B". It hears nothing (the projector's output
  is zero): what it decides depends on the text alone, so a test can plant a
  false statement and watch a gate drop it. How, in a few weights: every token
  embedding is a constant plus one flag per marker word; four attention heads of
  the first layer each look for one marker ("word" of the yes/no format,
  "number" of the score format, "letter" of the choice format, and the trigger)
  through the lowest-frequency rotary pair, where position hardly matters; they
  write a flag into the last position's residual; the output layer turns the
  flags into the answer's logit. Everything else is zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import MARKER, preparer

TINY_NAME = "music-flamingo-tiny"
JUDGE_NAME = "music-flamingo-judge"
TRIGGER = "kazoo"  # the scripted judge says "no" to any statement that mentions it
SAMPLE_RATE = 16000
WINDOW_S = 30
_BUILDER_VERSION = 2  # 2: the real checkpoint's chat template and system prompt

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>", "<|sound_bos|>", "<|sound_eos|>"]
# The system prompt of nvidia/music-flamingo-2601-hf's chat template, as the checkpoint has it
# (its two typos included: the prompt must be the one the model was trained with).
SYSTEM_PROMPT = (
    "You are Music Flamingo, a multimodal assistant for language and music. On each turn you receive an "
    "audio clip which contains music and optional text, you will receive at least one or both; use your "
    "world knowledge and reasoning to help the user with any task. Interpret the entirety of the content "
    "any input music--regardlenss of whether the user calls it audio, music, or sound."
)
# The checkpoint's processor template, written out: a default system turn, then each turn as ChatML; a
# turn with audio gets ONE <sound> (the processor expands it per 30 s window) before its text.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n' + system_prompt + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages if m['content'] is not none -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}{%- else -%}"
    "{%- set heard = m['content'] | selectattr('type', 'equalto', 'audio') | list -%}"
    "{%- if heard -%}{{- '<sound>' -}}{%- endif -%}"
    "{%- for c in m['content'] if c['type'] == 'text' -%}{{- c['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
).replace("system_prompt", repr(SYSTEM_PROMPT))

_WORDS = (
    "a an the this with and of in on is are it its song track music clip piece sound voice vocals singer "
    "male female choir spoken lyrics instrumental drums kick snare hi-hat bass electric acoustic guitar piano "
    "keys organ synth pad lead strings violin cello flute brass trumpet saxophone percussion beat groove "
    "slow fast mid tempo steady swing waltz march ballad pop rock jazz folk blues electronic ambient dance "
    "classical hip-hop calm warm bright dark sad happy tense dreamy energetic gentle soft loud quiet major "
    "minor key chord chords progression harmony melody rhythm verse chorus bridge intro outro build drop "
    "yes no Yes No YES NO 0 1 2 3 4 5 6 7 8 9 10 . , ! ?"
).split()
# Words the scripted judge reacts to; each must be one token of the tokenizer trained here.
_MARKERS = {"yes_no": "word", "score": "number", "choice": "letter", "trigger": TRIGGER}


# ---------------------------------------------------------------- building blocks ---


def _corpus(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(_WORDS, size=12)) for _ in range(3000)] + _WORDS * 20
    lines += [" ".join([w] * 300) for w in _MARKERS.values()]  # frequent enough to become one token each
    from ..prompts import available, load_prompt

    lines += [load_prompt(pid).text for pid in available()] + [SYSTEM_PROMPT]
    return lines


def _processor(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MusicFlamingoProcessor, PreTrainedTokenizerFast, WhisperFeatureExtractor

    bpe = Tokenizer(models.BPE())
    # Digits one by one, as Qwen2's tokenizer splits them ("10" is "1" then "0").
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_corpus(seed), trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        extra_special_tokens=SPECIAL_TOKENS[3:], chat_template=CHAT_TEMPLATE)
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLE_RATE, hop_length=160, n_fft=400,
                                       chunk_length=WINDOW_S, return_attention_mask=True)
    return MusicFlamingoProcessor(features, tokenizer, chat_template=CHAT_TEMPLATE)


def _config(tokenizer):
    from transformers import AudioFlamingo3EncoderConfig, MusicFlamingoConfig, Qwen2Config

    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    return MusicFlamingoConfig(
        audio_config=AudioFlamingo3EncoderConfig(num_mel_bins=128, encoder_layers=2, d_model=64,
                                                 encoder_attention_heads=2, encoder_ffn_dim=128,
                                                 max_source_positions=1500),
        text_config=Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=4096, tie_word_embeddings=False,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        audio_token_id=ids[3], audio_bos_token_id=ids[4], audio_eos_token_id=ids[5],
    )


def full_size_config(tokenizer):
    """The 8B checkpoint's sizes (nvidia/music-flamingo-2601-hf: AF-Whisper encoder = Whisper large-v3,
    32 layers x 1280; Qwen2.5-7B decoder, 28 layers x 3584, head_dim 256 for the time embeddings), with
    this tokenizer's special-token ids: for GPU benchmarks and rehearsals with RANDOM weights."""
    from transformers import AudioFlamingo3EncoderConfig, MusicFlamingoConfig, Qwen2Config

    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    return MusicFlamingoConfig(
        audio_config=AudioFlamingo3EncoderConfig(num_mel_bins=128, encoder_layers=32, d_model=1280,
                                                 encoder_attention_heads=20, encoder_ffn_dim=5120,
                                                 max_source_positions=1500),
        text_config=Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        audio_token_id=ids[3], audio_bos_token_id=ids[4], audio_eos_token_id=ids[5],
        head_dim=256,  # the rotary time embedding's width, as the checkpoint's conversion sets it
    )


def build_full_size_random(folder: Path | None = None, *, device: str = "cuda", attn: str = "sdpa"):
    """Music Flamingo at the 8B sizes with RANDOM bf16 weights, built on `device` → (model, processor);
    saved to `folder` (~17 GB) when given, so pipeline workers can load it by path."""
    import torch
    from transformers import MusicFlamingoForConditionalGeneration

    processor = _processor(0)
    with torch.device(device):
        model = MusicFlamingoForConditionalGeneration._from_config(full_size_config(processor.tokenizer),
                                                                   dtype=torch.bfloat16, attn_implementation=attn)
    if folder is not None:
        _save(model, processor, Path(folder), {"name": "music-flamingo-8b-random", "random_weights": True,
                                               "about": "Music Flamingo at the 8B sizes with RANDOM weights"})
    else:
        ids = processor.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
        model.generation_config.eos_token_id = ids[2]
        model.generation_config.pad_token_id = ids[0]
    return model.eval(), processor


def _save(model, processor, folder: Path, info: dict) -> Path:
    ids = processor.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    model.generation_config.eos_token_id = ids[2]
    model.generation_config.pad_token_id = ids[0]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({**info, "builder_version": _BUILDER_VERSION}, indent=2))
    return folder


def _built(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and (folder / "model.safetensors").is_file() \
        and json.loads(marker.read_text()).get("builder_version") == _BUILDER_VERSION


# ---------------------------------------------------------------- the random stand-in ---


def build_tiny_music_flamingo(folder: Path, *, seed: int = 0, init_std: float = 0.2) -> Path:
    """Write a tiny RANDOM-WEIGHT Music Flamingo (real architecture, processor and prompt) to `folder`.

    Audio encoder: 128 mel bins, 2 layers, width 64; language model: Qwen2, 2 layers, width 64.
    Weights are drawn with a larger spread than the usual init (`init_std`) so the output
    depends visibly on the audio and on the time embeddings, which makes batching mistakes
    show in tests.
    """
    import torch
    from transformers import MusicFlamingoForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor = _processor(seed)
    torch.manual_seed(seed)
    model = MusicFlamingoForConditionalGeneration(_config(processor.tokenizer)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, init_std)
    return _save(model, processor, folder, {
        "name": TINY_NAME, "random_weights": True, "seed": seed,
        "about": "tiny Music Flamingo with RANDOM weights built by mfpipe: its text is noise"})


@preparer(TINY_NAME, profiles=("cpu",))
def prepare_tiny_music_flamingo(root: Path) -> Path:
    """Tiny random-weight Music Flamingo (real architecture) for the cpu profile; its text is noise."""
    folder = root / TINY_NAME
    return folder if _built(folder) else build_tiny_music_flamingo(folder)


# ---------------------------------------------------------------- the scripted judge ---


def marker_tokens(tokenizer, word: str) -> list[int]:
    """Every token of the vocabulary that spells `word` (with or without a leading space, any case)."""
    return [i for token, i in tokenizer.get_vocab().items()
            if tokenizer.convert_tokens_to_string([token]).strip().lower() == word]


def build_scripted_judge(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny Music Flamingo whose judgements are SET (see the module docstring) to `folder`."""
    import torch
    from transformers import MusicFlamingoForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor = _processor(seed)
    tokenizer = processor.tokenizer
    model = MusicFlamingoForConditionalGeneration(_config(tokenizer)).eval()
    flags = {task: marker_tokens(tokenizer, word) for task, word in _MARKERS.items()}
    _check_markers(tokenizer, flags)
    with torch.no_grad():
        _script(model, tokenizer, flags)
    return _save(model, processor, folder, {
        "name": JUDGE_NAME, "random_weights": True, "scripted": True, "trigger": TRIGGER,
        "about": "tiny Music Flamingo with SET weights built by mfpipe: yes / 9 / A, or no / 2 / B when a "
                 f"prompt mentions a {TRIGGER}; it hears nothing (tests of the gates)"})


def _check_markers(tokenizer, flags: dict[str, list[int]]) -> None:
    from ..prompts import load_prompt

    for task, pid in (("yes_no", "audiolm_yes_no"), ("score", "audiolm_score"), ("choice", "audiolm_choice")):
        ids = tokenizer.encode(load_prompt(pid).text, add_special_tokens=False)
        if not set(ids) & set(flags[task]):
            raise RuntimeError(f"the {pid} prompt no longer carries the marker {_MARKERS[task]!r} as one token: "
                               "the scripted judge cannot tell its formats apart")
    if not flags["trigger"]:
        raise RuntimeError(f"{TRIGGER!r} is not one token of the tokenizer")


# Residual dimensions the script uses: 0 is on for every token, 1-4 carry the marker flags.
_ON, _DIM = 0, {"yes_no": 1, "score": 2, "choice": 3, "trigger": 4}
# (q head, kv head, key/value slot) per flag: a kv head serves two q heads, one rotary pair each.
_HEADS = {"yes_no": (0, 0, 7), "score": (1, 0, 6), "choice": (2, 1, 7), "trigger": (3, 1, 6)}
_SHARP = 4.0  # query and key scale: a marker anywhere in ~800 positions takes all the attention
_LOGIT = 3.0  # answer logits ~ 3 x 5 = 15 above the rest of a 512-token vocabulary


def _script(model, tokenizer, flags: dict[str, list[int]]) -> None:
    for param in model.parameters():
        param.zero_()
    for name, param in model.named_parameters():  # norms pass values through unchanged
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            param.fill_(1.0)
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.language_model.model
    lm.embed_tokens.weight[:, _ON] = 1.0
    attn = lm.layers[0].self_attn
    head = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    norm_value = 1.0 / np.sqrt(2.0 / model.config.text_config.hidden_size)  # a marker token after RMSNorm
    for task, ids in flags.items():
        dim = _DIM[task]
        q_head, kv_head, slot = _HEADS[task]
        lm.embed_tokens.weight[ids, dim] = 1.0
        attn.q_proj.bias[q_head * head + slot] = _SHARP
        attn.k_proj.weight[kv_head * head + slot, dim] = _SHARP
        value = kv_head * head + (slot - 6)  # value slots 0/1 of the kv head
        attn.v_proj.weight[value, dim] = 1.0 / norm_value  # a found marker writes 1.0 ...
        attn.o_proj.weight[dim, q_head * head + (slot - 6)] = 1.0  # ... into its own residual dimension
    _answers(model.lm_head.weight, tokenizer)


def _answers(lm_head, tokenizer) -> None:
    """Output rows: (with the format's flag) the first answer normally, the second with the trigger."""
    pairs = {"yes_no": (("Yes", "yes", "YES"), ("No", "no", "NO")), "score": (("9",), ("2",)),
             "choice": (("A",), ("B",))}
    for task, (normal, triggered) in pairs.items():
        flag, trigger = _DIM[task], _DIM["trigger"]
        for spellings, sign in ((normal, -1.0), (triggered, 1.0)):
            one = [ids for ids in (tokenizer.encode(t, add_special_tokens=False) for t in spellings) if len(ids) == 1]
            if not one:
                raise RuntimeError(f"no spelling of {spellings[0]!r} is one token")
            row = lm_head[one[0][0]]
            row[flag] += _LOGIT
            row[trigger] += sign * _LOGIT
            if sign > 0:
                row[_ON] -= _LOGIT  # without the flag, the triggered answer stays below the rest


@preparer(JUDGE_NAME, profiles=())
def prepare_scripted_judge(root: Path) -> Path:
    """Tiny Music Flamingo with SET weights: yes unless a kazoo is mentioned (tests of the gates; --only)."""
    folder = root / JUDGE_NAME
    return folder if _built(folder) else build_scripted_judge(folder)
