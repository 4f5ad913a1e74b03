"""The run's ledger: what each stage has done, what `--limit` allows, and the rejects the pipeline itself
makes (a stage makes its own through `Stage.reject`). One reading of the output folder (the board, loaded
once at the start of the run) answers every "what is left" question: the runner's work check, each
stage's resume, the summary's counts.

Done = committed rows ∪ rejects for good (not retryable); a retryable reject is tried again.
`--limit N`: the first N inputs in discovery order, and at most N songs handed out per stage.
"""

from __future__ import annotations

from ..schemas import Reject, SongRecord
from .board import Board
from .stage import INPUTS, Stage


class Ledger:
    def __init__(self, board: Board, limit: int | None):
        self.board = board
        self.limit = limit

    def done(self, stage_cls: type[Stage]) -> set[str]:
        lane = self.board.lane(stage_cls.name)
        keys = set(lane.sources) if stage_cls.key == "source" else set(lane.records)
        return keys | lane.rejected

    def inputs(self, sources: list[str]) -> list[str]:
        return list(sources)[: self.limit] if self.limit is not None else list(sources)

    def units(self, stage_cls: type[Stage], sources: list[str]) -> set[str]:
        """The keys a stage works on: the run's inputs (ingest), or its base stage's songs in the corpus."""
        if stage_cls.requires[0] == INPUTS:
            return set(self.inputs(sources))
        return set(self.board.lane(stage_cls.requires[0]).records) - self.board.withdrawn

    def counts(self, stage_cls: type[Stage], sources: list[str]) -> tuple[int, int]:
        """(units still to do, units already done)."""
        units, done = self.units(stage_cls, sources), self.done(stage_cls)
        return len(units - done), len(units & done)

    def allows(self, handed_out: int) -> bool:
        return self.limit is None or handed_out < self.limit


# ------------------------------------------------------------------ the pipeline's own rejects


def duplicate(stage: str, run_id: str, record: SongRecord, first_source: str) -> Reject:
    return Reject.of(stage, run_id, record, "duplicate",
                     f"same audio as {first_source} (song_id {record.song_id[:12]}…): kept once")


def worker_crash(stage: str, run_id: str, row: dict) -> Reject:
    return Reject.of(stage, run_id, row, "worker_crash",
                     "the worker process died twice while processing this song alone (a crash in a native library "
                     "or the memory limit); the rest of the run went on", retryable=True)


def service_error(stage: str, run_id: str, row: dict, strikes: int, message: str) -> Reject:
    return Reject.of(stage, run_id, row, "service_error",
                     f"failed {strikes} times while the service itself answered: {message}"[:2000], retryable=True)
