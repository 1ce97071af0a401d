"""The read-only PVE endpoints (§2, §3 of pve-api.md), registered into the route table."""

from __future__ import annotations

from typing import Any

from pve_exporter.simulator import render
from pve_exporter.simulator.errors import ApiError, param_error, permission_error
from pve_exporter.simulator.model import SimNode
from pve_exporter.simulator.routing import Ctx, Reply, api
from pve_exporter.simulator.upid import parse_upid

RESOURCE_TYPES = ("vm", "storage", "node", "sdn")


# ---- cluster endpoints ----------------------------------------------------------------------------
@api("GET", "/version")
def _version(ctx: Ctx) -> Any:
    return render.version(ctx.cluster)


@api("GET", "/cluster/status", perm=("/", "Sys.Audit"))
def _cluster_status(ctx: Ctx) -> Any:
    return render.cluster_status(ctx.cluster)


@api("GET", "/cluster/resources", params={"type": RESOURCE_TYPES})
def _cluster_resources(ctx: Ctx) -> Any:
    return render.cluster_resources(ctx.cluster, ctx.now, ctx.caller, ctx.params.get("type"))


@api("GET", "/cluster/tasks")
def _cluster_tasks(ctx: Ctx) -> Any:
    return render.cluster_tasks(ctx.cluster, ctx.now, ctx.caller)


@api("GET", "/cluster/backup-info/not-backed-up", perm=("/", "Sys.Audit"))
def _not_backed_up(ctx: Ctx) -> Any:
    return render.not_backed_up(ctx.cluster)


@api("GET", "/cluster/config/qdevice", perm=("/", "Sys.Audit"))
def _qdevice(ctx: Ctx) -> Any:
    return render.qdevice(ctx.cluster)


@api("GET", "/cluster/ha/status/current", perm=("/", "Sys.Audit"))
def _ha_current(ctx: Ctx) -> Any:
    return render.ha_status_current(ctx.cluster, ctx.now)


@api("GET", "/cluster/ha/status/manager_status", perm=("/", "Sys.Audit"))
def _ha_manager(ctx: Ctx) -> Any:
    return render.ha_manager_status(ctx.cluster, ctx.now)


@api("GET", "/cluster/replication")
def _cluster_replication(ctx: Ctx) -> Any:
    return render.cluster_replication(ctx.cluster, ctx.caller)


@api("GET", "/cluster/ceph/status", perm=("/", "Sys.Audit"))
def _ceph_status(ctx: Ctx) -> Any:
    if not ctx.cluster.ceph:
        raise ApiError(500, "binary not installed: /usr/bin/ceph-mon")
    return render.ceph_status(ctx.cluster)


@api("GET", "/nodes")
def _nodes(ctx: Ctx) -> Any:
    return render.nodes_list(ctx.cluster, ctx.now, ctx.caller)


# ---- node endpoints (proxied to the node) ---------------------------------------------------------
@api("GET", "/nodes/{node}/status", proxied=True, perm=("/nodes/{node}", "Sys.Audit"))
def _node_status(ctx: Ctx) -> Any:
    return render.node_status(ctx.cluster, _node(ctx), ctx.now)


@api("GET", "/nodes/{node}/version", proxied=True)
def _node_version(ctx: Ctx) -> Any:
    return render.node_version(ctx.cluster)


@api("GET", "/nodes/{node}/qemu", proxied=True, params={"full": "bool"})
def _qemu_list(ctx: Ctx) -> Any:
    full = bool(ctx.params.get("full"))
    return render.guest_list(ctx.cluster, _node(ctx), ctx.now, ctx.caller, "qemu", full)


@api("GET", "/nodes/{node}/lxc", proxied=True)
def _lxc_list(ctx: Ctx) -> Any:
    return render.guest_list(ctx.cluster, _node(ctx), ctx.now, ctx.caller, "lxc", False)


_GUEST_PERM = ("/vms/{vmid}", "VM.Audit")


@api("GET", "/nodes/{node}/qemu/{vmid}/status/current", proxied=True, perm=_GUEST_PERM)
def _qemu_current(ctx: Ctx) -> Any:
    return render.qemu_status(ctx.cluster, _node(ctx), _guest(ctx, "qemu"), ctx.now)


@api("GET", "/nodes/{node}/lxc/{vmid}/status/current", proxied=True, perm=_GUEST_PERM)
def _lxc_current(ctx: Ctx) -> Any:
    return render.lxc_status(ctx.cluster, _node(ctx), _guest(ctx, "lxc"), ctx.now)


@api("GET", "/nodes/{node}/qemu/{vmid}/config", proxied=True, perm=_GUEST_PERM,
     params={"current": "bool", "snapshot": "str"})
def _qemu_config(ctx: Ctx) -> Any:
    g = _guest(ctx, "qemu")
    _no_snapshot(ctx)
    return render.qemu_config(ctx.cluster, g)


@api("GET", "/nodes/{node}/lxc/{vmid}/config", proxied=True, perm=_GUEST_PERM,
     params={"current": "bool", "snapshot": "str"})
def _lxc_config(ctx: Ctx) -> Any:
    g = _guest(ctx, "lxc")
    _no_snapshot(ctx)
    return render.lxc_config(ctx.cluster, g)


@api("GET", "/nodes/{node}/storage", proxied=True,
     params={"content": "str", "enabled": "bool", "format": "bool", "storage": "str", "target": "str"})
def _node_storage(ctx: Ctx) -> Any:
    p = ctx.params
    return render.node_storage(ctx.cluster, _node(ctx), ctx.caller, content=p.get("content"),
                               enabled=p.get("enabled"), storage=p.get("storage"))


@api("GET", "/nodes/{node}/replication", proxied=True, params={"guest": "int"})
def _node_replication(ctx: Ctx) -> Any:
    return render.node_replication(ctx.cluster, _node(ctx), ctx.now, ctx.caller, ctx.params.get("guest"))


@api("GET", "/nodes/{node}/subscription", proxied=True, perm=("/nodes/{node}", "Sys.Audit"))
def _subscription(ctx: Ctx) -> Any:
    return render.subscription(_node(ctx))


_STATUSFILTER = ("ok", "warning", "error", "unknown")


@api("GET", "/nodes/{node}/tasks", proxied=True, params={
    "start": "uint", "limit": "uint", "userfilter": "str", "typefilter": "str", "vmid": "int",
    "errors": "bool", "source": ("archive", "active", "all"), "since": "int", "until": "int",
    "statusfilter": "list",
})
def _node_tasks(ctx: Ctx) -> Any:
    p = ctx.params
    bad = [s for s in p.get("statusfilter") or () if s not in _STATUSFILTER]
    if bad:
        raise param_error({"statusfilter": f"value '{bad[0]}' does not have a value in the enumeration "
                                           f"'{', '.join(_STATUSFILTER)}'"})
    page, total = render.node_tasks(
        _node(ctx), ctx.now, ctx.caller, start=p.get("start", 0), limit=p.get("limit", 50),
        source=p.get("source", "archive"), typefilter=p.get("typefilter"), userfilter=p.get("userfilter"),
        vmid=p.get("vmid"), errors=bool(p.get("errors")), since=p.get("since"), until=p.get("until"),
        statusfilter=p.get("statusfilter"),
    )
    return Reply(page, total)


@api("GET", "/nodes/{node}/tasks/{upid}/status", proxied=True)
def _task_status(ctx: Ctx) -> Any:
    return render.task_status(_task(ctx), ctx.now)


@api("GET", "/nodes/{node}/tasks/{upid}/log", proxied=True,
     params={"start": "uint", "limit": "uint", "download": "bool"})
def _task_log(ctx: Ctx) -> Any:
    lines, total = render.task_log(_task(ctx), ctx.now, ctx.params.get("start", 0), ctx.params.get("limit", 50))
    return Reply(lines, total)


def _node(ctx: Ctx) -> SimNode:
    assert ctx.node is not None  # proxied routes always resolve their node first
    return ctx.node


def _guest(ctx: Ctx, type_: str) -> Any:
    node = _node(ctx)
    vmid = ctx.params["vmid"]
    g = ctx.cluster.guest_on(node.name, vmid, type_)
    if g is None:
        conf = f"qemu-server/{vmid}.conf" if type_ == "qemu" else f"lxc/{vmid}.conf"
        raise ApiError(500, f"Configuration file 'nodes/{node.name}/{conf}' does not exist")
    return g


def _no_snapshot(ctx: Ctx) -> None:
    if (snap := ctx.params.get("snapshot")) is not None:
        raise ApiError(500, f"snapshot '{snap}' does not exist")


def _task(ctx: Ctx) -> Any:
    node = _node(ctx)
    upid = parse_upid(ctx.args["upid"])
    if upid is None:
        raise param_error({"upid": "unable to parse worker upid"})
    task = ctx.cluster.find_task(node.name, upid.text) if upid.node == node.name else None
    if task is None:
        raise param_error({"upid": "no such task"})
    if task.upid.user != ctx.caller.authid and not ctx.caller.has("Sys.Audit"):
        raise permission_error(f"/nodes/{ctx.args['node']}", "Sys.Audit")
    return task
