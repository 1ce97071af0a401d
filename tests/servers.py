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
import urllib.error
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


def http_status(url: str, *, data: bytes | None = None, timeout: float = 5.0) -> int:
    """Status of a GET (or POST with `data`); HTTP errors are statuses too, not exceptions."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _Restartable:
    """A server process on 127.0.0.1 with a fixed port and data directory: stop() and start() again."""

    binary: str
    name: str
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.starts = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        assert self.proc is None, f"{self.name} already running"
        self.starts += 1
        log = open(self.dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child keeps its own descriptor
        wait_until(self._ready_or_dead, timeout=30, interval=0.05, what=f"{self.name} ready")

    def _ready_or_dead(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            logs = sorted(self.dir.glob(f"{self.name}.*.log"))
            tail = logs[-1].read_text(errors="replace")[-2000:] if logs else ""
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {tail}")
        return self.ready()

    def stop(self) -> None:
        """SIGTERM, wait for the exit (bounded), so the port and data directory can be reused."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # type: ignore[attr-defined]


class VictoriaMetrics(_Restartable):
    """VictoriaMetrics (Debian `victoria-metrics`) as an InfluxDB v2 write target; fresh rows visible at once."""

    name = "victoria-metrics"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.binary = require_binary("victoria-metrics", "victoria-metrics")
        self.port = free_port()
        self.start()

    def argv(self) -> list[str]:
        return [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.dir / 'data'}",
                "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache"]  # fmt: skip

    def ready(self) -> bool:
        return http_get(f"{self.url}/health").strip() == b"OK"

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching `match` with all its samples (after making fresh rows searchable)."""
        assert http_status(f"{self.url}/internal/force_flush") == 200
        q = urllib.parse.urlencode({"match[]": match})
        body = http_get(f"{self.url}/api/v1/export?{q}", timeout=30)
        return [json.loads(line) for line in body.splitlines() if line.strip()]


class InfluxDB1(_Restartable):
    """InfluxDB 1.x (Debian `influxdb`, 1.6.7 on bookworm) with its /write and InfluxQL /query."""

    name = "influxd"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.binary = require_binary("influxd", "influxdb")
        self.port = free_port()
        rpc = free_port()
        d = self.dir
        (d / "influxdb.conf").write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
            f'[meta]\n  dir = "{d / "meta"}"\n'
            f'[data]\n  dir = "{d / "data"}"\n  wal-dir = "{d / "wal"}"\n  query-log-enabled = false\n'
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
        )
        self.start()

    def argv(self) -> list[str]:
        return [self.binary, "run", "-config", str(self.dir / "influxdb.conf")]

    def ready(self) -> bool:
        return http_status(f"{self.url}/ping") == 204

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        params = {"q": q, "epoch": "s", **({"db": db} if db else {})}
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        for result in doc.get("results", []):
            assert "error" not in result, result
        return doc
