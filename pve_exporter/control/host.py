"""What the control plane needs from the daemon that hosts it, and nothing more.

The daemon (`app.Daemon`) implements this; tests and a future multi-replica host can implement it
without the rest of the daemon. Clusters are looked up on every use: a config reload replaces a
cluster's runtime (client, poller) as a whole, so a client kept from an earlier call may be closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pve_exporter.collect.base import Family
from pve_exporter.pve.client import EndpointState, PveClient
from pve_exporter.snapshot import GuestRef, Snapshot

FamilySource = Callable[[set[str] | None], list[Family]]


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One configured cluster as of the latest reload: what the API shows and acts through."""

    name: str
    client: PveClient
    token_id: str  # `user@realm!name`: the owner of the tasks its power calls start
    interval_seconds: float
    stale_after: float
    endpoints: tuple[EndpointState, ...]
    # Removed from the config by a reload: its client only finishes the operations it follows.
    retired: bool = False


class ControlHost(Protocol):
    """The daemon as seen by the control plane (see the module docstring)."""

    @property
    def clock(self) -> Callable[[], float]:
        """Wall time: stored history and exposed timestamps only."""
        ...

    @property
    def monotonic(self) -> Callable[[], float]:
        """For deadlines, backoff and give-up limits (immune to clock steps)."""
        ...

    @property
    def config_path(self) -> str | None: ...

    def cluster_names(self) -> list[str]:
        """The configured clusters, sorted."""
        ...

    def cluster_view(self, name: str) -> ClusterView | None:
        """The cluster's current runtime, or None if it is not configured (any more)."""
        ...

    def latest_snapshot(self, name: str) -> Snapshot | None:
        """The cluster's latest collection (guest inventory), or None before the first one."""
        ...

    async def guest_backups(self, cluster: str, guest: GuestRef) -> dict[str, Any]:
        """The guest's recent backups from every source (pbs/guest_backups.py), read now."""
        ...

    def refresh_soon(self, name: str) -> None:
        """Ask the cluster's poller for an early cycle (after a power action changed a guest)."""
        ...

    async def collect_now(self, name: str) -> None:
        """Run (or wake) a collection of the cluster now; returns when it was started or done."""
        ...

    async def reload(self) -> bool:
        """Re-read the config file; False if it was rejected (the running config is kept)."""
        ...

    def add_self_metrics(self, source: FamilySource) -> None: ...

    def remove_self_metrics(self, source: FamilySource) -> None: ...
