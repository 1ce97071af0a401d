"""`GET /nodes/{node}/disks/zfs` (slow tier, one call per online node) → ZFS pool capacity and health.

    pvesh get /nodes/pve1/disks/zfs
    # HELP pve_zfs_pool_healthy 1 if the ZFS pool is ONLINE, 0 in any other state
    pve_zfs_pool_healthy{cluster="prod",node="pve1",pool="rpool"} 1

pve-storage `src/PVE/API2/Disks/ZFS.pm` runs `zpool list -HpPLo name,size,alloc,free,frag,dedup,health`:
byte counts, `frag` in percent and `dedup` as a factor. A node without zfsutils answers 500
`zfsutils-linux not installed`: that is "no ZFS here", not a failure, so it publishes nothing.
Pool health changes rarely and the call forks `zpool`, so it runs on the slow tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import (
    ApiFailure,
    CacheView,
    Collector,
    Family,
    FamilyBuilder,
    Request,
    Shared,
    build_all,
)
from pve_exporter.collect.per_node import payloads_by_node, plan_online
from pve_exporter.pve.values import num, text

SUFFIX = "disks/zfs"


def parse_zfs(per_node: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    labels = ("node", "pool")
    size = FamilyBuilder("pve_zfs_pool_size_bytes", g, "Size of the ZFS pool", labels)
    alloc = FamilyBuilder("pve_zfs_pool_allocated_bytes", g, "Allocated bytes of the ZFS pool", labels)
    free = FamilyBuilder("pve_zfs_pool_free_bytes", g, "Free bytes of the ZFS pool", labels)
    frag = FamilyBuilder(
        "pve_zfs_pool_fragmentation_ratio", g, "Free-space fragmentation of the ZFS pool (0-1)", labels
    )
    dedup = FamilyBuilder("pve_zfs_pool_dedup_ratio", g, "Deduplication factor of the ZFS pool (1 = none)", labels)
    healthy = FamilyBuilder("pve_zfs_pool_healthy", g, "1 if the ZFS pool is ONLINE, 0 in any other state", labels)
    info = FamilyBuilder(
        "pve_zfs_pool_info", g, "ZFS pool health as zpool reports it (ONLINE, DEGRADED, FAULTED, ...)",
        (*labels, "health"),
    )  # fmt: skip
    for node, pools in per_node:
        if isinstance(pools, ApiFailure) or not isinstance(pools, list):
            continue
        for p in pools:
            name = text(p.get("name")) if isinstance(p, Mapping) else None
            if not name:
                continue
            key = (node, name)
            size.add(key, num(p.get("size")))
            alloc.add(key, num(p.get("alloc")))
            free.add(key, num(p.get("free")))
            f = num(p.get("frag"))
            frag.add(key, None if f is None else f / 100.0)
            dedup.add(key, num(p.get("dedup")))
            health = (text(p.get("health")) or "").upper()
            if health:
                healthy.add(key, 1.0 if health == "ONLINE" else 0.0)
                info.add((*key, health), 1.0)
    return build_all((size, alloc, free, frag, dedup, healthy, info))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return plan_online(shared, SUFFIX)


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_zfs(payloads_by_node(payloads, SUFFIX))


COLLECTOR = Collector("zfs", "slow", _plan, _parse, api_errors_are_data=True)
