"""`GET /cluster/resources` → usage gauges, I/O counters, guest/storage info, HA and lock state.

    pvesh get /cluster/resources
    # HELP pve_cpu_usage_ratio CPU utilization (for types 'node', 'qemu' and 'lxc').
    # TYPE pve_cpu_usage_ratio gauge
    pve_cpu_usage_ratio{cluster="prod",id="qemu/100"} 0.0512

Fixes over prometheus-pve-exporter: QEMU `disk` (always 0 in PVE) is not published as usage;
HA and lock enums are emitted only for guests that are HA-managed or locked (bounded series);
`tags` and `content` are sorted so label values do not churn; a guest on an offline node keeps
pve_guest_info with its last known name, template and tags (PPE gives it an empty name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.known import KnownGuest, guest_identity
from pve_exporter.collect.status import UP_HELP
from pve_exporter.pve.values import flag, num, sorted_csv, text

GUEST_HA_STATES = (
    "stopped", "request_stop", "request_start", "request_start_balance", "started",
    "fence", "recovery", "migrate", "relocate", "freeze", "error",
)  # fmt: skip
NODE_HA_STATES = ("online", "maintenance", "unknown", "fence", "gone")
LOCK_STATES = (
    "backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspended", "suspending",
)  # fmt: skip

_GUEST_TYPES = ("qemu", "lxc")
_IO = " (for types 'qemu' and 'lxc')"


def _builders(all_enum_states: bool) -> dict[str, FamilyBuilder]:
    g = "gauge"
    b = {
        "disk_size": FamilyBuilder(
            "pve_disk_size_bytes", g,
            "Storage size in bytes (for type 'storage'), root image size for VMs (for types 'qemu' and 'lxc').",
            ("id",)),
        "disk_usage": FamilyBuilder(
            "pve_disk_usage_bytes", g,
            "Used disk space in bytes (for type 'storage'), used root image space for VMs (for types 'qemu' and "
            "'lxc'). Not published for QEMU, where PVE always reports 0.",
            ("id",)),
        "mem_size": FamilyBuilder(
            "pve_memory_size_bytes", g, "Number of available memory in bytes (for types 'node', 'qemu' and 'lxc').",
            ("id",)),
        "mem_usage": FamilyBuilder(
            "pve_memory_usage_bytes", g, "Used memory in bytes (for types 'node', 'qemu' and 'lxc').", ("id",)),
        "net_tx_gauge": FamilyBuilder(
            "pve_network_transmit_bytes", g,
            "The amount of traffic in bytes that was sent from the guest over the network since it was started."
            + _IO + " DEPRECATED: Use pve_network_transmit_bytes_total instead.", ("id",)),
        "net_rx_gauge": FamilyBuilder(
            "pve_network_receive_bytes", g,
            "The amount of traffic in bytes that was sent to the guest over the network since it was started."
            + _IO + " DEPRECATED: Use pve_network_receive_bytes_total instead.", ("id",)),
        "disk_w_gauge": FamilyBuilder(
            "pve_disk_write_bytes", g,
            "The amount of bytes the guest wrote to its block devices since the guest was started. This info is "
            "not available for all storage types." + _IO + " DEPRECATED: Use pve_disk_written_bytes_total instead.",
            ("id",)),
        "disk_r_gauge": FamilyBuilder(
            "pve_disk_read_bytes", g,
            "The amount of bytes the guest read from its block devices since the guest was started. This info is "
            "not available for all storage types." + _IO + " DEPRECATED: Use pve_disk_read_bytes_total instead.",
            ("id",)),
        "cpu_ratio": FamilyBuilder(
            "pve_cpu_usage_ratio", g, "CPU utilization (for types 'node', 'qemu' and 'lxc').", ("id",)),
        "cpu_limit": FamilyBuilder(
            "pve_cpu_usage_limit", g, "Number of available CPUs (for types 'node', 'qemu' and 'lxc').", ("id",)),
        "uptime": FamilyBuilder(
            "pve_uptime_seconds", g, "Uptime of node or virtual guest in seconds (for types 'node', 'qemu' and 'lxc').",
            ("id",)),
        "shared": FamilyBuilder(
            "pve_storage_shared", g, "Whether or not the storage is shared among cluster nodes", ("id",)),
        "net_tx": FamilyBuilder(
            "pve_network_transmit_bytes_total", "counter",
            "The amount of traffic in bytes that was sent from the guest over the network since it was started."
            + _IO, ("id",)),
        "net_rx": FamilyBuilder(
            "pve_network_receive_bytes_total", "counter",
            "The amount of traffic in bytes that was sent to the guest over the network since it was started." + _IO,
            ("id",)),
        "disk_w": FamilyBuilder(
            "pve_disk_written_bytes_total", "counter",
            "The amount of bytes the guest wrote to its block devices since the guest was started. This info is not "
            "available for all storage types." + _IO, ("id",)),
        "disk_r": FamilyBuilder(
            "pve_disk_read_bytes_total", "counter",
            "The amount of bytes the guest read from its block devices since the guest was started. This info is "
            "not available for all storage types." + _IO, ("id",)),
        "ha": FamilyBuilder(
            "pve_ha_state", g,
            "HA service status (for HA managed VMs)." + ("" if all_enum_states else
                                                        " Only HA-managed guests and nodes with an HA state."),
            ("id", "state")),
        "lock": FamilyBuilder(
            "pve_lock_state", g,
            "The guest's current config lock (for types 'qemu' and 'lxc')" + ("" if all_enum_states else
                                                                              ". Only locked guests."),
            ("id", "state")),
        "guest_info": FamilyBuilder(
            "pve_guest_info", g, "VM/CT info", ("id", "node", "name", "type", "template", "tags")),
        "storage_info": FamilyBuilder(
            "pve_storage_info", g, "Storage info", ("id", "node", "storage", "plugintype", "content")),
        "up": FamilyBuilder("pve_up", g, UP_HELP, ("id",)),
    }  # fmt: skip
    return b


def _enum(builder: FamilyBuilder, rid: str, states: Sequence[str], current: str | None, emit_all: bool) -> None:
    current = current or None  # an empty lock/hastate means "none"
    if current is None and not emit_all:
        return
    for state in states:
        builder.add((rid, state), 1.0 if state == current else 0.0)
    if current is not None and current not in states:
        builder.add((rid, current), 1.0)  # a state PVE added later: still visible, still bounded


def parse_resources(
    rows: Sequence[Mapping[str, Any]],
    *,
    all_enum_states: bool = False,
    include_up: bool = True,
    known: Mapping[str, KnownGuest] | None = None,
) -> list[Family]:
    """All families derived from /cluster/resources rows (pools, sdn and network rows are ignored).

    `known`: the last known identity per guest id, for rows that lack status data."""
    known = known or {}
    b = _builders(all_enum_states)
    for row in rows:
        kind = row.get("type")
        rid = text(row.get("id"))
        if not rid:
            continue
        one = (rid,)  # one label tuple per row, shared by its ~20 samples (memory at 20 000 guests)
        if kind in _GUEST_TYPES:
            if include_up:
                b["up"].add(one, 1.0 if row.get("status") == "running" else 0.0)
            b["disk_size"].add(one, num(row.get("maxdisk")))
            if kind == "lxc":
                b["disk_usage"].add(one, num(row.get("disk")))
            else:
                disk = num(row.get("disk"))
                b["disk_usage"].add(one, disk if disk else None)  # 0 means "unknown" for QEMU
            b["mem_size"].add(one, num(row.get("maxmem")))
            b["mem_usage"].add(one, num(row.get("mem")))
            b["cpu_ratio"].add(one, num(row.get("cpu")))
            b["cpu_limit"].add(one, num(row.get("maxcpu")))
            b["uptime"].add(one, num(row.get("uptime")))
            for field, counter, gauge in (
                ("netout", "net_tx", "net_tx_gauge"),
                ("netin", "net_rx", "net_rx_gauge"),
                ("diskwrite", "disk_w", "disk_w_gauge"),
                ("diskread", "disk_r", "disk_r_gauge"),
            ):
                v = num(row.get(field))
                b[counter].add(one, v)
                b[gauge].add(one, v)
            _enum(b["ha"], rid, GUEST_HA_STATES, text(row.get("hastate")), all_enum_states)
            _enum(b["lock"], rid, LOCK_STATES, text(row.get("lock")), all_enum_states)
            # Every listed guest keeps its info series, also on a dead node (status "unknown", no
            # name or template: §7.3), with the last known values, so joins still find it.
            ident = guest_identity(row, known.get(rid))
            b["guest_info"].add(
                (rid, text(row.get("node")) or "", ident.name, str(kind), ident.template, ident.tags), 1.0
            )
        elif kind == "node":
            b["mem_size"].add(one, num(row.get("maxmem")))
            b["mem_usage"].add(one, num(row.get("mem")))
            b["cpu_ratio"].add(one, num(row.get("cpu")))
            b["cpu_limit"].add(one, num(row.get("maxcpu")))
            b["uptime"].add(one, num(row.get("uptime")))
            b["disk_size"].add(one, num(row.get("maxdisk")))
            b["disk_usage"].add(one, num(row.get("disk")))
            _enum(b["ha"], rid, NODE_HA_STATES, text(row.get("hastate")), all_enum_states)
        elif kind == "storage":
            if include_up:
                b["up"].add(one, 1.0 if row.get("status") == "available" else 0.0)
            b["disk_size"].add(one, num(row.get("maxdisk")))
            b["disk_usage"].add(one, num(row.get("disk")))
            shared = flag(row.get("shared"))
            b["shared"].add(one, None if shared is None else float(shared))
            b["storage_info"].add(
                (
                    rid,
                    text(row.get("node")) or "",
                    text(row.get("storage")) or "",
                    text(row.get("plugintype")) or "",
                    sorted_csv(row.get("content")),
                ),
                1.0,
            )
        elif kind == "pool":
            # `/pool/NAME` aggregates (sums, max uptime, maxcpu-weighted cpu), only while a member
            # runs (pve-api.md §2.3.4); prometheus-pve-exporter publishes them under the same id.
            b["cpu_ratio"].add(one, num(row.get("cpu")))
            b["cpu_limit"].add(one, num(row.get("maxcpu")))
            b["mem_size"].add(one, num(row.get("maxmem")))
            b["mem_usage"].add(one, num(row.get("mem")))
            b["uptime"].add(one, num(row.get("uptime")))
    return build_all(b.values())


def make_collector(all_enum_states: bool = False) -> Collector:
    def plan(shared: Shared, cache: CacheView) -> list[Request]:
        return []

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return parse_resources(shared.resources or [], all_enum_states=all_enum_states, known=shared.known_guests)

    return Collector("resources", "fast", plan, parse, needs_resources=True)
