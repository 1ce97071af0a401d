"""The control plane: history store, auth, rate limits, action and bulk runners, wired together.

The daemon creates one when `control.enabled` is true, starts it after its clusters (recovery
needs their PVE clients) and stops it before them (running actions record their state first).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from pve_exporter.collect.base import Family
from pve_exporter.control.actions import ActionRunner
from pve_exporter.control.audit import audit_warning
from pve_exporter.control.auth import Principal, TokenAuthenticator
from pve_exporter.control.bulk import BulkRunner
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.metrics import ControlMetrics
from pve_exporter.control.operations import OperationFilter, OperationStore, iso
from pve_exporter.control.ratelimit import KeyedLimiter, retry_after_header
from pve_exporter.settings import ControlSettings

log = structlog.get_logger("pve_exporter.control")

class ControlPlane:
    def __init__(self, daemon: Any, cfg: ControlSettings) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.metrics = ControlMetrics(known_clusters=lambda: daemon.clusters)  # counters at 0 from start
        self.store = OperationStore(cfg.history_db, max_operations=cfg.max_operations,
                                    max_age_days=cfg.max_age_days, clock=daemon.clock)
        self.auth = TokenAuthenticator(cfg.tokens)
        self.auth_limiter = KeyedLimiter(cfg.auth_failure_limit.burst, cfg.auth_failure_limit.per_minute,
                                         clock=daemon.clock)
        self.power_limiter = KeyedLimiter(cfg.power_limit.burst, cfg.power_limit.per_minute, clock=daemon.clock)
        self.runner = ActionRunner(daemon, self.store, self.metrics, poll_seconds=cfg.task_poll_seconds)
        self.bulk = BulkRunner(self.runner, max_concurrency=cfg.max_bulk_concurrency)
        self._families = self.metrics.families
        self._collects: set[asyncio.Task[Any]] = set()

    @property
    def clock(self) -> Any:
        return self.daemon.clock

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        self.daemon.stats.extra.append(self._families)
        await self.runner.recover()
        log.info("control API ready", tokens=self.auth.token_names, history_db=str(self.store.path))

    async def stop(self) -> None:
        await self.runner.shutdown(self.cfg.shutdown_grace_seconds)
        await self.store.close()
        if self._families in self.daemon.stats.extra:
            self.daemon.stats.extra.remove(self._families)

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
    def cluster_views(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for name in sorted(self.daemon.clusters):
            rt = self.daemon.clusters[name]
            snap = self.daemon.store.get(name)
            failing = sorted(r.name for r in snap.results.values() if not r.ok) if snap else []
            if snap is None:
                health = "starting"
            elif not snap.reachable:
                health = "unreachable"
            else:
                health = "partial" if failing else "ok"
            last = snap.last_success if snap else None
            age = round(now - last, 3) if last is not None else None
            out.append({
                "name": name,
                "health": health,
                "endpoints": [{"url": e.url, "up": e.up, "last_error": e.last_error,
                               "last_change": iso(e.last_change) if e.last_change else None}
                              for e in rt.client.endpoints],
                "last_success": iso(last),
                "age_seconds": age,
                "fresh": age is not None and age <= rt.cfg.stale_after,
                "interval_seconds": rt.cfg.interval_seconds,
                "guests": len(snap.guests) if snap else 0,
                "failing_collectors": failing,
            })  # fmt: skip
        return out

    def guests(
        self, *, clusters: tuple[str, ...], nodes: tuple[str, ...], types: tuple[str, ...],
        statuses: tuple[str, ...], tags: tuple[str, ...],
    ) -> list[dict[str, Any]]:
        wanted_tags = {t.lower() for t in tags}
        out = []
        for name in clusters or tuple(sorted(self.daemon.clusters)):
            snap = self.daemon.store.get(name)
            if snap is None:
                continue
            for vmid in sorted(snap.guests):
                g = snap.guests[vmid]
                if (nodes and g.node not in nodes) or (types and g.type not in types):
                    continue
                if (statuses and g.status not in statuses) or not wanted_tags <= {t.lower() for t in g.tags}:
                    continue
                out.append({"cluster": name, "vmid": g.vmid, "name": g.name or None, "node": g.node, "type": g.type,
                            "status": g.status, "template": g.template, "tags": list(g.tags),
                            "active_operation": self.runner.busy.get((name, vmid))})  # fmt: skip
        return out

    def trigger_collection(self, name: str) -> None:
        rt = self.daemon.clusters[name]
        if rt.task is not None and not rt.task.done():
            rt.poller.trigger()
            return
        task = asyncio.create_task(rt.poller.run_once(), name=f"collect-{name}")
        self._collects.add(task)
        task.add_done_callback(self._collects.discard)

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        ops, _ = await self.store.query(OperationFilter(), limit=limit)
        return [op.as_api() for op in ops]

    def families(self, clusters: set[str] | None) -> list[Family]:
        return self.metrics.families(clusters)
