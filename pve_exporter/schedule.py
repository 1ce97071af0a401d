"""The cycle schedule every poller shares: run at once, then every interval on the monotonic clock.

Starts stay on a fixed grid (`next_at += interval`), so a slow cycle does not push the following
ones later; a cycle that overran skips the starts it missed and says how many. `trigger` asks for a
cycle now (it coalesces); an exception in a cycle is logged and the schedule goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog


class Schedule:
    def __init__(
        self,
        run_once: Callable[[], Awaitable[Any]],
        *,
        interval: Callable[[], float],
        monotonic: Callable[[], float],
        on_overrun: Callable[[int], None],
        log: structlog.typing.FilteringBoundLogger,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._run_once = run_once
        self._interval = interval  # read every cycle: a reload may change it
        self._mono = monotonic
        self._on_overrun = on_overrun
        self._log = log
        self._sleep = sleep  # tests: a fake sleep that moves a manual clock
        self._trigger = asyncio.Event()

    def trigger(self) -> None:
        """Ask for a cycle now (control API `collect`); coalesces with one already asked for."""
        self._trigger.set()

    @property
    def triggered(self) -> bool:
        """A cycle was asked for and has not started yet."""
        return self._trigger.is_set()

    async def run_forever(self, phase: float = 0.0) -> None:
        """The first cycle runs at once (a full set of series at start-up); later ones are shifted by
        `phase` so that many targets do not all parse at the same moment."""
        next_at = self._mono()
        first = True
        while True:
            delay = next_at - self._mono()
            if delay > 0 and not self._trigger.is_set():
                await self._wait(delay)
            self._trigger.clear()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop this target's polling for good
                self._log.exception("cycle crashed")
            now = self._mono()
            interval = self._interval()
            next_at += interval + (phase if first else 0.0)
            first = False
            if next_at <= now:
                missed = int((now - next_at) // interval) + 1
                self._on_overrun(missed)
                self._log.warning("cycle overran its interval", skipped_starts=missed)
                next_at += missed * interval

    async def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            await self._sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._trigger.wait(), timeout=delay)
