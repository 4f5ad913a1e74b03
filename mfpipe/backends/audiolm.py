"""`AudioLM`: Music Flamingo (transformers) behind a small interface.

What it offers (all batched; each input is a `Query`: 16 kHz mono float32
audio of at most one 30 s window plus a prompt):

- `generate(queries)`  free text for many clips per `generate` call: the
  surface captioner's workhorse. Clips are sorted by length and cut into
  batches of `batch_size`; rows are left-padded.
- `ask(audio, prompt)` one clip, one answer (convenience around `generate`).
- `yes_no(queries)`    a yes/no judgement with its probability, read from the
  logits of the yes/no tokens at the first step of greedy decoding (one
  forward pass, no sampling): `YesNo(answer, p_yes, mass)`.
- `score(queries)`     a 1-10 (or low-high) score the same way:
  `Score(value, expected, probs, mass)`.
- `choose(queries, options)` a multiple-choice answer the same way, from the
  logits of the option letters: `Choice(index, probs, mass)`.

Batched output equals one-at-a-time output under greedy decoding (float32 on
CPU; tests check it). What makes that true here, beyond transformers' own
left padding and masks:
- every clip yields audio tokens: a clip shorter than ~20 ms gets zero audio
  tokens, and then transformers' `_build_audio_timestamps` maps the batch's
  encoder rows to the wrong conversations, silently shifting the rotary time
  embeddings of the NEXT clip in the batch by 30 s (and crashing when alone).
  Clips under `MIN_CLIP_S` are refused with a clear error instead;
- audio features are cast to the model dtype (bf16 inputs otherwise crash the
  encoder's first convolution);
- decoding is forced greedy with a fresh generation config (a checkpoint's
  sampling defaults would make runs unrepeatable);
- prompt text cannot smuggle in special tokens such as `<sound>` (an extra
  audio placeholder breaks the audio/token count for the whole batch).
A clip with non-finite samples, or a batch that fails (out of memory), costs
only the clips concerned: failing batches are split in halves and retried, so
one bad clip ends as an `error` on its own answer.

The cpu profile's stand-in (the real architecture with tiny sizes and RANDOM
weights) and the scripted judges of the gate tests are built in
`mfpipe.localmodels.music_flamingo`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Section
from ..devices import pick_device
from ..gpumemory import CUDA_CONTEXT_GIB, GIB, GpuMemory, kv_bytes_per_token, weights_gib
from . import refs

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Music Flamingo's encoder window
MAX_WINDOWS = 40  # ...and at most 40 of them (1200 s)
# Below ~20 ms a clip gets zero audio tokens (see the module docstring); keep a margin.
MIN_CLIP_S = 0.1
DEFAULT_MODEL = "nvidia/music-flamingo-2601-hf"
# For the plan's memory estimate: Qwen2.5-7B's KV bytes per token (28 layers x 4 KV heads x 128 x 2 x bf16),
# used when the checkpoint's config is not readable, and what one batch row holds.
QWEN25_7B_KV_BYTES = 2 * 28 * 4 * 128 * 2
TOKENS_PER_ROW = 1200
ACTIVATIONS_GIB = 1.5
RANDOM_WEIGHTS_NOTE = ("random-weight stand-in model (cpu profile): the text is NOISE, "
                       "made only to exercise the pipeline")

log = logging.getLogger(__name__)


class AudioLMError(RuntimeError):
    pass


@dataclass(frozen=True)
class Query:
    audio: np.ndarray  # float32 mono at 16 kHz, at most one 30 s window
    prompt: str


@dataclass(frozen=True)
class Answer:
    text: str | None
    error: str | None = None
    token_ids: tuple[int, ...] | None = None  # the generated ids (padding and the prompt cut off)


@dataclass(frozen=True)
class YesNo:
    answer: bool | None  # the greedy choice between yes and no
    p_yes: float | None  # P(yes) / (P(yes) + P(no)) at the first answer token
    mass: float | None  # P(yes) + P(no): how much the model wanted to answer yes/no at all
    error: str | None = None


@dataclass(frozen=True)
class Score:
    value: int | None  # the most probable score
    expected: float | None  # the probability-weighted mean score
    probs: tuple[float, ...] = ()  # one per score from low to high, normalised
    mass: float | None = None  # raw probability of answering with one of the scores
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    index: int | None  # the most probable option (0 = A)
    probs: tuple[float, ...] = ()  # one per option, normalised over the query's own letters
    mass: float | None = None  # raw probability of answering with one of those letters
    error: str | None = None

    @property
    def letter(self) -> str | None:
        return LETTERS[self.index] if self.index is not None else None


LETTERS = "ABCDEFGH"

class AudioLMSettings(Section):
    """Which Music Flamingo a stage loads and how (`AudioLM.from_config`)."""

    model: str = Field(DEFAULT_MODEL, description="Hub id, local folder, or `prepared:NAME` (a model that "
                                                  "`mfpipe models prepare` built).")
    revision: str | None = Field(None, description="Hub commit or tag to pin; None: the hub's current one "
                                                   "(recorded per row).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights' dtype; auto: bfloat16 on a GPU, float32 on the CPU.")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="Attention kernel; auto: flash-attention 2 on a GPU where it is installed, else sdpa.")
    device: str = Field("auto", description="Torch device; auto: cuda when the worker sees a GPU, else cpu.")
    generate_batch: int = Field(16, ge=1, description="Clips (30 s windows) per forward pass, across songs.")

    def gpu_memory_estimate(self) -> GpuMemory | None:
        """Weights (checkpoint index, else the published size) + the KV cache of one full batch (750 audio
        tokens per window, the prompt and the answer: ~1,200 tokens a row) + activations + CUDA's own."""
        weights = weights_gib(self.model)
        if weights is None:
            return None
        kv = kv_bytes_per_token(self.model, QWEN25_7B_KV_BYTES) * self.generate_batch * TOKENS_PER_ROW / GIB
        gib = weights.gib + kv + ACTIVATIONS_GIB + CUDA_CONTEXT_GIB
        return GpuMemory(round(gib, 2), f"{weights.source} + KV cache and activations of {self.generate_batch} "
                                        f"windows")


# ---------------------------------------------------------------- windows ---


def split_windows(duration_s: float, window_s: float = WINDOW_S,
                  max_windows: int = MAX_WINDOWS) -> list[tuple[float, float]]:
    """(start, end) of each window over `duration_s`, the last one partial; at most `max_windows`.

    The count follows ingest's `n_windows` (ceil of duration / window, at least 1).
    """
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    count = min(count, max_windows)
    return [(round(i * window_s, 6), round(min((i + 1) * window_s, duration_s), 6)) for i in range(count)]


def window_clip(audio: np.ndarray, start_s: float, end_s: float, min_clip_s: float = 1.0,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of one window. A tail shorter than `min_clip_s` is read as the last
    `min_clip_s` of the song (overlapping the window before it), so every clip carries
    enough audio for the model to say something about it."""
    start, end = int(round(start_s * sample_rate)), min(len(audio), int(round(end_s * sample_rate)))
    need = int(round(min_clip_s * sample_rate))
    if end - start < need:
        start = max(0, end - need)
    return audio[start:end]


# ---------------------------------------------------------------- backend ---


@dataclass
class _Chunk:
    """A batch of queries (indices into the caller's list) ready for the model."""

    indices: list[int]
    inputs: Any = None


class AudioLM:
    """Music Flamingo via `MusicFlamingoForConditionalGeneration` + `AutoProcessor`."""

    def __init__(self, model: str = DEFAULT_MODEL, *, revision: str | None = None, dtype: str = "auto",
                 attn_implementation: str = "auto", device: str = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoProcessor, MusicFlamingoForConditionalGeneration

        self.location = refs.resolve(model)
        self.revision = revision
        self.random_weights = self.location.random_weights
        self.batch_size = batch_size
        self.device = torch.device(pick_device(device))
        self.dtype = _pick_dtype(dtype, self.device)
        self.attn_implementation = _pick_attention(attn_implementation, self.device)
        hub = dict(revision=revision, local_files_only=self.location.local)
        _quiet_transformers()
        processor = AutoProcessor.from_pretrained(self.location.location, **hub)
        loaded = MusicFlamingoForConditionalGeneration.from_pretrained(
            self.location.location, dtype=self.dtype, attn_implementation=self.attn_implementation,
            device_map=str(self.device), **hub,
        ).eval()
        self._attach(loaded, processor)

    @classmethod
    def from_model(cls, model: Any, processor: Any, *, name: str, random_weights: bool,
                   batch_size: int = 16) -> AudioLM:
        """Wrap a model and processor already in memory (the benchmark builds full-size random ones)."""
        self = cls.__new__(cls)
        self.location = refs.ModelLocation(name, name, local=False)
        self.revision = None
        self.random_weights = random_weights
        self.batch_size = batch_size
        self.device, self.dtype = model.device, model.dtype
        self.attn_implementation = model.config._attn_implementation
        _quiet_transformers()
        self._attach(model.eval(), processor)
        return self

    def _attach(self, model: Any, processor: Any) -> None:
        self.splits: list[tuple[int, str]] = []  # (batch size, error) of every batch that failed and was halved
        self.generation_extra: dict[str, Any] = {}  # e.g. {"cache_implementation": "static"} (bench/caption.py)
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        # Longest first, so "<|sound_bos|>" goes before any token it contains.
        self._special = sorted(set(self.tokenizer.all_special_tokens) | {
            processor.audio_token, processor.audio_bos_token, processor.audio_eos_token}, key=len, reverse=True)
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = model.generation_config.pad_token_id
        self._eos_ids = model.generation_config.eos_token_id or self.tokenizer.eos_token_id

    @classmethod
    def from_config(cls, cfg: AudioLMSettings) -> AudioLM:
        """From a stage section with the audio-LM settings."""
        return cls(cfg.model, revision=cfg.revision, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation,
                   device=cfg.device, batch_size=cfg.generate_batch)

    # ------------------------------------------------------------ provenance
    def model_ref(self, role: str = "audio_lm"):
        from ..schemas import ModelRef

        revision = self.revision or getattr(self.model.config, "_commit_hash", None) \
            or self.location.content_revision()
        return ModelRef(role=role, name=self.location.ref, revision=revision, random_weights=self.random_weights)

    def settings(self, **generation: Any) -> dict[str, Any]:
        """What, besides the model and the prompt, decides the text (for provenance)."""
        return {"decoding": "greedy", "num_beams": 1, **generation, "dtype": str(self.dtype).replace("torch.", ""),
                "attn_implementation": self.attn_implementation, "device": self.device.type}

    def notes(self) -> list[str]:
        return [RANDOM_WEIGHTS_NOTE] if self.random_weights else []

    # ------------------------------------------------------------ public API
    def generate(self, queries: Sequence[Query], *, max_new_tokens: int = 128, min_new_tokens: int = 0,
                 batch_size: int | None = None) -> list[Answer]:
        """Free-text answers, one per query, in order (batched; see the module docstring).

        `batch_size` overrides the clips per generate call (1 = one conversation at a time)."""
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=False, num_beams=1,
            eos_token_id=self._eos_ids, pad_token_id=self._pad_id, **self.generation_extra,
        )

        def run(chunk: _Chunk) -> list[Answer]:
            import torch

            with torch.inference_mode():
                out = self.model.generate(**chunk.inputs, generation_config=config)
            new = out[:, chunk.inputs["input_ids"].shape[1]:]
            texts = self.processor.batch_decode(new, skip_special_tokens=True)
            return [Answer(text=t.strip(), token_ids=_generated_ids(row, self._pad_id, self._eos_ids))
                    for t, row in zip(texts, new.tolist())]

        return self._map(queries, run, lambda msg: Answer(text=None, error=msg), batch_size)

    def ask(self, audio: np.ndarray, prompt: str, *, max_new_tokens: int = 256) -> str:
        """Answer one prompt about one clip; raises AudioLMError when the clip cannot be used."""
        answer = self.generate([Query(audio, prompt)], max_new_tokens=max_new_tokens)[0]
        if answer.error is not None:
            raise AudioLMError(answer.error)
        return answer.text or ""

    def yes_no(self, queries: Sequence[Query], *, batch_size: int | None = None) -> list[YesNo]:
        """Yes/no judgements: each query's prompt is a question (the yes/no instruction is added)."""
        from ..prompts import load_prompt

        template = load_prompt("audiolm_yes_no")
        asked = [Query(q.audio, template.render(question=q.prompt.strip())) for q in queries]
        choices = {"yes": ["Yes", "yes", "YES"], "no": ["No", "no", "NO"]}
        results = self._choice_mass(asked, choices, batch_size)
        out = []
        for r in results:
            if isinstance(r, str):
                out.append(YesNo(None, None, None, error=r))
                continue
            total = r["yes"] + r["no"]
            p_yes = r["yes"] / total if total > 0 else 0.5
            out.append(YesNo(answer=p_yes >= 0.5, p_yes=p_yes, mass=total))
        return out

    def score(self, queries: Sequence[Query], *, low: int = 1, high: int = 10,
              batch_size: int | None = None) -> list[Score]:
        """Scores from `low` to `high`: each query's prompt says what to rate (the format is added)."""
        from ..prompts import load_prompt

        if not 0 <= low < high <= 99:
            raise ValueError("scores must lie within 0..99 and low < high")
        template = load_prompt("audiolm_score")
        asked = [Query(q.audio, template.render(question=q.prompt.strip(), low=low, high=high)) for q in queries]
        labels = [str(v) for v in range(low, high + 1)]
        results = self._choice_mass(asked, {label: [label] for label in labels}, batch_size)
        out = []
        for r in results:
            if isinstance(r, str):
                out.append(Score(None, None, error=r))
                continue
            raw = np.array([r[label] for label in labels], dtype=np.float64)
            total = float(raw.sum())
            probs = raw / total if total > 0 else np.full(len(labels), 1.0 / len(labels))
            values = np.arange(low, high + 1)
            out.append(Score(value=int(values[int(np.argmax(probs))]), expected=float((probs * values).sum()),
                             probs=tuple(float(p) for p in probs), mass=total))
        return out

    def choose(self, queries: Sequence[Query], options: Sequence[Sequence[str]], *,
               batch_size: int | None = None) -> list[Choice]:
        """Multiple choice: each query's prompt is the question, `options[i]` its options
        (2 to 8; listed as "A. ...", "B. ..." and the format instruction is added)."""
        from ..prompts import load_prompt

        if len(options) != len(queries):
            raise ValueError("one list of options per query")
        if any(not 2 <= len(opts) <= len(LETTERS) for opts in options):
            raise ValueError(f"every question needs 2 to {len(LETTERS)} options")
        template = load_prompt("audiolm_choice")
        asked = []
        for q, opts in zip(queries, options):
            letters = LETTERS[:len(opts)]
            listed = "\n".join(f"{letter}. {str(o).strip()}" for letter, o in zip(letters, opts))
            asked.append(Query(q.audio, template.render(question=q.prompt.strip(), options=listed,
                                                        letters=", ".join(letters))))
        # Every query is asked for all letters; each is then normalised over its own options.
        results = self._choice_mass(asked, {letter: [letter] for letter in LETTERS}, batch_size)
        out = []
        for r, opts in zip(results, options):
            if isinstance(r, str):
                out.append(Choice(None, error=r))
                continue
            raw = np.array([r[letter] for letter in LETTERS[:len(opts)]], dtype=np.float64)
            total = float(raw.sum())
            probs = raw / total if total > 0 else np.full(len(opts), 1.0 / len(opts))
            out.append(Choice(index=int(np.argmax(probs)), probs=tuple(float(p) for p in probs), mass=total))
        return out

    # ------------------------------------------------------------ batching
    def _problem(self, query: Query) -> str | None:
        audio = query.audio
        if not isinstance(audio, np.ndarray) or audio.ndim != 1:
            return "audio must be a 1-D numpy array of 16 kHz mono samples"
        if len(audio) < MIN_CLIP_S * SAMPLE_RATE:
            return (f"clip of {len(audio) / SAMPLE_RATE:.3f} s is shorter than {MIN_CLIP_S} s: the model would "
                    "give it no audio tokens")
        if len(audio) > WINDOW_S * SAMPLE_RATE:  # one sample more is a second window of no audio tokens
            return f"clip of {len(audio) / SAMPLE_RATE:.5f} s is longer than one {WINDOW_S:g} s window"
        if not np.isfinite(audio).all():
            return "clip has non-finite samples (NaN or Inf)"
        return None

    def _clean(self, prompt: str) -> str:
        for token in self._special:
            prompt = prompt.replace(token, "")
        return prompt.strip()

    def _chunks(self, queries: Sequence[Query], valid: list[int], size: int) -> list[list[int]]:
        """Longest first (an out-of-memory shows at once), `size` per chunk."""
        order = sorted(valid, key=lambda i: (len(queries[i].audio), len(queries[i].prompt)), reverse=True)
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _encode(self, queries: Sequence[Query], indices: list[int]) -> Any:
        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "audio"},
                                              {"type": "text", "text": self._clean(queries[i].prompt)}]}],
                tokenize=False, add_generation_prompt=True,
            )
            for i in indices
        ]
        audio = [np.asarray(queries[i].audio, dtype=np.float32) for i in indices]
        # The log-mel features are computed where the model runs (torch's STFT on the GPU).
        inputs = self.processor(text=texts, audio=audio, sampling_rate=SAMPLE_RATE, padding_side="left",
                                device=str(self.device))
        inputs.pop("num_audio_tokens", None)
        return inputs.to(self.device, dtype=self.dtype)

    def _map(self, queries: Sequence[Query], run: Callable[[_Chunk], list], failed: Callable[[str], Any],
             batch_size: int | None = None) -> list:
        """Run `run` over length-sorted chunks; failures split the chunk until they are isolated."""
        results: list[Any] = [None] * len(queries)
        valid = []
        for i, query in enumerate(queries):
            problem = self._problem(query)
            if problem:
                results[i] = failed(problem)
            else:
                valid.append(i)
        for indices in self._chunks(queries, valid, batch_size or self.batch_size):
            for i, value in self._run_isolating(queries, indices, run, failed).items():
                results[i] = value
        return results

    def _run_isolating(self, queries: Sequence[Query], indices: list[int], run: Callable[[_Chunk], list],
                       failed: Callable[[str], Any]) -> dict[int, Any]:
        try:
            chunk = _Chunk(indices, self._encode(queries, indices))
            return dict(zip(indices, run(chunk)))
        except Exception as exc:  # noqa: BLE001 - isolate the clip that fails
            _free_memory()
            if len(indices) == 1:
                return {indices[0]: failed(f"{type(exc).__name__}: {exc}"[:500])}
            log.warning("audio-LM batch of %d failed (%s); splitting it", len(indices), exc)
            self.splits.append((len(indices), f"{type(exc).__name__}: {exc}"[:200]))
            mid = len(indices) // 2
            left = self._run_isolating(queries, indices[:mid], run, failed)
            return left | self._run_isolating(queries, indices[mid:], run, failed)

    def first_step_logprobs(self, queries: Sequence[Query], *, batch_size: int | None = None) -> list[Any]:
        """Log-probabilities of the first answer token over the whole vocabulary, one float32 array per query
        (None where the query failed): how batched and one-at-a-time runs are compared to the last bit."""

        def run(chunk: _Chunk) -> list[np.ndarray]:
            p0, _ = self._first_steps(chunk.inputs, None)
            return list(p0.clamp_min(1e-30).log().cpu().numpy())

        return self._map(queries, run, lambda msg: None, batch_size)

    # ------------------------------------------------------------ judgements
    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _choice_mass(self, queries: Sequence[Query], choices: dict[str, list[str]],
                     batch_size: int | None = None) -> list[dict[str, float] | str]:
        """Raw probability of each choice as the model's first answer token(s), greedy prefix.

        A choice counts its spellings that are one token. A choice with no one-token spelling
        may use two-token ones if all of those share one first token (digits: "10" is "1"
        then "0" in Qwen's tokenizer); a one-token choice that is also that first token only
        counts when the model would stop there: P("1") * (1 - P("0" | "1")).
        """
        seqs: dict[str, list[list[int]]] = {}
        for name, variants in choices.items():
            tokens = [self._token_ids(v) for v in variants]
            single = [t for t in tokens if len(t) == 1]
            seqs[name] = single or [t for t in tokens if len(t) == 2]
        longer = [s for variants in seqs.values() for s in variants if len(s) > 1]
        if any(not v for v in seqs.values()) or len({s[0] for s in longer}) > 1:
            raise ValueError(f"choices {list(choices)} do not tokenize into one token or a shared two-token prefix")
        prefix = longer[0][0] if longer else None
        seconds = sorted({s[1] for s in longer})

        def run(chunk: _Chunk) -> list[dict[str, float]]:
            p0, p1 = self._first_steps(chunk.inputs, prefix)
            go_on = p1[:, seconds].sum(-1) if p1 is not None else None
            masses: dict[str, Any] = {}
            for name, variants in seqs.items():
                total = 0.0
                for s in variants:
                    if len(s) == 2:
                        total = total + p0[:, s[0]] * p1[:, s[1]]
                    elif s[0] == prefix:
                        total = total + p0[:, s[0]] * (1.0 - go_on)
                    else:
                        total = total + p0[:, s[0]]
                masses[name] = total
            return [{name: float(m[row]) for name, m in masses.items()} for row in range(len(chunk.indices))]

        return self._map(queries, run, lambda msg: msg, batch_size)

    def _first_steps(self, inputs: Any, prefix: int | None):
        """Next-token probabilities after the prompt and, when `prefix` is given, after prompt + prefix.

        Position ids come from the attention mask exactly as `generate` makes them, so the
        first step equals the first step of greedy decoding.
        """
        import torch

        mask = inputs["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.inference_mode():
            out = self.model(**inputs, position_ids=positions, use_cache=prefix is not None, logits_to_keep=1)
            p0 = out.logits[:, -1].float().softmax(-1)
            if prefix is None:
                return p0, None
            rows = mask.shape[0]
            step = self.model(
                input_ids=torch.full((rows, 1), prefix, dtype=torch.long, device=mask.device),
                attention_mask=torch.cat([mask, mask.new_ones(rows, 1)], dim=1),
                position_ids=positions[:, -1:] + 1,
                past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1,
            )
            return p0, step.logits[:, -1].float().softmax(-1)


# ---------------------------------------------------------------- helpers ---


def _generated_ids(row: list[int], pad_id: int | None, eos_ids: Any) -> tuple[int, ...]:
    """A generated row up to (not including) its first end token, without right padding."""
    ends = set(eos_ids if isinstance(eos_ids, (list, tuple)) else [eos_ids]) | {pad_id}
    out = []
    for token in row:
        if token in ends:
            break
        out.append(int(token))
    return tuple(out)


def _pick_dtype(dtype: str, device) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]


def _pick_attention(attn: str, device) -> str:
    """sdpa by default; flash-attention 2 when asked for `auto` on a GPU where it is installed."""
    if attn != "auto":
        return attn
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _free_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _LengthWarningFilter(logging.Filter):
    # MusicFlamingoConfig sets max_position_embeddings to the RoTE theta (1200), so generate
    # warns about "exceeding the predefined maximum length" on every long prompt; the
    # language model's own limit (32k for Qwen2.5) is what counts.
    def filter(self, record: logging.LogRecord) -> bool:
        return "predefined maximum length" not in record.getMessage()


def _quiet_transformers() -> None:
    """No weight-loading progress bars in worker logs, no misleading length warning."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _LengthWarningFilter) for f in target.filters):
        target.addFilter(_LengthWarningFilter())


__all__ = [
    "AudioLM", "AudioLMError", "AudioLMSettings", "Answer", "Choice", "Query", "Score", "YesNo", "LETTERS",
    "split_windows", "window_clip",
    "SAMPLE_RATE", "WINDOW_S", "MAX_WINDOWS", "MIN_CLIP_S", "RANDOM_WEIGHTS_NOTE",
]
