"""The outage guard: a shared service that fails for songs pauses their stage; it is probed with backoff,
recovered when it is ours, and the stage fails (songs pending, never rejected) when it stays down too long.

An outage is not a song's fault: a deferred song goes back to the queue and gets a strike. When the
service answers again, the songs that kept failing while it did (`strikes` at the limit) are the songs'
own problem and come out as `struck_out` for the stage to reject. The clock and the probe are injected,
so the rule is tested without a server or time passing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OutageCheck:
    failed: str | None = None  # the stage must fail with this message
    struck_out: list[tuple[str, str]] = field(default_factory=list)  # (key, last failure): reject these


class OutageGuard:
    def __init__(self, probe: Callable[[], str | None], recover: Callable[[], object], *, max_wait_s: float,
                 song_strikes: int, clock: Callable[[], float] = time.monotonic):
        self.probe = probe
        self.recover = recover
        self.max_wait_s = max_wait_s
        self.song_strikes = song_strikes
        self.clock = clock
        self.strikes: dict[str, int] = {}
        self._since: float | None = None  # paused since
        self._next_probe = 0.0
        self._cause = ""
        self._recent: list[tuple[str, str]] = []  # (key, message) deferred since the last good probe

    @property
    def paused(self) -> bool:
        return self._since is not None

    def deferred(self, key: str, message: str) -> None:
        """A song came back because the service failed for it."""
        self.strikes[key] = self.strikes.get(key, 0) + 1
        self._recent.append((key, message))
        if self._since is None:
            now = self.clock()
            self._since, self._next_probe, self._cause = now, now, message

    def check(self, waiting: int = 0) -> OutageCheck:
        """While paused: probe when due; resume when the service answers, fail when it stayed down too long."""
        if self._since is None:
            return OutageCheck()
        now = self.clock()
        if now < self._next_probe:
            return OutageCheck()
        problem = self.probe()
        if problem is None:
            self._since = None
            return OutageCheck(struck_out=self._strike_out())
        self.recover()
        down = now - self._since
        if down > self.max_wait_s:
            return OutageCheck(failed=(
                f"a shared service has been down for {down:.0f} s (run.outage_max_wait_s = {self.max_wait_s:g}): "
                f"{problem}; {waiting} song(s) stay pending for the next run (last failure: {self._cause[:300]})"))
        self._next_probe = now + min(30.0, 2.0 * (1 + down / 4))
        self._cause = problem
        return OutageCheck()

    def _strike_out(self) -> list[tuple[str, str]]:
        out = {k: m for k, m in self._recent if self.strikes.get(k, 0) >= self.song_strikes}
        self._recent = []
        return sorted(out.items())
