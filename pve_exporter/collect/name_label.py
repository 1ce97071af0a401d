"""Opt-in `name` label on guest usage series (`collect.guest_name_label`).

    pve_cpu_usage_ratio{cluster="prod",id="qemu/100",name="web-01"} 0.0512

Off by default, like prometheus-pve-exporter (a rename starts new series, and every usage family
grows a label). Without it, the join on pve_guest_info gives the same:
`pve_cpu_usage_ratio * on(cluster, id) group_left(name) pve_guest_info`. With it, every sample of
these families carries `name` (the guest's name; empty for nodes, storages and pools), so each
family keeps one label set. `pve_up` and the info/enum families are left alone on purpose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pve_exporter.collect.base import Collector, Family, Shared
from pve_exporter.pve.values import text

USAGE_FAMILIES = frozenset({
    "pve_cpu_usage_ratio", "pve_cpu_usage_limit", "pve_memory_size_bytes", "pve_memory_usage_bytes",
    "pve_disk_size_bytes", "pve_disk_usage_bytes", "pve_uptime_seconds",
    "pve_network_transmit_bytes", "pve_network_receive_bytes", "pve_disk_write_bytes", "pve_disk_read_bytes",
    "pve_network_transmit_bytes_total", "pve_network_receive_bytes_total",
    "pve_disk_written_bytes_total", "pve_disk_read_bytes_total",
    "pve_guest_swap_size_bytes", "pve_guest_swap_usage_bytes", "pve_guest_memory_host_bytes",
    "pve_guest_balloon_actual_bytes",
})  # fmt: skip


def is_usage_family(name: str) -> bool:
    return name in USAGE_FAMILIES or name.startswith("pve_guest_pressure_")


def guest_names(resources: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {
        str(r["id"]): text(r.get("name")) or ""
        for r in resources or ()
        if r.get("type") in ("qemu", "lxc") and r.get("id")
    }


def add_name_label(families: Sequence[Family], names: Mapping[str, str]) -> list[Family]:
    """Usage families with only `id` get `name` as a second label on every sample."""
    out = []
    for f in families:
        if f.labels != ("id",) or not is_usage_family(f.name):
            out.append(f)
            continue
        samples = tuple(((rid, names.get(rid, "")), v) for (rid,), v in f.samples)
        out.append(Family(f.name, f.kind, f.help, ("id", "name"), samples))
    return out


def with_name_label(c: Collector) -> Collector:
    inner = c.parse

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return add_name_label(inner(shared, payloads), guest_names(shared.resources))

    return dataclasses.replace(c, parse=parse)
