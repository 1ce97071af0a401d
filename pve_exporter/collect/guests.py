"""`GET /nodes/{node}/qemu?full=1` and `GET /nodes/{node}/lxc`, one call each per online node.

    pvesh get /nodes/pve1/qemu --full 1
    # HELP pve_guest_pressure_cpu_some_ratio Share of time (0-1) some tasks of the guest stalled on cpu (PSI avg10)
    pve_guest_pressure_cpu_some_ratio{cluster="prod",id="qemu/100"} 0.0012

These lists are live (unlike /cluster/resources, which lags ~10 s) and carry what the resources
view lacks: PSI pressure (PVE 9; avg10 percentages, numbers for QEMU and strings for LXC, published
divided by 100 as 0-1 ratios), swap for containers, and for QEMU in full mode
the per-NIC, per-disk and balloon data that the InfluxDB output needs (full mode is asked only
when that output is configured; `pve_guest_balloon_actual_bytes` needs it). O(nodes), never O(guests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import num, percent_ratio, text

PRESSURES = (
    ("pressurecpusome", "cpu_some"), ("pressurecpufull", "cpu_full"),
    ("pressureiosome", "io_some"), ("pressureiofull", "io_full"),
    ("pressurememorysome", "memory_some"), ("pressurememoryfull", "memory_full"),
)  # fmt: skip


def _psi_help(name: str) -> str:
    resource, kind = name.split("_")
    who = "some tasks" if kind == "some" else "all non-idle tasks"
    return f"Share of time (0-1) {who} of the guest stalled on {resource} (PSI {kind} avg10; PVE 9+, running guests)"


def parse_guest_lists(qemu: list[tuple[str, Any]], lxc: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    psi = {
        field: FamilyBuilder(
            f"pve_guest_pressure_{name}_ratio", g, _psi_help(name), ("id",))
        for field, name in PRESSURES
    }  # fmt: skip
    swap_size = FamilyBuilder("pve_guest_swap_size_bytes", g, "Configured swap of the container", ("id",))
    swap_used = FamilyBuilder("pve_guest_swap_usage_bytes", g, "Swap used by the container", ("id",))
    memhost = FamilyBuilder(
        "pve_guest_memory_host_bytes", g, "Memory of the VM as the host sees it (PVE 9 memhost)", ("id",)
    )
    balloon = FamilyBuilder(
        "pve_guest_balloon_actual_bytes", g,
        "Current balloon size of the VM (full-mode lists: collect.qemu_full_status or the InfluxDB output)", ("id",),
    )  # fmt: skip
    for kind, lists in (("qemu", qemu), ("lxc", lxc)):
        for _node, rows in lists:
            if not isinstance(rows, list):
                continue
            for row in rows:
                vmid = text(row.get("vmid"))
                if not vmid:
                    continue
                rid = (f"{kind}/{vmid}",)
                running = row.get("status") == "running"
                if running:
                    for field, _ in PRESSURES:
                        psi[field].add(rid, percent_ratio(row.get(field)))
                if kind == "lxc":
                    swap_size.add(rid, num(row.get("maxswap")))
                    swap_used.add(rid, num(row.get("swap")))
                else:
                    memhost.add(rid, num(row.get("memhost")))
                    info = row.get("ballooninfo")
                    if isinstance(info, Mapping):
                        balloon.add(rid, num(info.get("actual")))
    return build_all([*psi.values(), swap_size, swap_used, memhost, balloon])


_KEEP = ("vmid", "status", "memhost", "swap", "maxswap", *(field for field, _ in PRESSURES))


def slim_guests(rows: Any) -> Any:
    """Full-mode QEMU rows carry per-disk and per-NIC QMP stats: keep only what the parser reads."""
    if not isinstance(rows, list):
        return rows
    out = []
    for r in rows:
        if isinstance(r, Mapping):
            d = {k: r[k] for k in _KEEP if k in r}
            info = r.get("ballooninfo")
            if isinstance(info, Mapping) and "actual" in info:
                d["ballooninfo"] = {"actual": info["actual"]}
            out.append(d)
    return out


def make_collector(full: bool = False) -> Collector:
    """`full` asks QEMU lists in full mode (balloon, NICs, disks): what the InfluxDB output writes."""

    def plan(shared: Shared, cache: CacheView) -> list[Request]:
        out = []
        for n in shared.online_nodes():
            out.append(Request(f"/nodes/{n}/qemu", (("full", "1"),) if full else (), node=n))
            out.append(Request(f"/nodes/{n}/lxc", node=n))
        return out

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return parse_guest_lists(node_payloads(payloads, "qemu"), node_payloads(payloads, "lxc"))

    return Collector("guests", "fast", plan, parse, slim=slim_guests, slim_unless_raw=True)
