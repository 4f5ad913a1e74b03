"""One YAML config, validated by pydantic; profiles, `--set` overrides, a stable hash.

Resolution order (later wins): field defaults < profile file
(`pipeline/profiles/<profile>.yaml`) < the user's YAML < `--set key=value`.
`profile: auto` becomes `production` when a GPU is visible, else `cpu`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..schemas.synthesize import Skill


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says why."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(Section):
    """What one worker of a stage asks Ray for."""

    cpus: float = Field(1.0, ge=0)
    gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    # Actor-pool size. None: as many workers as the cluster's CPUs (or GPUs) allow.
    concurrency: int | None = Field(None, ge=1)


class StageSection(Section):
    resources: Resources = Field(default_factory=Resources)


class IngestConfig(StageSection):
    window_s: float = Field(30.0, gt=0)  # Music Flamingo reads 30 s windows
    max_duration_s: float = Field(1200.0, gt=0)  # ...and at most 40 of them; the rest is truncated
    min_duration_s: float = Field(1.0, ge=0)
    silence_dbfs: float = -60.0  # a file whose peak stays below this is rejected as silent
    extensions: list[str] = Field(
        default_factory=lambda: [
            ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff",
            ".m4a", ".aac", ".wma", ".webm", ".mka",
        ]
    )
    ffmpeg: str = "ffmpeg"  # used, when installed, for formats libsndfile cannot read


class AudioLMSection(Section):
    """Model fields of a stage that runs Music Flamingo (`mfpipe.backends.audiolm.AudioLM`)."""

    # Hub id, local folder, or `prepared:NAME` (built by `mfpipe models prepare`).
    model: str = "nvidia/music-flamingo-2601-hf"
    revision: str | None = None  # hub commit/tag to pin; None = the hub's current one (recorded per row)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # auto: flash-attention 2 on a GPU where it is installed, else sdpa.
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    device: str = "auto"  # auto: cuda when visible, else cpu
    generate_batch: int = Field(16, ge=1)  # clips (30 s windows) per generate call, across songs


class CaptionConfig(AudioLMSection, StageSection):
    """Surface captions: one short Music Flamingo description per 30 s window."""

    prompt: str = "caption_window"  # prompt id in prompts/ (`id` = latest version, `id.vN` = pinned)
    max_new_tokens: int = Field(96, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    # A last window shorter than this is captioned from the song's last `min_clip_s` seconds.
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0)


class LyricsConfig(StageSection):
    """Lyrics with word timestamps: Parakeet via NeMo, or Whisper via faster-whisper."""

    backend: Literal["nemo", "faster_whisper"] = "nemo"
    # Hub id, local .nemo / CTranslate2 folder, `prepared:NAME` or `package:MODULE/dir`.
    model: str = "nvidia/parakeet-tdt-0.6b-v2"
    revision: str | None = None  # hub revision of the .nemo to pin (nemo backend)
    device: str = "auto"
    chunk_s: float = Field(60.0, gt=1.0, le=1200.0)  # nemo: songs are transcribed in chunks this long
    asr_batch: int = Field(8, ge=1)  # nemo: chunks per recognizer batch
    language: str | None = "en"  # the language transcribed (Parakeet v2 and tiny.en: English); None = detect
    compute_type: str = "auto"  # faster-whisper: auto = int8 on CPU, float16 on GPU
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)  # faster-whisper: drop segments above it
class MirBeatsConfig(Section):
    """madmom: one RNNDownBeatProcessor pass, then DBNDownBeatTrackingProcessor."""

    enabled: bool = True
    min_duration_s: float = Field(6.0, ge=0)  # shorter songs get no beats/tempo/meter (a note says why)
    beats_per_bar: list[int] = Field(default_factory=lambda: [3, 4], min_length=1)
    min_bpm: float = Field(55.0, gt=0)
    max_bpm: float = Field(215.0, gt=0)
    num_tempi: int = Field(60, ge=1)  # tempo states of the DBN (its cost grows with them)
    transition_lambda: float = Field(100.0, gt=0)
    observation_lambda: float = Field(16.0, gt=0)
    threshold: float = Field(0.05, ge=0)  # decode only where the RNN says something
    min_beats: int = Field(4, ge=2)  # fewer beats than this: no tempo, no meter
    # The RNN's input features are computed this many seconds at a time (0: the whole song
    # at once), which bounds a worker's memory whatever the song's length.
    chunk_s: float = Field(30.0, ge=0)
    # The DBN decodes songs longer than this in segments, each with `dbn_overlap_s` of context
    # per side (its memory grows with frames x tempo states); 0: always the whole song.
    dbn_segment_s: float = Field(60.0, ge=0)
    dbn_overlap_s: float = Field(10.0, ge=0)


class MirKeyConfig(Section):
    """essentia KeyExtractor."""

    enabled: bool = True
    min_duration_s: float = Field(3.0, ge=0)
    profile_type: str = "bgate"  # essentia key profile (bgate, temperley, edma, krumhansl, ...)


class MirChordsConfig(Section):
    """Chordino (NNLS-Chroma Vamp plugin); defaults are the plugin's own."""

    enabled: bool = True
    min_duration_s: float = Field(3.0, ge=0)
    use_nnls: bool = True  # approximate note transcription (NNLS) before the chroma
    rollon: float = Field(0.0, ge=0, le=5)  # spectral roll-on, % of the spectrum ignored at the bottom
    tuning_mode: Literal["global", "local"] = "global"
    whitening: float = Field(1.0, ge=0, le=1)
    spectral_shape: float = Field(0.7, ge=0.5, le=0.9)
    boost_n: float = Field(0.1, ge=0, le=1)  # boosts the likelihood of "N" (no chord)


class MirLoudnessConfig(Section):
    """essentia LoudnessEBUR128 (integrated loudness, LUFS)."""

    enabled: bool = True
    min_duration_s: float = Field(1.0, ge=0.4)  # EBU R128 gates 400 ms blocks


class MirConfig(StageSection):
    """MIR back-fill: one decode per song per worker, one worker per core, single-threaded tools."""

    resources: Resources = Field(default_factory=lambda: Resources(cpus=1, batch_size=2))
    beats: MirBeatsConfig = Field(default_factory=MirBeatsConfig)
    key: MirKeyConfig = Field(default_factory=MirKeyConfig)
    chords: MirChordsConfig = Field(default_factory=MirChordsConfig)
    loudness: MirLoudnessConfig = Field(default_factory=MirLoudnessConfig)


class VllmServerConfig(Section):
    """How mfpipe starts its own vLLM server when `llm.base_url` is not set."""

    # The Python of vLLM's own environment (vLLM pins its own torch). Relative paths are
    # resolved against the project root, then the current directory.
    python: str = ".venv-vllm/bin/python"
    # What to serve: a Hugging Face id or a folder. `local_model` (a model that
    # `mfpipe models prepare` builds) wins when set.
    model: str | None = None  # None: llm.model
    local_model: str | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)  # None: a free port
    # Extra `vllm serve` flags, e.g. ["--tensor-parallel-size", "8"] (infra/vllm lists the production ones).
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for the server
    startup_timeout_s: float = Field(900.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    # Server log file; None: a file in the system temp folder (its path is printed on failure).
    log_file: str | None = None


class SamplingConfig(Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int | None = None
    # Upper bound on generated tokens per request (reasoning included); each request also
    # gets a bound derived from its schema, and the smaller one is used.
    max_tokens: int = Field(4096, ge=16)
    # gpt-oss and other reasoning models: "low" | "medium" | "high"; None: not sent.
    reasoning_effort: str | None = None
    # Server-specific sampling parameters sent as they are (vLLM: repetition_penalty, min_p, top_k, ...).
    extra: dict[str, Any] = Field(default_factory=dict)


class LlmConfig(Section):
    """The OpenAI-compatible LLM endpoint (a vLLM server) and how the client talks to it."""

    base_url: str | None = None  # e.g. http://vllm:8000/v1; None: start a local server (llm.server)
    model: str = "openai/gpt-oss-120b"  # the served model name sent with each request
    # Name of the environment variable holding the API key (never the key itself:
    # the config is stored with the outputs).
    api_key_env: str = "MFPIPE_LLM_API_KEY"
    concurrency: int = Field(64, ge=1)  # requests in flight per worker process
    timeout_s: float = Field(600.0, gt=0)  # per request (one attempt)
    max_retries: int = Field(4, ge=0)  # on timeouts, connection errors, 429 and 5xx
    backoff_s: float = Field(1.0, ge=0)  # first wait; doubles per retry, with jitter
    backoff_max_s: float = Field(60.0, ge=0)
    repair: bool = True  # one repair request when the output does not validate
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    server: VllmServerConfig = Field(default_factory=VllmServerConfig)


class ConsistencyConfig(Section):
    """Tolerances of the checks that compare generated text with the MIR facts (mfpipe.consistency)."""

    # A stated BPM agrees with MIR within max(bpm_tolerance_abs, bpm_tolerance_pct% of MIR).
    bpm_tolerance_pct: float = Field(4.0, ge=0)
    bpm_tolerance_abs: float = Field(2.0, ge=0)
    # Accept half / double the MIR tempo when the text itself says "half-time" / "double-time".
    allow_half_double_time: bool = True


class SynthesizeConfig(StageSection):
    """Rich captions, structured metadata and five-skill QA from the surface captions + MIR facts."""

    prompt: str = "synthesize"  # prompt id (latest version) or id.vN in prompts/
    target_words: int = Field(450, ge=20)  # rich caption length the prompt asks for (paper: ~452)
    # Hard cap on the caption (JSON-schema maxLength), in characters per target word.
    caption_chars_per_word: float = Field(9.0, ge=4)
    qa_open_per_skill: int = Field(2, ge=0, le=10)  # open-ended questions per skill
    qa_choice_per_skill: int = Field(2, ge=0, le=10)  # multiple-choice questions per skill
    choice_options: int = Field(4, ge=2, le=6)
    # Replace the metadata's bpm/key/meter with the MIR facts when MIR has them (the model's
    # own values are still checked and flagged).
    ground_metadata: bool = True
    # How much of each input goes into the prompt (the rest is cut, with a note).
    max_lyrics_chars: int = Field(4000, ge=0)
    max_caption_windows: int = Field(40, ge=0)
    max_chord_changes: int = Field(64, ge=0)
class FilterConfig(AudioLMSection, StageSection):
    """Quality filter: the audio-LM listens to each song and judges its rich caption and QA items."""

    prompt: str = "filter"  # prompt id (latest version) or id.vN in prompts/
    # The caption is scored 1-10 against up to this many windows (evenly spread over the song).
    caption_windows: int = Field(4, ge=1, le=40)
    caption_min_score: float = Field(6.0, ge=1, le=10)  # keep when the mean expected score reaches it
    # A QA item is heard against the windows its text names by time (m:ss), else this many
    # windows spread over the song; its yes/no judgement is the best window's.
    qa_windows: int = Field(3, ge=1, le=40)
    qa_min_p_yes: float = Field(0.5, ge=0, le=1)  # keep when P(yes) reaches it
    # P(yes)+P(no) (or the digits' / letters' total) below this: the model did not really
    # answer, so the item counts as not judged.
    min_mass: float = Field(0.5, ge=0, le=1)
    # Items the audio-LM did not judge: kept (true) or dropped (false: the paper keeps only
    # what the audio-LM confirms).
    keep_unjudged: bool = False
    drop_on_mir_flags: bool = True  # an item that contradicts the MIR facts is dropped
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0)  # shorter last windows are read from the song's end


class ThinkStepCheck(Section):
    """How the audio-LM's yes/no on one reasoning step becomes a verdict."""

    windows: int = Field(3, ge=1, le=40)  # windows a step without a time (m:ss) is heard against
    correct_p_yes: float = Field(0.65, ge=0, le=1)  # best window's P(yes) at or above: correct
    wrong_p_yes: float = Field(0.35, ge=0, le=1)  # best window's P(yes) below: wrong (between: unverifiable)
    min_mass: float = Field(0.5, ge=0, le=1)  # P(yes)+P(no) below this: unverifiable (no real answer)

    @model_validator(mode="after")
    def _ordered(self) -> "ThinkStepCheck":
        if self.wrong_p_yes > self.correct_p_yes:
            raise ValueError("wrong_p_yes must not exceed correct_p_yes")
        return self


class ThinkConfig(AudioLMSection, StageSection):
    """MF-Think: LLM reasoning chains for challenging QA items, every step fact-checked."""

    prompt: str = "think"  # prompt id (latest version) or id.vN in prompts/
    max_chains_per_song: int = Field(4, ge=0)
    # What makes an item challenging (kept items only): a multiple-choice item the audio-LM
    # itself answered wrongly in the filter, or an item of one of these skills.
    select_audio_lm_wrong: bool = True
    hard_skills: list[Skill] = Field(default_factory=lambda: ["harmony_theory", "comparative_structural", "temporal"])
    min_steps: int = Field(3, ge=1, le=20)
    max_steps: int = Field(8, ge=1, le=20)
    show_reference: bool = True  # the LLM is told the filtered reference answer to reason towards
    # The MF-Think rule: no wrong step: keep; wrong steps <= this share: rewrite; more: drop.
    max_wrong_ratio: float = Field(0.3, ge=0, le=1)
    rewrite_budget: int = Field(1, ge=0, le=5)  # rewrite rounds per chain before it is dropped
    step_check: ThinkStepCheck = Field(default_factory=ThinkStepCheck)
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0)
    # How much of each input goes into the prompt.
    max_lyrics_chars: int = Field(2000, ge=0)
    max_chord_changes: int = Field(32, ge=0)
    max_caption_chars: int = Field(4000, ge=0)  # the rich caption from synthesize

    @model_validator(mode="after")
    def _steps(self) -> "ThinkConfig":
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")
        return self


class ExportConfig(StageSection):
    """MF-Skills / MF-Think Parquet export, its dataset card, and the AF3 JSON export."""

    shard_max_rows: int = Field(100_000, ge=1)  # rows per Parquet shard
    shard_max_mb: float = Field(256.0, gt=0)  # in-memory size per shard (the zstd file is smaller)
    # The filter stage has not run on the output: export the synthesize items marked
    # `unfiltered` (true) or refuse (false).
    allow_unfiltered: bool = True
    # Export versions kept under OUT/_exports: 1 = only the current one, 2 = also the one before
    # (a reader still going through it is not cut off by a rerun).
    keep_versions: int = Field(2, ge=1)
    caption_prompt: str = "export_caption"  # the instruction a caption answers (prompts/)
    think_prompt: str = "export_think"  # AF3 JSON: what MF-Think questions add to ask for <think>/<answer>


class RunConfig(Section):
    """How a run executes. Not part of the config hash: it never changes the data."""

    shard_max_rows: int = Field(2000, ge=1)
    shard_max_mb: float = Field(128.0, gt=0)
    # Flush a partial shard after this long, so a killed run loses at most this much work.
    flush_seconds: float = Field(60.0, gt=0)
    ray_address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # local Ray only; None = all cores
    object_store_mb: int | None = Field(None, ge=64)  # local Ray only
    dashboard: bool = False  # local Ray only; bound to 127.0.0.1 when on
    # Upstream outputs up to this many rows are joined on the driver; larger ones with
    # Ray Data's distributed hash join (which costs seconds of fixed overhead per join).
    driver_join_max_rows: int = Field(500_000, ge=0)
    # Fail at once when the cluster lacks what a stage declares (Ray would wait forever).
    # Turn off on autoscaling clusters whose GPU nodes appear on demand.
    fail_fast_on_resources: bool = True


class PipelineConfig(Section):
    profile: Literal["auto", "cpu", "production"] = "auto"
    run: RunConfig = Field(default_factory=RunConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    lyrics: LyricsConfig = Field(default_factory=LyricsConfig)
    mir: MirConfig = Field(default_factory=MirConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    synthesize: SynthesizeConfig = Field(default_factory=SynthesizeConfig)
    # Shared by synthesize (flags) and the quality filter (drops).
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    think: ThinkConfig = Field(default_factory=ThinkConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    def stage_section(self, stage: str) -> StageSection | None:
        section = getattr(self, stage, None)
        return section if isinstance(section, StageSection) else None

    def content_hash(self) -> str:
        """Hash of everything that can change the data (the `run` section cannot)."""
        payload = self.model_dump(mode="json", exclude={"run"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def gpu_present() -> bool:
    """True when an NVIDIA GPU is visible here (no torch import: it is slow)."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _profile_overrides(profile: str) -> dict[str, Any]:
    text = resources.files("mfpipe.pipeline").joinpath("profiles", f"{profile}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, path + "."))
    return keys


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (["a","b","c"], value parsed as a YAML scalar/list/map)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    known = _known_keys(PipelineConfig)
    # Every prefix must name a field; say which one does not, and what was meant.
    if key not in known and not any(k.startswith(key + ".") for k in known):
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value of {key}: {exc}") from exc
    return key.split("."), value


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "invalid config:\n" + "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    detect_gpu=gpu_present,
) -> PipelineConfig:
    """Resolve defaults < profile < file < overrides into one validated config."""
    user: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    for item in overrides or []:
        key_path, value = parse_override(item)
        _apply(user, key_path, value)

    profile = user.get("profile", "auto")
    if profile == "auto":
        profile = "production" if detect_gpu() else "cpu"
    if profile not in ("cpu", "production"):
        raise ConfigError(f"profile must be auto, cpu or production, got {profile!r}")
    merged = _deep_merge(_profile_overrides(profile), user)
    merged["profile"] = profile
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None
