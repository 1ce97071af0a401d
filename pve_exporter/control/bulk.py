"""Bulk actions: one action for every guest a selector picks, with bounded concurrency.

The selection is made from the latest snapshots. Templates, guests already in the asked-for
state, guests whose state is unknown and guests with an action in progress are skipped and
reported with a reason. A dry run answers the plan and changes nothing. A real run records the
batch and all its operations (`pending`) at once, then runs at most `concurrency` of them at a
time; `DELETE` cancels the ones that have not started yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from pve_exporter.control.actions import ActionRunner, plan_steps
from pve_exporter.control.audit import audit
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.operations import (
    ACTIVE,
    STATUSES,
    TERMINAL,
    Batch,
    Operation,
    OperationFilter,
    iso,
    new_id,
)
from pve_exporter.control.schemas import BulkBody
from pve_exporter.snapshot import GuestRef

log = structlog.get_logger("pve_exporter.control.bulk")

_NOT_RUNNING = ("stopped",)


@dataclass
class _BatchState:
    """In-memory side of a running batch: which members have not been let through yet."""

    id: str
    slot: asyncio.Semaphore
    pending: set[str] = field(default_factory=set)
    cancelled: bool = False


def skip_reason(action: str, ref: GuestRef) -> tuple[str, str] | None:
    """(code, message) if `action` makes no sense for this guest now, else None."""
    if ref.template:
        return "template", "templates cannot be started, stopped or restarted"
    if ref.status == "unknown":
        return "status_unknown", "the guest's state is unknown (its node may be offline)"
    running = ref.status not in _NOT_RUNNING
    if action == "start" and running:
        return "already_running", f"already {ref.status}"
    if action == "stop" and not running:
        return "already_stopped", "already stopped"
    if action == "restart" and not running:
        return "not_running", "not running, so there is nothing to restart"
    return None


def _guest_json(cluster: str, ref: GuestRef) -> dict[str, Any]:
    return {"cluster": cluster, "vmid": ref.vmid, "node": ref.node, "type": ref.type, "name": ref.name or None,
            "status": ref.status}  # fmt: skip


class BulkRunner:
    def __init__(self, runner: ActionRunner, *, max_concurrency: int) -> None:
        self.runner = runner
        self.max_concurrency = max_concurrency
        self._batches: dict[str, _BatchState] = {}

    # ---- selection ------------------------------------------------------------------------------
    def select(self, body: BulkBody) -> tuple[list[tuple[str, GuestRef]], list[dict[str, Any]], list[str]]:
        """(guests to act on, skipped guests with reasons, warnings)."""
        sel = body.selector
        if sel.cluster is not None:
            self.runner.cluster(sel.cluster)  # 404 CLUSTER_NOT_FOUND
            clusters = [sel.cluster]
        else:
            clusters = self.runner.host.cluster_names()
        wanted_tags = set(sel.tags or ())
        wanted_vmids = set(sel.vmids or ())
        found: set[int] = set()
        chosen: list[tuple[str, GuestRef]] = []
        skipped: list[dict[str, Any]] = []
        warnings: list[str] = []
        for cluster in clusters:
            snap = self.runner.host.latest_snapshot(cluster)
            if snap is None:
                warnings.append(f"cluster {cluster!r} has no inventory yet (its first collection has not finished)")
                continue
            for vmid in sorted(snap.guests):
                ref = snap.guests[vmid]
                if sel.vmids is not None and vmid not in wanted_vmids:
                    continue
                found.add(vmid)
                if sel.node is not None and ref.node != sel.node:
                    continue
                if sel.type is not None and ref.type != sel.type:
                    continue
                if wanted_tags and not wanted_tags <= {t.lower() for t in ref.tags}:
                    continue
                holder = self.runner.busy.get((cluster, vmid))
                reason = ("busy", "another action on this guest is in progress") if holder else None
                reason = reason or skip_reason(body.action, ref)
                if reason is not None:
                    entry = {**_guest_json(cluster, ref), "reason": reason[0], "message": reason[1]}
                    if holder:
                        entry["operation_id"] = holder
                    skipped.append(entry)
                else:
                    chosen.append((cluster, ref))
        for vmid in sorted(wanted_vmids - found):
            skipped.append({"cluster": sel.cluster, "vmid": vmid, "node": None, "type": None, "name": None,
                            "status": None, "reason": "not_found",
                            "message": "no such guest in the selected cluster(s)"})  # fmt: skip
        return chosen, skipped, warnings

    # ---- running --------------------------------------------------------------------------------
    async def submit(
        self, body: BulkBody, *, user: str, client_ip: str | None, default_timeout: float
    ) -> dict[str, Any]:
        if body.selector.is_empty():
            raise ApiProblem("INVALID_REQUEST", "an empty selector would select every guest of every cluster",
                             details={"errors": [{"field": "selector", "message": "give at least one of cluster, "
                                                  "node, type, vmids, tags"}]})  # fmt: skip
        if body.concurrency > self.max_concurrency:
            raise ApiProblem("INVALID_REQUEST", f"concurrency may be at most {self.max_concurrency}",
                             details={"errors": [{"field": "concurrency", "message": f"must be <= "
                                                  f"{self.max_concurrency} (control.max_bulk_concurrency)"}]})
        timeout = body.timeout_seconds or default_timeout
        if not body.dry_run:
            self.runner.check_accepting()
        chosen, skipped, warnings = self.select(body)
        if body.dry_run:
            would = []
            for cluster, ref in chosen:
                steps = plan_steps(body.action, body.force, ref.type, timeout)
                calls = [f"POST /nodes/{ref.node}/{ref.type}/{ref.vmid}/status/{s.pve}"
                         + "".join(f" {k}={v}" for k, v in s.params.items()) for s in steps]
                would.append({**_guest_json(cluster, ref), "pve_calls": calls})
            return {"dry_run": True, "action": body.action, "force": body.force, "timeout_seconds": timeout,
                    "selector": body.selector.model_dump(exclude_none=True), "would_run": would,
                    "skipped": skipped, "warnings": warnings}  # fmt: skip

        batch_id = new_id()
        now = self.runner.clock()
        ops = [
            Operation(
                id=new_id(), requested_at=now, cluster=cluster, resource_id=ref.vmid, operation=body.action,
                force=body.force, user=user, node=ref.node, resource_type=ref.type, resource_name=ref.name or None,
                client_ip=client_ip, timeout_seconds=timeout, batch_id=batch_id,
            )
            for cluster, ref in chosen
        ]  # fmt: skip
        for op in ops:  # no await since select(): nobody can have taken these guests meanwhile
            self.runner.reserve(op.cluster, op.resource_id, op.id)
        batch = Batch(id=batch_id, requested_at=now, user=user, client_ip=client_ip, action=body.action,
                      force=body.force, concurrency=body.concurrency, timeout_seconds=timeout,
                      selector=body.selector.model_dump(exclude_none=True), skipped=skipped)  # fmt: skip
        try:
            await self.runner.store.insert_batch(batch, ops)
        except BaseException:
            for op in ops:
                self.runner.release(op)
            raise
        state = _BatchState(batch_id, asyncio.Semaphore(body.concurrency), {op.id for op in ops})
        self._batches[batch_id] = state
        audit("bulk action requested", batch_id=batch_id, user=user, client_ip=client_ip, action=body.action,
              force=body.force, selector=batch.selector, guests=len(ops), skipped=len(skipped),
              concurrency=body.concurrency)  # fmt: skip
        for op in ops:
            self.runner.spawn(op, slot=state.slot, admit=self._admitter(state, op.id))
        if not ops:
            self._batches.pop(batch_id, None)
        view = self.view(batch, ops)
        view["warnings"] = warnings
        return view

    def _admitter(self, state: _BatchState, op_id: str) -> Callable[[], bool]:
        def admit() -> bool:
            if op_id not in state.pending:
                return False
            state.pending.discard(op_id)
            if not state.pending:
                self._batches.pop(state.id, None)
            return True

        return admit

    async def cancel(self, batch_id: str, *, user: str, client_ip: str | None) -> dict[str, Any]:
        batch = await self.runner.store.get_batch(batch_id)
        if batch is None:
            raise ApiProblem("BATCH_NOT_FOUND", f"no batch {batch_id!r}", details={"batch_id": batch_id})
        state = self._batches.pop(batch_id, None)
        ids = sorted(state.pending) if state else []
        if state is not None:
            state.pending.clear()
            state.cancelled = True
        now = self.runner.clock()
        cancelled = await self.runner.store.cancel_operations(batch_id, ids, now)
        for op in cancelled:
            self.runner.release(op)
            self.runner.metrics.operation_finished(op.cluster, op.operation, "cancelled", 0.0)
            self.runner.drop_queued(op.id)
        audit("bulk action cancelled", batch_id=batch_id, user=user, client_ip=client_ip,
              cancelled=len(cancelled))
        return await self.get(batch_id, cancelled_now=[op.id for op in cancelled])

    async def get(self, batch_id: str, *, cancelled_now: list[str] | None = None) -> dict[str, Any]:
        batch = await self.runner.store.get_batch(batch_id)
        if batch is None:
            raise ApiProblem("BATCH_NOT_FOUND", f"no batch {batch_id!r}", details={"batch_id": batch_id})
        ops, _total = await self.runner.store.query(OperationFilter(batch_id=(batch_id,)), limit=1_000_000)
        view = self.view(batch, sorted(ops, key=lambda o: (o.cluster, o.resource_id)))
        if cancelled_now is not None:
            view["cancelled_now"] = cancelled_now
        return view

    @staticmethod
    def view(batch: Batch, ops: list[Operation]) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        for op in ops:
            counts[op.status] += 1
        active = sum(counts[s] for s in ACTIVE)
        finished = sum(counts[s] for s in TERMINAL)
        if active:
            status = "running" if counts["running"] or finished else "queued"
        elif batch.cancelled_at is not None and counts["cancelled"]:
            status = "cancelled"
        else:
            status = "finished"
        return {
            "batch_id": batch.id, "requested_at": iso(batch.requested_at), "user": batch.user,
            "client_ip": batch.client_ip, "action": batch.action, "force": batch.force,
            "concurrency": batch.concurrency, "timeout_seconds": batch.timeout_seconds, "selector": batch.selector,
            "status": status, "total": len(ops), "finished": finished, "counts": counts,
            "cancelled_at": iso(batch.cancelled_at), "operations": [op.as_api() for op in ops],
            "skipped": batch.skipped,
        }  # fmt: skip
