"""A simulated Proxmox Backup Server on its own port: PBS's token header, its API shapes, faults.

Its backup groups follow the guests of the linked simulated clusters (one namespace per cluster
on `store1`): guests with `backed_up` have daily snapshots, the others none; a guest whose vmid is
a multiple of 13 was last backed up 8 days ago (stale); the first backed-up guest's newest snapshot
failed verification. `store1` is nearly full and filling, the sync job `s-offsite` failed. Each
problem is an attribute a test may switch off (or GC's failure on: `gc_failing`).
Shapes as in tests/fixtures/pbs/README.md (proxmox-backup's API types). Faults: the `/_sim/faults`
API of the PVE simulator (http_error, timeout, slow, auth_fail, forbidden).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from pve_exporter.simulator.faults import Fault, FaultError, FaultSet
from pve_exporter.simulator.model import SimCluster, SimGuest, Simulator

PBS_TOKEN_ID = "monitor@pbs!exporter"
PBS_TOKEN_SECRET = "00000000-0000-4000-8000-0000000000b5"
DAY = 86400
SYNC_ERROR = "sync failed - unable to connect to remote pbs-offsite (Connection refused)"
_HEADER = re.compile(r"^PBSAPIToken=([^:\s]+):(\S+)$")
_FAULT_KEYS = {"kind", "path", "method", "status", "message", "latency_ms", "count"}
_PBS_FAULTS = {"http_error", "timeout", "slow", "auth_fail", "forbidden"}


class SimPbs:
    """The state of one simulated backup server (derived from the linked clusters on every request)."""

    def __init__(self, sim: Simulator, name: str = "backup1", clusters: Sequence[str] = ()) -> None:
        self.sim = sim
        self.name = name
        self.clusters = list(clusters) or list(sim.clusters)
        self.faults = FaultSet()
        self.tokens = {PBS_TOKEN_ID: PBS_TOKEN_SECRET}
        self.requests = 0
        self.created = int(sim.now())
        self.sync_failing = True  # the sync job's last run failed
        self.verify_failed = True  # the first backed-up guest's newest snapshot failed verification
        self.store1_used = 0.93  # store1's used share (it grows slowly from there)
        self.store1_filling = True  # PBS's estimate says store1 is full within days
        self.gc_failing = False  # the last garbage collection of store1 failed

    def now(self) -> int:
        return int(self.sim.now())

    def _guests(self) -> list[tuple[SimCluster, SimGuest]]:
        return [
            (c, g)
            for name in self.clusters
            for c in [self.sim.cluster(name)]
            for g in sorted(c.guests.values(), key=lambda g: g.vmid)
            if not g.template
        ]

    def _newest(self, g: SimGuest) -> int:
        return self.now() - 3600 - (g.vmid % 20) * 600 - (8 * DAY if g.vmid % 13 == 0 else 0)

    def _failed_verify(self) -> tuple[str, int] | None:
        if not self.verify_failed:
            return None
        return next(((c.name, g.vmid) for c, g in self._guests() if g.backed_up), None)

    def groups(self, store: str, ns: str) -> list[dict[str, Any]]:
        if store != "store1":
            return []
        out = []
        for c, g in self._guests():
            if c.name != ns or not g.backed_up:
                continue
            out.append(
                {
                    "backup-type": "vm" if g.type == "qemu" else "ct",
                    "backup-id": str(g.vmid),
                    "last-backup": self._newest(g),
                    "backup-count": 3,
                    "owner": "pve@pbs!pve",
                    "files": ["index.json.blob", "qemu-server.conf.blob" if g.type == "qemu" else "pct.conf.blob"],
                }
            )
        return out

    def snapshots(self, store: str, ns: str) -> list[dict[str, Any]]:
        failed = self._failed_verify()
        out = []
        for grp in self.groups(store, ns):
            for k in range(grp["backup-count"]):
                t = grp["last-backup"] - k * DAY
                row: dict[str, Any] = {
                    "backup-type": grp["backup-type"],
                    "backup-id": grp["backup-id"],
                    "backup-time": t,
                    "size": 8 * 1024**3 + int(grp["backup-id"]) * 1024**2,
                    "owner": grp["owner"],
                    "protected": False,
                    "files": [{"filename": "index.json.blob", "crypt-mode": "none"}],
                }
                if k == 0:
                    bad = failed == (ns, int(grp["backup-id"]))
                    row["verification"] = {"state": "failed" if bad else "ok", "upid": _upid("verify", t + 600)}
                out.append(row)
        return out

    def usage(self) -> list[dict[str, Any]]:
        now = self.now()
        total1, total2 = 4 * 1024**4, 8 * 1024**4
        used1 = int(total1 * (self.store1_used + 0.0001 * ((now - self.created) // 60 % 100)))
        gc = {
            "upid": _upid("garbage_collection", now - 5 * 3600),
            "index-file-count": 90,
            "index-data-bytes": 9 * 1024**4,
            "disk-bytes": used1,
            "disk-chunks": 900000,
            "removed-bytes": 12 * 1024**3,
            "removed-chunks": 6000,
            "pending-bytes": 2 * 1024**3,
            "pending-chunks": 800,
            "removed-bad": 0,
            "still-bad": 0,
        }
        return [
            {
                "store": "store1",
                "total": total1,
                "used": used1,
                "avail": total1 - used1,
                "history-start": now - 30 * DAY,
                "history-delta": DAY,
                "history": [0.8 + 0.004 * i for i in range(30)],
                "estimated-full-date": now + 3 * DAY if self.store1_filling else now - 90 * DAY,
                "gc-status": gc,
                "mount-status": "nonremovable",
            },
            {
                "store": "store2",
                "total": total2,
                "used": total2 // 5,
                "avail": total2 - total2 // 5,
                "history-start": now - 30 * DAY,
                "history-delta": DAY,
                "history": [0.2] * 30,
                "estimated-full-date": now - 400 * DAY,
                "mount-status": "nonremovable",
            },
        ]

    def gc(self) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for row in self.usage():
            status = row.get("gc-status") or {}
            job = {"store": row["store"], "schedule": "daily", "next-run": (now // DAY + 1) * DAY, **status}
            if status.get("upid"):
                state = "TASK ERROR: unable to access datastore" if self.gc_failing else "OK"
                job.update({"last-run-endtime": now - 5 * 3600 + 900, "last-run-state": state, "duration": 900})
            out.append(job)
        return out

    def jobs(self, kind: str) -> list[dict[str, Any]]:
        now = self.now()
        nxt = (now // DAY + 1) * DAY
        if kind == "verify":
            return [
                {
                    "id": "v-store1",
                    "store": "store1",
                    "schedule": "daily",
                    "ignore-verified": True,
                    "next-run": nxt,
                    "last-run-state": "OK",
                    "last-run-endtime": now - 4 * 3600,
                    "last-run-upid": _upid("verificationjob", now - 4 * 3600 - 300),
                }
            ]
        if kind == "prune":
            return [
                {
                    "id": "p-store1",
                    "store": "store1",
                    "schedule": "daily",
                    "keep-daily": 7,
                    "next-run": nxt,
                    "last-run-state": "OK",
                    "last-run-endtime": now - 3 * 3600,
                }
            ]
        return [
            {
                "id": "s-offsite",
                "store": "store2",
                "remote": "pbs-offsite",
                "remote-store": "store1",
                "schedule": "hourly",
                "next-run": (now // 3600 + 1) * 3600,
                "last-run-endtime": now - 1200,
                "last-run-state": SYNC_ERROR if self.sync_failing else "OK",
                "last-run-upid": _upid("syncjob", now - 1300),
            }
        ]

    def failed_tasks(self) -> list[dict[str, Any]]:
        now = self.now()
        if not self.sync_failing:
            return []
        return [
            {
                "upid": _upid("syncjob", now - 1300),
                "node": "localhost",
                "pid": 4242,
                "pstart": 1,
                "starttime": now - 1300,
                "endtime": now - 1200,
                "worker_type": "syncjob",
                "worker_id": "pbs-offsite:store1:store2:s-offsite",
                "user": "root@pam",
                "status": SYNC_ERROR,
            }
        ]

    def node_status(self) -> dict[str, Any]:
        return {
            "memory": {"total": 32 * 1024**3, "used": 6 * 1024**3, "free": 26 * 1024**3},
            "swap": {"total": 8 * 1024**3, "used": 0, "free": 8 * 1024**3},
            "root": {"total": 64 * 1024**3, "used": 9 * 1024**3, "avail": 52 * 1024**3},
            "uptime": self.now() - self.created + 86400,
            "loadavg": [0.31, 0.25, 0.2],
            "cpu": 0.04,
            "wait": 0.01,
            "kversion": "Linux 6.8.12-4-pve",
            "cpuinfo": {"model": "Simulated CPU", "sockets": 1, "cpus": 8},
            "info": {"fingerprint": ":".join(["5e"] * 32)},
        }

    def route(self, rel: str) -> Callable[[web.Request], Any] | None:
        if m := re.fullmatch(r"/admin/datastore/([^/]+)/(namespace|groups|snapshots)", rel):
            store, what = m.group(1), m.group(2)
            if store not in ("store1", "store2"):
                return None
            if what == "namespace":
                return lambda _r: (
                    [{"ns": ""}, *({"ns": c} for c in self.clusters)] if store == "store1" else [{"ns": ""}]
                )
            return lambda r: getattr(self, what)(store, r.query.get("ns", ""))
        fixed: dict[str, Callable[[web.Request], Any]] = {
            "/version": lambda _r: {"version": "3.4", "release": "1", "repoid": "5e1m0ck5"},
            "/nodes/localhost/status": lambda _r: self.node_status(),
            "/status/datastore-usage": lambda _r: self.usage(),
            "/admin/datastore": lambda _r: [
                {"store": "store1", "comment": "main", "mount-status": "nonremovable"},
                {"store": "store2", "mount-status": "nonremovable"},
            ],
            "/admin/gc": lambda _r: self.gc(),
            "/admin/verify": lambda _r: self.jobs("verify"),
            "/admin/prune": lambda _r: self.jobs("prune"),
            "/admin/sync": lambda _r: self.jobs("sync"),
            "/nodes/localhost/tasks": lambda _r: self.failed_tasks() if _r.query.get("errors") in ("1", "true") else [],
        }
        return fixed.get(rel)


def _upid(kind: str, t: int) -> str:
    return f"UPID:localhost:00001000:00000001:00000001:{t:08X}:{kind}:store1:root@pam:"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"data": None, "message": message + "\n"}, status=status, reason=message[:60])


def make_pbs_app(pbs: SimPbs, stopping: asyncio.Event) -> web.Application:
    async def api(request: web.Request) -> web.StreamResponse:
        pbs.requests += 1
        rel = request.path[len("/api2/json") :].rstrip("/") or "/"
        faults = pbs.faults.take(request.method, rel, None)
        for f in faults:
            if f.kind == "slow":
                await asyncio.sleep(f.latency_ms / 1000)
        for f in faults:
            if f.kind != "slow" and (resp := await _fault(f, rel, stopping)) is not None:
                return resp
        m = _HEADER.match(request.headers.get("Authorization", ""))
        if m is None or pbs.tokens.get(m.group(1)) != m.group(2):
            return web.Response(status=401, reason="authentication failed - invalid credentials")
        handler = pbs.route(rel) if request.method == "GET" else None
        if handler is None:
            return _error(404, f"Path '/api2/json{rel}' not found.")
        return web.json_response({"data": handler(request)})

    async def add_fault(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        if not isinstance(body, dict) or set(body) - _FAULT_KEYS or body.get("kind") not in _PBS_FAULTS:
            return web.json_response({"error": f"expected {{kind: {'|'.join(sorted(_PBS_FAULTS))}, ...}}"}, status=400)
        try:
            fault = pbs.faults.add(**body)
        except (FaultError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"id": fault.id, "fault": fault.as_dict()})

    async def list_faults(_request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.as_dict() for f in pbs.faults.list()]})

    async def clear_faults(_request: web.Request) -> web.Response:
        return web.json_response({"removed": [f.id for f in pbs.faults.clear()]})

    app = web.Application()
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_get("/_sim/faults", list_faults)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_route("*", "/api2/{tail:.*}", api)
    return app


async def _fault(f: Fault, rel: str, stopping: asyncio.Event) -> web.Response | None:
    if f.kind == "timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 120.0)
        return web.Response(status=503, reason="timed out")
    if f.kind == "auth_fail":
        return web.Response(status=401, reason=f.message or "authentication failed - invalid credentials")
    if f.kind == "forbidden":
        return _error(403, f.message or "permission check failed")
    return _error(f.status, f.message or "simulated error")


class PbsServer:
    """Serve a SimPbs on 127.0.0.1 (port 0 = ephemeral); `url` is https-less like the PVE simulator's."""

    def __init__(self, pbs: SimPbs, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pbs = pbs
        self.host = host
        self.port = port
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            make_pbs_app(self.pbs, self._stopping), handler_cancellation=True, shutdown_timeout=2.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PbsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
