"""Real servers from Debian packages for end-to-end tests, on 127.0.0.1, with bounded waits.

Locally a missing binary skips the test with the reason; under CI=true it fails, because CI
installs them (.ci/run) and a silent skip would hide a broken install step.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (Debian package {package!r}; .ci/run installs it)"
        if IN_CI:
            pytest.fail(msg + " — CI must not skip end-to-end tests")
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll with a deadline (never a fixed sleep): returns the first truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # server not up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


class Prometheus:
    """A real Prometheus scraping the given targets every second."""

    def __init__(self, tmp: Path, targets: list[str], rule_files: list[str] | None = None, metrics_path="/metrics"):
        self.binary = require_binary("prometheus", "prometheus")
        self.port = free_port()
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": rule_files or [],
            "scrape_configs": [
                {"job_name": "pve", "metrics_path": metrics_path, "honor_labels": True,
                 "static_configs": [{"targets": targets}]},
            ],
        }  # fmt: skip
        (tmp / "prometheus.yml").write_text(json.dumps(cfg))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(lambda: http_get(f"{self.url}/-/ready"), timeout=20, what="prometheus ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        doc = json.loads(http_get(f"{self.url}/api/v1/query?{q}"))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def api(self, path: str) -> Any:
        return json.loads(http_get(f"{self.url}{path}"))["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()
