"""The `/_sim` control API (JSON, no auth): faults, request stats, node reachability, the clock.

It mirrors the Python methods on `SimCluster`/`Simulator`, for tests that drive a simulator
running in another process (the CLI).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pve_exporter.simulator.faults import FaultError
from pve_exporter.simulator.hardware_control import HardwareControl
from pve_exporter.simulator.model import SimCluster, Simulator

_FAULT_KEYS = {"kind", "node", "path", "method", "status", "message", "latency_ms", "count"}


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"invalid JSON: {exc}"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "expected a JSON object"}),
                                 content_type="application/json")
    return body


class ControlApi:
    """Handlers bound to one cluster (and its simulator's clock)."""

    def __init__(self, sim: Simulator, cluster: SimCluster) -> None:
        self.sim = sim
        self.cluster = cluster

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim", self.info),
            web.post("/_sim/faults", self.add_fault),
            web.get("/_sim/faults", self.list_faults),
            web.delete("/_sim/faults", self.clear_faults),
            web.delete("/_sim/faults/{id}", self.delete_fault),
            web.get("/_sim/stats", self.get_stats),
            web.post("/_sim/stats/reset", self.reset_stats),
            web.post("/_sim/nodes/{node}/online", self.set_online),
            web.get("/_sim/clock", self.clock),
            web.post("/_sim/clock", self.clock),
            *HardwareControl(self.sim, self.cluster).routes(),  # pool health, disk SMART, certificate expiry
        ]

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await _read_json(request)
        unknown = set(body) - _FAULT_KEYS
        if unknown:
            return _bad(f"unknown keys: {', '.join(sorted(unknown))}")
        if "kind" not in body:
            return _bad("'kind' is required")
        try:
            fault = self.cluster.add_fault(**body)
        except (FaultError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response({"id": fault.id, "fault": fault.as_dict()})

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.as_dict() for f in self.cluster.faults.list()]})

    async def clear_faults(self, request: web.Request) -> web.Response:
        removed = self.cluster.clear_faults()
        return web.json_response({"removed": [f.id for f in removed]})

    async def delete_fault(self, request: web.Request) -> web.Response:
        fault_id = request.match_info["id"]
        if self.cluster.remove_fault(fault_id) is None:
            return _bad(f"no such fault {fault_id!r}", 404)
        return web.json_response({"removed": [fault_id]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.cluster.stats.as_dict())

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.cluster.stats.reset()
        return web.json_response(self.cluster.stats.as_dict())

    async def set_online(self, request: web.Request) -> web.Response:
        name = request.match_info["node"]
        if name not in self.cluster.nodes:
            return _bad(f"no such node {name!r}", 404)
        body = await _read_json(request)
        online = body.get("online")
        if not isinstance(online, bool):
            return _bad("'online' must be true or false")
        self.cluster.set_node_online(name, online, reboot=bool(body.get("reboot", False)))
        return web.json_response({"node": name, "online": online})

    async def clock(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _read_json(request)
            seconds = body.get("advance")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                return _bad("'advance' must be a non-negative number of seconds")
            self.sim.advance(float(seconds))
        return web.json_response({"now": self.sim.now()})

    async def info(self, request: web.Request) -> web.Response:
        c = self.cluster
        return web.json_response({
            "cluster": c.name,
            "version": c.version.version,
            "nodes": {name: n.online for name, n in c.nodes.items()},
            "guests": len(c.guests),
            "now": self.sim.now(),
            "faults": len(c.faults),
        })
