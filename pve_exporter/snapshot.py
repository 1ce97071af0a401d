"""Immutable per-cluster snapshots and the store that swaps them in whole.

A scrape, the InfluxDB writer and the control API only ever read a finished Snapshot; the
poller builds the next one aside and swaps it in, so readers never see half a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pve_exporter.collect.base import Family, Shared


@dataclass(frozen=True, slots=True)
class CollectorResult:
    """How one collector did in the cycle that made the snapshot."""

    name: str
    ok: bool
    stale: bool  # serving payloads kept from an earlier cycle because this cycle's fetch failed
    duration: float
    error_kind: str | None = None
    error: str | None = None
    last_success: float | None = None
    ran: bool = True  # False when its tier was not due this cycle (result carried over)


@dataclass(frozen=True, slots=True)
class Payload:
    data: Any
    fetched_at: float  # monotonic


@dataclass(frozen=True, slots=True)
class GuestRef:
    """What the control API needs to address a guest: where it lives and what it is."""

    vmid: int
    node: str
    type: str
    name: str
    status: str
    template: bool
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    cluster: str
    seq: int
    started_at: float
    finished_at: float
    reachable: bool  # /cluster/resources answered this cycle
    last_success: float | None  # finish time of the last cycle that reached the cluster
    families: tuple[Family, ...]
    results: Mapping[str, CollectorResult]
    payloads: Mapping[str, Payload] = field(default_factory=lambda: MappingProxyType({}))
    shared: Shared | None = None
    guests: Mapping[int, GuestRef] = field(default_factory=lambda: MappingProxyType({}))
    started_mono: float = 0.0  # the same start on the monotonic clock (payload ages compare to it)
    reached_mono: float | None = None  # monotonic time of `last_success`, for ages that survive clock steps
    requests_by_tier: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # since start

    def fresh_payloads(self) -> dict[str, Any]:
        """Payloads fetched in this very cycle (what an InfluxDB writer should send as new points)."""
        return {k: p.data for k, p in self.payloads.items() if p.fetched_at >= self.started_mono}

    def age(self, monotonic_now: float) -> float | None:
        """Seconds since the cluster last answered /cluster/resources (None: never)."""
        return None if self.reached_mono is None else max(0.0, monotonic_now - self.reached_mono)


Listener = Callable[[Snapshot], None]


class SnapshotStore:
    """Latest snapshot per cluster; listeners are told about every swap (renderer, InfluxDB)."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._listeners: list[Listener] = []
        self._preparers: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Called on the event loop for every swap; must be quick (enqueue, swap a reference)."""
        self._listeners.append(listener)

    def add_preparer(self, preparer: Listener) -> None:
        """Called in the poller's worker thread before the swap, for CPU work (rendering)."""
        self._preparers.append(preparer)

    def prepare(self, snap: Snapshot) -> None:
        for preparer in self._preparers:
            preparer(snap)

    def put(self, snap: Snapshot) -> None:
        self._snapshots[snap.cluster] = snap
        for listener in self._listeners:
            listener(snap)

    def remove(self, cluster: str) -> None:
        self._snapshots.pop(cluster, None)

    def get(self, cluster: str) -> Snapshot | None:
        return self._snapshots.get(cluster)

    def all(self) -> dict[str, Snapshot]:
        return dict(self._snapshots)
