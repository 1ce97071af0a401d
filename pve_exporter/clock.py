"""The daemon's two clocks, and a manual one for tests.

Schedules, deadlines, staleness, rate limits and backoff follow `time.monotonic()`: a step of the
system clock (NTP, a VM resumed, an operator) must neither freeze nor rush collection. Wall time is
only for what people read: exposed timestamps and the stored operation history.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], float]  # Unix seconds, for exposed timestamps and stored history
Monotonic = Callable[[], float]  # seconds since an arbitrary point, for every interval


class ManualClock:
    """A clock that moves only when told: `t += s` moves both clocks, `step_wall(s)` only the wall one.

    Calling it returns wall time (it stands in for `time.time`); `monotonic` stands in for
    `time.monotonic`. Tests and the request-count benchmark drive cycles with it, never sleeping.
    """

    def __init__(self, t: float = 1_767_225_600.0, mono: float = 1_000.0) -> None:  # 2026-01-01T00:00:00Z
        self._wall = t
        self._mono = mono

    def __call__(self) -> float:
        return self._wall

    @property
    def t(self) -> float:
        return self._wall

    @t.setter
    def t(self, value: float) -> None:
        self._mono += value - self._wall  # time passes for both clocks
        self._wall = value

    def monotonic(self) -> float:
        return self._mono

    def step_wall(self, seconds: float) -> None:
        """The system clock is set (NTP step, operator): wall time jumps, monotonic time does not."""
        self._wall += seconds


SYSTEM_WALL: WallClock = time.time
SYSTEM_MONOTONIC: Monotonic = time.monotonic
