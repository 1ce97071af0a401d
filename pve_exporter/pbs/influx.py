"""A backup server's snapshot → InfluxDB line protocol in the layout PBS's own metric server pushes.

PBS (src/server/metric_collection/metric_server.rs) sends, per host: `cpustat` (ProcFsStat fields,
`cpu` and `iowait_percent` 0–1, plus `avg1`/`avg5`/`avg15`), `memory` (ProcFsMemInfo: memtotal,
memfree, memused, swaptotal, swapfree, swapused), `blockstat` for the root disk and one `blockstat`
per datastore (DiskStat: total, used, avail) with the tag `datastore`; tags `object=host,host=<node>`.
proxmox-metrics writes fields in key order and numbers as JSON prints them (no `i` suffix: InfluxDB
stores floats). From the API we have what /nodes/localhost/status and /status/datastore-usage give
(no jiffy counters, I/O counters or NICs); `host` is the configured server name (the API does not
name the node) and `server` is added as the last tag, as `cluster` is on PVE's points.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pve_exporter.export.influx import tag_escape
from pve_exporter.pbs.collectors import NODE_STATUS, USAGE
from pve_exporter.pbs.poller import PbsSnapshot
from pve_exporter.pve.values import num, text


def _value(v: float) -> str:
    """As serde_json prints a number: integers without a fraction, floats shortest round-trip."""
    return str(int(v)) if v.is_integer() and abs(v) < 2**63 else json.dumps(v)


def _line(measurement: str, tags: str, fields: Mapping[str, float | None], ts: str) -> str | None:
    pairs = [f"{tag_escape(k)}={_value(v)}" for k, v in sorted(fields.items()) if v is not None]
    return f"{measurement},{tags} {','.join(pairs)} {ts}" if pairs else None


def pbs_lines(snap: PbsSnapshot) -> list[str]:
    """The points of the data fetched in this snapshot's cycle (none when nothing was)."""
    ts = str(int(snap.finished_at) * 1_000_000_000)
    host = tag_escape(snap.server)
    head = f"object=host,host={host}"
    server = f",server={host}"
    out: list[str | None] = []
    status = snap.fresh.get(NODE_STATUS.key)
    if isinstance(status, Mapping):
        load = status.get("loadavg") if isinstance(status.get("loadavg"), list) else []
        avg = [num(x) for x in load[:3]] + [None] * (3 - len(load[:3]))
        cpus = status.get("cpuinfo", {}).get("cpus") if isinstance(status.get("cpuinfo"), Mapping) else None
        out.append(_line("cpustat", head + server, {
            "cpu": num(status.get("cpu")), "iowait_percent": num(status.get("wait")), "cpu_count": num(cpus),
            "avg1": avg[0], "avg5": avg[1], "avg15": avg[2],
        }, ts))  # fmt: skip
        mem = status.get("memory") if isinstance(status.get("memory"), Mapping) else {}
        swap = status.get("swap") if isinstance(status.get("swap"), Mapping) else {}
        out.append(_line("memory", head + server, {
            "memtotal": num(mem.get("total")), "memused": num(mem.get("used")), "memfree": num(mem.get("free")),
            "swaptotal": num(swap.get("total")), "swapused": num(swap.get("used")), "swapfree": num(swap.get("free")),
        }, ts))  # fmt: skip
        root = status.get("root") if isinstance(status.get("root"), Mapping) else {}
        out.append(_line("blockstat", head + server, _disk(root), ts))
    usage = snap.fresh.get(USAGE.key)
    for row in usage if isinstance(usage, list) else []:
        store = text(row.get("store")) if isinstance(row, Mapping) else None
        if store:
            out.append(_line("blockstat", f"{head},datastore={tag_escape(store)}{server}", _disk(row), ts))
    return [line for line in out if line is not None]


def _disk(d: Mapping[str, Any]) -> dict[str, float | None]:
    def size(key: str) -> float | None:
        v = num(d.get(key))
        return v if v is not None and v >= 0 else None  # older PBS: -1 for a datastore it could not open

    return {"total": size("total"), "used": size("used"), "avail": size("avail")}
