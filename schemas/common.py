"""Records every stage shares: the song key, provenance, rejects."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mfpipe import __version__


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Facts about the run that every row's provenance carries."""

    run_id: str
    config_hash: str
    code_rev: str | None = None
    mfpipe_version: str = __version__


class Record(BaseModel):
    """Base of every record written to Parquet: strict field names, no extras."""

    model_config = ConfigDict(extra="forbid")


class ToolVersion(Record):
    name: str
    version: str


class ModelRef(Record):
    role: str
    name: str
    revision: str | None = None
    # True when the weights are random (cpu profile stand-ins): the text is noise.
    random_weights: bool = False


class PromptRef(Record):
    id: str
    version: str
    sha256: str


class Provenance(Record):
    """Who made a row: stage, code, config, tools, models, prompt, time."""

    stage: str
    mfpipe_version: str
    code_rev: str | None = None
    config_hash: str
    run_id: str
    created_at: dt.datetime
    tools: list[ToolVersion] = Field(default_factory=list)
    models: list[ModelRef] = Field(default_factory=list)
    prompt: PromptRef | None = None
    # JSON text of generation / sampling settings, when a model wrote the row.
    settings: str | None = None
    # Things a curator should know about this row (a tool that had nothing to say, a fallback used).
    notes: list[str] = Field(default_factory=list)


class LlmUsage(Record):
    """What LLM requests cost: counted by the client, summed per song."""

    requests: int = 0  # HTTP requests sent, retries and repairs included
    retries: int = 0
    repairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # wall time from the first request to the last answer

    def add(self, other: LlmUsage) -> LlmUsage:
        """Add another's counts to this one (not its seconds: wall time does not sum)."""
        for name in ("requests", "retries", "repairs", "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


class SongRecord(Record):
    """A stage's output row: one per song, keyed by song_id."""

    song_id: str
    source: str
    provenance: Provenance


class Reject(Record):
    """An input a stage could not handle, with a reason a person understands."""

    source: str
    song_id: str | None = None
    stage: str
    error: str  # short machine-friendly class: empty_file, not_audio, duplicate, ...
    message: str
    retryable: bool = False  # transient (timeouts, server errors): a rerun tries again
    run_id: str
    created_at: dt.datetime

    @classmethod
    def of(cls, stage: str, run_id: str, unit: Any, error: str, message: str, *, retryable: bool = False) -> Reject:
        """The one way a reject is made: for `unit` (a row dict or a record with `source` / `song_id`)."""
        get = unit.get if isinstance(unit, dict) else (lambda name: getattr(unit, name, None))
        return cls(source=str(get("source") or ""), song_id=get("song_id"), stage=stage, error=error,
                   message=message, retryable=retryable, run_id=run_id, created_at=utc_now())
