"""The action runner: turns start / stop / restart into PVE power calls and follows them to the end.

One operation is one guest. It is written to the history as `pending` before anything is sent
to PVE, becomes `running` when the runner picks it up, and ends `succeeded`, `failed` (PVE
refused: its message is kept), `timed_out` (the task outlived `timeout_seconds`), `cancelled`
(a queued bulk member) or `interrupted` (the daemon stopped or crashed and the outcome could not
be read back). The mapping to PVE (pve-api.md §4):

| action  | force=false                     | force=true                                   |
|---------|---------------------------------|----------------------------------------------|
| start   | `start`                         | `start`                                      |
| stop    | `shutdown` with `timeout`       | `stop`                                       |
| restart | `reboot` with `timeout`         | qemu: `reset`; lxc: `stop`, then `start`     |

Node and type come from the latest snapshot; a guest missing there, or one PVE says is not
where the snapshot put it, is looked up again in `/cluster/resources` (and the call retried
once on its new node). HA-managed guests answer start/stop with `hastart`/`hastop` tasks that
end at once; the runner then polls the guest's status until it is what was asked for.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from pve_exporter.control.audit import audit
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.metrics import ControlMetrics
from pve_exporter.control.operations import TERMINAL, Operation, OperationStore, evolve, new_id
from pve_exporter.poller import guest_inventory
from pve_exporter.pve.errors import PveError, PveTimeoutError
from pve_exporter.snapshot import GuestRef

log = structlog.get_logger("pve_exporter.control.actions")

_UPID = re.compile(r"^UPID:([a-zA-Z0-9][a-zA-Z0-9-]*):[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8}:([^:\s/]+):")
# PVE's ways of saying "that guest's config is not on this node" (it moved, or the snapshot is old).
_ELSEWHERE = re.compile(
    r"Configuration file 'nodes/[^']+' does not exist|unable to find configuration file for VM|"
    r"\b(?:CT|VM) \d+ not running"
)
_OK_STATUS = re.compile(r"^(OK|WARNINGS: \d+)$")


def upid_node(upid: str) -> str | None:
    m = _UPID.match(upid)
    return m.group(1) if m else None


def upid_type(upid: str) -> str | None:
    m = _UPID.match(upid)
    return m.group(2) if m else None


@dataclass(frozen=True, slots=True)
class Step:
    """One PVE power call: `status/<pve>` with `params`; `expect` is the guest state it leads to."""

    pve: str
    params: Mapping[str, Any]
    expect: str | None


def plan_steps(action: str, force: bool, guest_type: str, timeout: float) -> list[Step]:
    t = max(1, int(timeout))
    if action == "start":
        return [Step("start", {}, "running")]
    if action == "stop":
        return [Step("stop", {}, "stopped")] if force else [Step("shutdown", {"timeout": t}, "stopped")]
    if action == "restart":
        if not force:
            return [Step("reboot", {"timeout": t}, None)]
        if guest_type == "qemu":
            return [Step("reset", {}, None)]
        return [Step("stop", {}, "stopped"), Step("start", {}, "running")]
    raise ValueError(f"unknown action {action!r}")


class ClusterLike(Protocol):
    client: Any
    poller: Any


class DaemonLike(Protocol):
    clusters: Mapping[str, Any]
    store: Any
    clock: Callable[[], float]


class StepFailed(Exception):
    def __init__(self, status: str, message: str, op: Operation | None = None) -> None:
        super().__init__(message)
        self.status = status  # failed | timed_out
        self.message = message
        self.op = op  # the operation as far as it got (its UPID, its node)


@dataclass
class _Submission:
    op: Operation
    replayed: bool


class ActionRunner:
    """Starts operations in the background, follows their PVE tasks, records every change."""

    def __init__(
        self,
        daemon: DaemonLike,
        store: OperationStore,
        metrics: ControlMetrics,
        *,
        poll_seconds: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.daemon = daemon
        self.store = store
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.sleep = sleep
        self.accepting = True
        self.busy: dict[tuple[str, int], str] = {}  # (cluster, vmid) -> id of the operation holding the guest
        self._keys: dict[tuple[str, str], asyncio.Future[Operation]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._op_cluster: dict[str, str] = {}

    @property
    def clock(self) -> Callable[[], float]:
        return self.daemon.clock

    # ---- guests ---------------------------------------------------------------------------------
    def cluster(self, name: str) -> ClusterLike:
        rt = self.daemon.clusters.get(name)
        if rt is None:
            raise ApiProblem("CLUSTER_NOT_FOUND", f"cluster {name!r} is not configured",
                             details={"cluster": name, "configured": sorted(self.daemon.clusters)})
        return rt  # type: ignore[no-any-return]

    async def locate(self, cluster: str, vmid: int, *, refresh: bool = False) -> GuestRef | None:
        """The guest from the latest snapshot, or (missing there, or `refresh`) from /cluster/resources."""
        rt = self.cluster(cluster)
        if not refresh:
            snap = self.daemon.store.get(cluster)
            if snap is not None and vmid in snap.guests:
                return snap.guests[vmid]  # type: ignore[no-any-return]
        try:
            data = await rt.client.get("/cluster/resources", {"type": "vm"})
        except PveError as exc:
            raise ApiProblem("PVE_ERROR", f"cannot look up guest {vmid} in cluster {cluster!r}: {exc.message}",
                             details={"cluster": cluster, "vmid": vmid, "pve_status": exc.status,
                                      "kind": exc.kind}) from None
        return guest_inventory(data).get(vmid)

    # ---- submitting -----------------------------------------------------------------------------
    def check_accepting(self) -> None:
        if not self.accepting:
            raise ApiProblem("SHUTTING_DOWN", "the daemon is stopping and accepts no new actions")

    def reserve(self, cluster: str, vmid: int, op_id: str) -> None:
        holder = self.busy.get((cluster, vmid))
        if holder is not None:
            raise ApiProblem(
                "ACTION_IN_PROGRESS", f"guest {vmid} in cluster {cluster!r} has an action in progress",
                details={"operation_id": holder, "cluster": cluster, "vmid": vmid},
            )
        self.busy[(cluster, vmid)] = op_id

    def release(self, op: Operation) -> None:
        if self.busy.get((op.cluster, op.resource_id)) == op.id:
            del self.busy[(op.cluster, op.resource_id)]

    async def submit(
        self,
        *,
        cluster: str,
        vmid: int,
        action: str,
        force: bool,
        timeout_seconds: float,
        user: str,
        client_ip: str | None,
        idempotency_key: str | None = None,
    ) -> _Submission:
        """Validate, record (`pending`) and start one action; answers at once, PVE is called in the background."""
        self.check_accepting()
        self.cluster(cluster)
        if idempotency_key is None:
            op = await self._create(cluster, vmid, action, force, timeout_seconds, user, client_ip, None)
            return _Submission(op, False)
        key = (user, idempotency_key)
        pending = self._keys.get(key)
        if pending is not None:
            op = await asyncio.shield(pending)
            return _Submission(self._same_request(op, cluster, vmid, action, force, timeout_seconds), True)
        fut: asyncio.Future[Operation] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._keys[key] = fut
        try:
            existing = await self.store.by_idempotency_key(user, idempotency_key)
            if existing is not None:
                fut.set_result(existing)
                self._keys.pop(key, None)
                return _Submission(self._same_request(existing, cluster, vmid, action, force, timeout_seconds), True)
            op = await self._create(cluster, vmid, action, force, timeout_seconds, user, client_ip, idempotency_key)
        except BaseException as exc:
            self._keys.pop(key, None)
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            raise
        fut.set_result(op)
        return _Submission(op, False)

    @staticmethod
    def _same_request(op: Operation, cluster: str, vmid: int, action: str, force: bool, timeout: float) -> Operation:
        asked = (cluster, vmid, action, force, float(timeout))
        had = (op.cluster, op.resource_id, op.operation, op.force, float(op.timeout_seconds))
        if asked != had:
            raise ApiProblem(
                "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request",
                details={"operation_id": op.id, "original": {"cluster": op.cluster, "vmid": op.resource_id,
                                                             "action": op.operation, "force": op.force,
                                                             "timeout_seconds": op.timeout_seconds}},
            )  # fmt: skip
        return op

    async def _create(
        self, cluster: str, vmid: int, action: str, force: bool, timeout: float, user: str,
        client_ip: str | None, idempotency_key: str | None,
    ) -> Operation:
        op_id = new_id()
        self.reserve(cluster, vmid, op_id)
        try:
            ref = await self.locate(cluster, vmid)
            if ref is None:
                raise ApiProblem("GUEST_NOT_FOUND", f"no guest {vmid} in cluster {cluster!r}",
                                 details={"cluster": cluster, "vmid": vmid})
            op = Operation(
                id=op_id, requested_at=self.clock(), cluster=cluster, resource_id=vmid, operation=action,
                force=force, user=user, node=ref.node, resource_type=ref.type, resource_name=ref.name or None,
                client_ip=client_ip, timeout_seconds=timeout, idempotency_key=idempotency_key,
            )  # fmt: skip
            self.check_accepting()
            await self.store.insert(op)
        except BaseException:
            if self.busy.get((cluster, vmid)) == op_id:
                del self.busy[(cluster, vmid)]
            raise
        audit("power action requested", operation_id=op.id, user=user, client_ip=client_ip, cluster=cluster,
              vmid=vmid, node=op.node, guest_type=op.resource_type, action=action, force=force,
              timeout_seconds=timeout)  # fmt: skip
        self.spawn(op)
        return op

    # ---- running --------------------------------------------------------------------------------
    def spawn(
        self, op: Operation, *, slot: asyncio.Semaphore | None = None, admit: Callable[[], bool] | None = None
    ) -> None:
        """Run `op` in the background. Bulk members wait for a `slot`, then `admit()` says whether
        they still should run (False: the batch was cancelled meanwhile and has recorded that)."""
        self.metrics.in_progress[op.cluster] += 1
        self._op_cluster[op.id] = op.cluster
        self._tasks[op.id] = asyncio.create_task(self._run(op, slot, admit), name=f"operation-{op.id}")

    async def _run(self, op: Operation, slot: asyncio.Semaphore | None, admit: Callable[[], bool] | None) -> None:
        structlog.contextvars.bind_contextvars(operation_id=op.id, cluster=op.cluster, vmid=op.resource_id)
        try:  # the task runs in a copy of the request's context: these bindings stay in this task
            if slot is None:
                op = await self._execute(op)
            else:
                async with slot:
                    if admit is not None and not admit():
                        return
                    op = await self._execute(op)
        except asyncio.CancelledError:
            await self._cut_off(op)
            raise
        except Exception:
            log.exception("operation crashed", operation_id=op.id)
            op = await self._finish(op, "failed", "internal error in the action runner (see the daemon log)")
        finally:
            self._done(op)

    def _done(self, op: Operation) -> None:
        self.release(op)
        self._tasks.pop(op.id, None)
        cluster = self._op_cluster.pop(op.id, op.cluster)
        self.metrics.in_progress[cluster] = max(0, self.metrics.in_progress[cluster] - 1)
        if op.idempotency_key is not None:
            self._keys.pop((op.user, op.idempotency_key), None)

    async def _cut_off(self, op: Operation) -> None:
        """The daemon stops while this operation runs: record what is known, within bounds."""
        current = await self._reload(op)
        if current.status in TERMINAL:
            return
        try:
            if current.upid is None:
                why = ("the daemon stopped before this action started" if current.status == "pending"
                       else "the daemon stopped before PVE confirmed the action; check the guest's state")
                await asyncio.wait_for(self._finish(current, "interrupted", why), timeout=2.0)
            else:
                # Left `running` with its UPID: the next start reads the task's outcome back.
                log.warning("operation cut off by shutdown; it is re-checked at the next start",
                            operation_id=current.id, upid=current.upid)
        except (TimeoutError, Exception) as exc:  # the history is closing: nothing more can be recorded
            log.warning("could not record an interrupted operation", operation_id=current.id, error=str(exc))

    async def _reload(self, op: Operation) -> Operation:
        try:
            return (await asyncio.wait_for(self.store.get(op.id), timeout=2.0)) or op
        except Exception:
            return op

    async def _execute(self, op: Operation, *, resume: bool = False) -> Operation:
        now = self.clock()
        if op.cluster not in self.daemon.clusters:
            return await self._finish(evolve(op, started_at=op.started_at or now), "failed",
                                      f"cluster {op.cluster!r} is no longer configured")
        if not resume:
            op = evolve(op, status="running", started_at=now)
            await self.store.save(op)
        started = op.started_at if op.started_at is not None else now
        deadline = started + op.timeout_seconds
        assert op.resource_type is not None
        steps = plan_steps(op.operation, op.force, op.resource_type, op.timeout_seconds)
        first = op.step
        try:
            for i in range(first, len(steps)):
                op = await self._do_step(op, i, steps[i], deadline, follow_only=resume and i == first)
        except StepFailed as exc:
            result = await self._finish(exc.op or op, exc.status, exc.message)
        else:
            result = await self._finish(op, "succeeded", None)
        self._refresh_soon(op.cluster)
        return result

    async def _do_step(
        self, op: Operation, index: int, step: Step, deadline: float, *, follow_only: bool
    ) -> Operation:
        """Send one PVE call and follow its task; retried once on the guest's new node if it moved."""
        retried = False
        while True:
            if follow_only and op.upid:
                upid, follow_only = op.upid, False
            else:
                try:
                    upid = await self._post(op, step)
                except PveError as exc:
                    moved = None if retried or not _ELSEWHERE.search(exc.message) else await self._relocated(op)
                    if moved is not None:
                        op, retried = moved, True
                        continue
                    raise StepFailed("failed", _pve_message(exc), op) from None
                op = evolve(op, upid=upid, step=index, node=upid_node(upid) or op.node)
                await self.store.save(op)
            try:
                exit_ok, message = await self._follow(op.cluster, upid, deadline)
                if not exit_ok:
                    moved = None if retried or not _ELSEWHERE.search(message) else await self._relocated(op)
                    if moved is not None:
                        op, retried = moved, True
                        continue
                    raise StepFailed("failed", message)
                if step.expect and (upid_type(upid) or "").startswith("ha"):
                    op = await self._await_state(op, step.expect, deadline)
            except StepFailed as exc:
                exc.op = exc.op or op
                raise
            return op

    async def _relocated(self, op: Operation) -> Operation | None:
        """Look the guest up again; an operation with its new node if it moved, else None."""
        try:
            ref = await self.locate(op.cluster, op.resource_id, refresh=True)
        except ApiProblem:
            return None
        if ref is None or (ref.node == op.node and ref.type == op.resource_type):
            return None
        log.info("guest moved; retrying on its new node", operation_id=op.id, vmid=op.resource_id,
                 old_node=op.node, node=ref.node)
        op = evolve(op, node=ref.node, resource_type=ref.type)
        await self.store.save(op)
        return op

    def _client(self, cluster: str) -> Any:
        """The cluster's current PVE client (a config reload may have replaced it, or removed the cluster)."""
        rt = self.daemon.clusters.get(cluster)
        if rt is None:
            raise StepFailed("failed", f"cluster {cluster!r} was removed from the config")
        return rt.client

    async def _post(self, op: Operation, step: Step) -> str:
        path = f"/nodes/{op.node}/{op.resource_type}/{op.resource_id}/status/{step.pve}"
        data = await self._client(op.cluster).post(path, dict(step.params), failover=False)
        if not isinstance(data, str) or upid_node(data) is None:
            raise PveError(f"PVE answered {step.pve} without a task id (UPID): {data!r}")
        log.info("power call accepted", operation_id=op.id, path=path, upid=data)
        return data

    async def _follow(self, cluster: str, upid: str, deadline: float) -> tuple[bool, str]:
        """Poll the task (on the node named in its UPID) until it stops or the deadline passes."""
        node = upid_node(upid)
        last_error: str | None = None
        while True:
            past = self.clock() >= deadline
            try:
                st = await self._client(cluster).get(f"/nodes/{node}/tasks/{upid}/status")
            except PveError as exc:
                last_error = _pve_message(exc)
                log.warning("task status unavailable", upid=upid, error=last_error)
            else:
                if isinstance(st, dict) and st.get("status") == "stopped":
                    exitstatus = str(st.get("exitstatus") or "unexpected status")
                    return (True, exitstatus) if _OK_STATUS.match(exitstatus) else (False, exitstatus)
            if past:
                why = f" (last status error: {last_error})" if last_error else ""
                raise StepFailed("timed_out", f"the PVE task {upid} was still running after the timeout{why}")
            await self.sleep(self.poll_seconds)

    async def _await_state(self, op: Operation, expect: str, deadline: float) -> Operation:
        """HA guests: hastart/hastop only asked HA; wait until the guest really is `expect`."""
        path = f"/nodes/{op.node}/{op.resource_type}/{op.resource_id}/status/current"
        while True:
            past = self.clock() >= deadline
            try:
                st = await self._client(op.cluster).get(path)
                state = st.get("status") if isinstance(st, dict) else None
            except PveError as exc:
                state = None
                if _ELSEWHERE.search(exc.message) and (moved := await self._relocated(op)):
                    op = moved  # HA relocated it
                    path = f"/nodes/{op.node}/{op.resource_type}/{op.resource_id}/status/current"
            if state == expect:
                return op
            if past:
                raise StepFailed(
                    "timed_out", f"HA accepted the request but the guest was not {expect} within the timeout "
                                 f"(last seen: {state or 'unknown'})",
                )  # fmt: skip
            await self.sleep(self.poll_seconds)

    async def _finish(self, op: Operation, status: str, message: str | None) -> Operation:
        now = self.clock()
        op = evolve(op, status=status, finished_at=now, started_at=op.started_at or now, error_message=message)
        await self.store.save(op)
        self.metrics.operation_finished(op.cluster, op.operation, status, op.duration_seconds)
        audit("power action finished", operation_id=op.id, user=op.user, client_ip=op.client_ip,
              cluster=op.cluster, vmid=op.resource_id, node=op.node, action=op.operation, force=op.force,
              result=status, error=message, upid=op.upid, duration_seconds=op.duration_seconds)  # fmt: skip
        return op

    def _refresh_soon(self, cluster: str) -> None:
        rt = self.daemon.clusters.get(cluster)
        if rt is not None:
            rt.poller.trigger()

    # ---- recovery and shutdown ------------------------------------------------------------------
    async def recover(self) -> dict[str, int]:
        """Operations a crash or stop left `pending`/`running`: read their task back by UPID."""
        counts = {"adopted": 0, "interrupted": 0}
        for op in await self.store.unfinished():
            if op.upid is None or op.cluster not in self.daemon.clusters:
                why = ("the daemon stopped before PVE confirmed the action; check the guest's state"
                       if op.upid is None else f"cluster {op.cluster!r} is no longer configured")
                await self._finish(op, "interrupted", why)
                counts["interrupted"] += 1
                continue
            rt = self.daemon.clusters[op.cluster]
            node = upid_node(op.upid)
            try:
                await rt.client.get(f"/nodes/{node}/tasks/{op.upid}/status")
            except PveError as exc:
                await self._finish(op, "interrupted",
                                   f"the daemon restarted and could not read task {op.upid} back: {_pve_message(exc)}")
                counts["interrupted"] += 1
                continue
            # The task is known: follow it (and any remaining step) to its end, as before the restart.
            self.busy[(op.cluster, op.resource_id)] = op.id
            self.metrics.in_progress[op.cluster] += 1
            self._op_cluster[op.id] = op.cluster
            self._tasks[op.id] = asyncio.create_task(self._adopt(op), name=f"operation-{op.id}")
            counts["adopted"] += 1
        if counts["adopted"] or counts["interrupted"]:
            log.info("unfinished operations re-checked", **counts)
        return counts

    async def _adopt(self, op: Operation) -> None:
        structlog.contextvars.bind_contextvars(operation_id=op.id, cluster=op.cluster, vmid=op.resource_id)
        try:
            op = await self._execute(op, resume=True)
        except asyncio.CancelledError:
            await self._cut_off(op)
            raise
        except Exception:
            log.exception("adopted operation crashed", operation_id=op.id)
            op = await self._finish(op, "failed", "internal error in the action runner (see the daemon log)")
        finally:
            self._done(op)

    def drop_queued(self, op_id: str) -> None:
        """A cancelled bulk member stops waiting for its slot (its row says `cancelled` already)."""
        task = self._tasks.get(op_id)
        if task is not None:
            task.cancel()

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def wait_idle(self, timeout: float) -> bool:
        tasks = list(self._tasks.values())
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    async def shutdown(self, grace: float) -> None:
        """Refuse new actions; give running ones `grace` seconds; cut the rest off (state recorded)."""
        self.accepting = False
        started = time.monotonic()
        if not await self.wait_idle(grace):
            tasks = list(self._tasks.values())
            log.warning("stopping with actions still running", count=len(tasks), waited_seconds=grace)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.debug("action runner stopped", seconds=round(time.monotonic() - started, 3))

    def active_ids(self) -> Iterable[str]:
        return list(self._tasks)


def _pve_message(exc: PveError) -> str:
    """PVE's own text (HTTP reason or body message), as the operation's error_message."""
    if isinstance(exc, PveTimeoutError):
        return f"PVE did not answer in time: {exc.message}"
    if exc.status in (595, 596, 597, 599):
        return f"PVE could not reach the node ({exc.status} {exc.message})"
    if exc.status is None:
        return f"PVE unreachable: {exc.message}"
    return exc.message
