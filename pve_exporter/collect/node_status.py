"""`GET /nodes/{node}/status`, one call per online node → load, iowait, swap, KSM, root fs, CPU info.

    pvesh get /nodes/pve1/status
    # HELP pve_node_load1 1-minute load average of the node
    pve_node_load1{cluster="prod",id="node/pve1"} 1.74

prometheus-pve-exporter has none of these (its users are sent to node_exporter); they are cheap
here because the call is O(nodes). `loadavg` arrives as strings and `cpuinfo.mhz` as a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import num, text


def _sub(d: Any, key: str) -> Mapping[str, Any]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, Mapping) else {}


def parse_node_status(node_status: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    b = {
        "load1": FamilyBuilder("pve_node_load1", g, "1-minute load average of the node", ("id",)),
        "load5": FamilyBuilder("pve_node_load5", g, "5-minute load average of the node", ("id",)),
        "load15": FamilyBuilder("pve_node_load15", g, "15-minute load average of the node", ("id",)),
        "iowait": FamilyBuilder("pve_node_iowait_ratio", g, "Fraction of CPU time waiting for I/O (0-1)", ("id",)),
        "mem_avail": FamilyBuilder(
            "pve_node_memory_available_bytes", g, "MemAvailable of the node (PVE 9 and later)", ("id",)),
        "mem_free": FamilyBuilder(
            "pve_node_memory_free_bytes", g, "Free memory of the node as PVE reports it", ("id",)),
        "swap_size": FamilyBuilder("pve_node_swap_size_bytes", g, "Swap size of the node", ("id",)),
        "swap_used": FamilyBuilder("pve_node_swap_usage_bytes", g, "Swap used on the node", ("id",)),
        "ksm": FamilyBuilder("pve_node_ksm_shared_bytes", g, "Memory shared by KSM on the node", ("id",)),
        "root_size": FamilyBuilder("pve_node_rootfs_size_bytes", g, "Size of the node's root filesystem", ("id",)),
        "root_used": FamilyBuilder(
            "pve_node_rootfs_usage_bytes", g, "Used bytes of the node's root filesystem", ("id",)),
        "root_avail": FamilyBuilder(
            "pve_node_rootfs_available_bytes", g, "Bytes of the root filesystem available to non-root users", ("id",)),
        "cpu_info": FamilyBuilder(
            "pve_node_cpu_info", g, "CPU model and topology of the node",
            ("id", "model", "sockets", "cores", "cpus", "mhz")),
        "kernel_info": FamilyBuilder(
            "pve_node_kernel_info", g, "Running kernel and pve-manager version of the node",
            ("id", "kernel", "pveversion")),
    }  # fmt: skip
    for node, st in node_status:
        if not isinstance(st, Mapping):
            continue
        nid = (f"node/{node}",)
        load = st.get("loadavg")
        if isinstance(load, list) and len(load) == 3:
            for key, v in zip(("load1", "load5", "load15"), load, strict=True):
                b[key].add(nid, num(v))
        b["iowait"].add(nid, num(st.get("wait")))
        mem = _sub(st, "memory")
        b["mem_avail"].add(nid, num(mem.get("available")))
        b["mem_free"].add(nid, num(mem.get("free")))
        swap = _sub(st, "swap")
        b["swap_size"].add(nid, num(swap.get("total")))
        b["swap_used"].add(nid, num(swap.get("used")))
        b["ksm"].add(nid, num(_sub(st, "ksm").get("shared")))
        root = _sub(st, "rootfs")
        b["root_size"].add(nid, num(root.get("total")))
        b["root_used"].add(nid, num(root.get("used")))
        b["root_avail"].add(nid, num(root.get("avail")))
        cpu = _sub(st, "cpuinfo")
        if cpu:
            mhz = num(cpu.get("mhz"))
            b["cpu_info"].add(
                (nid[0], text(cpu.get("model")) or "", text(cpu.get("sockets")) or "", text(cpu.get("cores")) or "",
                 text(cpu.get("cpus")) or "", f"{mhz:.0f}" if mhz else ""),
                1.0,
            )  # fmt: skip
        kernel = text(_sub(st, "current-kernel").get("release")) or text(st.get("kversion")) or ""
        if kernel or st.get("pveversion"):
            b["kernel_info"].add((nid[0], kernel, text(st.get("pveversion")) or ""), 1.0)
    return build_all(b.values())


def node_payloads(payloads: Mapping[str, Any], suffix: str) -> list[tuple[str, Any]]:
    """`/nodes/<name>/<suffix>` payloads as (name, data), sorted by node name."""
    out = []
    for key, data in payloads.items():
        parts = key.split("?", 1)[0].split("/")
        if len(parts) == 4 and parts[1] == "nodes" and parts[3] == suffix:
            out.append((parts[2], data))
    return sorted(out, key=lambda x: x[0])


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [Request(f"/nodes/{n}/status", node=n) for n in shared.online_nodes()]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_node_status(node_payloads(payloads, "status"))


COLLECTOR = Collector("node_status", "fast", _plan, _parse)
