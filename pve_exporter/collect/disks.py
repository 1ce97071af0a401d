"""`GET /nodes/{node}/disks/list` (slow tier, one call per online node) → physical disk health and wear.

    pvesh get /nodes/pve1/disks/list
    # HELP pve_physical_disk_healthy 1 if SMART says PASSED/OK, 0 if it reports a failure
    pve_physical_disk_healthy{cluster="prod",node="pve1",device="/dev/sda"} 1

pve-storage `src/PVE/Diskmanage.pm` get_disks: `health` is smartctl's verdict (`PASSED` for ATA,
`OK` for SAS/NVMe, `FAILED!` …) or `UNKNOWN` when SMART could not be read; `wearout` is the
remaining life in percent for SSD/NVMe, else the string `N/A`; `serial`/`wwn` default to `unknown`.
The call runs smartctl on every disk, so it belongs to the slow tier. Unknown stays absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.per_node import payloads_by_node, plan_online
from pve_exporter.pve.values import num, text

SUFFIX = "disks/list"
HEALTHY = ("PASSED", "OK")
UNKNOWN = ("", "UNKNOWN", "SMART DISABLED")


def health_value(raw: Any) -> float | None:
    """1 for PASSED/OK, None when SMART gave no verdict, 0 for anything else (a failure)."""
    h = (text(raw) or "").strip().upper()
    if h in UNKNOWN:
        return None
    return 1.0 if h in HEALTHY else 0.0


def parse_disks(per_node: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    labels = ("node", "device")
    healthy = FamilyBuilder(
        "pve_physical_disk_healthy", g, "1 if SMART says PASSED/OK, 0 if it reports a failure (absent: unknown)",
        labels,
    )  # fmt: skip
    wear = FamilyBuilder(
        "pve_physical_disk_wearout_ratio", g, "Remaining life of the SSD/NVMe (0-1, 1 = new), as PVE reads SMART",
        labels,
    )  # fmt: skip
    size = FamilyBuilder("pve_physical_disk_size_bytes", g, "Size of the physical disk", labels)
    info = FamilyBuilder(
        "pve_physical_disk_info", g, "Physical disk of the node (type hdd|ssd|nvme|usb|unknown; used: what holds it)",
        (*labels, "type", "model", "serial", "wwn", "used"),
    )  # fmt: skip
    for node, disks in per_node:
        if not isinstance(disks, list):
            continue
        for d in disks:
            dev = text(d.get("devpath")) if isinstance(d, Mapping) else None
            if not dev or d.get("parent"):  # partitions (include-partitions) are not disks
                continue
            key = (node, dev)
            healthy.add(key, health_value(d.get("health")))
            w = num(d.get("wearout"))  # "N/A" → None
            wear.add(key, None if w is None else max(0.0, min(100.0, w)) / 100.0)
            size.add(key, num(d.get("size")))
            info.add(
                (*key, text(d.get("type")) or "", text(d.get("model")) or "", text(d.get("serial")) or "",
                 text(d.get("wwn")) or "", text(d.get("used")) or ""),
                1.0,
            )  # fmt: skip
    return build_all((healthy, wear, size, info))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return plan_online(shared, SUFFIX)


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_disks(payloads_by_node(payloads, SUFFIX))


COLLECTOR = Collector("disks", "slow", _plan, _parse)
