"""The stage contract: what a stage declares and the two methods it implements.

The NeMo Curator shape, smaller. A stage class declares its name, the record it
produces and the stage outputs it reads; its resources and batch size come from
its config section (so users can change them); it loads models once per worker
in `setup` and turns batches of song rows into records or rejects in
`process_batch`. The runner does everything else: input planning, resume,
Ray Data, sinks, progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
from typing import Any, ClassVar

from mfpipe import __version__

from ..schemas import Provenance, Reject, SongRecord, ToolVersion, utc_now
from .config import PipelineConfig, Resources

# The pseudo-stage whose "output" is the list of input files (column `source`).
INPUTS = "inputs"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Facts about the run that every row's provenance carries."""

    run_id: str
    config_hash: str
    code_rev: str | None = None
    mfpipe_version: str = __version__


class Stage:
    """Base class of every stage. Subclasses live one per file in `stages/`."""

    name: ClassVar[str]
    record: ClassVar[type[SongRecord]]
    # Upstream outputs. The first is the base table (one row per unit of work);
    # the others are joined on song_id and must exist.
    requires: ClassVar[tuple[str, ...]] = ("ingest",)
    # Upstream outputs joined on song_id when they exist (their columns may be null).
    uses: ClassVar[tuple[str, ...]] = ()
    # The column that identifies a unit of work, for resume.
    key: ClassVar[str] = "song_id"
    # Columns of each upstream table this stage reads (None: all of them).
    columns: ClassVar[dict[str, tuple[str, ...]] | None] = None
    # One line for `mfpipe run --help` and the README.
    summary: ClassVar[str] = ""

    def __init__(self, config: PipelineConfig, run: RunInfo):
        self.config = config
        self.run = run

    # ---------------------------------------------------------------- declared
    @classmethod
    def resources(cls, config: PipelineConfig) -> Resources:
        section = config.stage_section(cls.name)
        return section.resources if section is not None else Resources()

    @classmethod
    def banner_notes(cls, config: PipelineConfig) -> list[str]:
        """Lines the run banner must show for this stage (e.g. models with random weights)."""
        return []

    @classmethod
    def open_services(cls, config: PipelineConfig, services: contextlib.ExitStack) -> PipelineConfig:
        """Driver side, before this stage's workers start: start what all of them share (a model
        server), registering its stop on `services` (closed when the run ends), and return the
        config the workers get (e.g. with the server's URL). Runs once per stage per run."""
        return config

    @classmethod
    def upstream(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cls.requires + cls.uses))

    # ---------------------------------------------------------------- lifecycle
    def setup(self) -> None:
        """Load models / tools once per worker. Heavy imports belong here, not at module top."""

    def process_batch(self, rows: list[dict[str, Any]]) -> list[SongRecord | Reject]:
        """Turn input rows into one record or one reject per row."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what `setup` took (servers, GPU memory)."""

    # ---------------------------------------------------------------- helpers
    def tool_versions(self) -> list[ToolVersion]:
        """Tools whose versions go in every row's provenance."""
        return []

    def provenance(self, **extra: Any) -> Provenance:
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
        return Reject(
            source=str(row.get("source") or ""),
            song_id=row.get("song_id"),
            stage=self.name,
            error=error,
            message=message,
            retryable=retryable,
            run_id=self.run.run_id,
            created_at=utc_now(),
        )

    def reject_exception(self, row: dict[str, Any], exc: BaseException) -> Reject:
        """An unexpected failure on one song: kept as a retryable reject with its cause."""
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
        return self.reject(row, "exception", f"{type(exc).__name__}: {exc}{at}"[:2000], retryable=True)

    def process_safely(self, rows: list[dict[str, Any]]) -> list[SongRecord | Reject]:
        """process_batch, falling back to one row at a time so one bad song cannot sink a batch,
        and checking that every input row got exactly one result."""
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
                results.append(self.reject(row, "lost", f"stage {self.name} returned no result for this input"))
        return results


def _result_key(result: SongRecord | Reject, key: str) -> str:
    return str(getattr(result, key, None))
