"""Shared fixtures: quiet, redacting logs for every test."""

from __future__ import annotations

import io

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
