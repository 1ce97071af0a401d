"""The audit trail: one log line per control request that changes something, and per result.

Each line says who (the token's name, never the token), from where (client address), what
(cluster, guest, action, force) and how it ended, and carries `audit: true` so it can be
filtered out of the daemon's JSON log. Secrets never reach it: requests are logged by field,
never by header, and the log redactor masks configured secrets on top.
"""

from __future__ import annotations

from typing import Any

import structlog

_log = structlog.get_logger("pve_exporter.audit")


def audit(event: str, **fields: Any) -> None:
    _log.info(event, audit=True, **fields)


def audit_warning(event: str, **fields: Any) -> None:
    _log.warning(event, audit=True, **fields)
