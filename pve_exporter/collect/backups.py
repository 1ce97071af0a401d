"""Backup volumes on backup storages → the newest backup per guest, without reading any task log.

    pvesh get /nodes/pve1/storage/nfs-backup/content --content backup
    # HELP pve_guest_last_backup_timestamp_seconds Creation time of the guest's newest backup (Unix time)
    pve_guest_last_backup_timestamp_seconds{cluster="prod",id="qemu/100"} 1.7672256e+09

A scheduled backup job runs as one `vzdump` task per node for many guests, so task history cannot
say when one guest was last backed up without downloading logs. The backup storages can: one
listing per storage (a shared storage once, from one online node), on the slow tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import flag, integer, num, text


def plan_backup_listings(shared: Shared) -> list[Request]:
    online = set(shared.online_nodes())
    seen_shared: set[str] = set()
    out = []
    for row in shared.resources or []:
        if row.get("type") != "storage" or row.get("status") != "available":
            continue
        node, sid = text(row.get("node")), text(row.get("storage"))
        content = (text(row.get("content")) or "").split(",")
        if not node or not sid or node not in online or "backup" not in content:
            continue
        if flag(row.get("shared")):
            if sid in seen_shared:
                continue
            seen_shared.add(sid)
        out.append(Request(f"/nodes/{node}/storage/{sid}/content", (("content", "backup"),), node=node))
    return sorted(out, key=lambda r: r.key)


def parse_backups(resources: Any, listings: list[Any], external: Mapping[str, float] | None = None) -> list[Family]:
    """`external`: newest backup per guest id on the linked backup servers; only this cluster's guests count."""
    last = FamilyBuilder(
        "pve_guest_last_backup_timestamp_seconds", "gauge",
        "Creation time of the guest's newest backup on any backup storage or linked Proxmox Backup Server "
        "(Unix time)", ("id",),
    )  # fmt: skip
    count = FamilyBuilder(
        "pve_guest_backups", "gauge", "Number of backups of the guest on the backup storages", ("id",)
    )
    kinds = {integer(r.get("vmid")): r.get("type") for r in resources or [] if r.get("type") in ("qemu", "lxc")}
    newest: dict[str, float] = {}
    n: dict[str, int] = {}
    for volumes in listings:
        if not isinstance(volumes, list):
            continue
        for v in volumes:
            vmid = integer(v.get("vmid"))
            ctime = num(v.get("ctime"))
            if vmid is None or ctime is None or (v.get("content") not in (None, "backup")):
                continue
            kind = text(v.get("subtype")) or kinds.get(vmid)
            if kind not in ("qemu", "lxc"):
                continue
            rid = f"{kind}/{vmid}"
            newest[rid] = max(newest.get(rid, 0.0), ctime)
            n[rid] = n.get(rid, 0) + (integer(v.get("count")) or 1)  # slimmed rows carry a count
    if external:  # only this cluster's guests: a linked server may serve other clusters too
        guests = {f"{kind}/{vmid}" for vmid, kind in kinds.items()}
        for rid, t in external.items():
            if rid in guests and t > newest.get(rid, 0.0):
                newest[rid] = t
    for rid in sorted(newest):
        last.add((rid,), newest[rid])
        count.add((rid,), float(n[rid]) if rid in n else None)
    return build_all((last, count))


def slim_volumes(volumes: Any) -> Any:
    """A listing holds every backup of every guest; keep one summary row per guest (newest, count)."""
    if not isinstance(volumes, list):
        return volumes
    best: dict[Any, dict[str, Any]] = {}
    for v in volumes:
        if not isinstance(v, Mapping) or v.get("content") not in (None, "backup") or num(v.get("ctime")) is None:
            continue
        row = best.get(v.get("vmid"))
        if row is None:
            best[v.get("vmid")] = {"vmid": v.get("vmid"), "ctime": v["ctime"], "subtype": v.get("subtype"), "count": 1}
        else:
            row["count"] += 1
            if num(v["ctime"]) > num(row["ctime"]):  # type: ignore[operator]
                row["ctime"] = v["ctime"]
    return list(best.values())


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return plan_backup_listings(shared)


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    listings = [data for key, data in payloads.items() if "/content" in key]
    return parse_backups(shared.resources, listings, shared.external_backups)


COLLECTOR = Collector("backups", "slow", _plan, _parse, needs_resources=True, slim=slim_volumes)
