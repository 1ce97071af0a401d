"""The action runner: turns start / stop / restart into PVE power calls and follows them to the end.

One operation is one guest. It is written to the history as `pending` before anything is sent
to PVE, becomes `running` when the runner picks it up, and ends `succeeded`, `failed` (PVE
refused: its message is kept, scrubbed of secrets), `timed_out` (the task outlived
`timeout_seconds`, or PVE never answered the power call and no task for it appeared: the outcome
is unknown), `cancelled` (a queued bulk member) or `interrupted` (never sent because the daemon
stopped, or PVE no longer knows the task after a restart). The mapping to PVE (pve-api.md §4):

| action  | force=false                     | force=true                                   |
|---------|---------------------------------|----------------------------------------------|
| start   | `start`                         | `start`                                      |
| stop    | `shutdown` with `timeout`       | `stop`                                       |
| restart | `reboot` with `timeout`         | qemu: `reset`; lxc: `stop`, then `start`     |

Node and type come from the latest snapshot; a guest missing there, or one PVE says is not
where the snapshot put it, is looked up again in `/cluster/resources` (and the call retried
once on its new node). HA-managed guests answer start/stop with `hastart`/`hastop` tasks that
end at once; the runner then polls the guest's status until it is what was asked for.

Deadlines and backoff follow the host's monotonic clock; wall time is only written to the history.
The cluster (and its PVE client) is looked up through the host on every call: a reload may replace it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from pve_exporter.control.audit import audit
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.host import ClusterView, ControlHost
from pve_exporter.control.metrics import ControlMetrics
from pve_exporter.control.operations import (
    TERMINAL,
    HistoryError,
    Operation,
    OperationFilter,
    OperationStore,
    evolve,
    new_id,
)
from pve_exporter.control.scrub import scrub_secrets
from pve_exporter.poller import guest_inventory
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveError, PveTimeoutError, PveUnreachableError
from pve_exporter.snapshot import GuestRef

log = structlog.get_logger("pve_exporter.control.actions")

_UPID = re.compile(r"^UPID:([a-zA-Z0-9][a-zA-Z0-9-]*):[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8}:([^:\s/]+):")
_UPID_FIELDS = re.compile(
    r"^UPID:([a-zA-Z0-9][a-zA-Z0-9-]*):[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)
# PVE's ways of saying "that guest's config is not on this node" (it moved, or the snapshot is old).
_ELSEWHERE = re.compile(
    r"Configuration file 'nodes/[^']+' does not exist|unable to find configuration file for VM|"
    r"\b(?:CT|VM) \d+ not running"
)
_OK_STATUS = re.compile(r"^(OK|WARNINGS: \d+)$")
# Tasks.pm read_task_status: raise_param_exc({upid => "no such task"}) / "unable to parse worker upid"
_NO_SUCH_TASK = re.compile(r"no such task|unable to parse worker upid", re.I)

RECOVERY_CONCURRENCY = 4  # unfinished operations re-checked at once after a restart
RECOVERY_BACKOFF_MAX = 30.0  # s: the longest wait between two re-checks while PVE does not answer
TASK_CLOCK_SLACK = 120  # s: a task found in the task list may start this much before our clock sent the call
NOT_STARTED = "the daemon stopped before this action started"
NOT_SENT = "the daemon stopped before this action was sent to PVE"


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


def task_types(pve_call: str, guest_type: str) -> frozenset[str]:
    """The task types a `status/<pve_call>` can start (HA-managed guests get hastart/hastop)."""
    types = {("qm" if guest_type == "qemu" else "vz") + pve_call}
    if pve_call == "start":
        types.add("hastart")
    elif pve_call in ("stop", "shutdown"):
        types.add("hastop")
    return frozenset(types)


def pick_task(
    rows: Any, *, types: frozenset[str], vmid: int, user: str, since: int, exclude: frozenset[str]
) -> str | None:
    """From a `GET /nodes/{node}/tasks` answer: the UPID of the earliest task of one of `types` for
    `vmid`, started by `user` (the token) at or after `since`, that is not one of `exclude`."""
    best: tuple[int, str] | None = None
    for row in rows if isinstance(rows, list) else ():
        upid = row.get("upid") if isinstance(row, dict) else None
        m = _UPID_FIELDS.match(upid) if isinstance(upid, str) else None
        if m is None or upid in exclude:
            continue
        start, kind, ident, owner = int(m.group(2), 16), m.group(3), m.group(4), m.group(5)
        matches = kind in types and ident == str(vmid) and owner == user and start >= since
        if matches and (best is None or start < best[0]):
            best = (start, upid)
    return best[1] if best else None


def task_gone(exc: PveError) -> bool:
    """PVE answered and does not know the task: the only reason to give a re-checked operation up."""
    return exc.status == 404 or (exc.status in (400, 500) and bool(_NO_SUCH_TASK.search(exc.message)))


def outcome_unknown(exc: PveError) -> bool:
    """The power call may have reached PVE although no answer came back: our timeout, a connection
    lost after sending, or pveproxy's relay failing after it sent the request on (596 while sending
    or reading headers, 597 while reading the body, 599). A connection that could not even be
    opened (ours, or the relay's: 595) sent nothing."""
    if isinstance(exc, PveTimeoutError):
        return True
    if not isinstance(exc, PveUnreachableError):
        return False
    if exc.status is None:
        return not isinstance(exc.__cause__, aiohttp.ClientConnectorError)
    return exc.status in (596, 597, 599)


class StepFailed(Exception):
    def __init__(self, status: str, message: str, op: Operation | None = None) -> None:
        super().__init__(message)
        self.status = status  # failed | timed_out | interrupted
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
        host: ControlHost,
        store: OperationStore,
        metrics: ControlMetrics,
        *,
        poll_seconds: float = 1.0,
        recovery_give_up_seconds: float = 3600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.host = host
        self.store = store
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.recovery_give_up_seconds = recovery_give_up_seconds
        self.sleep = sleep
        self.accepting = True
        self.busy: dict[tuple[str, int], str] = {}  # (cluster, vmid) -> id of the operation holding the guest
        self._freed = asyncio.Event()  # set whenever a guest is released (see wait_idle)
        self._keys: dict[tuple[str, str], asyncio.Future[Operation]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queued: set[str] = set()  # bulk members still waiting for a slot (nothing sent yet)
        self._op_cluster: dict[str, str] = {}
        self._started_mono: dict[str, float] = {}  # operation id -> monotonic start, for its measured duration
        self._recovered = asyncio.Event()  # set once recovery has reserved the guests it re-checks
        self._recovered.set()

    @property
    def clock(self) -> Callable[[], float]:
        return self.host.clock

    def monotonic(self) -> float:
        return self.host.monotonic()

    # ---- guests ---------------------------------------------------------------------------------
    def cluster(self, name: str) -> ClusterView:
        """A cluster new actions may use (one removed by a reload only finishes what it follows)."""
        view = self.host.cluster_view(name)
        if view is None or view.retired:
            raise ApiProblem("CLUSTER_NOT_FOUND", f"cluster {name!r} is not configured",
                             details={"cluster": name, "configured": self.host.cluster_names()})
        return view

    async def locate(self, cluster: str, vmid: int, *, refresh: bool = False) -> GuestRef | None:
        """The guest from the latest snapshot, or (missing there, or `refresh`) from /cluster/resources."""
        view = self.cluster(cluster)
        if not refresh:
            snap = self.host.latest_snapshot(cluster)
            if snap is not None and vmid in snap.guests:
                return snap.guests[vmid]
        try:
            data = await view.client.get("/cluster/resources", {"type": "vm"})
        except PveError as exc:
            raise ApiProblem("PVE_ERROR", f"cannot look up guest {vmid} in cluster {cluster!r}: "
                             f"{scrub_secrets(exc.message)}",
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
        self._unbusy(op.cluster, op.resource_id, op.id)

    def _unbusy(self, cluster: str, vmid: int, op_id: str) -> None:
        if self.busy.get((cluster, vmid)) == op_id:
            del self.busy[(cluster, vmid)]
            self._freed.set()

    def holds(self, cluster: str) -> bool:
        """Whether an unfinished operation holds a guest of `cluster`."""
        return any(c == cluster for c, _ in self.busy)

    async def cluster_released(self, cluster: str) -> None:
        """Until no operation holds a guest of `cluster` (a cluster removed by a reload keeps its client
        for the operations it still follows, then lets it go)."""
        while self.holds(cluster):
            self._freed.clear()
            await self._freed.wait()

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
        await self._recovered.wait()  # recovery reserves its guests first (one database query)
        self.check_accepting()
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
            self._unbusy(cluster, vmid, op_id)
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
        if slot is not None:
            self._queued.add(op.id)
        self._tasks[op.id] = asyncio.create_task(self._run(op, slot, admit), name=f"operation-{op.id}")

    async def _run(self, op: Operation, slot: asyncio.Semaphore | None, admit: Callable[[], bool] | None) -> None:
        structlog.contextvars.bind_contextvars(operation_id=op.id, cluster=op.cluster, vmid=op.resource_id)
        try:  # the task runs in a copy of the request's context: these bindings stay in this task
            if slot is None:
                op = await self._execute(op)
            else:
                async with slot:
                    self._queued.discard(op.id)
                    if admit is not None and not admit():
                        return
                    if not self.accepting:  # shutdown began while this member waited: never send it
                        op = await self._finish(op, "interrupted", NOT_STARTED)
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
        self._queued.discard(op.id)
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
                why = (NOT_STARTED if current.status == "pending"
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
        view = self.host.cluster_view(op.cluster)
        if view is None or (view.retired and not resume):  # removed by a reload: nothing new is sent
            return await self._finish(evolve(op, started_at=op.started_at or now), "failed",
                                      f"cluster {op.cluster!r} is no longer configured")
        if not resume:
            op = evolve(op, status="running", started_at=now)
            await self.store.save(op)
        # The deadline lives on the monotonic clock; after a restart, what is left of the timeout
        # is taken from the stored (wall) start once.
        elapsed = max(0.0, now - op.started_at) if resume and op.started_at is not None else 0.0
        deadline = self.monotonic() + max(0.0, op.timeout_seconds - elapsed)
        self._started_mono[op.id] = self.monotonic() - elapsed
        assert op.resource_type is not None
        steps = plan_steps(op.operation, op.force, op.resource_type, op.timeout_seconds)
        first = op.step
        try:
            for i in range(first, len(steps)):
                op = await self._do_step(op, i, steps, deadline, follow_only=resume and i == first)
        except StepFailed as exc:
            result = await self._finish(exc.op or op, exc.status, exc.message)
        else:
            result = await self._finish(op, "succeeded", None)
        self.host.refresh_soon(op.cluster)
        return result

    def _gate(self, op: Operation, index: int, steps: list[Step]) -> None:
        """After shutdown began, no power call leaves the daemon."""
        if self.accepting:
            return
        if index == 0:
            raise StepFailed("interrupted", NOT_SENT, op)
        done = ", ".join(s.pve for s in steps[:index])
        raise StepFailed("interrupted", f"the daemon stopped after `{done}`; `{steps[index].pve}` was not sent to "
                                        "PVE; check the guest's state", op)  # fmt: skip

    async def _do_step(
        self, op: Operation, index: int, steps: list[Step], deadline: float, *, follow_only: bool
    ) -> Operation:
        """Send one PVE call and follow its task; retried once on the guest's new node if it moved."""
        step = steps[index]
        retried = False
        while True:
            if follow_only and op.upid:
                upid, follow_only = op.upid, False
            else:
                self._gate(op, index, steps)
                sent_at = self.clock()
                try:
                    upid = await self._post(op, step)
                except PveError as exc:
                    if outcome_unknown(exc):
                        upid = await self._find_task(op, step, sent_at, deadline, exc)
                    else:
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

    async def _find_task(self, op: Operation, step: Step, sent_at: float, deadline: float, exc: PveError) -> str:
        """The power call got no answer, so PVE may or may not have run it. Look for its task in the
        node's task list (type, vmid, our token, started since the call) until the deadline; found:
        follow it; not found: `timed_out`, the outcome unknown."""
        assert op.resource_type is not None
        types = task_types(step.pve, op.resource_type)
        since = int(sent_at) - TASK_CLOCK_SLACK
        earlier, _ = await self.store.query(OperationFilter(cluster=(op.cluster,), resource_id=(op.resource_id,)),
                                            limit=20)
        exclude = frozenset(o.upid for o in earlier if o.upid)
        log.warning("power call unanswered; looking for its task on the node", operation_id=op.id, node=op.node,
                    call=step.pve, error=_pve_message(exc))  # fmt: skip
        last_error = ""
        while True:
            past = self.monotonic() >= deadline
            view = self._view(op.cluster)
            try:
                rows = await view.client.get(f"/nodes/{op.node}/tasks",
                                             {"vmid": op.resource_id, "since": since, "source": "all", "limit": 100})
            except PveError as lookup:
                last_error = f"; the task list was unavailable too: {_pve_message(lookup)}"
            else:
                last_error = ""
                upid = pick_task(rows, types=types, vmid=op.resource_id, user=view.token_id, since=since,
                                 exclude=exclude)  # fmt: skip
                if upid is not None:
                    log.info("found the task of the unanswered power call", operation_id=op.id, upid=upid)
                    return upid
            if past:
                raise StepFailed(
                    "timed_out",
                    f"PVE did not answer the `{step.pve}` call ({_pve_message(exc)}) and no {'/'.join(sorted(types))} "
                    f"task for guest {op.resource_id} appeared on node {op.node} within the timeout{last_error}; "
                    "the outcome is unknown: check the guest's state before retrying",
                    op,
                )  # fmt: skip
            await self.sleep(self.poll_seconds)

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

    def _view(self, cluster: str) -> ClusterView:
        """The cluster as of now (a config reload may have replaced its client, or removed it)."""
        view = self.host.cluster_view(cluster)
        if view is None:
            raise StepFailed("failed", f"cluster {cluster!r} was removed from the config")
        return view

    def _client(self, cluster: str) -> PveClient:
        return self._view(cluster).client

    async def _post(self, op: Operation, step: Step) -> str:
        path = f"/nodes/{op.node}/{op.resource_type}/{op.resource_id}/status/{step.pve}"
        client = self._client(op.cluster)
        try:
            data = await client.post(path, dict(step.params), failover=False)
        except PveError as exc:
            current = self._client(op.cluster)
            if exc.kind != "closed" or current is client:
                raise
            # A reload closed this client before the call left (nothing was sent): use the new one.
            data = await current.post(path, dict(step.params), failover=False)
        if not isinstance(data, str) or upid_node(data) is None:
            raise PveError(f"PVE answered {step.pve} without a task id (UPID): {data!r}")
        log.info("power call accepted", operation_id=op.id, path=path, upid=data)
        return data

    async def _follow(self, cluster: str, upid: str, deadline: float) -> tuple[bool, str]:
        """Poll the task (on the node named in its UPID) until it stops or the deadline passes."""
        node = upid_node(upid)
        last_error: str | None = None
        while True:
            past = self.monotonic() >= deadline
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
            past = self.monotonic() >= deadline
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
        started = self._started_mono.pop(op.id, None)  # measured: immune to a clock step meanwhile
        op = evolve(op, status=status, finished_at=now, started_at=op.started_at or now,
                    error_message=scrub_secrets(message),
                    elapsed_seconds=None if started is None else max(0.0, self.monotonic() - started))
        try:
            await self.store.save(op)
        except HistoryError as exc:  # visible through the history's health metric; the outcome is still logged
            log.error("could not record the end of an operation", operation_id=op.id, status=status, error=str(exc))
        self.metrics.operation_finished(op.cluster, op.operation, status, op.duration_seconds)
        audit("power action finished", operation_id=op.id, user=op.user, client_ip=op.client_ip,
              cluster=op.cluster, vmid=op.resource_id, node=op.node, action=op.operation, force=op.force,
              result=status, error=op.error_message, upid=op.upid, duration_seconds=op.duration_seconds)  # fmt: skip
        return op

    # ---- recovery and shutdown ------------------------------------------------------------------
    def hold_for_recovery(self) -> None:
        """New actions wait until `recover` has reserved the guests of unfinished operations (call
        before the recovery task is started, so no request slips in before it runs)."""
        self._recovered.clear()

    async def recover(self) -> dict[str, int]:
        """Operations a crash or stop left `pending`/`running`. Those never confirmed by PVE are
        `interrupted` at once; the others hold their guest and are re-checked by UPID in the
        background, a few at a time, staying `running` while PVE does not answer."""
        self.hold_for_recovery()
        counts = {"adopted": 0, "interrupted": 0}
        try:
            unfinished = await self.store.unfinished()
            resumable = []
            for op in unfinished:
                if op.id in self._tasks or self.busy.get((op.cluster, op.resource_id)) == op.id:
                    continue  # followed here already (replicas: recover runs again to adopt a dead replica's)
                if op.upid is None or self.host.cluster_view(op.cluster) is None:
                    why = ("the daemon stopped before PVE confirmed the action; check the guest's state"
                           if op.upid is None else f"cluster {op.cluster!r} is no longer configured")
                    await self._finish(op, "interrupted", why)
                    counts["interrupted"] += 1
                    continue
                holder = self.busy.get((op.cluster, op.resource_id))
                if holder is not None and holder != op.id:  # cannot happen: submit waits for recovery
                    log.error("guest already held during recovery", operation_id=op.id, holder=holder)
                    continue
                self.busy[(op.cluster, op.resource_id)] = op.id
                self.metrics.in_progress[op.cluster] += 1
                self._op_cluster[op.id] = op.cluster
                resumable.append(op)
        finally:
            self._recovered.set()
        slot = asyncio.Semaphore(RECOVERY_CONCURRENCY)
        for op in resumable:
            self._tasks[op.id] = asyncio.create_task(self._adopt(op, slot), name=f"operation-{op.id}")
            counts["adopted"] += 1
        if counts["adopted"] or counts["interrupted"]:
            log.info("unfinished operations found at start", **counts)
        return counts

    async def _adopt(self, op: Operation, slot: asyncio.Semaphore) -> None:
        structlog.contextvars.bind_contextvars(operation_id=op.id, cluster=op.cluster, vmid=op.resource_id)
        try:
            async with slot:
                op = await self._recheck(op)
            if op.status not in TERMINAL:
                op = await self._execute(op, resume=True)
        except asyncio.CancelledError:
            await self._cut_off(op)
            raise
        except Exception:
            log.exception("adopted operation crashed", operation_id=op.id)
            op = await self._finish(op, "failed", "internal error in the action runner (see the daemon log)")
        finally:
            self._done(op)

    async def _recheck(self, op: Operation) -> Operation:
        """Ask PVE about the operation's task until it answers. Known: `op` unchanged (to be followed).
        Unknown to PVE, cluster gone, or no answer for `recovery_give_up_seconds`: `interrupted`."""
        assert op.upid is not None
        started = self.monotonic()
        delay = self.poll_seconds
        path = f"/nodes/{upid_node(op.upid)}/tasks/{op.upid}/status"
        while True:
            view = self.host.cluster_view(op.cluster)
            if view is None:
                return await self._finish(op, "interrupted", f"cluster {op.cluster!r} is no longer configured")
            try:
                await view.client.get(path)
            except PveError as exc:
                message = _pve_message(exc)
                if task_gone(exc):
                    return await self._finish(
                        op, "interrupted", f"the daemon restarted and PVE no longer knows task {op.upid}: {message}")
                waited = self.monotonic() - started
                if waited >= self.recovery_give_up_seconds:
                    return await self._finish(
                        op, "interrupted",
                        f"PVE did not answer about task {op.upid} for {waited:.0f} s after a restart "
                        f"(control.recovery_give_up_seconds); last error: {message}; check the guest's state",
                    )  # fmt: skip
                if delay == self.poll_seconds:
                    log.warning("PVE does not answer about an unfinished operation; it stays running and is "
                                "re-checked", operation_id=op.id, upid=op.upid, error=message)  # fmt: skip
                await self.sleep(delay)
                delay = min(delay * 2, max(self.poll_seconds, RECOVERY_BACKOFF_MAX))
            else:
                if delay != self.poll_seconds:
                    log.info("PVE answers again; following the unfinished operation", operation_id=op.id)
                return op

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

    def stop_sending(self) -> list[asyncio.Task[None]]:
        """The daemon is stopping (SIGTERM): refuse new actions, send no further power call, and let
        queued bulk members end `interrupted` now (their tasks are cancelled; returned to be awaited)."""
        self.accepting = False
        queued = [self._tasks[i] for i in self._queued if i in self._tasks]
        self._queued.clear()  # cancelled once: a second cancel would cut short the recording of it
        for t in queued:
            t.cancel()
        if queued:
            log.info("shutting down: queued bulk members are not sent", count=len(queued))
        return queued

    async def shutdown(self, grace: float) -> None:
        """`stop_sending`, then running actions get `grace` seconds to finish; the rest are cut off
        (their state recorded)."""
        started = time.monotonic()
        await asyncio.gather(*self.stop_sending(), return_exceptions=True)
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
