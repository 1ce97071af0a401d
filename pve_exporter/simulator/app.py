"""The aiohttp application of one simulated cluster: the `/api2/json` request pipeline.

A request goes through the stages real pveproxy uses, in its order (pve-api.md §1):
global latency -> injected faults -> authentication (401, delayed) -> routing (501) ->
permission (403) -> proxying to the node (500 lookup / 595) -> parameters (400) -> handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web

from pve_exporter.simulator import agent as _agent  # noqa: F401  (registers the guest agent fsinfo)
from pve_exporter.simulator import backups as _backups  # noqa: F401  (registers storage content)
from pve_exporter.simulator import endpoints as _endpoints  # noqa: F401  (registers the GET routes)
from pve_exporter.simulator import hardware_api as _hardware  # noqa: F401  (pools, ZFS, disks, certificates)
from pve_exporter.simulator import power as _power  # noqa: F401  (registers the power-action POST routes)
from pve_exporter.simulator import rrd as _rrd  # noqa: F401  (registers node rrddata)
from pve_exporter.simulator.auth import AuthError, Caller, authenticate
from pve_exporter.simulator.control import ControlApi
from pve_exporter.simulator.errors import ApiError, EmptyError, param_error, permission_error
from pve_exporter.simulator.faults import PROXY_FAILURE_REASONS, Fault
from pve_exporter.simulator.model import SimCluster, Simulator
from pve_exporter.simulator.routing import Ctx, Reply, Route, match_route, validate_params

TIMEOUT_FAULT_CAP = 120.0  # s: a `timeout` fault hangs until the client leaves or this passes
NODE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_NODE_IN_PATH = re.compile(r"^/nodes/([^/]+)")


@dataclass
class AppState:
    sim: Simulator
    cluster: SimCluster
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


STATE_KEY = web.AppKey("pve_simulator_state", AppState)


# ---- responses --------------------------------------------------------------------------------------
def _pve_headers() -> dict[str, str]:
    now = formatdate(usegmt=True)
    return {"Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0", "Pragma": "no-cache", "Expires": now}


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(request: web.Request, sim: Simulator, payload: dict[str, Any]) -> web.Response:
    body = _json_body(payload)
    headers = _pve_headers()
    headers["Content-Type"] = "application/json;charset=UTF-8"
    # Big bodies (a 20k-guest /cluster/resources) are compressed in a thread, off the event loop.
    resp = web.Response(body=body, headers=headers, zlib_executor_size=256 * 1024)
    if sim.compress and len(body) > 1024 and request.headers.get("Accept-Encoding"):
        resp.enable_compression()
    return resp


def error_response(cluster: SimCluster, err: ApiError) -> web.Response:
    """PVE's error envelope; `message` only from 8.4; reason = first line; connection closed."""
    body: dict[str, Any] = {"data": None}
    if err.errors:
        body["errors"] = err.errors
    if cluster.version.error_message_in_body:
        body["message"] = err.message if err.message.endswith("\n") else err.message + "\n"
    headers = _pve_headers()
    headers["Content-Type"] = "application/json;charset=UTF-8"
    resp = web.Response(status=err.status, reason=_reason(err.message), body=_json_body(body), headers=headers)
    resp.force_close()
    return resp


def empty_response(status: int, reason: str) -> web.Response:
    """401s and relay failures: no body, no Content-Type, connection closed."""
    resp = web.Response(status=status, reason=_reason(reason), headers=_pve_headers())
    resp.force_close()
    return resp


def _reason(message: str) -> str:
    return message.strip().splitlines()[0].replace("\r", "") if message.strip() else "Error"


def bad_token_reason(cluster: SimCluster) -> str:
    return "Authentication failed!" if cluster.version.generic_auth_failure else "invalid token value!"


# ---- the /api2 handler ------------------------------------------------------------------------------
async def handle_api(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    sim, cluster = state.sim, state.cluster
    path, method = request.path, request.method
    if path != "/api2/json" and not path.startswith("/api2/json/"):
        return error_response(cluster, ApiError(501, "no such uri"))
    rel = path[len("/api2/json"):].rstrip("/") or "/"
    route, args = match_route(method, rel)
    node_arg = args.get("node")
    if node_arg is None and (m := _NODE_IN_PATH.match(rel)):
        node_arg = m.group(1)
    cluster.stats.record(method, route.template if route else rel, node_arg)
    try:
        if sim.latency_ms:
            await asyncio.sleep(sim.latency_ms / 1000)
        await _apply_faults(state, method, rel, node_arg, route, args)
        caller = authenticate(request.headers.get("Authorization"), request.headers.get("Cookie"),
                              sim.tokens, cluster.version)
        return json_response(request, sim, await _dispatch(cluster, method, rel, route, args, caller, request))
    except AuthError as exc:
        if sim.auth_delay:
            await asyncio.sleep(sim.auth_delay)  # PVE delays every 401 by 3 s
        return empty_response(401, exc.reason)
    except EmptyError as exc:
        return empty_response(exc.status, exc.reason)
    except ApiError as exc:
        return error_response(cluster, exc)


async def _raw_params(request: web.Request) -> dict[str, str]:
    """Body parameters (form or JSON) overridden by query parameters, all as strings."""
    raw: dict[str, str] = {}
    if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise param_error({"body": "unable to parse JSON body"}) from None
            if isinstance(body, dict):
                for key, value in body.items():
                    if isinstance(value, bool):  # JSON true/false is accepted for booleans
                        raw[key] = "1" if value else "0"
                    else:
                        raw[key] = value if isinstance(value, str) else json.dumps(value)
        else:
            form = await request.post()
            raw.update({k: str(v) for k, v in form.items()})
    for key in request.query:
        raw[key] = request.query.getall(key)[-1]
    return raw


async def _dispatch(
    cluster: SimCluster, method: str, rel: str, route: Route | None, args: dict[str, str],
    caller: Caller, request: web.Request,
) -> dict[str, Any]:
    if method == "HEAD":
        raise ApiError(501, "method 'HEAD' not available")
    if route is None:
        raise ApiError(501, f"Method '{method} {rel}' not implemented")
    now = cluster.now()
    cluster.advance(now)
    if "node" in args and not NODE_RE.match(args["node"]):
        raise param_error({"node": "value does not look like a valid node name"})
    if route.perm is not None:
        acl_path, privilege = route.perm
        if not caller.has(privilege):
            raise permission_error(acl_path.format(**args), privilege)
    node = None
    if route.proxied:
        name = args["node"]
        node = cluster.resolve_node(name)
        if node is None:
            raise ApiError(500, f"hostname lookup '{name}' failed - failed to get address info for: "
                                f"{name}: Name or service not known")
        if not node.online:
            raise EmptyError(595, "No route to host")
    params = validate_params(route, await _raw_params(request), args)
    result = route.handler(Ctx(cluster, now, caller, args, params, node))
    if inspect.isawaitable(result):  # handlers may be async (e.g. a power action's sync part)
        result = await result
    if isinstance(result, Reply):
        payload: dict[str, Any] = {"data": result.data}
        if result.total is not None:
            payload["total"] = result.total
        return payload
    return {"data": result}


async def _apply_faults(
    state: AppState, method: str, rel: str, node: str | None, route: Route | None, args: dict[str, str]
) -> None:
    faults = state.cluster.faults.take(method, rel, node)
    for f in faults:
        if f.kind == "slow":
            await asyncio.sleep(f.latency_ms / 1000)
    for f in faults:
        if f.kind != "slow":
            await _raise_fault(state, f, route, args)


async def _raise_fault(state: AppState, f: Fault, route: Route | None, args: dict[str, str]) -> None:
    cluster = state.cluster
    if f.kind == "timeout":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), TIMEOUT_FAULT_CAP)
        raise EmptyError(596, "Connection timed out")
    if f.kind == "auth_fail":
        raise AuthError(f.message or bad_token_reason(cluster))
    if f.kind == "forbidden":
        if f.message:
            raise ApiError(403, f.message)
        acl_path, privilege = route.perm if route and route.perm else ("/", "Sys.Audit")
        with contextlib.suppress(KeyError, IndexError):
            acl_path = acl_path.format(**args)
        raise permission_error(acl_path, privilege)
    if f.kind == "http_error":
        if f.status >= 595:
            raise EmptyError(f.status, f.message or PROXY_FAILURE_REASONS.get(f.status, "Connection timed out"))
        if f.status == 401:
            raise AuthError(f.message or bad_token_reason(cluster))
        try:
            default = HTTPStatus(f.status).phrase
        except ValueError:
            default = "simulated error"
        raise ApiError(f.status, f.message or default)


def make_app(sim: Simulator, cluster: SimCluster) -> web.Application:
    """One application per cluster; each listens on its own port like a separate PVE host."""
    app = web.Application()
    state = AppState(sim, cluster)
    app[STATE_KEY] = state

    async def _on_shutdown(_app: web.Application) -> None:
        state.stopping.set()  # release requests held by `timeout` faults

    app.on_shutdown.append(_on_shutdown)
    app.router.add_routes(ControlApi(sim, cluster).routes())
    app.router.add_route("*", "/api2/{tail:.*}", handle_api)
    return app
