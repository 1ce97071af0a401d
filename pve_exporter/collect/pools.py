"""`GET /pools` (slow tier, one call per cluster) → pool info; members from `/cluster/resources`.

    pvesh get /pools
    # HELP pve_pool_info Resource pool (1 if the caller can see it), with its comment
    pve_pool_info{cluster="prod",pool="prod",comment="production guests"} 1
    pve_pool_member_info{cluster="prod",pool="prod",id="qemu/100"} 1

The pool index lists only `poolid` and `comment` (pve-manager `PVE/API2/Pool.pm`); the members
come with `/pools/{poolid}` (deprecated since 8.1, no nested pools) or `/pools?poolid=X` (8.1 and
later), one call per pool. Guests carry their pool in `/cluster/resources` already, so guest
members cost no call at all; members an index answer does list (storages included) are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import text

POOLS = Request("/pools")
_GUESTS = ("qemu", "lxc")


def _member_id(member: Mapping[str, Any]) -> str | None:
    """Members look like /cluster/resources rows: `qemu/100`, `storage/pve1/local`."""
    mid = text(member.get("id"))
    if mid:
        return mid
    kind, vmid = text(member.get("type")), text(member.get("vmid"))
    return f"{kind}/{vmid}" if kind in _GUESTS and vmid else None


def parse_pools(index: Any, resources: Sequence[Mapping[str, Any]] | None) -> list[Family]:
    info = FamilyBuilder(
        "pve_pool_info", "gauge", "Resource pool the token can audit (1), with its comment", ("pool", "comment")
    )
    member = FamilyBuilder(
        "pve_pool_member_info", "gauge", "A guest or storage that belongs to the pool (1)", ("pool", "id")
    )
    members: set[tuple[str, str]] = set()
    for row in index if isinstance(index, list) else []:
        if not isinstance(row, Mapping):
            continue
        pool = text(row.get("poolid"))
        if not pool:
            continue
        info.add((pool, text(row.get("comment")) or ""), 1.0)
        for m in row.get("members") or ():
            mid = _member_id(m) if isinstance(m, Mapping) else None
            if mid:
                members.add((pool, mid))
    for row in resources or ():
        pool = text(row.get("pool"))
        rid = text(row.get("id"))
        if pool and rid and row.get("type") in _GUESTS:
            members.add((pool, rid))
    for key in sorted(members):
        member.add(key, 1.0)
    return build_all((info, member))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [POOLS]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_pools(payloads.get(POOLS.key), shared.resources)


COLLECTOR = Collector("pools", "slow", _plan, _parse)
