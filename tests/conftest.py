"""Shared fixtures: quiet, redacting logs for every test; asyncio's own errors fail the test."""

from __future__ import annotations

import io
import logging

import pytest

from pve_exporter import logs


@pytest.fixture(autouse=True)
def _logs():
    """Every test logs JSON at debug level into a buffer it can inspect (`log_buffer`)."""
    buf = io.StringIO()
    logs.configure("debug", "json", stream=buf)
    yield buf


@pytest.fixture
def log_buffer(_logs) -> io.StringIO:
    return _logs


class _AsyncioErrors(logging.Handler):
    """Collects what asyncio reports through its logger: tasks destroyed while pending, exceptions
    never retrieved, callbacks that raised. Each is a task or resource nobody owned."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_unowned_tasks():
    handler = _AsyncioErrors()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records:
        pytest.fail("asyncio reported unowned work: " + "; ".join(r.getMessage()[:300] for r in handler.records))
