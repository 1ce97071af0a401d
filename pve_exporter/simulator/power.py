"""Guest power actions: `POST /nodes/{node}/{qemu|lxc}/{vmid}/status/<action>` (pve-api.md §4, §7.11–17).

Each action runs the way PVE runs it: the synchronous checks made before the worker is forked
(HTTP 500, no UPID), then a worker task with a real UPID that runs for a realistic time, changes
the guest when it ends, and finishes with PVE's exit status (`OK` or the error text). QEMU and
LXC differ where PVE differs (§7.17): asking a container for the state it is already in fails
synchronously, while QEMU answers with a task. HA-managed guests get `hastart`/`hastop` tasks
that finish OK at once; the guest changes later, in a task HA's LRM runs as root@pam.

Nothing runs in the background: outcomes are decided from the model, and state changes happen
in the tasks' `on_finish` hooks and `SimCluster.schedule` callbacks, which run lazily when the
clock has passed them (see `SimCluster.advance`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pve_exporter.simulator.errors import ApiError, param_error
from pve_exporter.simulator.model import SimCluster, SimGuest, SimNode, SimTask
from pve_exporter.simulator.routing import Ctx, ParamKind, api

ROOT_ONLY = "Only root may use this option."
_NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
LOCK_WAIT = 10.0  # s: PVE's flock timeout on a guest's config lock
PAUSED_STATES = ("paused", "prelaunch", "suspended")


@dataclass
class PowerTimings:
    """How long simulated power tasks run, in (simulator clock) seconds (pve-api.md §4.9).

    `overrides[vmid]` replaces the duration of that guest's direct power tasks, e.g. a start that
    hangs for 10 minutes. `sync_seconds` is the real-time delay of the synchronous part of a POST.
    """

    qmstart: float = 3.0
    qmstop: float = 1.0
    qmshutdown: float = 8.0  # the guest's own ACPI shutdown time
    qmreboot_start: float = 3.0  # the start half of a reboot, after the shutdown half
    qmreset: float = 0.5
    qmpause: float = 0.3
    qmsuspend: float = 6.0
    qmresume: float = 0.3
    vzstart: float = 2.0
    vzstop: float = 1.0
    vzshutdown: float = 4.0
    vzreboot_start: float = 2.0
    vzsuspend: float = 3.0
    vzresume: float = 1.0
    noop: float = 0.2  # a task that finds nothing to do (qemu stop of a stopped VM)
    ha_request: float = 0.8  # hastart / hastop
    ha_lrm_delay: float = 15.0  # HA's LRM acts this long after the request
    sync_seconds: float = 0.0
    overrides: dict[int, float] = field(default_factory=dict)

    def direct(self, key: str, vmid: int) -> float:
        return self.overrides.get(vmid, getattr(self, key))


@dataclass
class Work:
    """What a worker task will do: its duration, exit status, log, and the change it makes when OK."""

    duration: float
    exitstatus: str = "OK"
    log: list[str] = field(default_factory=list)
    effect: Callable[[float], None] | None = None  # called with the task's end time
    later: list[tuple[float, str]] = field(default_factory=list)  # (seconds after the start, line)


# ---- helpers ----------------------------------------------------------------------------------------
def _root_only(ctx: Ctx, *names: str) -> None:
    bad = {n: ROOT_ONLY for n in names if n in ctx.params}
    if bad:
        raise param_error(bad)


def _overrule_shutdown(ctx: Ctx) -> None:
    """`overrule-shutdown` exists from 8.2 (qemu-server 8.1.2, pve-container 5.0.10)."""
    if "overrule-shutdown" in ctx.params and not ctx.cluster.version.at_least(8, 2):
        raise param_error({"overrule-shutdown": _NOT_IN_SCHEMA})


def _quorum(cluster: SimCluster) -> None:
    if not cluster.quorate:
        raise ApiError(500, "cluster not ready - no quorum?")


def _node(ctx: Ctx) -> SimNode:
    assert ctx.node is not None  # power routes are proxied: the node is resolved first
    return ctx.node


def _local_guest(ctx: Ctx, type_: str) -> SimGuest | None:
    """The guest if its config lives on this node with this type (what load_config finds)."""
    return ctx.cluster.guest_on(_node(ctx).name, ctx.params["vmid"], type_)


def _ha_guest(ctx: Ctx) -> SimGuest | None:
    """HA config is cluster-wide: `vm_is_ha_managed` does not care which node was asked."""
    g = ctx.cluster.guest(ctx.params["vmid"])
    return g if g is not None and g.ha is not None else None


def _missing_config(ctx: Ctx, type_: str) -> str:
    vmid, node = ctx.params["vmid"], _node(ctx).name
    conf = f"qemu-server/{vmid}.conf" if type_ == "qemu" else f"lxc/{vmid}.conf"
    return f"Configuration file 'nodes/{node}/{conf}' does not exist"


def _no_config_on_node(ctx: Ctx) -> str:
    return f"unable to find configuration file for VM {ctx.params['vmid']} on node '{_node(ctx).name}'"


def _lock_file(type_: str, vmid: int) -> str:
    if type_ == "qemu":
        return f"/var/lock/qemu-server/lock-{vmid}.conf"
    return f"/run/lock/lxc/pve-config-{vmid}.lock"


def _locked(g: SimGuest, allowed: tuple[str, ...] = ()) -> str | None:
    if g.lock and g.lock not in allowed:
        return f"{'VM' if g.type == 'qemu' else 'CT'} is locked ({g.lock})"
    return None


def _start_guest(cluster: SimCluster, g: SimGuest) -> Callable[[float], None]:
    def effect(at: float) -> None:
        g.start(at, cluster.nodes[g.node].alloc_pid())

    return effect


def _stop_guest(g: SimGuest) -> Callable[[float], None]:
    def effect(_at: float) -> None:
        g.stop()

    return effect


def _failed(exitstatus: str, duration: float = 0.4) -> Work:
    return Work(duration, exitstatus)


async def _sync_delay(ctx: Ctx) -> None:
    if ctx.cluster.power.sync_seconds > 0:
        await asyncio.sleep(ctx.cluster.power.sync_seconds)


# ---- launching tasks ------------------------------------------------------------------------------
def launch(
    ctx: Ctx, task_type: str, decide: Callable[[float], Work], *, lock_type: str | None = None
) -> str:
    """Fork a worker task on the node in the path; return its UPID.

    `decide(t)` runs when the worker gets going (at `t`) and says what it does. With `lock_type`
    the worker needs the guest's config lock: while another power task holds it, the worker
    waits up to LOCK_WAIT seconds, then gives PVE's `can't lock file` error.
    """
    cluster, node, vmid = ctx.cluster, _node(ctx), ctx.params["vmid"]
    holder = cluster.power_locks.get(vmid) if lock_type else None
    if holder is not None and not holder.running(ctx.now):
        holder = None
    if holder is not None and holder.endtime is not None and holder.endtime - ctx.now > LOCK_WAIT:
        msg = f"can't lock file '{_lock_file(lock_type or 'qemu', vmid)}' - got timeout"
        return cluster.add_task(node.name, task_type, str(vmid), ctx.caller.authid,
                                duration=LOCK_WAIT, exitstatus=msg).text

    task = cluster.add_task(node.name, task_type, str(vmid), ctx.caller.authid, duration=None)
    if lock_type:
        cluster.power_locks[vmid] = task

    def begin(at: float) -> None:
        work = decide(at)
        task.log.extend(work.log)
        task.later.extend((at + offset, line) for offset, line in work.later)
        task.exitstatus = work.exitstatus
        task.endtime = at + work.duration

        def finish(t: SimTask) -> None:
            if cluster.power_locks.get(vmid) is t:
                del cluster.power_locks[vmid]
            if t.exitstatus == "OK" and work.effect is not None:
                work.effect(t.endtime if t.endtime is not None else at)

        task.on_finish = finish

    if holder is not None and holder.endtime is not None:
        end = holder.endtime
        cluster.schedule(end, lambda: begin(end))  # the worker gets the lock when the holder ends
    else:
        begin(ctx.now)
    return task.text


def ha_request(ctx: Ctx, g: SimGuest, state: str, lrm_type: str, lrm_work: Callable[[float], Work | None]) -> str:
    """`hastart`/`hastop`: set the HA request and finish OK fast; HA's LRM acts on the guest later,
    in a task of its own run as root@pam (whose log begins `task started by HA resource agent`)."""
    cluster, timings = ctx.cluster, ctx.cluster.power
    kind = "VM" if g.type == "qemu" else "CT"
    verb = "start" if state == "started" else "stop"

    def requested(t: SimTask) -> None:
        g.ha = state
        due = (t.endtime if t.endtime is not None else ctx.now) + timings.ha_lrm_delay

        def lrm() -> None:
            if g.ha != state or not cluster.nodes[g.node].online:
                return  # the request changed again, or the node is gone (fencing is not simulated)
            work = lrm_work(due)
            if work is None:
                return  # already in the requested state

            def done(lt: SimTask) -> None:
                if lt.exitstatus == "OK" and work.effect is not None:
                    work.effect(lt.endtime if lt.endtime is not None else due)

            cluster.add_task(g.node, lrm_type, str(g.vmid), "root@pam", start=due, duration=work.duration,
                             exitstatus=work.exitstatus, log=["task started by HA resource agent", *work.log],
                             on_finish=done)

        cluster.schedule(due, lrm)

    return cluster.add_task(_node(ctx).name, "hastart" if state == "started" else "hastop", str(g.vmid),
                            ctx.caller.authid, duration=timings.ha_request,
                            log=[f"Requesting HA {verb} for {kind} {g.vmid}"], on_finish=requested).text


# ---- route registration ---------------------------------------------------------------------------
_PERM = ("/vms/{vmid}", "VM.PowerMgmt")


def power_route(type_: str, action: str, params: dict[str, ParamKind]) -> Callable[[Callable[..., Any]], Any]:
    def deco(fn: Callable[[Ctx], str]) -> Any:
        async def handler(ctx: Ctx) -> str:
            await _sync_delay(ctx)
            return fn(ctx)

        handler.__name__ = fn.__name__
        api("POST", f"/nodes/{{node}}/{type_}/{{vmid}}/status/{action}", params=params, proxied=True,
            perm=_PERM)(handler)
        return fn

    return deco


# ---- QEMU (qemu-server src/PVE/API2/Qemu.pm) ------------------------------------------------------
@power_route("qemu", "start", {
    "timeout": "uint", "machine": "str", "skiplock": "bool", "stateuri": "str", "migratedfrom": "str",
    "migration_type": ("secure", "insecure"), "migration_network": "str", "targetstorage": "str",
    "force-cpu": "str",
})
def qemu_start(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock", "stateuri", "migratedfrom", "migration_type", "migration_network",
               "targetstorage", "force-cpu")
    _quorum(ctx.cluster)
    if (ha := _ha_guest(ctx)) is not None:
        return ha_request(ctx, ha, "started", "qmstart", _lrm_start(ctx.cluster, ha))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        g = _local_guest(ctx, "qemu")
        if g is None:
            return _failed(_missing_config(ctx, "qemu"))
        if g.template:
            return _failed("you can't start a vm if it's a template")
        if g.lock == "suspended":  # hibernated: start resumes from the saved state
            def resume(at: float) -> None:
                g.lock = None
                _start_guest(ctx.cluster, g)(at)

            return Work(t.direct("qmstart", g.vmid), log=["resuming VM from saved state"], effect=resume)
        if g.lock == "backup" and g.running:  # a VM paused by a backup is resumed in place
            def unpause(_at: float) -> None:
                g.qmpstatus = "running"

            return Work(t.noop, log=["VM is locked (backup) - resuming in place"], effect=unpause)
        if msg := _locked(g):
            return _failed(msg)
        if g.running:
            return _failed(f"VM {g.vmid} already running")
        return Work(t.direct("qmstart", g.vmid), effect=_start_guest(ctx.cluster, g))

    return launch(ctx, "qmstart", decide, lock_type="qemu")


@power_route("qemu", "stop", {
    "timeout": "uint", "skiplock": "bool", "keepActive": "bool", "migratedfrom": "str", "overrule-shutdown": "bool",
})
def qemu_stop(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock", "keepActive", "migratedfrom")
    _overrule_shutdown(ctx)
    if (ha := _ha_guest(ctx)) is not None:
        if "overrule-shutdown" in ctx.params:
            raise param_error({"overrule-shutdown": "Not applicable for HA resources."})
        return ha_request(ctx, ha, "stopped", "qmstop", _lrm_stop(ctx.cluster, ha, "qmstop"))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        g = _local_guest(ctx, "qemu")
        if g is None:
            return _failed(_no_config_on_node(ctx))
        if msg := _locked(g):
            return _failed(msg)
        if not g.running:
            return Work(t.noop)  # already stopped: OK, nothing done (§7.17)
        return Work(t.direct("qmstop", g.vmid), effect=_stop_guest(g))

    return launch(ctx, "qmstop", decide, lock_type="qemu")


@power_route("qemu", "shutdown", {"timeout": "uint", "forceStop": "bool", "skiplock": "bool", "keepActive": "bool"})
def qemu_shutdown(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock", "keepActive")
    force = bool(ctx.params.get("forceStop"))
    timeout = ctx.params.get("timeout", 60)
    here = _local_guest(ctx, "qemu")
    if here is not None and here.running and here.qmpstatus in PAUSED_STATES and not force:
        raise ApiError(500, "VM is paused - cannot shutdown")
    if (ha := _ha_guest(ctx)) is not None:
        return ha_request(ctx, ha, "stopped", "qmshutdown", _lrm_stop(ctx.cluster, ha, "qmshutdown", timeout=timeout))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        g = _local_guest(ctx, "qemu")
        if g is None:
            return _failed(_no_config_on_node(ctx))
        if msg := _locked(g):
            return _failed(msg)
        if not g.running:
            return Work(t.noop)
        if g.qmpstatus in PAUSED_STATES:  # forceStop on a paused VM: stopped instead
            return Work(t.direct("qmstop", g.vmid), effect=_stop_guest(g))
        return _shutdown_work(g, t.direct("qmshutdown", g.vmid), timeout, force, kind="qemu")

    return launch(ctx, "qmshutdown", decide, lock_type="qemu")


def _shutdown_work(g: SimGuest, takes: float, timeout: int, force: bool, *, kind: str) -> Work:
    """A graceful shutdown that ends in time, or runs into `timeout` (then forceStop decides)."""
    if not g.ignores_acpi and takes <= timeout:
        return Work(takes, effect=_stop_guest(g))
    if force:
        line = ("VM still running - terminating now with SIGTERM" if kind == "qemu"
                else "container did not stop within timeout - killing it")
        return Work(float(timeout) + 0.5, later=[(float(timeout), line)], effect=_stop_guest(g))
    failure = "VM quit/powerdown failed - got timeout" if kind == "qemu" else "container did not stop"
    return Work(float(timeout), failure)


@power_route("qemu", "reboot", {"timeout": "uint"})
def qemu_reboot(ctx: Ctx) -> str:
    g = _local_guest(ctx, "qemu")
    if g is None:
        raise ApiError(500, _no_config_on_node(ctx))
    if not g.running:
        raise ApiError(500, f"VM {g.vmid} not running")
    if g.qmpstatus in PAUSED_STATES:
        raise ApiError(500, "VM is paused - cannot shutdown")
    t = ctx.cluster.power
    timeout = ctx.params.get("timeout", 60)

    def decide(_at: float) -> Work:
        if msg := _locked(g):
            return _failed(msg)
        if not g.running:
            return _failed(f"VM {g.vmid} not running")
        down = _shutdown_work(g, t.direct("qmshutdown", g.vmid), timeout, False, kind="qemu")
        if down.exitstatus != "OK":
            return down
        return Work(down.duration + t.qmreboot_start, effect=_start_guest(ctx.cluster, g))

    return launch(ctx, "qmreboot", decide, lock_type="qemu")


@power_route("qemu", "reset", {"skiplock": "bool"})
def qemu_reset(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock")
    g = _local_guest(ctx, "qemu")
    if g is None:
        raise ApiError(500, _no_config_on_node(ctx))
    if not g.running:
        raise ApiError(500, f"VM {g.vmid} not running")
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if msg := _locked(g):
            return _failed(msg)

        def reset(_at: float) -> None:
            g.qmpstatus = "running"  # a system reset keeps the QEMU process (and its uptime)

        return Work(t.direct("qmreset", g.vmid), effect=reset)

    return launch(ctx, "qmreset", decide, lock_type="qemu")


@power_route("qemu", "suspend", {"todisk": "bool", "statestorage": "str", "skiplock": "bool"})
def qemu_suspend(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock")
    g = _local_guest(ctx, "qemu")
    if g is None:
        raise ApiError(500, _no_config_on_node(ctx))
    if not g.running:
        raise ApiError(500, f"VM {g.vmid} not running")
    todisk = bool(ctx.params.get("todisk"))
    if todisk and g.ha is not None:
        raise ApiError(500, "Cannot suspend HA managed VM to disk")
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if msg := _locked(g, allowed=("backup",)):
            return _failed(msg)
        if todisk:
            if g.lock == "backup":
                return _failed("cannot suspend to disk during backup")

            def hibernate(_at: float) -> None:
                g.stop()
                g.lock = "suspended"

            return Work(t.direct("qmsuspend", g.vmid), effect=hibernate)

        def pause(_at: float) -> None:
            g.qmpstatus = "paused"

        return Work(t.direct("qmpause", g.vmid), effect=pause)

    return launch(ctx, "qmsuspend" if todisk else "qmpause", decide, lock_type="qemu")


@power_route("qemu", "resume", {"skiplock": "bool", "nocheck": "bool"})
def qemu_resume(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock", "nocheck")
    g = _local_guest(ctx, "qemu")
    if g is None:
        raise ApiError(500, _no_config_on_node(ctx))
    if not g.running and g.lock != "suspended":
        raise ApiError(500, f"VM {g.vmid} not running")
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if g.template:
            return _failed(f"VM {g.vmid} is a template and cannot be resumed!")
        if g.lock == "suspended":
            def restore(at: float) -> None:
                g.lock = None
                _start_guest(ctx.cluster, g)(at)

            return Work(t.direct("qmstart", g.vmid), effect=restore)
        if msg := _locked(g, allowed=("backup",)):
            return _failed(msg)
        if g.qmpstatus not in PAUSED_STATES:
            return Work(t.noop)  # running: OK, nothing done

        def unpause(_at: float) -> None:
            g.qmpstatus = "running"

        return Work(t.direct("qmresume", g.vmid), effect=unpause)

    return launch(ctx, "qmresume", decide, lock_type="qemu")


# ---- LXC (pve-container src/PVE/API2/LXC/Status.pm) -----------------------------------------------
def _ct_running(ctx: Ctx) -> SimGuest | None:
    """check_running is local: a container counts as running only on the node that runs it."""
    g = _local_guest(ctx, "lxc")
    return g if g is not None and g.running else None


@power_route("lxc", "start", {"skiplock": "bool", "debug": "bool"})
def lxc_start(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock")
    vmid = ctx.params["vmid"]
    if _ct_running(ctx) is not None:
        raise ApiError(500, f"CT {vmid} already running")
    _quorum(ctx.cluster)
    if (ha := _ha_guest(ctx)) is not None:
        return ha_request(ctx, ha, "started", "vzstart", _lrm_start(ctx.cluster, ha))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        g = _local_guest(ctx, "lxc")
        if g is None:
            return _failed(_missing_config(ctx, "lxc"))
        if g.template:
            return _failed("you can't start a CT if it's a template")
        if msg := _locked(g, allowed=("mounted",)):
            return _failed(msg)
        if g.running:
            return _failed(f"CT {vmid} already running")
        return Work(t.direct("vzstart", vmid), effect=_start_guest(ctx.cluster, g))

    return launch(ctx, "vzstart", decide, lock_type="lxc")


@power_route("lxc", "stop", {"skiplock": "bool", "overrule-shutdown": "bool"})
def lxc_stop(ctx: Ctx) -> str:
    _root_only(ctx, "skiplock")
    _overrule_shutdown(ctx)
    vmid = ctx.params["vmid"]
    g = _ct_running(ctx)
    if g is None:
        raise ApiError(500, f"CT {vmid} not running")
    if (ha := _ha_guest(ctx)) is not None:
        if "overrule-shutdown" in ctx.params:
            raise param_error({"overrule-shutdown": "Not applicable for HA resources."})
        return ha_request(ctx, ha, "stopped", "vzstop", _lrm_stop(ctx.cluster, ha, "vzstop"))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if msg := _locked(g, allowed=("mounted",)):
            return _failed(msg)
        if not g.running:
            return _failed(f"CT {vmid} not running")
        return Work(t.direct("vzstop", vmid), effect=_stop_guest(g))

    return launch(ctx, "vzstop", decide, lock_type="lxc")


@power_route("lxc", "shutdown", {"timeout": "uint", "forceStop": "bool"})
def lxc_shutdown(ctx: Ctx) -> str:
    vmid = ctx.params["vmid"]
    g = _ct_running(ctx)
    if g is None:
        raise ApiError(500, f"CT {vmid} not running")
    force = bool(ctx.params.get("forceStop"))
    timeout = ctx.params.get("timeout", 60)
    if (ha := _ha_guest(ctx)) is not None:
        return ha_request(ctx, ha, "stopped", "vzshutdown", _lrm_stop(ctx.cluster, ha, "vzshutdown", timeout=timeout))
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if msg := _locked(g):
            return _failed(msg)
        if not g.running:
            return _failed(f"CT {vmid} not running")
        return _shutdown_work(g, t.direct("vzshutdown", vmid), timeout, force, kind="lxc")

    return launch(ctx, "vzshutdown", decide, lock_type="lxc")


@power_route("lxc", "reboot", {"timeout": "uint"})
def lxc_reboot(ctx: Ctx) -> str:
    vmid = ctx.params["vmid"]
    g = _ct_running(ctx)
    if g is None:
        raise ApiError(500, f"VM {vmid} not running")  # sic: pve-container says "VM" here
    t = ctx.cluster.power
    timeout = ctx.params.get("timeout", 60)

    def decide(_at: float) -> Work:
        if msg := _locked(g):
            return _failed(msg)
        down = _shutdown_work(g, t.direct("vzshutdown", vmid), timeout, False, kind="lxc")
        if down.exitstatus != "OK":
            return down
        return Work(down.duration + t.vzreboot_start, effect=_start_guest(ctx.cluster, g))

    return launch(ctx, "vzreboot", decide, lock_type="lxc")


@power_route("lxc", "suspend", {})
def lxc_suspend(ctx: Ctx) -> str:
    vmid = ctx.params["vmid"]
    g = _ct_running(ctx)
    if g is None:
        raise ApiError(500, f"CT {vmid} not running")
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        if msg := _locked(g):
            return _failed(msg)

        def freeze(_at: float) -> None:
            g.qmpstatus = "paused"

        return Work(t.direct("vzsuspend", vmid), effect=freeze)

    return launch(ctx, "vzsuspend", decide, lock_type="lxc")


@power_route("lxc", "resume", {})
def lxc_resume(ctx: Ctx) -> str:
    vmid = ctx.params["vmid"]
    g = _local_guest(ctx, "lxc")
    if g is None or not g.running:
        raise ApiError(500, f"CT {vmid} not running")
    if g.qmpstatus not in PAUSED_STATES:
        raise ApiError(500, f"CT {vmid} already running")
    t = ctx.cluster.power

    def decide(_at: float) -> Work:
        def thaw(_at: float) -> None:
            g.qmpstatus = "running"

        return Work(t.direct("vzresume", vmid), effect=thaw)

    return launch(ctx, "vzresume", decide, lock_type="lxc")


# ---- HA's local resource manager ------------------------------------------------------------------
def _lrm_start(cluster: SimCluster, g: SimGuest) -> Callable[[float], Work | None]:
    def work(_at: float) -> Work | None:
        if g.running:
            return None
        key = "qmstart" if g.type == "qemu" else "vzstart"
        return Work(getattr(cluster.power, key), effect=_start_guest(cluster, g))

    return work


def _lrm_stop(
    cluster: SimCluster, g: SimGuest, task_type: str, *, timeout: int = 0
) -> Callable[[float], Work | None]:
    def work(_at: float) -> Work | None:
        if not g.running:
            return None
        if task_type in ("qmshutdown", "vzshutdown"):
            key = "qmshutdown" if g.type == "qemu" else "vzshutdown"
            # HA stops the guest hard when the graceful shutdown runs out of time
            return _shutdown_work(g, getattr(cluster.power, key), timeout or 60, True,
                                  kind="qemu" if g.type == "qemu" else "lxc")
        key = "qmstop" if g.type == "qemu" else "vzstop"
        return Work(getattr(cluster.power, key), effect=_stop_guest(g))

    return work
