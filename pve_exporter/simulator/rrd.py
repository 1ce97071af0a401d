"""`GET /nodes/{node}/rrddata?timeframe=hour`: the node's RRD history (pve-api.md §3.8).

Answered by the contacted node from replicated RRD files, so it is NOT proxied and works for
offline nodes. PVE 9 adds memavailable, arcsize and the PSI pressure data sources; a bucket with
no value for a data source simply lacks the key.
"""

from __future__ import annotations

from typing import Any

from pve_exporter.simulator.errors import ApiError
from pve_exporter.simulator.model import jitter
from pve_exporter.simulator.routing import Ctx, api

_TIMEFRAMES = {"hour": (60, 60), "day": (60, 1440), "week": (1800, 336), "month": (1800, 1440), "year": (21600, 1440)}


@api("GET", "/nodes/{node}/rrddata", perm=("/nodes/{node}", "Sys.Audit"),
     params={"timeframe": ("hour", "day", "week", "month", "year", "decade"), "cf": ("AVERAGE", "MAX")})  # fmt: skip
def _node_rrddata(ctx: Ctx) -> Any:
    c = ctx.cluster
    node = c.resolve_node(ctx.args["node"])
    if node is None:
        raise ApiError(500, f"hostname lookup '{ctx.args['node']}' failed - failed to get address info for: "
                            f"{ctx.args['node']}: Name or service not known")  # fmt: skip
    timeframe = ctx.params.get("timeframe")
    if timeframe is None:
        missing = {"timeframe": "property is missing and it is not optional"}
        raise ApiError(400, "Parameter verification failed.", missing)
    step, points = _TIMEFRAMES.get(timeframe, (604800, 570))
    points = min(points, 70) if c.version.major < 9 else points
    end = int(ctx.now) // step * step
    pve9 = c.version.major >= 9
    out = []
    for k in range(points - 1, -1, -1):
        t = end - k * step
        row: dict[str, Any] = {"time": t, "maxcpu": node.maxcpu, "memtotal": node.maxmem,
                               "swaptotal": node.swap_total, "roottotal": node.rootfs_total}  # fmt: skip
        if node.online or k > 0:
            j = jitter(node.nodeid, 31, t // step)
            row.update(cpu=node.cpu(t), iowait=node.iowait(t), loadavg=float(node.loadavg(t)[0]),
                       memused=float(node.mem_used(t)), swapused=0.0, rootused=float(node.rootfs_used),
                       netin=12345.6 * (0.5 + j), netout=2345.6 * (0.5 + j))  # fmt: skip
            if pve9:
                # PSI avg10 of /proc/pressure/* as pvestatd stores it: percentages (0-100).
                row.update(memavailable=float(node.maxmem - node.mem_used(t)), arcsize=node.hardware.arc_size(),
                           pressurecpusome=round(20.0 * j, 4), pressureiosome=round(5.0 * j, 4),
                           pressureiofull=round(2.0 * j, 4), pressurememorysome=0.0,
                           pressurememoryfull=0.0)  # fmt: skip
        out.append(row)
    return out
