"""The stage contract: what a stage declares, the config it owns, and the methods it implements.

The NeMo Curator shape, smaller. A stage class declares its name, its kind,
the record it produces, the stage outputs it reads, its config section
(`config_model`: its parameters and `resources`, declared beside it) and the
shared sections it reads (`reads`: e.g. the LLM endpoint). It sees exactly
those: `self.cfg` is its own section, `self.shared.<name>` a shared one.

Two kinds:
- `map` (most stages): the runner hands batches of song rows to workers; the
  stage loads models once per worker in `setup` and turns each batch into
  records and rejects in `process_batch`.
- `driver` (export): runs once per run on the driver, in `run_driver`, with
  what it needs (the output store, the run's facts, a progress callback).
The runner does everything else: planning, resume, workers, sinks, progress.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import Field

from ..config import Section
from ..gpumemory import GpuMemory
from ..schemas import Provenance, Reject, RunInfo, SongRecord, ToolVersion, utc_now
from ..store import OutputStore

if TYPE_CHECKING:  # the config module imports the registry, which imports this one
    from .config import PipelineConfig

# The pseudo-stage whose "output" is the list of input files (column `source`).
INPUTS = "inputs"

__all__ = ["INPUTS", "CorpusGate", "Deferred", "DriverContext", "DriverOutcome", "Resources", "RunInfo", "Shared",
           "Stage", "StageConfig",
           "StageSettings"]


class Resources(Section):
    """What one worker of a stage asks Ray for, and how many workers there are."""

    cpus: float = Field(1.0, ge=0, description="CPUs per worker.")
    gpus: float = Field(0.0, ge=0, description="GPUs per worker; a fraction shares a GPU (Parakeet: 0.25).")
    batch_size: int = Field(8, ge=1, description="Song rows per batch handed to a worker.")
    concurrency: int | None = Field(None, ge=1, description="Workers; None: as many as the cluster's CPUs or "
                                                            "GPUs fit (the run's resource plan may give fewer).")
    gpu_memory_gb: float | None = Field(None, gt=0, description="GPU memory one worker needs, in GiB; None: "
                                        "estimated from the stage's models (their checkpoints). With the GPUs' "
                                        "memory known, the plan sizes the GPU share from it.")


class StageConfig(Section):
    """The base of every stage's config section."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for.")


class Shared:
    """The shared sections a stage declared in `reads`, and no others."""

    def __init__(self, stage: str, sections: dict[str, Section]):
        self._stage = stage
        self._sections = dict(sections)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(f"stage {self._stage!r} does not declare the shared section {name!r} in its "
                                 f"`reads`") from None


@dataclass(frozen=True)
class StageSettings:
    """What one stage is configured with: its own section and the shared sections it reads."""

    stage: str
    own: StageConfig
    shared: dict[str, Section] = field(default_factory=dict)

    def replace_shared(self, name: str, section: Section) -> StageSettings:
        return StageSettings(self.stage, self.own, {**self.shared, name: section})

    def to_json(self) -> str:
        return json.dumps({"own": self.own.model_dump(mode="json"),
                           "shared": {k: v.model_dump(mode="json") for k, v in self.shared.items()}})


@dataclass(frozen=True)
class Deferred:
    """A song a stage could not do because a shared service failed (not the song's fault): the
    runner puts it back, pauses the stage while it checks the service, and resumes when it is back."""

    key: str
    source: str
    song_id: str | None
    service: str  # e.g. "llm"
    message: str


@dataclass(frozen=True)
class DriverOutcome:
    """What a driver-side stage reports back: units it considered and rows it wrote."""

    rows_in: int
    rows_out: int


class CorpusGate(Protocol):
    """See `Stage.corpus_gate`."""

    notes: list[str]  # for the stage's summary

    def admit(self, records: list[SongRecord], rejects: list[Reject]) -> tuple[list[SongRecord], list[Reject]]:
        """The records to write and the rejects, with those it turned down added."""

    def close(self) -> None: ...


@dataclass
class DriverContext:
    """What a driver-side stage gets: the output folder, the run's facts and a progress callback."""

    store: OutputStore
    run: RunInfo
    progress: Callable[[str, str, Any], None]


class Stage:
    """Base class of every stage. Subclasses live one per file in `stages/` (or in a plugin package)."""

    name: ClassVar[str]
    kind: ClassVar[Literal["map", "driver"]] = "map"
    record: ClassVar[type[SongRecord]]
    config_model: ClassVar[type[StageConfig]] = StageConfig
    # Shared sections this stage reads, by name (e.g. {"llm": LlmConfig}); the pipeline config
    # gets one section per name, whichever stages declare it.
    reads: ClassVar[dict[str, type[Section]]] = {}
    # Shared services its workers use, by name (`pipeline.services`): the runner opens them (under the
    # plan's shares) before the workers start and hands the workers the settings they return.
    services: ClassVar[tuple[str, ...]] = ()
    # Upstream outputs. The first is the base table (one row per unit of work);
    # the others are joined on song_id and must exist.
    requires: ClassVar[tuple[str, ...]] = ("ingest",)
    # Upstream outputs joined on song_id when they exist (their columns may be null).
    uses: ClassVar[tuple[str, ...]] = ()
    # The column that identifies a unit of work, for resume.
    key: ClassVar[str] = "song_id"
    # Columns of each upstream table this stage reads (None: all of them).
    columns: ClassVar[dict[str, tuple[str, ...]] | None] = None
    # One line for `mfpipe stages` and the README.
    summary: ClassVar[str] = ""

    def __init__(self, settings: StageSettings, run: RunInfo):
        if not isinstance(settings, StageSettings):
            raise TypeError(f"{type(self).__name__} takes its StageSettings; build it from a whole pipeline "
                            f"config with {type(self).__name__}.from_config(config, run)")
        self.settings = settings
        self.cfg = settings.own
        self.shared = Shared(self.name, settings.shared)
        self.run = run

    # ---------------------------------------------------------------- settings
    @classmethod
    def settings_from(cls, config: PipelineConfig) -> StageSettings:
        """This stage's view of a resolved pipeline config (its section + the shared ones it reads)."""
        own = getattr(config, cls.name, None)
        if own is None:
            own = cls.config_model()
        return StageSettings(cls.name, own, {name: getattr(config, name) for name in cls.reads})

    @classmethod
    def settings_from_json(cls, text: str) -> StageSettings:
        data = json.loads(text)
        shared = {name: model.model_validate(data["shared"][name]) for name, model in cls.reads.items()}
        return StageSettings(cls.name, cls.config_model.model_validate(data["own"]), shared)

    @classmethod
    def from_config(cls, config: PipelineConfig, run: RunInfo) -> Stage:
        """The stage built from a whole pipeline config (tests, benchmarks)."""
        return cls(cls.settings_from(config), run)

    # ---------------------------------------------------------------- declared, driver side
    @classmethod
    def resources(cls, settings: StageSettings) -> Resources:
        return settings.own.resources

    @classmethod
    def gpu_memory(cls, settings: StageSettings) -> GpuMemory | None:
        """GPU memory one worker needs: `resources.gpu_memory_gb`, else the section's own estimate from its
        models; None for a CPU stage or when unknown."""
        res = cls.resources(settings)
        if not res.gpus:
            return None
        if res.gpu_memory_gb:
            return GpuMemory(res.gpu_memory_gb, f"{cls.name}.resources.gpu_memory_gb")
        return settings.own.gpu_memory_estimate()

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        """Lines the run banner must show for this stage (e.g. models with random weights)."""
        return []

    @classmethod
    def corpus_gate(cls, settings: StageSettings, store: OutputStore, run: RunInfo,
                    withdrawn: set[str]) -> CorpusGate | None:
        """Driver side, once per run (also a run with nothing to do): what decides, before this stage's
        records are committed, which of them the corpus keeps (ingest: near-duplicates, evaluation
        contamination). It may add song_ids that already have rows to `withdrawn`: no stage takes
        them any more. None: every record is written."""
        return None

    @classmethod
    def upstream(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cls.requires + cls.uses))

    @classmethod
    def counts(cls, record: SongRecord) -> dict[str, int]:
        """Facts about one written record that the run summary adds up (e.g. items the audio-LM judged)."""
        return {}

    # ---------------------------------------------------------------- map stages
    def setup(self) -> None:
        """Load models / tools once per worker. Heavy imports belong here, not at module top."""

    def process_batch(self, rows: list[dict[str, Any]]) -> list[SongRecord | Reject | Deferred]:
        """Turn input rows into results: for every row at least one record or reject, keyed by the
        row's `key`. A row may get several (think: one record with the kept chains plus one
        reject per dropped chain); a row with no result becomes a `lost` reject; a row that
        failed because a shared service is down gets `self.defer(...)` instead of a reject."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what `setup` took (servers, GPU memory)."""

    # ---------------------------------------------------------------- driver stages
    def run_driver(self, ctx: DriverContext) -> DriverOutcome:
        """A `driver` stage's whole work, once per run on the driver."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def tool_versions(self) -> list[ToolVersion]:
        """Tools whose versions go in every row's provenance."""
        return []

    # What a worker's `setup` records once for every row it writes (None / empty: nothing to say).
    provenance_settings: str | None = None  # what, besides models and prompts, decides the data
    model_refs: list = []
    prompt_ref: Any = None

    @staticmethod
    def settings_text(values: dict[str, Any]) -> str:
        """Provenance's `settings`: the values that decide a row's data, as sorted JSON text."""
        return json.dumps(values, sort_keys=True, default=str)

    def provenance(self, **extra: Any) -> Provenance:
        """A row's provenance: the run's facts, the stage's tools, and what `setup` recorded (settings,
        models, prompt), unless `extra` says otherwise."""
        extra.setdefault("settings", self.provenance_settings)
        extra.setdefault("models", list(self.model_refs))
        extra.setdefault("prompt", self.prompt_ref)
        return Provenance(
            stage=self.name,
            mfpipe_version=self.run.mfpipe_version,
            code_rev=self.run.code_rev,
            config_hash=self.run.config_hash,
            run_id=self.run.run_id,
            created_at=utc_now(),
            tools=extra.pop("tools", None) or self.tool_versions(),
            **extra,
        )

    def reject(self, row: dict[str, Any], error: str, message: str, *, retryable: bool = False) -> Reject:
        return Reject.of(self.name, self.run.run_id, row, error, message, retryable=retryable)

    def reject_exception(self, row: dict[str, Any], exc: BaseException) -> Reject:
        """An unexpected failure on one song: kept as a retryable reject with its cause."""
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
        return self.reject(row, "exception", f"{type(exc).__name__}: {exc}{at}"[:2000], retryable=True)

    def defer(self, row: dict[str, Any], service: str, message: str) -> Deferred:
        """This song waits for `service` (an outage is not the song's fault: it is never rejected for it)."""
        return Deferred(key=str(row.get(self.key)), source=str(row.get("source") or ""),
                        song_id=row.get("song_id"), service=service, message=message)

    def lost(self, row: dict[str, Any], why: str) -> Reject:
        """A unit of work that got no result: not the input's fault, so a rerun tries it again."""
        return self.reject(row, "lost", why, retryable=True)

    def process_safely(self, rows: list[dict[str, Any]]) -> list[SongRecord | Reject | Deferred]:
        """process_batch, falling back to one row at a time so one bad song cannot sink a batch,
        and checking that every input row got a result."""
        try:
            results = list(self.process_batch(rows))
        except Exception as exc:  # noqa: BLE001 - isolate the failing row below
            if len(rows) == 1:
                results = [self.reject_exception(rows[0], exc)]
            else:
                results = [r for row in rows for r in self._process_one(row)]
        return self._account(rows, results)

    def _process_one(self, row: dict[str, Any]) -> list[SongRecord | Reject]:
        try:
            return list(self.process_batch([row]))
        except Exception as exc:  # noqa: BLE001
            return [self.reject_exception(row, exc)]

    def _account(self, rows: list[dict[str, Any]], results: list[SongRecord | Reject]) -> list[SongRecord | Reject]:
        seen = {_result_key(r, self.key) for r in results}
        for row in rows:
            if str(row.get(self.key)) not in seen:
                results.append(self.lost(row, f"stage {self.name} returned no result for this input"))
        return results


def _result_key(result: SongRecord | Reject | Deferred, key: str) -> str:
    return result.key if isinstance(result, Deferred) else str(getattr(result, key, None))
