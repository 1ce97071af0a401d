"""Opt-in per-NIC and per-disk guest I/O (`collect.guest_devices`) from the full-mode QEMU lists.

    pvesh get /nodes/pve1/qemu --full 1
    # HELP pve_guest_network_receive_bytes_total Bytes received by the VM on one network device
    pve_guest_network_receive_bytes_total{cluster="prod",id="qemu/100",interface="tap100i0"} 9871234567

qemu-server's vmstatus (full mode) adds `nics` (per tap device: `netin` = into the guest, `netout`)
and `blockstat` (per drive, QMP query-blockstats: `rd_bytes`, `wr_bytes`) for running VMs. No extra
request: the guests collector already reads these lists; this keeps the two maps through its
payload trimming and adds the families. Off by default: one series per VM per device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import Collector, Family, FamilyBuilder, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import num, text

_NIC_FIELDS = ("netin", "netout")
_DISK_FIELDS = ("rd_bytes", "wr_bytes")


def parse_guest_devices(qemu: list[tuple[str, Any]]) -> list[Family]:
    c = "counter"
    rx = FamilyBuilder(
        "pve_guest_network_receive_bytes_total", c, "Bytes received by the VM on one network device (since start)",
        ("id", "interface"),
    )  # fmt: skip
    tx = FamilyBuilder(
        "pve_guest_network_transmit_bytes_total", c, "Bytes sent by the VM on one network device (since start)",
        ("id", "interface"),
    )  # fmt: skip
    rd = FamilyBuilder(
        "pve_guest_disk_read_bytes_total", c, "Bytes read by the VM from one drive (since start)", ("id", "device")
    )
    wr = FamilyBuilder(
        "pve_guest_disk_written_bytes_total", c, "Bytes written by the VM to one drive (since start)", ("id", "device")
    )
    for _node, rows in qemu:
        if not isinstance(rows, list):
            continue
        for row in rows:
            vmid = text(row.get("vmid")) if isinstance(row, Mapping) else None
            if not vmid or row.get("status") != "running":
                continue
            rid = f"qemu/{vmid}"
            nics = row.get("nics")
            for dev, st in sorted(nics.items()) if isinstance(nics, Mapping) else ():
                if isinstance(st, Mapping):
                    rx.add((rid, str(dev)), num(st.get("netin")))
                    tx.add((rid, str(dev)), num(st.get("netout")))
            blocks = row.get("blockstat")
            for dev, st in sorted(blocks.items()) if isinstance(blocks, Mapping) else ():
                if isinstance(st, Mapping):
                    rd.add((rid, str(dev)), num(st.get("rd_bytes")))
                    wr.add((rid, str(dev)), num(st.get("wr_bytes")))
    return build_all((rx, tx, rd, wr))


def _trim(devices: Any, fields: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
    if not isinstance(devices, Mapping):
        return None
    return {str(k): {f: v[f] for f in fields if f in v} for k, v in devices.items() if isinstance(v, Mapping)}


def with_devices(guests: Collector) -> Collector:
    """The guests collector, also publishing per-device I/O (its QEMU lists must be full-mode)."""
    inner_slim = guests.slim
    inner_parse = guests.parse

    def slim(rows: Any) -> Any:
        out = inner_slim(rows) if inner_slim is not None else rows
        if not isinstance(rows, list) or out is rows:
            return out
        by_vmid = {r.get("vmid"): r for r in out if isinstance(r, dict)}
        for r in rows:
            if not isinstance(r, Mapping) or (kept := by_vmid.get(r.get("vmid"))) is None:
                continue
            for key, fields in (("nics", _NIC_FIELDS), ("blockstat", _DISK_FIELDS)):
                trimmed = _trim(r.get(key), fields)
                if trimmed is not None:
                    kept[key] = trimmed
        return out

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return [*inner_parse(shared, payloads), *parse_guest_devices(node_payloads(payloads, "qemu"))]

    return dataclasses.replace(guests, slim=slim, parse=parse)
