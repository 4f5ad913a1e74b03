"""Ctrl-C and SIGTERM: the first signal drains, the second stops at once.

On the first SIGINT or SIGTERM a run stops handing out work, lets the batches its workers hold
finish (up to `run.drain_seconds`), commits what finished, records itself as `interrupted` and
exits 130 (SIGINT) or 143 (SIGTERM). A second signal abandons the batches still running; shards are
still written whole (they appear atomically), so nothing is ever half written. Kubernetes sends
SIGTERM on eviction and waits `terminationGracePeriodSeconds` (30 s by default) before SIGKILL;
`mfpipe jobs stop` has Ray send SIGTERM to the job's driver and wait `RAY_JOB_STOP_WAIT_TIME_S`,
which `mfpipe submit` sets from the drain deadline.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator


class StopControl:
    def __init__(self, drain_seconds: float):
        self.drain_seconds = drain_seconds
        self.requested = threading.Event()
        self.hard = threading.Event()
        self.signum: int | None = None
        self.deadline: float | None = None
        self.failure: BaseException | None = None  # what stopped the run besides a signal (the output folder)

    def request(self, signum: int) -> None:
        if self.requested.is_set():
            self.hard.set()
            return
        self.signum = signum
        self.deadline = time.monotonic() + self.drain_seconds
        self.requested.set()

    def fail(self, cause: BaseException) -> None:
        """Stop the run because it cannot go on (the output folder cannot be written): running batches
        drain as after a first signal; the run then ends with `cause`."""
        if self.failure is None:
            self.failure = cause
        if not self.requested.is_set():
            self.deadline = time.monotonic() + self.drain_seconds
            self.requested.set()

    def past_deadline(self) -> bool:
        return self.hard.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopControl]:
        """Catch SIGINT and SIGTERM while the run lives (only possible on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self._installed = True
        self.reinstall()
        try:
            yield self
        finally:
            self._installed = False
            for s, handler in previous.items():
                signal.signal(s, handler)

    def reinstall(self) -> None:
        """Put our handlers back (Ray's `init` installs its own)."""
        if getattr(self, "_installed", False) and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, lambda signum, _frame: self.request(signum))
