"""The one error body every HTTP error uses (design §2.5)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web


def error_response(
    status: int,
    error_code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    recovery: list[str] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> web.Response:
    body = {
        "success": False,
        "error": message,
        "error_code": error_code,
        "details": details or {},
        "recovery_suggestions": recovery or [],
        "request_id": request_id or uuid.uuid4().hex,
        "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    return web.json_response(body, status=status, headers=headers)
