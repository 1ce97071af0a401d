"""The OpenAPI 3.1 document of the control API: every route, parameter, body, answer and error.

Request bodies come from the pydantic models that validate them (schemas.py), error codes from
the catalogue that produces them (errors.py), and the route list must equal routes.ROUTES (a
test compares both with the aiohttp router), so the document cannot drift from the code.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pve_exporter import __version__
from pve_exporter.control.errors import CATALOGUE
from pve_exporter.control.operations import ACTIONS, RESOURCE_TYPES, STATUSES
from pve_exporter.control.routes import PREFIX, ROUTES
from pve_exporter.control.schemas import VMID_MAX, VMID_MIN, ActionBody, BulkBody

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME = {"type": "string", "format": "date-time"}
_STR = {"type": "string"}
_VMID = {"type": "integer", "minimum": VMID_MIN, "maximum": VMID_MAX}

OPERATION: Json = {
    "type": "object",
    "description": "One power action on one guest. Times are UTC (ISO 8601); duration_seconds is finished - started.",
    "required": ["id", "requested_at", "started_at", "finished_at", "duration_seconds", "cluster", "node",
                 "resource_type", "resource_id", "resource_name", "operation", "force", "status", "user",
                 "client_ip", "upid", "error_message", "batch_id"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "requested_at": _TIME,
        "started_at": _nullable(_TIME),
        "finished_at": _nullable(_TIME),
        "duration_seconds": _nullable({"type": "number", "minimum": 0}),
        "cluster": _STR,
        "node": _nullable(_STR),
        "resource_type": _nullable({"type": "string", "enum": list(RESOURCE_TYPES)}),
        "resource_id": _VMID,
        "resource_name": _nullable(_STR),
        "operation": {"type": "string", "enum": list(ACTIONS)},
        "force": {"type": "boolean"},
        "status": {"type": "string", "enum": list(STATUSES), "description":
                   "pending → running → succeeded | failed | timed_out; cancelled (queued bulk member); "
                   "interrupted (daemon stopped/crashed and the outcome could not be read back)"},
        "user": {"type": "string", "description": "Name of the control token that asked"},
        "client_ip": _nullable(_STR),
        "upid": _nullable({"type": "string", "description": "PVE task id being (or last) followed"}),
        "error_message": _nullable({"type": "string", "description": "PVE's own message when PVE refused"}),
        "batch_id": _nullable(_STR),
    },
}  # fmt: skip

GUEST: Json = {
    "type": "object",
    "description": "A guest as of the cluster's latest snapshot; the figures come from the same /cluster/resources "
                   "rows (no PVE call per request) and are null while the guest is not running or PVE gave none.",
    "required": ["cluster", "vmid", "name", "node", "type", "status", "template", "tags", "active_operation",
                 "node_online", "cpu", "maxcpu", "mem", "maxmem", "uptime", "data_age_seconds", "last_backup"],
    "additionalProperties": False,
    "properties": {
        "cluster": _STR, "vmid": _VMID, "name": _nullable(_STR), "node": _STR,
        "type": {"type": "string", "enum": list(RESOURCE_TYPES)},
        "status": {"type": "string", "description": "As /cluster/resources: running, stopped, paused, unknown, ..."},
        "template": {"type": "boolean"}, "tags": {"type": "array", "items": _STR},
        "active_operation": _nullable({"type": "string", "description": "Operation holding this guest now"}),
        "node_online": {"type": "boolean", "description": "The guest's node is online (cluster status)"},
        "cpu": _nullable({"type": "number", "minimum": 0, "description": "CPU use as a share of maxcpu (1 = all)"}),
        "maxcpu": _nullable({"type": "number", "minimum": 0}),
        "mem": _nullable({"type": "integer", "description": "Memory in use, bytes"}),
        "maxmem": _nullable({"type": "integer", "description": "Memory configured, bytes"}),
        "uptime": _nullable({"type": "integer", "description": "Seconds since the guest started"}),
        "data_age_seconds": _nullable({"type": "number", "minimum": 0,
                                       "description": "Age of the /cluster/resources rows these figures come from"}),
        "last_backup": _nullable({"type": "string", "format": "date-time",
                                  "description": "Newest backup over every source (PVE backup storages and linked "
                                                 "Proxmox Backup Servers); null when none is known"}),
    },
}  # fmt: skip

_NULL_STR = {"type": ["string", "null"]}
GUEST_BACKUPS: Json = {
    "type": "object",
    "description": "A guest's backups from every source: `storage` (a PVE backup storage: storage, node, volid as "
                   "id) or `pbs` (a linked Proxmox Backup Server: server, datastore, namespace). `verification` is "
                   "null when the backup was never verified; `last_backup` is the newest `time` of all.",
    "required": ["cluster", "vmid", "type", "name", "last_backup", "backups", "sources", "errors"],
    "additionalProperties": False,
    "properties": {
        "cluster": _STR, "vmid": {"type": "integer"}, "type": {"type": "string", "enum": ["qemu", "lxc"]},
        "name": _NULL_STR, "last_backup": {"type": ["string", "null"], "format": "date-time"},
        "sources": {"type": "integer", "minimum": 0, "description": "Listings asked (storages and PBS datastores)"},
        "backups": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["source", "storage", "node", "server", "datastore", "namespace", "id", "time", "size",
                         "verification", "protected"],
            "properties": {
                "source": {"type": "string", "enum": ["storage", "pbs"]}, "storage": _NULL_STR, "node": _NULL_STR,
                "server": _NULL_STR, "datastore": _NULL_STR, "namespace": _NULL_STR, "id": _STR, "time": _TIME,
                "size": {"type": ["integer", "null"]}, "verification": {"enum": ["ok", "failed", None]},
                "protected": {"type": ["boolean", "null"]},
            },
        }},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["source", "where", "kind", "message"], "additionalProperties": False,
            "properties": {"source": {"type": "string", "enum": ["storage", "pbs"]}, "where": _STR, "kind": _STR,
                           "message": _STR},
        }},
    },
}  # fmt: skip

TASK_LOG: Json = {
    "type": "object",
    "description": "One page of PVE's task log for the operation's UPID, as PVE pages it (n is 1-based; start skips "
                   "lines). A running task's log grows; its last line is TASK OK / TASK ERROR: ... once it ended.",
    "required": ["operation_id", "operation_status", "upid", "node", "start", "limit", "total", "lines"],
    "additionalProperties": False,
    "properties": {
        "operation_id": _STR, "operation_status": {"type": "string", "enum": list(STATUSES)}, "upid": _STR,
        "node": _STR, "start": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1},
        "total": {"type": "integer", "minimum": 0, "description": "Lines in the whole log"},
        "lines": {"type": "array", "items": {"type": "object", "required": ["n", "t"], "additionalProperties": False,
                                             "properties": {"n": {"type": "integer"}, "t": _STR}}},
    },
}  # fmt: skip

ENDPOINT: Json = {
    "type": "object",
    "required": ["url", "up", "last_error", "last_change"],
    "additionalProperties": False,
    "properties": {"url": _STR, "up": _nullable({"type": "boolean"}), "last_error": _nullable(_STR),
                   "last_change": _nullable(_TIME)},
}  # fmt: skip

CLUSTER: Json = {
    "type": "object",
    "required": ["name", "health", "endpoints", "last_success", "age_seconds", "fresh", "interval_seconds",
                 "guests", "guests_running", "nodes", "nodes_online", "failing_collectors"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "health": {"type": "string", "enum": ["ok", "partial", "unreachable", "starting"]},
        "endpoints": {"type": "array", "items": _ref("Endpoint")},
        "last_success": _nullable(_TIME),
        "age_seconds": _nullable({"type": "number"}),
        "fresh": {"type": "boolean", "description": "Last success within the cluster's stale_after"},
        "interval_seconds": {"type": "number"},
        "guests": {"type": "integer", "minimum": 0},
        "guests_running": {"type": "integer", "minimum": 0},
        "nodes": {"type": "integer", "minimum": 0},
        "nodes_online": {"type": "integer", "minimum": 0},
        "failing_collectors": {"type": "array", "items": _STR},
    },
}  # fmt: skip

_GUEST_BRIEF = {
    "cluster": _nullable(_STR), "vmid": _VMID, "node": _nullable(_STR),
    "type": _nullable({"type": "string", "enum": list(RESOURCE_TYPES)}), "name": _nullable(_STR),
    "status": _nullable(_STR),
}  # fmt: skip

SKIPPED: Json = {
    "type": "object",
    "required": ["cluster", "vmid", "node", "type", "name", "status", "reason", "message"],
    "properties": {
        **_GUEST_BRIEF,
        "reason": {"type": "string", "enum": ["template", "status_unknown", "already_running", "already_stopped",
                                              "not_running", "busy", "not_found"]},
        "message": _STR,
        "operation_id": {"type": "string"},
    },
    "additionalProperties": False,
}  # fmt: skip

BATCH: Json = {
    "type": "object",
    "required": ["batch_id", "requested_at", "user", "client_ip", "action", "force", "concurrency",
                 "timeout_seconds", "selector", "status", "total", "finished", "counts", "cancelled_at",
                 "operations", "skipped"],
    "additionalProperties": False,
    "properties": {
        "batch_id": _STR, "requested_at": _TIME, "user": _STR, "client_ip": _nullable(_STR),
        "action": {"type": "string", "enum": list(ACTIONS)}, "force": {"type": "boolean"},
        "concurrency": {"type": "integer"}, "timeout_seconds": {"type": "number"},
        "selector": {"type": "object"},
        "status": {"type": "string", "enum": ["queued", "running", "finished", "cancelled"]},
        "total": {"type": "integer"}, "finished": {"type": "integer"},
        "counts": {"type": "object", "required": list(STATUSES), "additionalProperties": False,
                   "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES}},
        "cancelled_at": _nullable(_TIME),
        "operations": {"type": "array", "items": _ref("Operation")},
        "skipped": {"type": "array", "items": _ref("Skipped")},
        "warnings": {"type": "array", "items": _STR},
        "cancelled_now": {"type": "array", "items": _STR, "description": "DELETE: operations cancelled by this call"},
    },
}  # fmt: skip

DRY_RUN: Json = {
    "type": "object",
    "required": ["dry_run", "action", "force", "timeout_seconds", "selector", "would_run", "skipped", "warnings"],
    "additionalProperties": False,
    "properties": {
        "dry_run": {"const": True}, "action": {"type": "string", "enum": list(ACTIONS)},
        "force": {"type": "boolean"}, "timeout_seconds": {"type": "number"}, "selector": {"type": "object"},
        "would_run": {"type": "array", "items": {
            "type": "object", "required": [*_GUEST_BRIEF, "pve_calls"], "additionalProperties": False,
            "properties": {**_GUEST_BRIEF, "pve_calls": {"type": "array", "items": _STR}},
        }},
        "skipped": {"type": "array", "items": _ref("Skipped")},
        "warnings": {"type": "array", "items": _STR},
    },
}  # fmt: skip

ERROR: Json = {
    "type": "object",
    "description": "The one error body of every 4xx/5xx (design §2.5).",
    "required": ["success", "error", "error_code", "details", "recovery_suggestions", "request_id", "timestamp"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": False},
        "error": _STR,
        "error_code": {"type": "string", "enum": sorted(CATALOGUE)},
        "details": {"type": "object"},
        "recovery_suggestions": {"type": "array", "items": _STR},
        "request_id": _STR,
        "timestamp": _TIME,
    },
}


def _body_schemas() -> dict[str, Json]:
    out: dict[str, Json] = {}
    for model in (ActionBody, BulkBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.__name__] = schema
    return out


def _error_responses(codes: list[str]) -> dict[str, Json]:
    """One response per HTTP status; its description lists the error codes it may carry."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CATALOGUE[code].status, []).append(code)
    out: dict[str, Json] = {}
    for status in sorted(by_status):
        text = "; ".join(f"`{c}`: {CATALOGUE[c].meaning}" for c in by_status[status])
        resp: Json = {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
        if status == 429:
            resp["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        if status == 401:
            resp["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[str(status)] = resp
    return out


def _json_response(description: str, schema: Json, headers: Json | None = None) -> Json:
    resp: Json = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        resp["headers"] = headers
    return resp


def _param(name: str, where: str, schema: Json, description: str, *, required: bool = False,
           explode: bool | None = None) -> Json:
    p: Json = {"name": name, "in": where, "schema": schema, "description": description}
    if required or where == "path":
        p["required"] = True
    if explode is not None:
        p["style"], p["explode"] = "form", explode
    return p


def _multi(name: str, items: Json, description: str) -> Json:
    return _param(name, "query", {"type": "array", "items": items}, description + " (repeat, or comma-separate)",
                  explode=True)


_CLUSTER_P = _param("cluster", "path", {"type": "string"}, "A configured cluster name")
_LOCATION = {"Location": {"description": "Where to follow the result", "schema": {"type": "string"}}}
# Every route behind a token: auth, and the history being unusable (the control API is then off).
_AUTH_ERRORS = ["UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED", "HISTORY_UNAVAILABLE", "INTERNAL_ERROR"]
_BODY_ERRORS = ["INVALID_REQUEST", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE"]

# (method, path) -> operation object without security/errors (added from the route table)
_OPS: dict[tuple[str, str], tuple[Json, list[str]]] = {
    ("GET", "/whoami"): ({
        "summary": "The calling token's name and effective scopes",
        "responses": {"200": _json_response("The token", {
            "type": "object", "required": ["user", "scopes"], "additionalProperties": False,
            "properties": {"user": _STR, "scopes": {"type": "array", "items": {"enum": ["read", "power", "admin"]}}},
        })},
    }, ["INVALID_REQUEST"]),
    ("GET", "/clusters"): ({
        "summary": "Configured clusters: health, endpoints, freshness",
        "responses": {"200": _json_response("Clusters", {
            "type": "object", "required": ["clusters"], "additionalProperties": False,
            "properties": {"clusters": {"type": "array", "items": _ref("Cluster")}},
        })},
    }, ["INVALID_REQUEST"]),
    ("GET", "/guests"): ({
        "summary": "Guests from the latest snapshots, filtered",
        "parameters": [
            _multi("cluster", _STR, "Only these clusters"),
            _multi("node", _STR, "Only guests on these nodes"),
            _multi("type", {"type": "string", "enum": list(RESOURCE_TYPES)}, "qemu or lxc"),
            _multi("status", _STR, "Only these states (running, stopped, paused, unknown, ...)"),
            _multi("tag", _STR, "Only guests carrying all of these tags"),
        ],
        "description": "Each asked-for cluster (all without ?cluster) is listed in `clusters` with its health: an "
                       "unreachable cluster shows health `unreachable` (its guests are the last known ones, until "
                       "stale_after drops them), never only an empty list.",
        "responses": {"200": _json_response("Guests, and the health of the clusters they come from", {
            "type": "object", "required": ["guests", "total", "clusters"], "additionalProperties": False,
            "properties": {"guests": {"type": "array", "items": _ref("Guest")}, "total": {"type": "integer"},
                           "clusters": {"type": "array", "items": _ref("Cluster")}},
        })},
    }, ["INVALID_REQUEST", "CLUSTER_NOT_FOUND"]),
    ("POST", "/clusters/{cluster}/guests/{vmid}/{action}"): ({
        "summary": "Start, stop or restart one guest (answers 202 at once; follow the operation)",
        "description": "stop = PVE shutdown with timeout (force: stop); restart = reboot (force: reset for qemu, "
                       "stop then start for lxc). Node and type come from the latest snapshot. PVE's refusal "
                       "ends the operation `failed` with PVE's message. One action per guest at a time.",
        "parameters": [
            _CLUSTER_P,
            _param("vmid", "path", _VMID, "The guest's VMID"),
            _param("action", "path", {"type": "string", "enum": list(ACTIONS)}, "What to do"),
            _param("Idempotency-Key", "header", {"type": "string", "pattern": "^[A-Za-z0-9._:~+/=-]{1,128}$"},
                   "The same key (per token) returns the same operation instead of a new one"),
        ],
        "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("ActionBody")}}},
        "responses": {"202": _json_response("The operation (status pending)", _ref("Operation"), _LOCATION)},
    }, [*_BODY_ERRORS, "CLUSTER_NOT_FOUND", "GUEST_NOT_FOUND", "ACTION_IN_PROGRESS", "IDEMPOTENCY_KEY_REUSED",
        "PVE_ERROR", "SHUTTING_DOWN"]),
    ("POST", "/actions"): ({
        "summary": "Bulk action on every guest a selector picks (dry_run lists the plan)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BulkBody")}}},
        "responses": {
            "200": _json_response("Dry run: what would be done", _ref("DryRun")),
            "202": _json_response("The batch, with its operations (pending) and skipped guests", _ref("Batch"),
                                  _LOCATION),
        },
    }, [*_BODY_ERRORS, "CLUSTER_NOT_FOUND", "SHUTTING_DOWN"]),
    ("GET", "/actions/{batch_id}"): ({
        "summary": "Progress of a bulk action",
        "parameters": [_param("batch_id", "path", _STR, "From POST /api/v1/actions")],
        "responses": {"200": _json_response("The batch", _ref("Batch"))},
    }, ["INVALID_REQUEST", "BATCH_NOT_FOUND"]),
    ("DELETE", "/actions/{batch_id}"): ({
        "summary": "Cancel the members of a bulk action that have not started",
        "parameters": [_param("batch_id", "path", _STR, "From POST /api/v1/actions")],
        "responses": {"200": _json_response("The batch after cancelling", _ref("Batch"))},
    }, ["INVALID_REQUEST", "BATCH_NOT_FOUND"]),
    ("GET", "/operations"): ({
        "summary": "Operation history, newest first",
        "parameters": [
            _multi("cluster", _STR, "Cluster names"),
            _multi("node", _STR, "Node names"),
            _multi("resource_type", {"type": "string", "enum": list(RESOURCE_TYPES)}, "qemu or lxc"),
            _multi("resource_id", _VMID, "VMIDs"),
            _multi("operation", {"type": "string", "enum": list(ACTIONS)}, "start, stop, restart"),
            _multi("status", {"type": "string", "enum": list(STATUSES)}, "Operation states"),
            _multi("user", _STR, "Token names"),
            _multi("batch_id", _STR, "Bulk action ids"),
            _param("since", "query", _STR, "Requested at or after (Unix seconds or ISO 8601)"),
            _param("until", "query", _STR, "Requested at or before (Unix seconds or ISO 8601)"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "Page size"),
            _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0},
                   "Rows to skip"),
        ],
        "responses": {"200": _json_response("A page of operations", {
            "type": "object", "required": ["operations", "total", "limit", "offset"], "additionalProperties": False,
            "properties": {"operations": {"type": "array", "items": _ref("Operation")},
                           "total": {"type": "integer", "description": "All rows matching the filters"},
                           "limit": {"type": "integer"}, "offset": {"type": "integer"}},
        })},
    }, ["INVALID_REQUEST"]),
    ("GET", "/operations/{id}"): ({
        "summary": "One operation",
        "parameters": [_param("id", "path", _STR, "Operation id")],
        "responses": {"200": _json_response("The operation", _ref("Operation"))},
    }, ["INVALID_REQUEST", "OPERATION_NOT_FOUND"]),
    ("GET", "/operations/{id}/log"): ({
        "summary": "The PVE task log of an operation (by its UPID), paged like PVE",
        "description": "Reads GET /nodes/{node}/tasks/{upid}/log on the node in the UPID. Poll it while the operation "
                       "runs: the log grows, and `total` with it.",
        "parameters": [
            _param("id", "path", _STR, "Operation id"),
            _param("start", "query", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0},
                   "Lines to skip"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                   "Lines to return at most"),
        ],
        "responses": {"200": _json_response("A page of the task log", _ref("TaskLog"))},
    }, ["INVALID_REQUEST", "OPERATION_NOT_FOUND", "TASK_LOG_NOT_FOUND", "CLUSTER_NOT_FOUND", "PVE_ERROR"]),
    ("GET", "/clusters/{cluster}/guests/{vmid}/backups"): ({
        "summary": "A guest's recent backups from every source",
        "description": "Read now from the cluster's backup storages (their content lists, filtered by vmid) and from "
                       "every Proxmox Backup Server linked to the cluster that holds the guest's group (its snapshot "
                       "list). Newest first, at most 50; a source that fails is listed in `errors` and costs only "
                       "its own rows.",
        "parameters": [_CLUSTER_P, _param("vmid", "path", _VMID, "The guest's VMID")],
        "responses": {"200": _json_response("The guest's backups", _ref("GuestBackups"))},
    }, ["INVALID_REQUEST", "CLUSTER_NOT_FOUND", "GUEST_NOT_FOUND", "PVE_ERROR"]),
    ("POST", "/clusters/{cluster}/collect"): ({
        "summary": "Run a collection cycle for the cluster now",
        "parameters": [_CLUSTER_P],
        "responses": {"202": _json_response("Triggered", {
            "type": "object", "required": ["cluster", "triggered", "requested_at"], "additionalProperties": False,
            "properties": {"cluster": _STR, "triggered": {"const": True}, "requested_at": _TIME},
        })},
    }, ["INVALID_REQUEST", "CLUSTER_NOT_FOUND"]),
    ("POST", "/reload"): ({
        "summary": "Re-read the config file (as SIGHUP does)",
        "responses": {"200": _json_response("Reloaded", {
            "type": "object", "required": ["reloaded", "clusters"], "additionalProperties": False,
            "properties": {"reloaded": {"const": True}, "clusters": {"type": "array", "items": _STR}},
        })},
    }, ["INVALID_REQUEST", "RELOAD_UNAVAILABLE", "RELOAD_FAILED"]),
    ("GET", "/openapi.json"): ({
        "summary": "This document (no token needed)",
        "responses": {"200": _json_response("OpenAPI 3.1", {"type": "object"})},
    }, ["INVALID_REQUEST"]),
}  # fmt: skip


@cache
def _document() -> Json:
    paths: dict[str, Json] = {}
    for spec in ROUTES:
        entry, errors = _OPS[(spec.method, spec.path)]
        op = copy.deepcopy(entry)
        op["operationId"] = spec.handler.__name__
        codes = list(errors)
        if spec.scope is None:
            op["security"] = []
        else:
            op["security"] = [{"bearerAuth": []}]
            op["x-required-scope"] = spec.scope
            op["description"] = (op.get("description", "") + f" Needs scope `{spec.scope}`.").strip()
            codes = [*_AUTH_ERRORS, *codes]
        op["responses"].update(_error_responses(codes))
        paths.setdefault(PREFIX + spec.path, {})[spec.method.lower()] = op
    schemas = {"Operation": OPERATION, "Guest": GUEST, "Endpoint": ENDPOINT, "Cluster": CLUSTER, "Skipped": SKIPPED,
               "Batch": BATCH, "DryRun": DRY_RUN, "TaskLog": TASK_LOG, "GuestBackups": GUEST_BACKUPS, "Error": ERROR,
               **_body_schemas()}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pve_exporter control API",
            "version": __version__,
            "description": "Guest power actions (start / stop / restart) on the configured Proxmox VE clusters, "
                           "with a durable operation history. Tokens: control.tokens (scopes read < power < admin). "
                           "Error codes: " + ", ".join(sorted(CATALOGUE)) + ".",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "A token from control.tokens"}},
        },
        "security": [{"bearerAuth": []}],
    }  # fmt: skip


def document() -> Json:
    return copy.deepcopy(_document())
