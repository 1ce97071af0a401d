"""One guest's recent backups from every source, read on demand (control API, read scope).

Sources: the cluster's backup storages (`GET /nodes/{node}/storage/{sid}/content?content=backup&vmid=N`,
one request per storage; a shared storage once) and every Proxmox Backup Server linked to the cluster
(`GET /admin/datastore/{store}/snapshots?backup-type=vm|ct&backup-id=N[&ns=]`, only where the
server's cached group listings show the group). A source that fails is reported in `errors` and
costs only its own rows. Parsing is pure; the two fetchers are the only I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pve_exporter.collect.backups import plan_backup_listings
from pve_exporter.collect.base import Request
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveError
from pve_exporter.pve.values import flag, integer, num, text
from pve_exporter.snapshot import GuestRef, Snapshot

LIMIT = 50  # newest backups returned
_PBS_TYPE = {"qemu": "vm", "lxc": "ct"}


@dataclass(frozen=True, slots=True)
class PbsSource:
    """A linked backup server and the (datastore, namespace) pairs that hold the guest's group."""

    server: str
    client: PveClient
    locations: tuple[tuple[str, str], ...]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _verification(v: Any) -> str | None:
    state = text(v.get("state")) if isinstance(v, Mapping) else None
    return state if state in ("ok", "failed") else None


def storage_entries(rows: Any, vmid: int, node: str, storage: str) -> list[dict[str, Any]]:
    """Backup volumes of one storage listing (PVE `content`: volid, ctime, size, verification for
    PBS-backed storages, protected, notes) → entries; other guests' volumes are skipped."""
    out = []
    for v in rows if isinstance(rows, list) else []:
        if not isinstance(v, Mapping) or integer(v.get("vmid")) != vmid or v.get("content") not in (None, "backup"):
            continue
        t = num(v.get("ctime"))
        if t is None:
            continue
        out.append({
            "source": "storage", "storage": storage, "node": node, "server": None, "datastore": None,
            "namespace": None, "id": text(v.get("volid")) or "", "time": _iso(t), "size": integer(v.get("size")),
            "verification": _verification(v.get("verification")), "protected": flag(v.get("protected")),
        })  # fmt: skip
    return out


def pbs_entries(rows: Any, server: str, store: str, ns: str) -> list[dict[str, Any]]:
    """PBS snapshots of the group (SnapshotListItem: backup-type, backup-id, backup-time, size,
    verification, protected) → entries."""
    out = []
    for r in rows if isinstance(rows, list) else []:
        t = num(r.get("backup-time")) if isinstance(r, Mapping) else None
        if t is None:
            continue
        out.append({
            "source": "pbs", "storage": None, "node": None, "server": server, "datastore": store, "namespace": ns,
            "id": f"{r.get('backup-type')}/{r.get('backup-id')}/{_iso(t)}", "time": _iso(t),
            "size": integer(r.get("size")), "verification": _verification(r.get("verification")),
            "protected": flag(r.get("protected")),
        })  # fmt: skip
    return out


def _error(source: str, where: str, exc: PveError) -> dict[str, Any]:
    return {"source": source, "where": where, "kind": exc.kind, "message": exc.message[:300]}


async def read_guest_backups(
    client: PveClient, snapshot: Snapshot | None, guest: GuestRef, pbs: Sequence[PbsSource], *, limit: int = LIMIT
) -> dict[str, Any]:
    """The guest's newest backups (at most `limit`, newest first) over every source, and what failed."""
    storages: list[Request] = []
    if snapshot is not None and snapshot.shared is not None:
        storages = [Request(r.path, (*r.params, ("vmid", str(guest.vmid))), r.node)
                    for r in plan_backup_listings(snapshot.shared)]  # fmt: skip

    async def one_storage(req: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        node, sid = req.path.split("/")[2], req.path.split("/")[4]
        try:
            rows = await client.get(req.path, dict(req.params))
        except PveError as exc:
            return [], [_error("storage", f"{node}/{sid}", exc)]
        return storage_entries(rows, guest.vmid, node, sid), []

    async def one_pbs(src: PbsSource, store: str, ns: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        params = {"backup-type": _PBS_TYPE[guest.type], "backup-id": str(guest.vmid), **({"ns": ns} if ns else {})}
        try:
            rows = await src.client.get(f"/admin/datastore/{store}/snapshots", params)
        except PveError as exc:
            return [], [_error("pbs", f"{src.server}/{store}/{ns}", exc)]
        return pbs_entries(rows, src.server, store, ns), []

    jobs = [one_storage(r) for r in storages]
    if guest.type in _PBS_TYPE:
        jobs += [one_pbs(src, store, ns) for src in pbs for store, ns in src.locations]
    results = await asyncio.gather(*jobs)  # every fetch catches its own errors: none is left running
    entries = sorted((e for got, _ in results for e in got), key=lambda e: e["time"], reverse=True)
    errors = [e for _, errs in results for e in errs]
    return {
        "vmid": guest.vmid, "type": guest.type, "name": guest.name or None,
        "last_backup": entries[0]["time"] if entries else None, "backups": entries[:limit],
        "sources": len(jobs), "errors": errors,
    }  # fmt: skip
