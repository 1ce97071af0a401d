"""The control API's stable error codes: HTTP status, meaning and what to do about it.

Handlers raise `ApiProblem(code, message, details=...)`; the middleware turns it into the one
error body of design §2.5 (`httperrors.error_response`). The same table feeds the OpenAPI
document and docs/control-api.md, so a code is documented where it is defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pve_exporter.httperrors import error_response


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    meaning: str
    recovery: tuple[str, ...]


CATALOGUE: dict[str, ErrorCode] = {
    e.code: e
    for e in (
        ErrorCode("UNAUTHORIZED", 401, "No bearer token, or a token the daemon does not know.", (
            "Send `Authorization: Bearer <token>` with a token from control.tokens.",
            "Check the token against its hash: `printf %s TOKEN | pve-exporter hash-token`.",
        )),
        ErrorCode("FORBIDDEN", 403, "The token is valid but lacks the scope this route needs.", (
            "Use a token whose scopes include the one named in details.required_scope.",
            "Scopes nest: admin includes power, power includes read.",
        )),
        ErrorCode("RATE_LIMITED", 429, "Too many failed authentications or power requests from this address.", (
            "Wait the number of seconds in the Retry-After header, then retry.",
            "Use bulk actions (POST /api/v1/actions) instead of many single requests.",
        )),
        ErrorCode("NOT_FOUND", 404, "No such route under /api/v1 (or the control API is disabled).", (
            "Check the path against GET /api/v1/openapi.json.",
            "Enable the control API with control.enabled: true.",
        )),
        ErrorCode("METHOD_NOT_ALLOWED", 405, "The route exists but not with this HTTP method.", (
            "Check the method against GET /api/v1/openapi.json.",
        )),
        ErrorCode("INVALID_REQUEST", 400, "A parameter or the JSON body is malformed, unknown or out of range.", (
            "Fix the fields listed in details.errors; unknown fields are rejected.",
        )),
        ErrorCode("PAYLOAD_TOO_LARGE", 413, "The request body is larger than control.max_body_bytes.", (
            "Send a smaller body; select guests by tags or node instead of long vmid lists.",
        )),
        ErrorCode("UNSUPPORTED_MEDIA_TYPE", 415, "The body is not JSON.", (
            "Send the body with `Content-Type: application/json`.",
        )),
        ErrorCode("CLUSTER_NOT_FOUND", 404, "The cluster is not configured in this daemon.", (
            "List the configured clusters with GET /api/v1/clusters.",
        )),
        ErrorCode("GUEST_NOT_FOUND", 404, "No guest with this VMID in the cluster (snapshot and a fresh "
                  "/cluster/resources both checked).", (
            "List the guests with GET /api/v1/guests?cluster=NAME.",
            "The guest may have been deleted, or the PVE token may lack VM.Audit on it.",
        )),
        ErrorCode("OPERATION_NOT_FOUND", 404, "No operation with this id in the history.", (
            "List operations with GET /api/v1/operations; old ones are removed by retention.",
        )),
        ErrorCode("TASK_LOG_NOT_FOUND", 404, "The operation has no PVE task log: it never got a task id (UPID) "
                  "from PVE (refused at once, or not sent), or PVE no longer knows the task.", (
            "See the operation's status and error_message with GET /api/v1/operations/{id}.",
        )),
        ErrorCode("BATCH_NOT_FOUND", 404, "No bulk action with this batch id.", (
            "Use the batch_id returned by POST /api/v1/actions.",
        )),
        ErrorCode("ACTION_IN_PROGRESS", 409, "Another action on this guest has not finished yet.", (
            "Follow the running operation (details.operation_id) with GET /api/v1/operations/{id}.",
            "Retry when it has finished.",
        )),
        ErrorCode("IDEMPOTENCY_KEY_REUSED", 422, "The Idempotency-Key was already used for a different request.", (
            "Use a new Idempotency-Key for a new request.",
        )),
        ErrorCode("RELOAD_UNAVAILABLE", 409, "The daemon runs without a config file, so there is nothing to reload.", (
            "Start the daemon with --config FILE to reload it later.",
        )),
        ErrorCode("RELOAD_FAILED", 422, "The config file is invalid; the running config was kept.", (
            "Fix the file (pve-exporter check-config FILE) and reload again.",
        )),
        ErrorCode("PVE_ERROR", 502, "The PVE API failed while the daemon looked something up for this request.", (
            "Check the cluster's health with GET /api/v1/clusters.",
            "Retry when the cluster's endpoints answer again.",
        )),
        ErrorCode("HISTORY_UNAVAILABLE", 503, "The operation history database cannot be opened or written, so the "
                  "control API is off (monitoring goes on).", (
            "See details.reason and the daemon log; pve_exporter_history_healthy is 0 meanwhile.",
            "Fix the file's permissions or move a corrupt file away (a new one is created), then restart.",
        )),
        ErrorCode("COORDINATION_UNAVAILABLE", 503, "Replicas (coordination): PostgreSQL cannot be reached, so the "
                  "one-action-per-guest lock and the shared history cannot be guaranteed (monitoring goes on).", (
            "Retry when pve_exporter_coordination_up is 1 again; the daemon reconnects by itself.",
        )),
        ErrorCode("SHUTTING_DOWN", 503, "The daemon is stopping and accepts no new actions.", (
            "Retry once the daemon is back.",
        )),
        ErrorCode("INTERNAL_ERROR", 500, "An unexpected error in the daemon (logged with the request_id).", (
            "Report it with the request_id from this answer.",
        )),
    )
}  # fmt: skip


class ApiProblem(Exception):
    """An error answer with a stable code; `message` is for people, `details` for programs."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        recovery: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        if code not in CATALOGUE:
            raise ValueError(f"unknown error code {code}")
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers
        self.recovery = recovery

    @property
    def status(self) -> int:
        return CATALOGUE[self.code].status

    def response(self, request_id: str | None = None) -> web.Response:
        recovery = self.recovery if self.recovery is not None else list(CATALOGUE[self.code].recovery)
        return error_response(self.status, self.code, self.message, details=self.details, recovery=recovery,
                              headers=self.headers, request_id=request_id)


def problem_response(code: str, message: str, **kw: Any) -> web.Response:
    return ApiProblem(code, message, **kw).response()
