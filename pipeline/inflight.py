"""Finding the song that kills its worker process (a segfault in a native library, an OOM kill).

An exception in a stage becomes a reject for its song; a dead process raises
nothing. Ray Data then restarts the actor and retries the batch, forever if the
same song kills it every time. So before a batch runs, each row is marked "in
flight", and the marks are cleared when the batch returns. A batch that finds
marks from an earlier attempt knows that attempt died: it runs those rows one at
a time, each marked "alone"; a row found still marked "alone" killed a worker on
its own and becomes a reject. The marks live in a small actor the driver starts
for each stage of a run, so nothing carries over between runs.
"""

from __future__ import annotations

from typing import Any, Callable

BATCH = "batch"
ALONE = "alone"


class _Marks:
    """The marks of one stage's run, held by a small actor the driver owns (every call is a
    round trip, so a mark is stored before the worker goes on to the risky part)."""

    def __init__(self) -> None:
        self.marks: dict[str, str] = {}

    def get(self, units: list[str]) -> dict[str, str | None]:
        return {u: self.marks.get(u) for u in units}

    def put(self, units: list[str], value: str) -> None:
        self.marks.update(dict.fromkeys(units, value))

    def clear(self, units: list[str]) -> None:
        for u in units:
            self.marks.pop(u, None)


class InflightLedger:
    def __init__(self, handle: Any):
        self.handle = handle

    @classmethod
    def create(cls) -> "InflightLedger":
        import ray

        return cls(ray.remote(num_cpus=0)(_Marks).remote())

    def marks(self, units: list[str]) -> dict[str, str | None]:
        import ray

        return ray.get(self.handle.get.remote(units))

    def mark(self, units: list[str], value: str) -> None:
        import ray

        ray.get(self.handle.put.remote(units, value))

    def clear(self, units: list[str]) -> None:
        import ray

        ray.get(self.handle.clear.remote(units))

    def close(self) -> None:
        import ray

        ray.kill(self.handle)


def run_guarded(ledger: InflightLedger, rows: list[dict[str, Any]], unit_of: Callable[[dict], str],
                process: Callable[[list[dict]], list], crashed: Callable[[dict], Any]) -> list:
    """Process `rows`, isolating any row that killed an earlier attempt's worker."""
    units = [unit_of(r) for r in rows]
    marks = ledger.marks(units)
    if not any(marks.values()):
        ledger.mark(units, ALONE if len(rows) == 1 else BATCH)
        results = process(rows)
        ledger.clear(units)
        return results
    results = []
    for row, unit in zip(rows, units):
        if marks[unit] == ALONE:
            results.append(crashed(row))  # it killed a worker when it ran by itself
        else:
            ledger.mark([unit], ALONE)
            results.extend(process([row]))
        ledger.clear([unit])
    return results
