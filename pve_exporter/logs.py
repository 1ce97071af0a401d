"""The one place that configures structlog: JSON lines by default, console on a terminal.

Secrets are masked by value (every configured secret, wherever it appears) and by key name, so
neither a token in an exception text nor an `Authorization` header can reach a log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

MASK = "********"
_SENSITIVE_KEYS = ("secret", "password", "authorization", "token_value", "api_key")
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so the redactor masks them; short strings would mask too much."""
    for v in values:
        if v and len(v) >= 6:
            _secrets.add(v)


def redact_text(value: str) -> str:
    for s in _secrets:
        if s in value:
            value = value.replace(s, MASK)
    return value


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value) if _secrets else value
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event.keys()):
        if any(s in key.lower() for s in _SENSITIVE_KEYS):
            event[key] = MASK
        else:
            event[key] = _redact(event[key])
    return event


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Set up structlog (and stdlib logging, for aiohttp's own messages) once per process."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    lvl = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))  # aiohttp's access log stays quiet
