"""Small cluster-wide endpoints: `/version`, `/cluster/backup-info/not-backed-up`, `/cluster/config/qdevice`.

pvesh get /version
# HELP pve_version_info Proxmox VE version info
pve_version_info{cluster="prod",release="9.1",repoid="5cacb35d8e4f7a21",version="9.1.4"} 1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import text

VERSION = Request("/version")
NOT_BACKED_UP = Request("/cluster/backup-info/not-backed-up")
QDEVICE = Request("/cluster/config/qdevice")


def parse_version(data: Mapping[str, Any] | None) -> list[Family]:
    info = FamilyBuilder("pve_version_info", "gauge", "Proxmox VE version info", ("release", "repoid", "version"))
    if isinstance(data, Mapping) and data.get("version"):
        info.add((text(data.get("release")) or "", text(data.get("repoid")) or "", text(data["version"]) or ""), 1.0)
    return build_all((info,))


def cluster_id(shared: Shared) -> str:
    """`cluster/<name>` as PVE names it; a standalone node has no cluster entry, so use the config name."""
    return f"cluster/{shared.pve_cluster_name or shared.cluster}"


def parse_not_backed_up(shared: Shared, rows: Any) -> list[Family]:
    total = FamilyBuilder(
        "pve_not_backed_up_total", "untyped", "Total number of guests not covered by any backup job.", ("id",)
    )
    info = FamilyBuilder(
        "pve_not_backed_up_info", "gauge", "Present if guest is not covered by any backup job.", ("id",)
    )
    if not isinstance(rows, list):
        return []
    for row in rows:
        vmid, kind = text(row.get("vmid")), text(row.get("type"))
        if vmid and kind:
            info.add((f"{kind}/{vmid}",), 1.0)
    total.add((cluster_id(shared),), float(len(info.samples)))
    return build_all((total, info))


def parse_qdevice(shared: Shared, data: Any) -> list[Family]:
    up = FamilyBuilder("pve_qdevice_up", "gauge", "Proxmox VE QDevice is connected (1) or not (0)", ("id",))
    info = FamilyBuilder(
        "pve_qdevice_info", "gauge", "Proxmox VE QDevice info (1 if configured)",
        ("id", "model", "algorithm", "qnetd_host", "tie_breaker", "state"),
    )  # fmt: skip
    if not isinstance(data, Mapping) or not data:
        return []
    qid = cluster_id(shared)  # prometheus-pve-exporter labels the QDevice with its cluster
    state = text(data.get("State")) or ""
    up.add((qid,), 1.0 if state.lower() == "connected" else 0.0)
    info.add(
        (
            qid,
            text(data.get("Model")) or "",
            text(data.get("Algorithm")) or "",
            text(data.get("QNetd host")) or "",
            text(data.get("Tie-breaker")) or "",
            state,
        ),
        1.0,
    )
    return build_all((up, info))


def _plan_version(shared: Shared, cache: CacheView) -> list[Request]:
    return [VERSION]


def _parse_version(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_version(payloads.get(VERSION.key))


def _plan_backup(shared: Shared, cache: CacheView) -> list[Request]:
    return [NOT_BACKED_UP]


def _parse_backup(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    if NOT_BACKED_UP.key not in payloads:
        return []
    return parse_not_backed_up(shared, payloads[NOT_BACKED_UP.key])


def _plan_qdevice(shared: Shared, cache: CacheView) -> list[Request]:
    # Only a real cluster can have a QDevice; a standalone node answers with an error.
    return [QDEVICE] if shared.pve_cluster_name else []


def _parse_qdevice(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_qdevice(shared, payloads.get(QDEVICE.key))


VERSION_COLLECTOR = Collector("version", "slow", _plan_version, _parse_version)
BACKUP_COLLECTOR = Collector("backup", "slow", _plan_backup, _parse_backup)
QDEVICE_COLLECTOR = Collector("qdevice", "fast", _plan_qdevice, _parse_qdevice, needs_status=True)
