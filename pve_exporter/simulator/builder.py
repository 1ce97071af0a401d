"""`build_simulator`: the short way to get a populated `Simulator` for tests, demos and the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pve_exporter.simulator.auth import TokenTable
from pve_exporter.simulator.model import Clock, SimCluster, Simulator
from pve_exporter.simulator.versions import PveVersion

ClusterSpec = SimCluster | str | tuple[Any, ...] | Mapping[str, Any]


def build_simulator(
    clusters: int | Iterable[ClusterSpec] = 1,
    *,
    seed: int | str = 1,
    pve_version: int | str | PveVersion = 9,
    auth_delay: float = 0.0,
    latency_ms: float = 0.0,
    clock: Clock | None = None,
    tokens: TokenTable | None = None,
    compress: bool = True,
    **cluster_defaults: Any,
) -> Simulator:
    """Build a simulator from short cluster specs.

    `clusters` is a count (`sim1..simN`) or a list of: a `SimCluster`; a name; a tuple
    `(name, nodes, guests_per_node[, storages])`; or a dict of `SimCluster` keyword arguments.
    `seed`, `pve_version` and any other keyword (`storages`, `node_ip`, `ceph`, ...) are
    defaults for every cluster built here.
    """
    clock = clock or time.time
    specs: Iterable[ClusterSpec] = (
        [f"sim{i}" for i in range(1, clusters + 1)] if isinstance(clusters, int) else clusters
    )
    defaults = {"seed": seed, "pve_version": pve_version, **cluster_defaults}
    built = [_cluster(spec, defaults, clock) for spec in specs]
    return Simulator(built, tokens=tokens, clock=clock, auth_delay=auth_delay, latency_ms=latency_ms,
                     compress=compress)


def _cluster(spec: ClusterSpec, defaults: dict[str, Any], clock: Clock) -> SimCluster:
    if isinstance(spec, SimCluster):
        return spec
    if isinstance(spec, str):
        return SimCluster(spec, clock=clock, **defaults)
    if isinstance(spec, tuple):
        keys = ("name", "nodes", "guests_per_node", "storages")
        if not 1 <= len(spec) <= len(keys):
            raise ValueError(f"cluster tuple must be (name, nodes, guests_per_node[, storages]): {spec!r}")
        kwargs = {**defaults, **dict(zip(keys, spec, strict=False))}
        return SimCluster(clock=clock, **kwargs)
    if isinstance(spec, Mapping):
        return SimCluster(clock=clock, **{**defaults, **spec})
    raise TypeError(f"unsupported cluster spec {spec!r}")
