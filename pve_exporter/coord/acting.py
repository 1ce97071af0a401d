"""Clients for acting on clusters this replica does not poll: any replica accepts a power action.

With coordination a replica polls only the clusters it holds leases for, yet the control API of every
replica accepts actions on every configured cluster (the per-guest lock is in PostgreSQL). For a
cluster polled elsewhere the daemon builds its client here on first use (never a poll loop), rebuilds
it when the cluster's config changed, and closes them all when it stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from pve_exporter.settings import ClusterSettings


class _Runtime(Protocol):
    cfg: ClusterSettings


R = TypeVar("R", bound=_Runtime)


class ActingClusters(Generic[R]):
    def __init__(
        self,
        configured: Callable[[], Sequence[ClusterSettings]],
        build: Callable[[ClusterSettings], R],
        close: Callable[[R], Awaitable[None]],
    ) -> None:
        self._configured = configured
        self._build = build
        self._close = close
        self._runtimes: dict[str, R] = {}
        self._retired: list[R] = []  # replaced by a config change: closed at stop (an action may still use it)

    def runtime(self, name: str) -> R | None:
        """The acting runtime of a configured cluster (built now if needed), None if not configured."""
        cfg = next((c for c in self._configured() if c.name == name), None)
        if cfg is None:
            return None
        rt = self._runtimes.get(name)
        if rt is None or rt.cfg != cfg:
            if rt is not None:
                self._retired.append(rt)
            rt = self._runtimes[name] = self._build(cfg)
        return rt

    async def close(self) -> None:
        runtimes = [*self._runtimes.values(), *self._retired]
        self._runtimes, self._retired = {}, []
        for rt in runtimes:
            await self._close(rt)
