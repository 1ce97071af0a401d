"""`/_sim` hooks that flip the modelled hardware: a pool's health, a disk's SMART verdict and wear,
a certificate's expiry. For tests and demos that drive a simulator in another process.

    POST /_sim/nodes/pve3/zfs/tank            {"health": "ONLINE"}
    POST /_sim/nodes/pve3/disks               {"devpath": "/dev/sdb", "health": "PASSED", "wearout": null}
    POST /_sim/nodes/pve3/certificates/pveproxy-ssl.pem  {"expires_in_seconds": 864000}
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from pve_exporter.simulator.hardware import NodeHardware
from pve_exporter.simulator.model import SimCluster, Simulator

HEALTHS = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED")


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class HardwareControl:
    def __init__(self, sim: Simulator, cluster: SimCluster) -> None:
        self.sim = sim
        self.cluster = cluster

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_sim/nodes/{node}/zfs/{pool}", self.zpool),
            web.post("/_sim/nodes/{node}/disks", self.disk),
            web.post("/_sim/nodes/{node}/certificates/{filename}", self.cert),
        ]

    def _hw(self, request: web.Request) -> NodeHardware | None:
        node = self.cluster.nodes.get(request.match_info["node"])
        return node.hardware if node is not None else None

    async def zpool(self, request: web.Request) -> web.Response:
        hw, body = self._hw(request), await _body(request)
        if hw is None:
            return _bad("no such node", 404)
        pool = hw.zpool(request.match_info["pool"])
        if pool is None:
            return _bad("no such pool", 404)
        if body is None or set(body) - {"health"} or body.get("health") not in HEALTHS:
            return _bad(f'expected {{"health": one of {", ".join(HEALTHS)}}}')
        pool.health = body["health"]
        return web.json_response(asdict(pool))

    async def disk(self, request: web.Request) -> web.Response:
        hw, body = self._hw(request), await _body(request)
        if hw is None:
            return _bad("no such node", 404)
        if body is None or set(body) - {"devpath", "health", "wearout"}:
            return _bad("expected {devpath, health?, wearout?}")
        disk = hw.disk(str(body.get("devpath")))
        if disk is None:
            return _bad("no such disk", 404)
        if "health" in body:
            if not isinstance(body["health"], str) or not body["health"]:
                return _bad("'health' must be a string such as PASSED, OK, FAILED!, UNKNOWN")
            disk.health = body["health"]
        if "wearout" in body:
            w = body["wearout"]
            if w is not None and not (_number(w) and 0 <= w <= 100):
                return _bad("'wearout' must be null (N/A) or a percentage 0-100")
            disk.wearout = None if w is None else float(w)
        return web.json_response(asdict(disk))

    async def cert(self, request: web.Request) -> web.Response:
        hw, body = self._hw(request), await _body(request)
        if hw is None:
            return _bad("no such node", 404)
        cert = hw.cert(request.match_info["filename"])
        if cert is None:
            return _bad("no such certificate", 404)
        if body is None or len(body) != 1 or not _number(next(iter(body.values()), None)):
            return _bad('expected {"notafter": epoch} or {"expires_in_seconds": seconds}')
        if "notafter" in body:
            cert.notafter = int(body["notafter"])
        elif "expires_in_seconds" in body:
            cert.notafter = int(self.sim.now() + body["expires_in_seconds"])
        else:
            return _bad('expected {"notafter": epoch} or {"expires_in_seconds": seconds}')
        return web.json_response({"filename": cert.filename, "notafter": cert.notafter})
