"""Which of a stage's songs can be handed out now: the board's events in, ready keys out.

A song is ready when its base row and the rows of every required upstream stage are committed, and
every optional upstream stage of this run has committed or rejected it (or finished). Songs done
before (committed or rejected for good) are skipped; songs the corpus left out (a near-duplicate
replaced by a better copy, an evaluation clip found inside) are never taken. Nothing here touches Ray
or the output folder: it reads the board's lanes and keeps its own cursor into their events.
"""

from __future__ import annotations

from collections import deque

from .board import Board
from .stage import INPUTS, Stage


class Readiness:
    def __init__(self, stage_cls: type[Stage], board: Board, planned: set[str], done: set[str]):
        self.board = board
        self.planned = planned
        self.done = done
        self.base = stage_cls.requires[0]
        self.required = [r for r in stage_cls.requires[1:] if r != INPUTS]
        self.optional = [u for u in stage_cls.uses if u not in stage_cls.requires]
        self.upstream = [u for u in stage_cls.upstream() if u != INPUTS]
        self.upstream_planned = [u for u in self.upstream if u in planned]
        self.pending: deque[str] = deque()  # ready, in arrival order
        self.waiting: set[str] = set()  # known, not ready yet
        self.seen: set[str] = set()
        self.skipped = 0  # done by an earlier run
        self.left_out = 0  # withdrawn from the corpus
        self._cursor: dict[str, int] = {}

    def ready(self, key: str) -> bool:
        board = self.board
        if self.base != INPUTS and key not in board.lane(self.base).records:
            return False
        if any(key not in board.lane(r).records for r in self.required):
            return False
        for up in self.optional:
            lane = board.lane(up)
            if up in self.planned and not lane.finished and key not in lane.records and key not in lane.rejected:
                return False
        return True

    def offer(self, key: str) -> None:
        if key in self.seen:
            return
        if key in self.board.withdrawn:
            self.seen.add(key)
            self.left_out += 1
        elif key in self.done:
            self.seen.add(key)
            self.skipped += 1
        elif self.ready(key):
            self.seen.add(key)
            self.waiting.discard(key)
            self.pending.append(key)
        else:
            self.waiting.add(key)

    def seed(self, sources: list[str] | None) -> None:
        """The stage's known work at its start: the run's inputs (ingest), or its base stage's rows."""
        if self.base == INPUTS:
            for source in sources or []:
                self.offer(source)
            return
        with self.board.changed:
            keys = list(self.board.lane(self.base).records)
        for key in keys:
            self.offer(key)
        self.absorb()

    def absorb(self) -> None:
        """Take in what the upstream stages committed, rejected or finished since the last look."""
        for up in self.upstream:
            lane = self.board.lane(up)
            start = self._cursor.get(up, 0)
            events = lane.events[start:]
            self._cursor[up] = start + len(events)
            for kind, keys in events:
                if kind == "finished":
                    for key in list(self.waiting):
                        self.offer(key)
                elif up == self.base and kind == "record":
                    for key in keys:
                        self.offer(key)
                else:
                    for key in keys:
                        if key in self.waiting:
                            self.offer(key)

    def take(self) -> str | None:
        """The next ready song (a song withdrawn since it was queued is dropped, and counted)."""
        while self.pending:
            key = self.pending.popleft()
            if key not in self.board.withdrawn:
                return key
            self.left_out += 1
        return None

    def put_back(self, key: str) -> None:
        """A song to hand out again first (its service failed for it)."""
        self.pending.appendleft(key)

    def drop(self, keys: set[str]) -> None:
        self.pending = deque(k for k in self.pending if k not in keys)

    def upstream_finished(self) -> bool:
        return all(self.board.lane(u).finished for u in self.upstream_planned)

    def upstream_failed(self) -> list[str]:
        return [u for u in self.upstream_planned if self.board.lane(u).failed]
