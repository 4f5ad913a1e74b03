"""The one YAML config users write, assembled from the registered stages; profiles, `--set`, a hash.

Each stage declares its own section beside it (`Stage.config_model`) and the
shared sections it reads (`Stage.reads`: the LLM endpoint, the consistency
tolerances, the audio windows); this module puts them together, with the `run`
section (how a run executes), into one pydantic model, so a plugin stage brings
its section with it. Resolution order (later wins): field defaults < profile
file (`pipeline/profiles/<profile>.yaml`) < the user's YAML < `--set key=value`.
`profile: auto` becomes `production` when a GPU is visible, else `cpu`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import shutil
import subprocess
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model

from ..config import Section
from . import registry


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says why."""


class RunConfig(Section):
    """How a run executes. Not part of the config hash: it never changes the data."""

    shard_max_rows: int = Field(2000, ge=1, description="Rows per output shard.")
    shard_max_mb: float = Field(128.0, gt=0, description="In-memory size per output shard (the file is smaller).")
    flush_seconds: float = Field(30.0, gt=0, description="Flush a partial shard after this long: a killed run loses "
                                 "at most this much finished work, and downstream stages see finished songs this "
                                 "soon.")
    ray_address: str | None = Field(None, description="Ray cluster to join (e.g. HEAD:6379); None: RAY_ADDRESS, "
                                                      "else a fresh local instance.")
    num_cpus: int | None = Field(None, ge=1, description="Local Ray only: CPUs it may use; None: all cores.")
    object_store_mb: int | None = Field(None, ge=64, description="Local Ray only: object store size.")
    dashboard: bool = Field(False, description="Local Ray only: start the dashboard (bound to 127.0.0.1).")
    num_gpus: int | None = Field(None, ge=0, description="Local Ray only: GPUs to declare; None: the GPUs this "
                                 "machine has. (Tests declare GPUs a CPU box lacks to check the GPU plan.)")
    gpu_memory_gb: float | None = Field(None, gt=0, description="Memory of one GPU in GiB, for the plan's byte "
                                        "count: set it for declared GPUs (run.num_gpus) or a cluster whose GPU "
                                        "type Ray does not report; None: nvidia-smi on this machine (a local run), "
                                        "else the cluster's accelerator type, else unknown (declared shares).")
    pool_idle_s: float = Field(10.0, ge=0, description="Elastic pools: a stage waiting for its upstream lets a "
                               "worker idle this long go (down to one), so stages with work grow into its share.")
    cpu_rehearsal: bool = Field(False, description="The GPUs declared to Ray (run.num_gpus, or a test cluster's "
                                "--num-gpus) are not real: GPU stages run their models on the CPU. Only for "
                                "rehearsing the production plan on a machine without GPUs; without it a worker that "
                                "holds a GPU and finds no usable CUDA fails its stage at once.")
    schedule: Literal["stream", "barrier"] = Field("stream", description="stream: every stage of a phase runs at "
                                                   "once and takes songs as its upstream stages commit them; "
                                                   "barrier: a stage starts when its upstream stages have finished.")
    stream_warmup: int = Field(2, ge=0, description="Streaming: each stage hands its first this-many songs to its "
                               "workers one at a time (and commits its first rows at once), so the first songs "
                               "reach the end of the pipeline soon; full batches after that.")
    drain_seconds: float = Field(20.0, ge=0, description="After a first SIGINT / SIGTERM, how long running batches "
                                 "may take to finish before the run stops (under Kubernetes' 30 s grace).")
    outage_max_wait_s: float = Field(600.0, ge=0, description="A shared service (the LLM server) that fails for "
                                     "every song pauses the stage; it fails (songs pending, never rejected) when "
                                     "the service is not back within this many seconds.")
    outage_song_strikes: int = Field(3, ge=1, description="A song that fails this many times while the service "
                                     "itself answers is the song's own problem: it becomes a (retryable) reject.")
    lease_seconds: float = Field(120.0, gt=5, description="Object stores: the output folder's lease runs this long "
                                 "and is renewed while the run lives; a killed run's lease blocks it until then.")
    fail_fast_on_resources: bool = Field(True, description="Fail at once when the cluster lacks what a stage "
                                         "declares (Ray would wait forever); turn off on autoscaling clusters "
                                         "whose GPU nodes appear on demand.")


class PipelineConfig(Section):
    """The resolved config of a run: `profile`, `run`, the shared sections and one section per stage.

    The class used is assembled from the registry (`config_model()`); this base carries
    what every assembled config has."""

    profile: Literal["auto", "cpu", "production"] = Field("auto", description="auto: production when an NVIDIA "
                                                          "GPU is visible, else cpu.")
    run: RunConfig = Field(default_factory=RunConfig, description="How the run executes (not hashed).")

    def stage_section(self, stage: str) -> Section | None:
        return getattr(self, stage, None)

    def content_hash(self) -> str:
        """Hash of everything that can change the data. Not the `run` section (it cannot), and not
        the section of a plugin stage left at its defaults: installing a plugin does not change the
        hash of runs that do not configure it (a job's cluster may have plugins its submitter lacks)."""
        stages = registry.stages()
        skip = {"run"} | {name for name, cls in stages.items()
                          if not cls.__module__.startswith("mfpipe.stages.")
                          and getattr(self, name, None) == cls.config_model()}
        payload = self.model_dump(mode="json", exclude=skip)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def to_yaml_with_docs(self) -> str:
        """The YAML with every field's description as a comment above it."""
        return "\n".join(_documented(type(self), self.model_dump(mode="json"), 0)) + "\n"


_MODELS: dict[tuple, type[PipelineConfig]] = {}


def config_model() -> type[PipelineConfig]:
    """The pipeline config class for the stages registered now (built once per set of stages)."""
    stages = registry.stages()
    order = registry.topological(set(stages))
    key = tuple((name, stages[name].config_model) for name in order)
    model = _MODELS.get(key)
    if model is not None:
        return model
    shared: dict[str, type[Section]] = {}
    for name in order:
        for section, section_model in stages[name].reads.items():
            known = shared.setdefault(section, section_model)
            if known is not section_model:
                raise registry.StageError(f"stages disagree on the shared section {section!r}: "
                                          f"{known.__qualname__} and {section_model.__qualname__}")
            if section in stages or section in PipelineConfig.model_fields:
                raise registry.StageError(f"shared section {section!r} has the name of a stage or a core section")
    fields: dict[str, Any] = {}
    for section, section_model in shared.items():
        fields[section] = (section_model, Field(default_factory=section_model,
                                                description="Shared: " + _first_line(section_model)))
    for name in order:
        cls = stages[name].config_model
        fields[name] = (cls, Field(default_factory=cls, description=_first_line(cls)))
    model = create_model("PipelineConfig", __base__=PipelineConfig, **fields)
    _MODELS[key] = model
    return model


def _first_line(model: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n", 1)[0].split())


def _documented(model: type, data: Any, indent: int) -> list[str]:
    """YAML lines of `data` (a dump of `model`) with each field's description as a comment."""
    pad = "  " * indent
    lines = []
    for name, value in data.items():
        info = model.model_fields.get(name)
        if info is not None and info.description:
            lines.append(f"{pad}# {info.description}")
        sub = info.annotation if info is not None else None
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, Section) and value:
            lines.append(f"{pad}{name}:")
            lines.extend(_documented(sub, value, indent + 1))
        else:
            if isinstance(value, (list, dict)):
                dumped = f"{name}: " + yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            else:
                dumped = yaml.safe_dump({name: value}, default_flow_style=False, width=10**6).strip()
            lines.append(f"{pad}{dumped}")
    return lines


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


def _known_keys(model: type[Section], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
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
    moved = {".".join(old): ".".join(new) for old, new in _MOVED.items()}
    if key in moved:
        warnings.warn(f"config key {key} is now {moved[key]}", stacklevel=2)
        key = moved[key]
    known = _known_keys(config_model())
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

    _migrate(user)
    profile = user.get("profile", "auto")
    if profile == "auto":
        profile = "production" if detect_gpu() else "cpu"
    if profile not in ("cpu", "production"):
        raise ConfigError(f"profile must be auto, cpu or production, got {profile!r}")
    merged = _deep_merge(_profile_overrides(profile), user)
    merged["profile"] = profile
    try:
        return config_model().model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


# Keys that moved; an old config still works (with a warning naming the new key).
_MOVED = {("ingest", "window_s"): ("audio", "window_s")}


def _migrate(user: dict[str, Any]) -> None:
    lyrics = user.get("lyrics")
    if isinstance(lyrics, dict) and "language" in lyrics and not isinstance(lyrics["language"], dict):
        warnings.warn("config key lyrics.language (a language code) is now lyrics.asr_language; lyrics.language "
                      "holds the language-detection settings", stacklevel=3)
        lyrics.setdefault("asr_language", lyrics.pop("language"))
    for (old_section, old_key), (new_section, new_key) in _MOVED.items():
        section = user.get(old_section)
        if isinstance(section, dict) and old_key in section:
            warnings.warn(f"config key {old_section}.{old_key} is now {new_section}.{new_key}", stacklevel=3)
            user.setdefault(new_section, {}).setdefault(new_key, section.pop(old_key))
