"""The control API's aiohttp routes under /api/v1, with the auth guard and the error middleware.

Every route is declared once in ROUTES (method, path, scope, rate limit); `setup` registers them,
and openapi.py documents exactly these (a test compares the two). Every 4xx/5xx under /api/v1
leaves through `ApiProblem.response()`, so the body is always the error body of design §2.5.
With `control.enabled: false` only a catch-all is registered: everything answers 404.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from pve_exporter.control.audit import audit
from pve_exporter.control.auth import Principal
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.operations import (
    ACTIONS,
    RESOURCE_TYPES,
    STATUSES,
    HistoryError,
    Operation,
    OperationFilter,
    iso,
    parse_time,
)
from pve_exporter.control.plane import CONTROL_PLANE, ControlPlane
from pve_exporter.control.schemas import VMID_MAX, VMID_MIN, ActionBody, BulkBody

log = structlog.get_logger("pve_exporter.control.routes")

PREFIX = "/api/v1"
STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
UI_FILES = {"index.html": "text/html", "app.js": "application/javascript", "style.css": "text/css"}
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:~+/=-]{1,128}$")
_OP_ID = re.compile(r"^[0-9a-f]{32}$")
_ASCII_INT = re.compile(r"[0-9]{1,10}")  # not \d: that matches every Unicode digit, and int() takes them
_ASCII_VMID = re.compile(r"[0-9]{3,9}")
M = TypeVar("M", bound=BaseModel)

Handler = Callable[[web.Request, ControlPlane, Principal | None], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str  # relative to /api/v1
    handler: Handler
    scope: str | None  # None: public
    power_limited: bool = False

    @property
    def full_path(self) -> str:
        return PREFIX + self.path


ROUTES: list[RouteSpec] = []


def route(method: str, path: str, scope: str | None, *, power_limited: bool = False) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(RouteSpec(method, path, fn, scope, power_limited))
        return fn

    return deco


# ---- request helpers ----------------------------------------------------------------------------
def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


def _plane(request: web.Request) -> ControlPlane:
    plane = request.app.get(CONTROL_PLANE)
    if plane is None:
        raise ApiProblem("NOT_FOUND", "the control API is not running", details={"path": request.path})
    return plane


def _query(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise _invalid([{"field": k, "message": "unknown query parameter"} for k in unknown],
                       f"unknown query parameter(s): {', '.join(unknown)}")


def _invalid(errors: list[dict[str, str]], message: str | None = None) -> ApiProblem:
    return ApiProblem("INVALID_REQUEST", message or "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      details={"errors": errors})


def _values(request: web.Request, name: str) -> tuple[str, ...]:
    """A filter given as `?x=a&x=b` or `?x=a,b`."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(v.strip() for v in raw.split(",") if v.strip())
    return tuple(out)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = _values(request, name)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise _invalid([{"field": name, "message": f"{bad[0]!r} is not one of {', '.join(allowed)}"}])
    return values


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _ASCII_INT.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise _invalid([{"field": name, "message": f"must be an integer from {lo} to {hi}"}])
    return int(raw)


def _vmid(raw: str, field: str = "vmid") -> int:
    if not _ASCII_VMID.fullmatch(raw) or not VMID_MIN <= int(raw) <= VMID_MAX:
        raise _invalid([{"field": field, "message": f"must be an integer from {VMID_MIN} to {VMID_MAX}"}])
    return int(raw)


async def read_body(request: web.Request, model: type[M], max_bytes: int, *, required: bool) -> M:
    """The JSON body, bounded in size, validated strictly (unknown fields rejected)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiProblem("PAYLOAD_TOO_LARGE", f"the body may be at most {max_bytes} bytes",
                         details={"max_body_bytes": max_bytes, "content_length": request.content_length})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16_384):
        size += len(chunk)
        if size > max_bytes:
            raise ApiProblem("PAYLOAD_TOO_LARGE", f"the body may be at most {max_bytes} bytes",
                             details={"max_body_bytes": max_bytes})
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise _invalid([{"field": "body", "message": "a JSON object is required"}])
        raw = b"{}"
    elif request.content_type not in ("application/json", "application/octet-stream") and request.content_type:
        raise ApiProblem("UNSUPPORTED_MEDIA_TYPE", f"the body must be JSON, not {request.content_type}",
                         details={"content_type": request.content_type})
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in e.get("loc", ())) or "body"
            msg = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
            errors.append({"field": loc, "message": msg})
        raise _invalid(errors) from None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, ensure_ascii=False))


# ---- handlers -----------------------------------------------------------------------------------
@route("GET", "/whoami", "read")
async def whoami(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    return _json({"user": who.name, "scopes": sorted(who.scopes, key=("read", "power", "admin").index)})


@route("GET", "/clusters", "read")
async def list_clusters(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, set())
    return _json({"clusters": plane.cluster_views()})


@route("GET", "/guests", "read")
async def list_guests(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, {"cluster", "node", "type", "status", "tag"})
    clusters = _values(request, "cluster")
    for name in clusters:
        plane.runner.cluster(name)  # 404 for an unknown cluster
    types = _choice(request, "type", RESOURCE_TYPES)
    nodes, statuses, tags = _values(request, "node"), _values(request, "status"), _values(request, "tag")
    # the clusters' health with the list: an unreachable cluster is never just an empty list
    views = plane.cluster_views(clusters)
    names = clusters or tuple(plane.host.cluster_names())  # read on the loop: a reload may change the set

    def answer() -> bytes:
        guests = plane.guests(clusters=names, nodes=nodes, types=types, statuses=statuses, tags=tags)
        return orjson.dumps({"guests": guests, "total": len(guests), "clusters": views})

    # 20 000 guests take ~0.2 s to list and encode: off the event loop (snapshots are immutable), so
    # a page open on a big installation never holds up /metrics
    return web.Response(body=await asyncio.to_thread(answer), content_type="application/json")


@route("POST", "/clusters/{cluster}/guests/{vmid}/{action}", "power", power_limited=True)
async def guest_action(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    cluster = request.match_info["cluster"]
    vmid = _vmid(request.match_info["vmid"])
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise _invalid([{"field": "action", "message": f"must be one of {', '.join(ACTIONS)}"}])
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise _invalid([{"field": "Idempotency-Key", "message": "1 to 128 characters of A-Z a-z 0-9 . _ : ~ + / = -"}])
    body = await read_body(request, ActionBody, plane.cfg.max_body_bytes, required=False)
    timeout = body.timeout_seconds or plane.cfg.default_timeout_seconds
    sub = await plane.runner.submit(cluster=cluster, vmid=vmid, action=action, force=body.force,
                                    timeout_seconds=timeout, user=who.name, client_ip=client_ip(request),
                                    idempotency_key=key)  # fmt: skip
    headers = {"Location": f"{PREFIX}/operations/{sub.op.id}"}
    if sub.replayed:
        headers["Idempotent-Replayed"] = "true"
        op = await plane.store.get(sub.op.id) or sub.op
    else:
        op = sub.op
    return _json(op.as_api(), status=202, headers=headers)


@route("POST", "/actions", "power")  # the power limit is taken below: a dry run changes nothing, so it is free
async def bulk_action(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    body = await read_body(request, BulkBody, plane.cfg.max_body_bytes, required=True)
    if not body.dry_run:
        plane.check_power_rate(client_ip(request), who)
    view = await plane.bulk.submit(body, user=who.name, client_ip=client_ip(request),
                                   default_timeout=plane.cfg.default_timeout_seconds)
    if body.dry_run:
        return _json(view)
    return _json(view, status=202, headers={"Location": f"{PREFIX}/actions/{view['batch_id']}"})


@route("GET", "/actions/{batch_id}", "read")
async def get_batch(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, set())
    return _json(await plane.bulk.get(_batch_id(request)))


@route("DELETE", "/actions/{batch_id}", "power")
async def cancel_batch(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    return _json(await plane.bulk.cancel(_batch_id(request), user=who.name, client_ip=client_ip(request)))


def _batch_id(request: web.Request) -> str:
    batch_id = request.match_info["batch_id"]
    if not _OP_ID.match(batch_id):
        raise ApiProblem("BATCH_NOT_FOUND", f"no batch {batch_id!r}", details={"batch_id": batch_id})
    return batch_id


_OP_FILTERS = {"cluster", "node", "resource_type", "resource_id", "operation", "status", "user", "since", "until",
               "batch_id", "limit", "offset"}  # fmt: skip


@route("GET", "/operations", "read")
async def list_operations(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, _OP_FILTERS)
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        raw = request.query.get(name)
        try:
            times[name] = parse_time(raw) if raw is not None else None
        except ValueError as exc:
            raise _invalid([{"field": name, "message": str(exc)}]) from None
    flt = OperationFilter(
        cluster=_values(request, "cluster"), node=_values(request, "node"),
        resource_type=_choice(request, "resource_type", RESOURCE_TYPES),
        resource_id=tuple(_vmid(v, "resource_id") for v in _values(request, "resource_id")),
        operation=_choice(request, "operation", ACTIONS), status=_choice(request, "status", STATUSES),
        user=_values(request, "user"), batch_id=_values(request, "batch_id"),
        since=times["since"], until=times["until"],
    )  # fmt: skip
    limit = _int(request, "limit", 50, 1, 1000)
    offset = _int(request, "offset", 0, 0, 1_000_000_000)
    ops, total = await plane.store.query(flt, limit=limit, offset=offset)
    return _json({"operations": [op.as_api() for op in ops], "total": total, "limit": limit, "offset": offset})


@route("GET", "/operations/{id}", "read")
async def get_operation(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, set())
    return _json((await _operation(request, plane)).as_api())


@route("GET", "/operations/{id}/log", "read")
async def operation_log(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, {"start", "limit"})
    start = _int(request, "start", 0, 0, 1_000_000_000)
    limit = _int(request, "limit", 50, 1, 1000)
    return _json(await plane.task_log(await _operation(request, plane), start=start, limit=limit))


async def _operation(request: web.Request, plane: ControlPlane) -> Operation:
    op_id = request.match_info["id"]
    op = await plane.store.get(op_id) if _OP_ID.match(op_id) else None
    if op is None:
        raise ApiProblem("OPERATION_NOT_FOUND", f"no operation {op_id!r}", details={"id": op_id})
    return op


@route("POST", "/clusters/{cluster}/collect", "admin")
async def collect(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    name = request.match_info["cluster"]
    plane.runner.cluster(name)
    plane.trigger_collection(name)
    audit("collection triggered", user=who.name, client_ip=client_ip(request), cluster=name)
    return _json({"cluster": name, "triggered": True, "requested_at": iso(plane.clock())}, status=202)


@route("POST", "/reload", "admin")
async def reload_config(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    assert who is not None
    _query(request, set())
    host = plane.host
    if host.config_path is None:
        raise ApiProblem("RELOAD_UNAVAILABLE", "the daemon was started without a config file")
    ok = await host.reload()
    audit("config reload requested", user=who.name, client_ip=client_ip(request), result="ok" if ok else "failed")
    if not ok:
        raise ApiProblem("RELOAD_FAILED", "the config file is invalid; the running config was kept (see the log)")
    return _json({"reloaded": True, "clusters": host.cluster_names()})


@route("GET", "/openapi.json", None)
async def openapi_doc(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    from pve_exporter.control.openapi import document

    _query(request, set())
    return _json(document())


# ---- guard, middleware, registration --------------------------------------------------------------
def guarded(spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        plane = _plane(request)
        who: Principal | None = None
        ip = client_ip(request)
        if spec.scope is not None:
            plane.check_available()
            who = plane.authenticate(request.headers.get("Authorization"), ip, spec.scope, request.path)
        if spec.power_limited:
            plane.check_power_rate(ip, who)
        try:
            return await spec.handler(request, plane, who)
        except HistoryError as exc:  # COORDINATION_UNAVAILABLE: the shared history in PostgreSQL (coord/history.py)
            raise ApiProblem(getattr(exc, "code", "HISTORY_UNAVAILABLE"), "the operation history failed; the request "
                             "was not carried out", details={"reason": str(exc)}) from None

    handler.__name__ = spec.handler.__name__
    return handler


_STATUS_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under /api/v1: a request id bound to every log line, every error in the design's error body
    (carrying that id), no caching of answers."""
    if not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
        return await handler(request)
    rid = uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            resp = await handler(request)
        except ApiProblem as problem:
            resp = problem.response(rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, "INVALID_REQUEST" if exc.status < 500 else "INTERNAL_ERROR")
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            msg = {404: f"no route {request.method} {request.path}",
                   405: f"{request.method} is not allowed on {request.path}"}.get(exc.status, exc.reason)  # fmt: skip
            details = {"path": request.path, "method": request.method}
            resp = ApiProblem(code, msg, details=details, headers=headers).response(rid)
        except Exception:
            log.exception("control API request failed", method=request.method, path=request.path)
            resp = ApiProblem("INTERNAL_ERROR", "unexpected error; see the daemon log").response(rid)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Request-ID"] = rid
    return resp


async def _disabled(request: web.Request) -> web.StreamResponse:
    raise ApiProblem("NOT_FOUND", "the control API is disabled (control.enabled: false)",
                     details={"path": request.path})


async def _ui(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    if name not in UI_FILES:
        raise web.HTTPNotFound(text="not found\n")
    resp = web.FileResponse(STATIC_DIR / name)
    resp.content_type = UI_FILES[name]
    resp.headers["Cache-Control"] = "no-cache"  # security headers: htmlsecurity's response hook
    return resp


async def _ui_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def setup(app: web.Application, plane: ControlPlane | None) -> None:
    """Register /api/v1 (all routes, or the 404 catch-all without a plane) and the page under /ui/;
    the handlers find the plane under `CONTROL_PLANE`."""
    app.middlewares.append(error_middleware)
    if plane is None:
        app.router.add_route("*", PREFIX + "{tail:(/.*)?}", _disabled)
        return
    app[CONTROL_PLANE] = plane

    async def stop_sending(_app: web.Application) -> None:
        plane.begin_shutdown()  # first thing on SIGTERM: before open requests are waited for

    app.on_shutdown.append(stop_sending)
    for spec in ROUTES:
        app.router.add_route(spec.method, spec.full_path, guarded(spec))
    app.router.add_get("/ui", _ui_redirect)
    app.router.add_get("/ui/", _ui)
    app.router.add_get("/ui/{name}", _ui)


from pve_exporter.control import guest_backups as _guest_backups  # noqa: E402, F401  (registers its route)
