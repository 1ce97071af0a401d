"""The control plane: history store, auth, rate limits, action and bulk runners, wired together.

The daemon creates one when `control.enabled` is true and hands it to the web app (`CONTROL_PLANE`).
`start` only opens the history and registers self-metrics, so the listener binds at once; unfinished
operations are re-checked by a background task the plane owns. A history that cannot be opened
leaves the control API disabled (503 HISTORY_UNAVAILABLE) while monitoring runs on. `stop` runs
before the clusters stop (running actions record their state while the clients still work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.control.actions import ActionRunner, task_gone, upid_node
from pve_exporter.control.audit import audit_warning
from pve_exporter.control.auth import Principal, TokenAuthenticator
from pve_exporter.control.bulk import BulkRunner
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.host import ControlHost
from pve_exporter.control.metrics import ControlMetrics
from pve_exporter.control.operations import HistoryError, Operation, OperationStore, iso
from pve_exporter.control.ratelimit import KeyedLimiter, retry_after_header
from pve_exporter.control.scrub import scrub_secrets
from pve_exporter.control.tasklog import read_task_log
from pve_exporter.pve.errors import PveError
from pve_exporter.pve.values import integer, num
from pve_exporter.settings import ControlSettings
from pve_exporter.snapshot import Snapshot

log = structlog.get_logger("pve_exporter.control")

HISTORY_CHECK_SECONDS = 30.0  # how often the history file is checked (deleted or replaced under us)


class ControlPlane:
    def __init__(
        self, host: ControlHost, cfg: ControlSettings, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store: OperationStore | None = None,  # replicas: the shared history in PostgreSQL (coord/history.py)
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.sleep = sleep
        self.metrics = ControlMetrics(known_clusters=lambda: host.cluster_names())  # counters at 0 from start
        if store is None:
            store = OperationStore(cfg.history_db, max_operations=cfg.max_operations,
                                   max_age_days=cfg.max_age_days, clock=host.clock)  # fmt: skip
        self.store = store
        self.auth = TokenAuthenticator(cfg.tokens)
        self.auth_limiter = KeyedLimiter(cfg.auth_failure_limit.burst, cfg.auth_failure_limit.per_minute,
                                         clock=host.monotonic)
        self.power_limiter = KeyedLimiter(cfg.power_limit.burst, cfg.power_limit.per_minute, clock=host.monotonic)
        self.runner = ActionRunner(host, self.store, self.metrics, poll_seconds=cfg.task_poll_seconds,
                                   recovery_give_up_seconds=cfg.recovery_give_up_seconds, sleep=sleep)
        self.bulk = BulkRunner(self.runner, max_concurrency=cfg.max_bulk_concurrency)
        self.unavailable: str | None = None  # why the control API is off (the history could not be opened)
        self._tasks: set[asyncio.Task[Any]] = set()  # recovery, history watch, collections: cancelled in stop()

    @property
    def clock(self) -> Callable[[], float]:
        return self.host.clock

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the history and register metrics; recovery and the history watch run in the background."""
        self.host.add_self_metrics(self.families)
        self.runner.accepting = True  # a daemon may be started again after a stop
        try:
            await self.store.open()
        except HistoryError as exc:
            self.unavailable = str(exc)
            log.error("CONTROL API DISABLED: the operation history cannot be opened; monitoring continues. "
                      "Move the file away (it is recreated) or fix its permissions, then restart",
                      error=str(exc), history_db=str(self.store.path))  # fmt: skip
            return
        self.runner.hold_for_recovery()
        self._own(self.runner.recover(), "recover-operations")
        self._own(self._watch_history(), "history-watch")
        log.info("control API ready", tokens=self.auth.token_names, history_db=str(self.store.path))

    def _own(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_history(self) -> None:
        while True:
            await self.sleep(HISTORY_CHECK_SECONDS)
            await self.store.check()

    def begin_shutdown(self) -> None:
        """SIGTERM: from now on no power call leaves the daemon (the web app calls this on shutdown,
        before it waits for open requests; `stop` comes later)."""
        self.runner.stop_sending()

    async def stop(self) -> None:
        """No new power call leaves from here on; then the background tasks and the history end."""
        self.runner.stop_sending()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.shutdown(self.cfg.shutdown_grace_seconds)
        await self.store.close()
        self.host.remove_self_metrics(self.families)

    def check_available(self) -> None:
        """503 while the history cannot be used (at start, or failing now)."""
        if self.unavailable is not None:
            raise ApiProblem("HISTORY_UNAVAILABLE", "the control API is disabled: the operation history could not "
                             "be opened", details={"reason": self.unavailable})  # fmt: skip

    def reconfigure(self, cfg: ControlSettings) -> None:
        """Config reload: tokens, limits and defaults apply at once; enabling, disabling and
        history_db need a restart (logged)."""
        if cfg.enabled != self.cfg.enabled or cfg.history_db != self.cfg.history_db:
            log.warning("control.enabled / control.history_db changes need a restart; kept the running values")
        self.auth.update(cfg.tokens)
        self.auth_limiter.reconfigure(cfg.auth_failure_limit.burst, cfg.auth_failure_limit.per_minute)
        self.power_limiter.reconfigure(cfg.power_limit.burst, cfg.power_limit.per_minute)
        self.store.max_operations = cfg.max_operations
        self.store.max_age_seconds = cfg.max_age_days * 86_400
        self.runner.poll_seconds = cfg.task_poll_seconds
        self.runner.recovery_give_up_seconds = cfg.recovery_give_up_seconds
        self.bulk.max_concurrency = cfg.max_bulk_concurrency
        self.cfg = cfg.model_copy(update={"enabled": self.cfg.enabled, "history_db": self.cfg.history_db})

    # ---- auth and limits ------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, ip: str, scope: str, path: str) -> Principal:
        """401 (no/unknown token), 403 (scope), or 429 for a failure once this address or this token
        prefix failed too often. A valid token is always served, whatever failed before it."""
        result = self.auth.check(authorization)
        if result.principal is None:
            keys = [f"addr:{ip}"] + ([result.prefix] if result.prefix else [])
            wait = max(self.auth_limiter.retry_after(k) for k in keys)
            if wait > 0:  # nothing more is recorded: a locked-out flood creates no new buckets
                self.metrics.rate_limited["auth"] += 1
                raise ApiProblem("RATE_LIMITED", "too many failed authentications from this address or token",
                                 details={"limit": "auth_failures", "retry_after_seconds": round(wait, 1)},
                                 headers={"Retry-After": retry_after_header(wait)})
            reason = result.reason or "invalid"
            for k in keys:
                self.auth_limiter.failure(k)
            self.metrics.auth_failures[reason] += 1
            audit_warning("authentication failed", client_ip=ip, reason=reason, path=path)
            text = {"missing": "no bearer token (Authorization: Bearer <token>)",
                    "malformed": "the Authorization header is not `Bearer <token>`",
                    "invalid": "unknown token"}[reason]  # fmt: skip
            raise ApiProblem("UNAUTHORIZED", text, details={"reason": reason},
                             headers={"WWW-Authenticate": 'Bearer realm="pve_exporter"'})
        if not result.principal.allows(scope):
            self.metrics.auth_failures["scope"] += 1
            audit_warning("scope missing", client_ip=ip, user=result.principal.name, required_scope=scope, path=path)
            raise ApiProblem(
                "FORBIDDEN", f"token {result.principal.name!r} lacks the {scope!r} scope",
                details={"required_scope": scope, "token": result.principal.name,
                         "scopes": sorted(result.principal.scopes)},
            )  # fmt: skip
        return result.principal

    def check_power_rate(self, ip: str, who: Principal | None) -> None:
        wait = self.power_limiter.take(ip)
        if wait > 0:
            self.metrics.rate_limited["power"] += 1
            audit_warning("power request rate limited", client_ip=ip, user=who.name if who else None)
            raise ApiProblem("RATE_LIMITED", "too many power requests from this address",
                             details={"limit": "power_requests", "retry_after_seconds": round(wait, 1)},
                             headers={"Retry-After": retry_after_header(wait)})

    # ---- views ----------------------------------------------------------------------------------
    def cluster_views(self, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Health, endpoints, freshness and counts of the clusters `names` (default: all configured)."""
        now = self.host.monotonic()
        out = []
        for name in names or self.host.cluster_names():
            view = self.host.cluster_view(name)
            if view is None:  # removed by a reload meanwhile
                continue
            snap = self.host.latest_snapshot(name)
            nodes = snap.shared.nodes if snap is not None and snap.shared is not None else ()
            failing = sorted(r.name for r in snap.results.values() if not r.ok) if snap else []
            if snap is None:
                health = "starting"
            elif not snap.reachable:
                health = "unreachable"
            else:
                health = "partial" if failing else "ok"
            last = snap.last_success if snap else None
            raw_age = snap.age(now) if snap else None
            age = round(raw_age, 3) if raw_age is not None else None
            out.append({
                "name": name,
                "health": health,
                "endpoints": [{"url": e.url, "up": e.up, "last_error": e.last_error,
                               "last_change": iso(e.last_change) if e.last_change else None}
                              for e in view.endpoints],
                "last_success": iso(last),
                "age_seconds": age,
                "fresh": age is not None and age <= view.stale_after,
                "interval_seconds": view.interval_seconds,
                "guests": len(snap.guests) if snap else 0,
                "guests_running": sum(1 for g in snap.guests.values() if g.status == "running") if snap else 0,
                "nodes": len(nodes),
                "nodes_online": sum(1 for n in nodes if n.online),
                "failing_collectors": failing,
            })  # fmt: skip
        return out

    def guests(
        self, *, clusters: tuple[str, ...], nodes: tuple[str, ...], types: tuple[str, ...],
        statuses: tuple[str, ...], tags: tuple[str, ...],
    ) -> list[dict[str, Any]]:
        """Guests of the latest snapshots with their figures from the same /cluster/resources rows
        (no PVE call): cpu (share of maxcpu), mem/maxmem bytes, uptime, and the rows' age."""
        wanted_tags = {t.lower() for t in tags}
        out = []
        now = self.host.monotonic()
        for name in clusters or tuple(self.host.cluster_names()):
            snap = self.host.latest_snapshot(name)
            if snap is None:
                continue
            rows = _resource_rows(snap)
            payload = snap.payloads.get("/cluster/resources")
            age = round(max(0.0, now - payload.fetched_at), 3) if payload is not None else None
            online = {n.name: n.online for n in snap.shared.nodes} if snap.shared is not None else {}
            backups = _last_backups(snap)
            for vmid in sorted(snap.guests):
                g = snap.guests[vmid]
                if (nodes and g.node not in nodes) or (types and g.type not in types):
                    continue
                if (statuses and g.status not in statuses) or not wanted_tags <= {t.lower() for t in g.tags}:
                    continue
                row = rows.get(vmid, {})
                up = g.status == "running" or g.status == "paused"
                out.append({"cluster": name, "vmid": g.vmid, "name": g.name or None, "node": g.node, "type": g.type,
                            "status": g.status, "template": g.template, "tags": list(g.tags),
                            "active_operation": self.runner.busy.get((name, vmid)),
                            "node_online": online.get(g.node, g.status != "unknown"),
                            "cpu": _ratio(row.get("cpu")) if up else None, "maxcpu": num(row.get("maxcpu")),
                            "mem": integer(row.get("mem")) if up else None, "maxmem": integer(row.get("maxmem")),
                            "uptime": integer(row.get("uptime")) if up else None,
                            "data_age_seconds": age,
                            "last_backup": iso(backups.get(f"{g.type}/{vmid}"))})  # fmt: skip
        return out

    async def task_log(self, op: Operation, *, start: int, limit: int) -> dict[str, Any]:
        """One page of the operation's PVE task log (read from the node in its UPID)."""
        node = upid_node(op.upid) if op.upid else None
        if op.upid is None or node is None:
            raise ApiProblem("TASK_LOG_NOT_FOUND", f"operation {op.id} has no PVE task (it is {op.status} and PVE "
                             "never answered with a task id)", details={"id": op.id, "status": op.status})  # fmt: skip
        view = self.runner.cluster(op.cluster)
        try:
            page = await read_task_log(view.client, node, op.upid, start=start, limit=limit)
        except PveError as exc:
            if task_gone(exc):
                raise ApiProblem("TASK_LOG_NOT_FOUND", f"PVE no longer knows the task of operation {op.id}",
                                 details={"id": op.id, "upid": op.upid, "pve_message": scrub_secrets(exc.message)},
                                 ) from None  # fmt: skip
            raise ApiProblem("PVE_ERROR", f"cannot read the task log from PVE: {scrub_secrets(exc.message)}",
                             details={"cluster": op.cluster, "node": node, "pve_status": exc.status,
                                      "kind": exc.kind}) from None  # fmt: skip
        return {"operation_id": op.id, "operation_status": op.status, "upid": op.upid, "node": node,
                "start": start, "limit": limit, "total": page.total,
                "lines": [{"n": line.n, "t": line.t} for line in page.lines]}  # fmt: skip

    def trigger_collection(self, name: str) -> None:
        """Start a collection now (in a task the plane owns: a stop cancels it)."""
        self._own(self.host.collect_now(name), f"collect-{name}")

    async def operation_counts(self) -> dict[str, int] | None:
        """Operations by status for the public landing page (no details); None: history unavailable."""
        if self.unavailable is not None:
            return None
        try:
            return await self.store.count_by_status()
        except HistoryError:
            return None

    def families(self, clusters: set[str] | None) -> list[Family]:
        healthy = FamilyBuilder(
            "pve_exporter_history_healthy", "gauge",
            "1 if the operation history database is open and works, 0 if it could not be opened, a write failed "
            "or the file was deleted or replaced (the control API answers 503 or may not record actions)", (),
        )  # fmt: skip
        healthy.add((), 1.0 if self.store.healthy else 0.0)
        return [*self.metrics.families(clusters), healthy.build()]


def _resource_rows(snap: Snapshot) -> dict[int, Mapping[str, Any]]:
    """vmid → its /cluster/resources row in the snapshot."""
    rows: dict[int, Mapping[str, Any]] = {}
    for row in (snap.shared.resources if snap.shared is not None else None) or ():
        vmid = integer(row.get("vmid")) if row.get("type") in ("qemu", "lxc") else None
        if vmid is not None:
            rows[vmid] = row
    return rows


def _ratio(value: Any) -> float | None:
    v = num(value)
    return None if v is None else round(max(0.0, v), 4)


CONTROL_PLANE: web.AppKey[ControlPlane] = web.AppKey("control_plane", ControlPlane)


LAST_BACKUP = "pve_guest_last_backup_timestamp_seconds"


def _last_backups(snap: Snapshot) -> dict[str, float]:
    """id → newest backup time over every source (the snapshot's joined family; PVE storages and linked PBS)."""
    fam = next((f for f in snap.families if f.name == LAST_BACKUP), None)
    if fam is None or "id" not in fam.labels:
        return {}
    at = fam.labels.index("id")
    return {labels[at]: value for labels, value in fam.samples if value is not None}
