"""Launchers for the benchmarks: the PVE simulator and the daemon, each in its OWN process.

A benchmark that measures the daemon (or a client) must not share a process, and so an event
loop and a GIL, with the simulator: the simulator's CPU would count as the daemon's, and its JSON
encoding would delay the daemon's answers. `SimProc` runs `python -m pve_exporter simulate` as a
child process (optionally over HTTPS with a self-signed certificate made at run time with the
`openssl` CLI, as PVE's pveproxy serves only HTTPS); `DaemonProc` runs `python -m pve_exporter
--config FILE` against it. Both are stopped by their own PID (SIGTERM, then SIGKILL).

Also usable alone, to get a simulator for manual runs (Ctrl-C stops it):

    .venv/bin/python benchmarks/simproc.py --clusters 2 --nodes 10 --guests-per-node 100 --latency-ms 20 --tls
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN_ID = "monitor@pve!exporter"  # the simulator's default token (pve_exporter.simulator.DEFAULT_TOKEN_*)
_LINE = re.compile(r"^(\S+): (https?://\S+)/api2/json\b")


def machine() -> str:
    """One line: date, CPU count, memory, Python, kernel (printed by every benchmark)."""
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now} · nproc {os.cpu_count()} ({cpu}) · memory {mem_kb / 1048576:.1f} GiB · "
            f"Python {platform.python_version()} · Linux {platform.release()}")


def best_of(fn: Any, repeat: int) -> float:
    """Shortest wall time of `repeat` calls: the least disturbed run on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """Self-signed RSA-2048 certificate for 127.0.0.1 (what a fresh PVE install has), via openssl."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is needed for --tls (apt-get install openssl)")
    cert, key = directory / "sim-cert.pem", directory / "sim-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def http_json(url: str, body: dict[str, Any] | None = None, method: str | None = None, timeout: float = 30) -> Any:
    """Small blocking JSON request (the simulator's /_sim control API); self-signed TLS accepted."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout, context=_INSECURE) as resp:
        return json.loads(resp.read() or b"null")


def _stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class SimProc:
    """`pve-exporter simulate` in a child process; cluster names `sim1..simC`, ephemeral ports."""

    def __init__(
        self,
        clusters: int = 1,
        nodes: int = 3,
        guests_per_node: int = 10,
        *,
        latency_ms: float = 20.0,
        seed: int = 1,
        tls: bool = False,
        workdir: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.args = ["--clusters", str(clusters), "--nodes", str(nodes), "--guests-per-node", str(guests_per_node),
                     "--latency-ms", str(latency_ms), "--seed", str(seed), "--auth-delay-ms", "0",
                     *extra_args]  # fmt: skip
        self.tls = tls
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pve-bench-sim-"))
        self.log = self.workdir / "simulator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120) -> SimProc:
        cmd = [PYTHON, "-m", "pve_exporter", "simulate", "--host", "127.0.0.1", "--port", "0", *self.args]
        if self.tls:
            cert, key = make_cert(self.workdir)
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
        expected = int(self.args[self.args.index("--clusters") + 1])
        with open(self.log, "wb") as log:  # a file, not a pipe: a late write can never block the child
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while len(self.urls) < expected:
            for line in self.log.read_text().splitlines():
                m = _LINE.match(line)
                if m:
                    self.urls[m.group(1)] = m.group(2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("simulator did not start in time")
            time.sleep(0.05)
        return self

    def port(self, name: str) -> int:
        return int(self.urls[name].rsplit(":", 1)[1])

    def stats(self, name: str) -> dict[str, Any]:
        return http_json(f"{self.urls[name]}/_sim/stats")

    def total_requests(self) -> int:
        return sum(self.stats(n)["total"] for n in self.urls)

    def reset_stats(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.urls):
            http_json(f"{self.urls[n]}/_sim/stats/reset", {})

    def fault(self, name: str, **fault: Any) -> str:
        return http_json(f"{self.urls[name]}/_sim/faults", fault)["id"]

    def clear_faults(self, name: str) -> None:
        http_json(f"{self.urls[name]}/_sim/faults", method="DELETE")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SimProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DaemonProc:
    """`python -m pve_exporter --config FILE` in a child process, one cluster per simulator URL."""

    def __init__(
        self,
        urls: dict[str, str],
        *,
        interval: float = 15.0,
        timeout: float = 5.0,
        extra: dict[str, Any] | None = None,
        log_level: str = "info",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="pve-bench-daemon-"))
        clusters = [
            {"name": name, "endpoints": [u], "token_id": TOKEN_ID, "token_secret": _default_secret(),
             "verify_ssl": False, "interval_seconds": interval, "timeout_seconds": timeout}
            for name, u in urls.items()
        ]  # fmt: skip
        cfg: dict[str, Any] = {"listen": f"127.0.0.1:{self.port}", "clusters": clusters,
                               "logging": {"level": log_level, "format": "json"}, **(extra or {})}  # fmt: skip
        self.config = self.workdir / "config.yml"
        self.config.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        self.log = self.workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_timeout: float = 180) -> DaemonProc:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "pve_exporter", "--config", str(self.config)],
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.started = time.monotonic()
        self.wait_ready(ready_timeout)
        self.ready_after = time.monotonic() - self.started
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until /-/ready says 200: every cluster has its first snapshot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; log:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DaemonProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_secret() -> str:
    from pve_exporter.simulator import DEFAULT_TOKEN_SECRET

    return DEFAULT_TOKEN_SECRET


# -- /proc sampling (CPU and memory of a process we started) ------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (not its children), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


# -- profiling a process we started (py-spy, installed into the venv for benchmarks only) ---------------


def pyspy_path() -> Path | None:
    exe = Path(sys.executable).parent / "py-spy"
    return exe if exe.exists() else (Path(p) if (p := shutil.which("py-spy")) else None)


def pyspy_record(pid: int, seconds: float, out: Path, rate: int = 100, threads: bool = False) -> Path | None:
    """Sample `pid` for `seconds` into a raw (collapsed stacks) file; None if py-spy is not installed.
    `threads`: each stack starts with its thread id, so profile_summary can show the event loop apart."""
    exe = pyspy_path()
    if exe is None:
        print(f"  (py-spy not found: `{Path(sys.executable).parent / 'pip'} install py-spy` to profile)")
        return None
    subprocess.run([str(exe), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "-f", "raw",
                    "-o", str(out), *(["--threads"] if threads else [])], check=True, capture_output=True)  # fmt: skip
    return out


def _frame(f: str) -> str:
    """`func (path/to/module.py:123)` -> `func (to/module.py)`: aggregate over line numbers."""
    name, _, where = f.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def _idle(leaf: str) -> bool:
    """A leaf frame that waits (epoll, an idle worker thread, a lock or queue) rather than computes."""
    name, _, where = leaf.partition(" (")
    if name.endswith("select") and "selectors.py" in where:
        return True
    if name == "_worker" and "futures/thread" in where:
        return True
    return name.split(".")[-1] in ("wait", "get") and ("threading" in where or "queue" in where)


def _on_loop(frames: list[str]) -> bool:
    return any("._run_once (asyncio/base_events.py)" in f for f in frames)


def profile_summary(raw: Path, top: int = 20, cpu_seconds: float | None = None) -> str:
    """Top functions by own time and by inclusive time (share of samples) from a py-spy raw file.

    With thread ids in the stacks (`pyspy_record(threads=True)`), the event-loop thread (the one whose
    stacks run asyncio's `_run_once`) is also shown alone: what it ran is what a waiting scrape waited behind.
    """
    from collections import Counter

    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    loop_own: Counter[str] = Counter()
    loop_incl: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    loop_threads: set[str] = set()
    rows: list[tuple[str, list[str], int]] = []
    total = idle = 0
    for row in raw.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        thread = ""
        frames = []
        for f in stack.split(";"):
            if f.startswith("thread ("):
                thread = f
            elif f and not f.startswith("process "):
                frames.append(_frame(f))
        if not frames:
            continue
        if _on_loop(frames):
            loop_threads.add(thread)
        if _idle(frames[-1]):
            idle += n  # waiting for I/O or for work: not CPU
            continue
        rows.append((thread, frames, n))
    for thread, frames, n in rows:
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        on_loop = bool(thread) and thread in loop_threads
        per_thread["event loop" if on_loop else "other threads"] += n
        if on_loop:
            loop_own[frames[-1]] += n
            for f in set(frames):
                loop_incl[f] += n
    if not total:
        return f"  no busy samples ({idle} idle)"
    lines = [f"  {total} busy samples (shares below are of these; {idle} more samples idle: epoll, idle workers)"
             + (f", ~{cpu_seconds:.1f} CPU-s" if cpu_seconds else "")]
    skip = ("run (", "run_forever", "run_until_complete", "_run_once", "_run (asyncio", "<module>", "_run_code",
            "_run_module_as_main", "main (pve_exporter/cli.py)", "cmd_run", "Runner.run", "_bootstrap",
            "_worker (concurrent", "run (concurrent")  # fmt: skip

    def block(title: str, own_c: Counter[str], incl_c: Counter[str], base: int) -> None:
        lines.append(f"  {title} own time:")
        lines.extend(f"    {c / base * 100:5.1f} %  {f}" for f, c in own_c.most_common(top))
        lines.append(f"  {title} inclusive time (frames below the event loop / thread start):")
        shown = [(f, c) for f, c in incl_c.most_common(top * 3) if not any(k in f for k in skip)]
        lines.extend(f"    {c / base * 100:5.1f} %  {f}" for f, c in shown[:top])

    block("all threads:", own, incl, total)
    if loop_threads and any(t for t in loop_threads):
        on_loop = per_thread["event loop"]
        lines.append(f"  by thread: event loop {on_loop} busy samples ({on_loop / total * 100:.0f} %), other threads "
                     f"{per_thread['other threads']}; shares below are of the event loop's busy samples")  # fmt: skip
        if on_loop:
            block("event loop:", loop_own, loop_incl, on_loop)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the simulator in its own process until Ctrl-C.")
    ap.add_argument("--clusters", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--guests-per-node", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--tls", action="store_true", help="HTTPS with a self-signed certificate made now")
    a = ap.parse_args()
    with SimProc(a.clusters, a.nodes, a.guests_per_node, latency_ms=a.latency_ms, tls=a.tls) as sim:
        for name, url in sim.urls.items():
            print(f"{name}: {url}/api2/json  pid {sim.pid}  token {TOKEN_ID}={_default_secret()}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
