"""Chaos soak: reloads, PVE faults, wall-clock steps, scrapes, power actions and a SIGKILL, all at once.

    .venv/bin/python benchmarks/chaos.py                   # 4 minutes, seed 1
    .venv/bin/python benchmarks/chaos.py --minutes 1 --seed 7

The simulator (`pve-exporter simulate`, 4 clusters) and the daemon (control API on, an admin token
made with `pve-exporter hash-token`) run as subprocesses (benchmarks/simproc.py). The daemon's
config starts with 3 of the 4 clusters. Meanwhile, at random times drawn from `--seed`:

- reloads by SIGHUP and by `POST /api/v1/reload`: add a cluster, remove one, change one's interval,
  a syntactically bad file, a cluster whose `ca_file` exists but is not PEM (the last two must be
  rejected with the running set kept and `pve_exporter_config_last_reload_successful` 0);
- PVE faults through each simulated cluster's `/_sim/faults` (node_down, http_error 500/596,
  timeout, slow, auth_fail), each cleared after 5-25 s;
- wall-clock steps of the daemon by ±1 h (libfaketime, below; in the second half only);
- gzip and plain scrapes of /metrics from three threads at once;
- single and bulk power actions through the control API;
- at half time a SIGKILL of the daemon (right after a bulk action, so operations are in flight)
  and a restart with the same config and history database, this time with libfaketime preloaded.

At the end it clears the faults, waits (bounded) for every operation to finish, and checks, exiting
with 1 and a message per failure otherwise:

- no growth of open fds, threads, RSS and TCP sockets (ESTABLISHED / CLOSE_WAIT, from /proc/net/tcp
  matched to the daemon's socket fds; asyncio tasks are not visible from outside, these are their
  footprint) between the first and the last third, compared at the same number of clusters;
- every operation is terminal, and the latest one of each guest matches the guest's real state in
  the simulator (its PVE API): `succeeded` start/restart = running, stop = stopped; a UPID the
  operation reports as succeeded / failed has exit status OK / not OK in PVE's task list; an
  `interrupted` operation's task is unknown to PVE (the design's promise);
- /metrics never fails (no 5xx, no connection error except between the SIGKILL and the restart);
- while a cluster's PVE is healthy (no fault on it, not just added, restarted or re-timed), the
  cluster's data is never older than two intervals: measured by when
  `pve_exporter_last_success_timestamp_seconds` last moved (the daemon's monotonic view, immune to
  the wall steps), by that timestamp against the simulator's clock (only when no step is in force),
  and by `age_seconds` of `GET /api/v1/clusters`. Time in which the whole machine stood still (the
  simulator and the soak itself answer late: 2 cores shared with others) is not held against the
  daemon; time in which only the daemon's event loop stood still (/-/healthy late) is, except under
  the preload. In the preloaded second half the allowance is 2 intervals + 10 s: the preload slows the
  daemon down (below), while a poller that scheduled by the wall clock would freeze for the whole of
  a step back, which is held 40-60 s;
- a good reload is applied and a bad one rejected, as the log and the reload metric say.

Data (samples, summary table, failures) goes to stdout, progress logs to stderr.

Wall-clock steps: Debian's libfaketime 0.9.10 (`apt-get install -y faketime`) is preloaded into the
daemon with FAKETIME_TIMESTAMP_FILE (rewritten atomically with "+0", "+1h" or "-1h") and
DONT_FAKE_MONOTONIC=1, so `time.time()` steps and `time.monotonic()` does not. Two limits of
libfaketime, measured here:
- FAKETIME_NO_CACHE=1 makes every wall-clock read open and read the step file (9.4 µs instead of
  0.07 µs per `time.time()`); under the soak's load the daemon then used 50-68 % of a core instead of
  2-4 % and /metrics stalled for up to 11 s, which the freshness checks (rightly) report as failures
  of the daemon although they are the preload's. So the default is FAKETIME_CACHE_DURATION=1: a step
  reaches the daemon within 1 s (`--faketime-cache 0` restores NO_CACHE). Even cached, libfaketime
  wraps pthread_cond_timedwait (the GIL's wait): 3-10x the CPU, cycles that overrun and event-loop
  stalls up to ~6 s (none without it), so the first half runs without the preload and holds the
  daemon to the strict limits, and the latency figures of the second half are the preload's.
- with DONT_FAKE_MONOTONIC, Python's `time.sleep()` fails with EINVAL (its absolute-time
  clock_nanosleep); the daemon never calls it (asyncio waits in epoll), so this does not matter here.
Without libfaketime the soak says so and runs without clock steps (`--no-faketime` does the same);
the in-process tests with `pve_exporter.clock.ManualClock.step_wall` then remain the only coverage.

Bounded: every loop has a deadline; traffic goes to 127.0.0.1 only; the work directory (config,
history database, daemon log) is removed on success and kept (path printed) on failure or `--keep`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simproc import (
    PYTHON,
    ROOT,
    TOKEN_ID,
    DaemonProc,
    SimProc,
    _default_secret,
    cpu_seconds,
    http_json,
    machine,
    rss_mb,
)
from soak import FAULTS, PATHS, open_fds

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
CONTROL_TOKEN = "chaos-admin-token-0123456789abcdef"
PRELOAD_SLACK = 10.0  # s on top of 2 intervals while libfaketime is preloaded (it slows the daemon down)
TIMEOUT = 3.0  # PVE request timeout of every cluster
INTERVALS = (3.0, 5.0, 8.0)
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "interrupted"}
_LAST_OK = re.compile(r'^pve_exporter_last_success_timestamp_seconds\{cluster="([^"]+)"\} (\S+)$', re.M)
_RELOAD_OK = re.compile(r"^pve_exporter_config_last_reload_successful (\S+)$", re.M)


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the daemon's footprint from /proc -------------------------------------------------------------------


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def tcp_states(pid: int) -> Counter[str]:
    """TCP states of the sockets among the process's fds (01 ESTABLISHED, 08 CLOSE_WAIT, 0A LISTEN...)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    names = {"01": "established", "08": "close_wait", "0A": "listen", "06": "time_wait"}
    out: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[9] in inodes:
                        out[names.get(parts[3], parts[3])] += 1
        except OSError:
            continue
    return out


@dataclass
class Sample:
    t: float
    gen: int  # daemon process generation (1 before the SIGKILL, 2 after)
    clusters: int
    fds: int
    threads: int
    rss: float
    established: int
    close_wait: int
    cpu: float  # share of one core since the previous sample
    sim_cpu: float
    load: float  # 1-minute load average of the machine


# -- HTTP helpers (blocking, 127.0.0.1 only) --------------------------------------------------------------


def request(url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers); HTTP errors are answers, connection errors raise OSError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def pve_get(base: str, path: str) -> Any:
    """A PVE API GET on the simulator with the monitor token: the simulator's own view of a guest."""
    hdr = {"Authorization": f"PVEAPIToken={TOKEN_ID}={_default_secret()}"}
    status, body, _ = request(f"{base}/api2/json{path}", headers=hdr)
    if status != 200:
        raise RuntimeError(f"simulator GET {path}: HTTP {status} {body[:200]!r}")
    return json.loads(body)["data"]


# -- the daemon, restartable, with a preloaded fake wall clock --------------------------------------------


class ChaosDaemon(DaemonProc):
    """DaemonProc with our own config, an appended log over restarts, SIGKILL, and libfaketime."""

    def __init__(self, workdir: Path, faketime_file: Path | None, faketime_cache: float = 0.0) -> None:
        super().__init__({}, log_level="info")
        shutil.rmtree(self.workdir, ignore_errors=True)  # use the soak's own directory instead
        self.workdir = workdir
        self.config = workdir / "config.yml"
        self.log = workdir / "daemon.log"
        self.env = dict(os.environ)  # the first process runs without the preload
        self.preload_env = dict(os.environ)
        if faketime_file is not None:
            self.preload_env.update(LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(faketime_file),
                            DONT_FAKE_MONOTONIC="1")  # fmt: skip
            if faketime_cache > 0:
                self.preload_env["FAKETIME_CACHE_DURATION"] = f"{faketime_cache:g}"
            else:
                self.preload_env["FAKETIME_NO_CACHE"] = "1"

    def start(self, ready_timeout: float = 90) -> ChaosDaemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([PYTHON, "-m", "pve_exporter", "--config", str(self.config)],
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=self.env)  # fmt: skip
        self.started = time.monotonic()
        self.wait_ready(ready_timeout)
        self.ready_after = time.monotonic() - self.started
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_count(self, needle: str) -> int:
        try:
            return self.log.read_text(errors="replace").count(needle)
        except OSError:
            return 0


# -- shared state between the main loop and the scraper threads ------------------------------------------


def overlap(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the union of `intervals`."""
    total, reach = 0.0, start
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, end)
        if b > a:
            total += b - a
            reach = b
    return total


@dataclass
class Stale:
    """One observation of a cluster older than its limit."""

    t: float
    cluster: str
    age: float
    limit: float
    what: str
    machine: float  # seconds of the age in which the whole machine stood still
    loop: float  # seconds of the age in which the daemon's event loop did not answer /-/healthy
    start: float = 0.0  # first observation of its episode
    slack: float = 0.0  # the allowance in force


@dataclass
class Freshness:
    """Per cluster: when its last-success timestamp last moved, and whether it must be fresh now."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    applied: dict[str, float] = field(default_factory=dict)  # cluster -> interval, as the daemon runs it
    check_from: dict[str, float] = field(default_factory=dict)  # cluster -> monotonic time checks start
    limit: dict[str, float] = field(default_factory=dict)  # cluster -> allowed age (2 intervals)
    last_value: dict[str, float] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    removed_at: dict[str, float] = field(default_factory=dict)
    wall_offset: float = 0.0  # the daemon's current clock step (s)
    wall_steady_from: float = 0.0  # monotonic time since which the step has not changed
    slack: float = 0.0  # allowance on top of 2 intervals (the libfaketime-preloaded half, see the docstring)
    sim_delta: float = 0.0  # simulator clock - our time.time()
    max_age: float = 0.0
    max_ts_age: float = 0.0
    checked: int = 0
    stale: list[Stale] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)
    history: dict[str, deque[tuple[float, float, float]]] = field(default_factory=dict)  # (t, value, sim clock)
    backwards: list[str] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # the whole machine stood still
    loop_stalls: list[tuple[float, float]] = field(default_factory=list)  # the daemon did not answer /-/healthy

    def judge(self, t: float, cluster: str, age: float, limit: float, what: str) -> None:
        """Keep an observation older than the limit, with how much of it stalls explain."""
        if age <= limit + 1.5 + self.slack:  # 1.5 s: scrapes are that far apart at most
            return
        machine = overlap(self.stalls, t - age, t)
        loop = overlap(self.stalls + self.loop_stalls, t - age, t)
        self.stale.append(Stale(t, cluster, age, limit, what, machine, loop, slack=self.slack))

    def grace(self, cluster: str, until: float) -> None:
        """No freshness check on `cluster` before `until` (monotonic, relative to the soak's start)."""
        self.check_from[cluster] = until
        self.last_change.pop(cluster, None)

    def observe(self, t: float, body: str) -> None:
        values = {m.group(1): float(m.group(2)) for m in _LAST_OK.finditer(body)}
        sim_now = time.time() + self.sim_delta
        with self.lock:
            for cluster, value in values.items():
                if cluster not in self.applied:
                    gone = self.removed_at.get(cluster)
                    if gone is not None and t - gone > 5 and len(self.ghosts) < 20:
                        self.ghosts.append(f"t={t:.0f}: removed cluster {cluster} still exported {t - gone:.0f} s "
                                           f"after its removal")  # fmt: skip
                    continue
                hist = self.history.setdefault(cluster, deque(maxlen=8))
                hist.append((t, value, sim_now))
                prev = self.last_value.get(cluster)
                if prev is not None and value < prev and not (self.wall_offset < 0 or prev - value > 1800):
                    # earlier than what was already shown, with no step back of the wall clock: an old page
                    if len(self.backwards) < 10:
                        self.backwards.append(f"t={t:.0f}: {cluster} last_success_timestamp went back from "
                                              f"{prev:.3f} to {value:.3f}")  # fmt: skip
                    continue
                if prev != value:
                    self.last_value[cluster] = value
                    self.last_change[cluster] = t
            for cluster in self.applied:
                if t < self.check_from.get(cluster, float("inf")):
                    continue
                limit = self.limit[cluster]
                since = self.last_change.get(cluster, self.check_from[cluster] - limit)
                age = t - since
                self.checked += 1
                self.max_age = max(self.max_age, age)
                self.judge(t, cluster, age, limit, f"data not refreshed for {age:.1f} s (by /metrics; wall step "
                                                   f"{self.wall_offset / 3600:+.0f} h)")
                # the exposed timestamp against the simulator's clock, when it was taken with no step in force
                if cluster in values and self.wall_offset == 0 and self.last_change.get(cluster, -1) > \
                        self.wall_steady_from + limit + 2:
                    ts_age = sim_now - values[cluster]
                    self.max_ts_age = max(self.max_ts_age, ts_age)
                    if ts_age < -2:
                        self.stale.append(Stale(t, cluster, ts_age, limit, f"last_success_timestamp "
                                                f"{values[cluster]:.0f} is {-ts_age:.1f} s AHEAD of the simulator's "
                                                f"clock", 0.0, 0.0))  # fmt: skip
                    trace = ", ".join(f"t={a:.1f} {v - c:+.1f}" for a, v, c in self.history.get(cluster, ()))
                    self.judge(t, cluster, ts_age, limit, f"last_success_timestamp {values[cluster]:.0f} is "
                                                          f"{ts_age:.1f} s behind the simulator's clock (last "
                                                          f"observations, value - simulator clock: {trace})")

    def episodes(self) -> list[Stale]:
        """The worst observation of each run of stale observations of a cluster (3 s apart at most)."""
        out: list[Stale] = []
        last: dict[str, float] = {}
        for st in sorted(self.stale, key=lambda x: (x.cluster, x.t)):
            if out and out[-1].cluster == st.cluster and st.t - last[st.cluster] <= 3:
                if st.age - st.loop > out[-1].age - out[-1].loop:
                    out[-1] = dataclasses.replace(st, start=out[-1].start)
            else:
                out.append(dataclasses.replace(st, start=st.t))
            last[st.cluster] = st.t
        return out


@dataclass
class ScrapeStats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[str] = field(default_factory=Counter)
    planned_errors: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    kill_window: bool = False


def scraper(url: str, kind: str, seed: int, end: float, stop: threading.Event, stats: ScrapeStats,
            fresh: Freshness, t0: float) -> None:
    """Scrape /metrics (gzip or plain) every 0.3-1 s until `end` or `stop`."""
    rng = random.Random(seed)
    while not stop.is_set() and time.monotonic() < end:
        headers = {"Accept-Encoding": "gzip"} if kind == "gzip" else {"Accept-Encoding": "identity"}
        start = time.monotonic()
        with stats.lock:
            planned = stats.kill_window
        try:
            status, body, hdrs = request(f"{url}/metrics", headers=headers, timeout=15)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            text = (gzip.decompress(body) if hdrs.get("Content-Encoding") == "gzip" else body).decode()
            if kind == "gzip" and hdrs.get("Content-Encoding") != "gzip":
                raise RuntimeError("asked for gzip, got plain")
            with stats.lock:
                stats.ok[kind] += 1
                stats.latencies[kind].append(time.monotonic() - start)
            fresh.observe(time.monotonic() - t0, text)
        except (OSError, RuntimeError, ValueError) as exc:
            with stats.lock:
                if planned or stats.kill_window:
                    if isinstance(exc, OSError):
                        stats.planned_errors += 1
                    else:
                        stats.failures.append(f"t={time.monotonic() - t0:.0f} {kind} (during restart): {exc}")
                else:
                    stats.failures.append(f"t={time.monotonic() - t0:.0f} {kind}: {type(exc).__name__}: {exc}")
        stop.wait(rng.uniform(0.3, 1.0))


def prober(sim_url: str, end: float, stop: threading.Event, fresh: Freshness, t0: float) -> None:
    """Every 0.5 s: does the simulator answer /_sim at once, and does this process wake up on time?

    Both standing still means the machine (2 cores shared with others) stalled, not the daemon; such
    time is not held against the daemon's freshness.
    """
    while not stop.is_set() and time.monotonic() < end:
        before = time.monotonic()
        stop.wait(0.5)
        woke = time.monotonic()
        with contextlib.suppress(OSError):
            request(f"{sim_url}/_sim", timeout=10)
        done = time.monotonic()
        late, slow = woke - before - 0.5, done - woke
        if late > 0.5 or slow > 0.5:
            start = before + 0.5 if late > 0.5 else woke
            with fresh.lock:
                fresh.stalls.append((start - t0, done - t0))


def loop_prober(daemon_url: str, end: float, stop: threading.Event, fresh: Freshness, t0: float) -> None:
    """Every 0.25 s: does the daemon answer /-/healthy (no I/O behind it) within 0.5 s?

    When it does not, its event loop stood still: nothing can be collected or served meanwhile.
    Staleness explained by such time is the daemon's own stall, reported apart from scheduling bugs
    (with libfaketime preloaded the preload causes most of it, see the docstring).
    """
    while not stop.is_set() and time.monotonic() < end:
        start = time.monotonic()
        try:
            request(f"{daemon_url}/-/healthy", timeout=15)
        except OSError:
            start = float("nan")  # refused: the daemon is down (the SIGKILL window), not slow
        done = time.monotonic()
        if done - start > 0.5:
            with fresh.lock:
                fresh.loop_stalls.append((start - t0, done - t0))
        stop.wait(0.25)


# -- the soak --------------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, a: argparse.Namespace, sim: SimProc, workdir: Path) -> None:
        self.a = a
        self.rng = random.Random(a.seed)
        self.sim = sim
        self.workdir = workdir
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.faketime_file: Path | None = None
        if not a.no_faketime and LIBFAKETIME.exists():
            self.faketime_file = workdir / "faketime"
            self.faketime_file.write_text("+0\n")
        elif not a.no_faketime:
            self.notes.append(f"{LIBFAKETIME} missing (apt-get install -y faketime): no wall-clock steps in this run")
        self.daemon = ChaosDaemon(workdir, self.faketime_file, a.faketime_cache)
        self.auth = {"Authorization": f"Bearer {CONTROL_TOKEN}"}
        self.names = sorted(sim.urls)
        self.bad_ca = workdir / "not-a-ca.pem"
        self.bad_ca.write_text("this file exists but is not PEM\n")
        self.token_sha = subprocess.run([PYTHON, "-m", "pve_exporter", "hash-token"], input=CONTROL_TOKEN + "\n",
                                        capture_output=True, text=True, check=True,
                                        cwd=ROOT).stdout.strip()  # fmt: skip
        self.good: dict[str, float] = {n: a.interval for n in self.names[:3]}  # cluster -> interval (applied)
        self.baseline = len(self.good)
        self.fresh = Freshness()
        self.stats = ScrapeStats()
        self.samples: list[Sample] = []
        self.gen = 1
        self.preloaded = False  # libfaketime only in the restarted process (the second half)
        self.faults: list[tuple[float, str, str, str]] = []  # (until, cluster, fault id, kind)
        self.injected: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()
        self.ops: dict[str, dict[str, Any]] = {}  # operation id -> what we asked (+ t, via)
        self.answers: Counter[str] = Counter()
        self.restart: dict[str, float] = {}
        self.removals: list[tuple[float, str]] = []  # (t, cluster) of every applied removal
        self.reload_metric_lag = 0.0  # longest time until the reload metric showed a reload's outcome
        self.cpu_prev: tuple[float, float, float] | None = None
        self.t0 = time.monotonic()

    # ---- config ----
    def config(self, clusters: dict[str, float], bad_ca: str | None = None) -> dict[str, Any]:
        entries = []
        for name, interval in sorted(clusters.items()):
            e: dict[str, Any] = {"name": name, "endpoints": [self.sim.urls[name]], "token_id": TOKEN_ID,
                                 "token_secret": _default_secret(), "verify_ssl": False,
                                 "interval_seconds": interval, "timeout_seconds": TIMEOUT}  # fmt: skip
            if name == bad_ca:
                e.update(verify_ssl=True, ca_file=str(self.bad_ca))
            entries.append(e)
        return {
            "listen": f"127.0.0.1:{self.daemon.port}",
            "clusters": entries,
            "logging": {"level": "info", "format": "json"},
            "control": {"enabled": True, "history_db": str(self.workdir / "operations.sqlite"),
                        "tokens": [{"name": "chaos", "sha256": self.token_sha, "scopes": ["read", "power", "admin"]}],
                        "power_limit": {"burst": 1000, "per_minute": 60000}, "task_poll_seconds": 0.5},
        }  # fmt: skip

    def write_config(self, cfg: dict[str, Any] | str) -> None:
        tmp = self.daemon.config.with_suffix(".tmp")
        tmp.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=1))
        tmp.chmod(0o600)  # it holds the simulator's token secret
        os.replace(tmp, self.daemon.config)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def api(self, method: str, path: str, body: Any = None, timeout: float = 15) -> tuple[int, Any]:
        status, raw, _ = request(f"{self.daemon.url}/api/v1{path}", method=method, body=body, headers=self.auth,
                                 timeout=timeout)  # fmt: skip
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw[:300]

    def fail(self, msg: str) -> None:
        log(f"FAIL {msg}")
        self.failures.append(msg)

    # ---- freshness bookkeeping ----
    def grace_all(self, until: float) -> None:
        with self.fresh.lock:
            for c in self.fresh.applied:
                self.fresh.grace(c, until)

    def faulty(self, cluster: str) -> bool:
        return any(c == cluster for _, c, _, _ in self.faults)

    def set_applied(self, clusters: dict[str, float], changed: set[str]) -> None:
        """The daemon now runs `clusters`; `changed` ones (added / re-timed) get time for a first cycle."""
        t = self.now()
        with self.fresh.lock:
            for gone in set(self.fresh.applied) - set(clusters):
                self.fresh.removed_at[gone] = t
                self.removals.append((t, gone))
                for d in (self.fresh.check_from, self.fresh.last_change, self.fresh.last_value, self.fresh.limit):
                    d.pop(gone, None)
            for c, interval in clusters.items():
                old = self.fresh.applied.get(c, interval)
                self.fresh.limit[c] = 2 * max(old, interval) if c in changed else 2 * interval
                if c in changed or c not in self.fresh.applied:
                    self.fresh.removed_at.pop(c, None)
                    until = float("inf") if self.faulty(c) else t + 2 * max(old, interval) + TIMEOUT + 3
                    self.fresh.grace(c, until)
            self.fresh.applied = dict(clusters)

    def settle_limits(self) -> None:
        """After a grace period the limit is two of the cluster's own intervals again."""
        t = self.now()
        with self.fresh.lock:
            for c, interval in self.fresh.applied.items():
                if t > self.fresh.check_from.get(c, 0) + 2 * interval:
                    self.fresh.limit[c] = 2 * interval

    # ---- the daemon's footprint ----
    def sample(self) -> None:
        pid = self.daemon.pid
        try:
            rss, _ = rss_mb(pid)
            tcp = tcp_states(pid)
            now, cpu, sim_cpu = self.now(), cpu_seconds(pid), cpu_seconds(self.sim.pid)
            prev = self.cpu_prev if self.cpu_prev and self.samples and self.samples[-1].gen == self.gen else None
            self.cpu_prev = (now, cpu, sim_cpu)
            dt = now - prev[0] if prev else 0.0
            with open("/proc/loadavg") as f:
                load = float(f.read().split()[0])
            s = Sample(now, self.gen, len(self.good), open_fds(pid), threads(pid), rss, tcp["established"],
                       tcp["close_wait"], (cpu - prev[1]) / dt if prev and dt else float("nan"),
                       (sim_cpu - prev[2]) / dt if prev and dt else float("nan"), load)  # fmt: skip
        except (OSError, ValueError):
            return
        self.samples.append(s)
        print(f"  t={s.t:5.0f} s  gen {s.gen}  clusters {s.clusters}  fds {s.fds:3d}  threads {s.threads:2d}  "
              f"RSS {s.rss:6.1f} MB  tcp est {s.established:2d} close_wait {s.close_wait}  CPU {s.cpu * 100:4.0f} %  "
              f"sim {s.sim_cpu * 100:3.0f} %  load {s.load:4.1f}  faults {len(self.faults)}  "
              f"step {self.fresh.wall_offset / 3600:+.0f} h", flush=True)  # fmt: skip

    # ---- faults ----
    def unhealthy(self, cluster: str) -> None:
        with self.fresh.lock:
            if cluster in self.fresh.applied:
                self.fresh.check_from[cluster] = float("inf")

    def healthy_again(self, cluster: str) -> None:
        """The cluster's last fault is gone: the next cycles must succeed again (after one slow one)."""
        if self.faulty(cluster):
            return
        t = self.now()
        with self.fresh.lock:
            if cluster in self.fresh.applied and self.fresh.check_from.get(cluster) == float("inf"):
                self.fresh.grace(cluster, t + 2 * self.fresh.applied[cluster] + TIMEOUT + 3)

    def inject_fault(self) -> None:
        if len(self.faults) >= 2:
            return
        cluster = self.rng.choice(self.names)
        kind, extra = self.rng.choice(FAULTS)
        n = self.rng.randint(1, self.a.nodes)
        fault: dict[str, Any] = {"kind": kind, **extra}
        if kind == "node_down":
            fault["node"] = f"pve{n}"
        elif path := self.rng.choice(PATHS):
            fault["path"] = path.format(n=n)
        fid = self.sim.fault(cluster, **fault)
        label = f"{kind}{'/' + str(extra['status']) if 'status' in extra else ''}"
        self.faults.append((time.monotonic() + self.rng.uniform(5, 25), cluster, fid, label))
        self.injected[label] += 1
        self.unhealthy(cluster)
        log(f"fault {fid} on {cluster}: {json.dumps(fault)}")

    def clear_due_faults(self, force: bool = False) -> None:
        for item in [f for f in self.faults if force or f[0] <= time.monotonic()]:
            _, cluster, fid, _ = item
            http_json(f"{self.sim.urls[cluster]}/_sim/faults/{fid}", method="DELETE")
            self.faults.remove(item)
            self.healthy_again(cluster)

    # ---- wall clock ----
    def step_clock(self) -> None:
        if self.faketime_file is None or not self.preloaded:
            return
        choices = [o for o in (3600.0, -3600.0, 0.0) if o != self.fresh.wall_offset]
        offset = self.rng.choice(choices)
        self.set_clock(offset)

    def set_clock(self, offset: float) -> None:
        if self.faketime_file is None or offset == self.fresh.wall_offset:
            return
        tmp = self.faketime_file.with_suffix(".tmp")
        tmp.write_text(f"{offset:+.0f}\n")
        os.replace(tmp, self.faketime_file)
        with self.fresh.lock:
            self.fresh.wall_offset = offset
            self.fresh.wall_steady_from = self.now()
        self.steps[f"{offset / 3600:+.0f} h"] += 1
        log(f"daemon wall clock now {offset / 3600:+.0f} h")

    # ---- reloads ----
    def reload(self) -> None:
        variants = ["interval", "bad_syntax", "bad_ca"]
        if len(self.good) <= self.baseline and len(self.good) < len(self.names):
            variants.append("add")
        if len(self.good) > self.baseline - 1 and len(self.good) > 1:
            variants.append("remove")
        variant = self.rng.choice(variants)
        via = self.rng.choice(["sighup", "api"])
        new = dict(self.good)
        changed: set[str] = set()
        text: dict[str, Any] | str
        if variant == "add":
            name = self.rng.choice([n for n in self.names if n not in new])
            new[name] = self.rng.choice(INTERVALS)
            changed.add(name)
        elif variant == "remove":
            del new[self.rng.choice(sorted(new))]
        elif variant == "interval":
            name = self.rng.choice(sorted(new))
            new[name] = self.rng.choice([i for i in INTERVALS if i != new[name]])
            changed.add(name)
        good = variant not in ("bad_syntax", "bad_ca")
        if variant == "bad_syntax":
            text = json.dumps(self.config(new), indent=1)[:-40] + "\n  clusters: [ {{ :\n"
        elif variant == "bad_ca":
            text = self.config(new, bad_ca=self.rng.choice(sorted(new)))
        else:
            text = self.config(new)
        self.write_config(text)
        before_ok, before_bad = self.daemon.log_count("config reloaded"), self.daemon.log_count("reload rejected")
        t = self.now()
        log(f"reload {variant} by {via}: {sorted(new.items()) if good else '(must be rejected)'}")
        if via == "sighup":
            assert self.daemon.proc is not None
            self.daemon.proc.send_signal(signal.SIGHUP)
            outcome = None
            deadline = time.monotonic() + 20
            while outcome is None and time.monotonic() < deadline:
                time.sleep(0.1)
                if self.daemon.log_count("config reloaded") > before_ok:
                    outcome = True
                elif self.daemon.log_count("reload rejected") > before_bad:
                    outcome = False
        else:
            try:
                status, body = self.api("POST", "/reload", timeout=30)
            except OSError as exc:
                status, body = 0, str(exc)
            outcome = True if status == 200 else False if status in (400, 409, 422) else None
            if status >= 500 or status == 0:
                self.fail(f"t={t:.0f}: POST /api/v1/reload ({variant}) answered {status}: {body}")
        self.reloads[f"{variant} via {via}: {'applied' if outcome else 'rejected' if outcome is False else '?'}"] += 1
        if outcome is None:
            self.fail(f"t={t:.0f}: reload {variant} by {via}: no outcome in the log within 20 s")
        elif outcome != good:
            self.fail(f"t={t:.0f}: reload {variant} by {via} was {'applied' if outcome else 'rejected'}, "
                      f"expected {'applied' if good else 'rejected'}")  # fmt: skip
        if outcome and good:
            self.good = new
            self.set_applied(new, changed)
        elif outcome and not good:  # it was applied although bad: follow what the daemon runs
            self.notes.append(f"t={t:.0f}: bad config ({variant}) was applied")
        if not good:
            self.write_config(self.config(self.good))  # the file again says what runs (for the restart)
        # the reload metric must say what happened: the self-metrics of a scrape may be reused for up to
        # 1 s (pve_exporter.daemon.SELF_METRICS_MAX_AGE), so allow 3 s and record how long it took
        if outcome is not None:
            want, value, since = (1.0 if outcome else 0.0), None, time.monotonic()
            while time.monotonic() - since < 3.0:
                try:
                    m = _RELOAD_OK.search(request(f"{self.daemon.url}/metrics", timeout=15)[1].decode())
                except OSError:
                    m = None
                value = float(m.group(1)) if m else None
                if value == want:
                    break
                time.sleep(0.1)
            self.reload_metric_lag = max(self.reload_metric_lag, time.monotonic() - since)
            if value != want:
                self.fail(f"t={t:.0f}: 3 s after a {'successful' if outcome else 'rejected'} reload ({variant}) "
                          f"pve_exporter_config_last_reload_successful is {value}")

    # ---- power actions ----
    def guests(self, cluster: str) -> list[dict[str, Any]]:
        status, body = self.api("GET", f"/guests?cluster={cluster}")
        if status != 200:
            self.answers[f"GET /guests {status}"] += 1
            return []
        return [g for g in body["guests"] if not g.get("template")]

    def power(self, bulk: bool | None = None) -> None:
        cluster = self.rng.choice(sorted(self.good))
        try:
            guests = self.guests(cluster)
        except OSError as exc:
            self.answers[f"GET /guests {type(exc).__name__}"] += 1
            return
        if not guests:
            return
        bulk = self.rng.random() < 0.3 if bulk is None else bulk
        force = self.rng.random() < 0.3
        timeout = self.rng.choice([20, 40, 60])
        try:
            if bulk:
                members = self.rng.sample(guests, min(len(guests), self.rng.randint(2, 5)))
                action = self.rng.choice(["start", "stop", "restart"])
                body = {"action": action, "selector": {"cluster": cluster, "vmids": [g["vmid"] for g in members]},
                        "force": force, "concurrency": 2, "timeout_seconds": timeout}  # fmt: skip
                status, view = self.api("POST", "/actions", body)
                self.answers[f"bulk {status}"] += 1
                if status == 202:
                    for op in view["operations"]:
                        self.ops[op["id"]] = {"t": self.now(), "via": "bulk", "cluster": cluster,
                                              "vmid": op["resource_id"], "action": action,
                                              "timeout": timeout}  # fmt: skip
            else:
                g = self.rng.choice(guests)
                action = self.rng.choice(["start"] if g["status"] == "stopped" else ["stop", "restart"])
                if self.rng.random() < 0.15:
                    action = self.rng.choice(["start", "stop", "restart"])  # also the pointless ones
                status, op = self.api("POST", f"/clusters/{cluster}/guests/{g['vmid']}/{action}",
                                      {"force": force, "timeout_seconds": timeout})  # fmt: skip
                self.answers[f"single {status}"] += 1
                if status == 202:
                    self.ops[op["id"]] = {"t": self.now(), "via": "single", "cluster": cluster, "vmid": g["vmid"],
                                          "action": action, "timeout": timeout}  # fmt: skip
            if status >= 500:
                self.fail(f"t={self.now():.0f}: power action on {cluster} answered {status}")
        except OSError as exc:
            self.answers[f"power {type(exc).__name__}"] += 1

    # ---- SIGKILL and restart ----
    def kill_and_restart(self) -> None:
        self.power(bulk=True)  # operations in flight when the daemon dies
        time.sleep(1.0)
        self.sample()
        with self.stats.lock:
            self.stats.kill_window = True
        t = self.now()
        log(f"SIGKILL daemon pid {self.daemon.pid} ({len(self.faults)} faults active); the restarted process "
            f"{'runs with libfaketime' if self.faketime_file else 'runs as before'}")
        self.daemon.kill()
        self.restart["killed_at"] = t
        self.grace_all(float("inf"))
        self.write_config(self.config(self.good))
        start = time.monotonic()
        with open(self.daemon.log, "ab") as out:
            self.daemon.proc = subprocess.Popen([PYTHON, "-m", "pve_exporter", "--config", str(self.daemon.config)],
                                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                                env=self.daemon.preload_env)  # fmt: skip
        listening = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.clear_due_faults()
            if self.daemon.proc.poll() is not None:
                self.fail(f"restarted daemon exited with {self.daemon.proc.returncode}")
                raise SystemExit(self.report())
            try:
                status, _, _ = request(f"{self.daemon.url}/-/ready", timeout=2)
                listening = listening or time.monotonic() - start
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.fail("restarted daemon not ready within 90 s")
        self.restart["listening_after"] = listening if listening is not None else float("nan")
        self.restart["ready_after"] = time.monotonic() - start
        self.gen = 2
        self.preloaded = self.faketime_file is not None
        with self.fresh.lock:
            self.fresh.slack = PRELOAD_SLACK if self.preloaded else 0.0
        with self.stats.lock:
            self.stats.kill_window = False
        self.set_applied(self.good, set(self.good))
        log(f"restarted: listening after {listening or float('nan'):.2f} s, ready after "
            f"{self.restart['ready_after']:.2f} s")

    # ---- the run ----
    def run(self) -> int:
        a = self.a
        self.write_config(self.config(self.good))
        self.fresh.sim_delta = http_json(f"{self.sim.urls[self.names[0]]}/_sim/clock")["now"] - time.time()
        self.daemon.start()
        log(f"daemon ready after {self.daemon.ready_after:.1f} s (pid {self.daemon.pid}); work dir {self.workdir}")
        self.t0 = time.monotonic()
        self.set_applied(self.good, set(self.good))
        duration = a.minutes * 60
        end = self.t0 + duration
        stop = threading.Event()
        pool = [threading.Thread(target=scraper, args=(self.daemon.url, kind, a.seed * 10 + i, end, stop, self.stats,
                                                       self.fresh, self.t0), daemon=True)
                for i, kind in enumerate(("gzip", "gzip", "plain"))]  # fmt: skip
        pool.append(threading.Thread(target=prober, args=(self.sim.urls[self.names[0]], end + 5, stop, self.fresh,
                                                          self.t0), daemon=True))  # fmt: skip
        pool.append(threading.Thread(target=loop_prober, args=(self.daemon.url, end + 5, stop, self.fresh, self.t0),
                                     daemon=True))  # fmt: skip
        for th in pool:
            th.start()
        rng = self.rng
        nxt = {"sample": 0.0, "fault": rng.uniform(3, 8), "reload": rng.uniform(5, 10), "power": rng.uniform(1, 3),
               "clock": rng.uniform(10, 20), "clusters": 1.0}  # fmt: skip
        killed = False
        try:
            while time.monotonic() < end:
                t = self.now()
                self.clear_due_faults()
                self.settle_limits()
                if not killed and t >= duration / 2:
                    killed = True
                    self.kill_and_restart()
                    continue
                if t >= nxt["sample"]:
                    self.sample()
                    nxt["sample"] = t + 5
                if t >= nxt["fault"]:
                    self.inject_fault()
                    nxt["fault"] = t + rng.uniform(4, 12)
                if t >= nxt["reload"]:
                    self.reload()
                    nxt["reload"] = self.now() + rng.uniform(6, 14)
                if t >= nxt["power"]:
                    self.power()
                    nxt["power"] = t + rng.uniform(1, 4)
                if t >= nxt["clock"]:
                    self.step_clock()
                    # a step back is held >= 40 s: a poller that schedules by the wall clock would freeze that
                    # long, far beyond the preloaded half's allowance of 2 intervals + 10 s
                    nxt["clock"] = t + (rng.uniform(40, 60) if self.fresh.wall_offset < 0 else rng.uniform(15, 35))
                if t >= nxt["clusters"]:
                    self.check_cluster_ages()
                    nxt["clusters"] = t + 2
                time.sleep(0.05)
        finally:
            stop.set()
            for th in pool:
                th.join(20)
        log("chaos over: clearing faults, wall clock back to +0, waiting for operations to finish")
        self.clear_due_faults(force=True)
        self.set_clock(0.0)
        self.settle_operations()
        return self.report()

    def check_cluster_ages(self) -> None:
        """`age_seconds` of GET /api/v1/clusters (monotonic in the daemon) within two intervals when healthy."""
        try:
            status, body = self.api("GET", "/clusters", timeout=10)
        except OSError:
            return
        if status != 200:
            return
        t = self.now()
        with self.fresh.lock:
            for c in body["clusters"]:
                name, age = c["name"], c.get("age_seconds")
                if name not in self.fresh.applied or t < self.fresh.check_from.get(name, float("inf")):
                    continue
                what = f"GET /api/v1/clusters says age_seconds {age} (health {c.get('health')})"
                self.fresh.judge(t, name, float("inf") if age is None else float(age), self.fresh.limit[name], what)

    def all_operations(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for offset in range(0, 100_000, 1000):
            status, body = self.api("GET", f"/operations?limit=1000&offset={offset}")
            if status != 200:
                raise RuntimeError(f"GET /api/v1/operations: {status} {body}")
            out.update({op["id"]: op for op in body["operations"]})
            if offset + 1000 >= body["total"]:
                break
        return out

    def settle_operations(self) -> None:
        deadline = time.monotonic() + self.a.settle_seconds
        ops: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            try:
                ops = self.all_operations()
            except (OSError, RuntimeError) as exc:
                log(f"operations: {exc}")
                time.sleep(2)
                continue
            open_ = [o for o in ops.values() if o["status"] not in TERMINAL]
            if not open_:
                break
            log(f"{len(open_)} operations not finished yet: "
                + ", ".join(f"{o['id']} {o['operation']} {o['cluster']}/{o['resource_id']} {o['status']}"
                            for o in open_[:5]))  # fmt: skip
            time.sleep(3)
        time.sleep(2)  # let the last state change settle before asking PVE
        self.final_ops = ops

    # ---- checks and report ----
    def check_operations(self) -> dict[str, Any]:
        ops = self.final_ops
        missing = [i for i in self.ops if i not in ops]
        if missing:
            self.fail(f"{len(missing)} operations accepted with 202 are missing from GET /api/v1/operations: "
                      f"{missing[:5]}")  # fmt: skip
        statuses = Counter(o["status"] for o in ops.values())
        for o in ops.values():
            if o["status"] not in TERMINAL:
                self.fail(f"operation {o['id']} ({o['operation']} {o['cluster']}/{o['resource_id']}) is still "
                          f"{o['status']} {self.a.settle_seconds:g} s after the chaos ended")  # fmt: skip
        sim_state: dict[tuple[str, int], dict[str, Any]] = {}
        for name, url in self.sim.urls.items():
            for r in pve_get(url, "/cluster/resources?type=vm"):
                sim_state[(name, int(r["vmid"]))] = r
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for op_id, mine in sorted(self.ops.items(), key=lambda kv: kv[1]["t"]):
            if op_id in ops:
                latest[(mine["cluster"], int(mine["vmid"]))] = ops[op_id]
        mismatches = 0
        task_checked = 0
        for o in ops.values():
            if not o.get("upid") or not o.get("node") or o["status"] not in ("succeeded", "failed", "interrupted"):
                continue
            try:
                task = pve_get(self.sim.urls[o["cluster"]],
                               f"/nodes/{o['node']}/tasks/{urllib.parse.quote(o['upid'], safe='')}/status")
            except RuntimeError as exc:
                task = {"error": str(exc)}
            task_checked += 1
            pve_ok = task.get("status") == "stopped" and task.get("exitstatus") == "OK"
            pve_known = "error" not in task
            what = f"operation {o['id']} {o['operation']}{' force' if o['force'] else ''} {o['cluster']}/" \
                   f"{o['resource_id']} is {o['status']}"
            if o["status"] == "succeeded" and pve_known and not pve_ok and task.get("status") == "stopped":
                mismatches += 1
                self.fail(f"{what} but PVE's task {o['upid']} ended {task.get('exitstatus')!r}")
            elif o["status"] == "failed" and pve_ok and o["operation"] != "restart":
                mismatches += 1
                self.fail(f"{what} ({o.get('error_message')!r}) but PVE's task {o['upid']} ended OK")
            elif o["status"] == "interrupted" and pve_known and not self.removed_after(o):
                mismatches += 1
                self.fail(f"{what} although PVE still knows its task {o['upid']} "
                          f"({task.get('status')}, {task.get('exitstatus')!r})")  # fmt: skip
        bad_durations = []
        for o in ops.values():  # durations come from stored wall times: a clock step must not distort them
            d, asked = o.get("duration_seconds"), self.ops.get(o["id"])
            if d is None or asked is None or o["status"] not in TERMINAL:
                continue
            limit = float(asked.get("timeout", 120)) + 60
            if d < 0 or d > limit or (d == 0 and o["status"] == "succeeded" and o.get("upid")):
                bad_durations.append(f"{o['operation']} {o['cluster']}/{o['resource_id']} {o['status']}: "
                                     f"duration_seconds {d} (started {o['started_at']}, finished "
                                     f"{o['finished_at']})")  # fmt: skip
        if bad_durations:
            self.fail(f"{len(bad_durations)} of {len(ops)} operations have a duration_seconds distorted by a "
                      f"wall-clock step (0 or ~3600 s more; it also feeds "
                      f"pve_exporter_operation_duration_seconds_total), e.g. "
                      + "; ".join(bad_durations[:3]))  # fmt: skip
        for (cluster, vmid), o in sorted(latest.items()):
            real = sim_state.get((cluster, vmid), {}).get("status")
            if o["status"] != "succeeded":
                continue
            want = "stopped" if o["operation"] == "stop" else "running"
            if real != want:
                mismatches += 1
                self.fail(f"operation {o['id']} {o['operation']} {cluster}/{vmid} succeeded (the guest's last), "
                          f"but the simulator says the guest is {real}")  # fmt: skip
        return {"ops": len(ops), "statuses": statuses, "guests": len(latest), "tasks": task_checked,
                "mismatches": mismatches}  # fmt: skip

    def removed_after(self, op: dict[str, Any]) -> bool:
        """Was the operation's cluster removed from the config after we asked? (It cannot be followed then.)"""
        asked = self.ops.get(op["id"], {}).get("t", 0.0)
        return any(c == op["cluster"] and t >= asked for t, c in self.removals)

    def check_growth(self) -> dict[str, tuple[float, float]]:
        if len(self.samples) < 6:
            self.fail(f"only {len(self.samples)} resource samples: run longer")
            return {}
        span = self.samples[-1].t - self.samples[0].t
        warm = self.restart.get("killed_at", 0) + self.restart.get("ready_after", 0) + 10
        usable = [s for s in self.samples if not (self.restart.get("killed_at", 1e9) - 1 <= s.t <= warm)]
        first = [s for s in usable if s.t <= self.samples[0].t + span / 3]
        last = [s for s in usable if s.t >= self.samples[-1].t - span / 3]
        # fds and sockets scale with the clusters configured: compare at a cluster count both thirds saw
        shared = Counter(s.clusters for s in first) & Counter(s.clusters for s in last)
        if shared:
            count = max(shared, key=lambda c: (min(sum(s.clusters == c for s in first),
                                                   sum(s.clusters == c for s in last)), c == self.baseline))
            first, last = [s for s in first if s.clusters == count], [s for s in last if s.clusters == count]
            self.notes.append(f"growth compared at {count} configured clusters ({len(first)} and {len(last)} samples)")
        else:
            self.notes.append("growth compared over all samples (no cluster count common to both thirds)")
        if not first or not last:
            self.fail("no usable resource samples in the first or the last third: run longer")
            return {}
        out = self.compare(first, last, "first third", "last third")
        # The restarted process alone: its first against its last half (at its most common cluster count).
        gen2 = [s for s in usable if s.gen == 2]
        if gen2:
            common = Counter(s.clusters for s in gen2).most_common(1)[0][0]
            gen2 = [s for s in gen2 if s.clusters == common]
        if len(gen2) >= 8:
            half = len(gen2) // 2
            for k, v in self.compare(gen2[:half], gen2[half:], "restarted process, first half",
                                     "its last half").items():  # fmt: skip
                out[f"{k} (restarted process: first → last half)"] = v
        if max(s.close_wait for s in self.samples) > 5:
            self.fail(f"up to {max(s.close_wait for s in self.samples)} sockets in CLOSE_WAIT")
        return out

    def compare(self, first: list[Sample], last: list[Sample], a: str, b: str) -> dict[str, tuple[float, float]]:
        """Average footprint of two sample sets; a failure for each figure that grew past its allowance."""
        avg = lambda xs, k: sum(getattr(x, k) for x in xs) / len(xs)  # noqa: E731
        out = {k: (avg(first, k), avg(last, k)) for k in ("fds", "threads", "rss", "established", "close_wait")}
        # Keep-alive pools and faults (an erroring cluster keeps fewer connections) move fds and sockets by ~10
        # either way; a leaked connector shows as CLOSE_WAIT (the simulator closes idle keep-alives after 75 s).
        limits = {"fds": 12, "threads": 3, "rss": 25.0, "established": 10, "close_wait": 2}
        if min(len(first), len(last)) < 4:
            self.notes.append(f"{a} vs {b}: {len(first)} and {len(last)} samples, too few to judge growth")
            return out
        for k, (x, y) in out.items():
            if y - x > limits[k]:
                self.fail(f"{k} grew from {x:.1f} ({a}) to {y:.1f} ({b}); allowed +{limits[k]}")
        return out

    def report(self) -> int:
        opsum = self.check_operations() if hasattr(self, "final_ops") else {}
        growth = self.check_growth()
        with self.stats.lock:
            scrape_failures = list(self.stats.failures)
        for f in scrape_failures[:20]:
            self.fail(f"/metrics failed: {f}")
        if len(scrape_failures) > 20:
            self.fail(f"... and {len(scrape_failures) - 20} more /metrics failures")
        kinds: Counter[str] = Counter()
        preload = self.faketime_file is not None
        for ep in self.fresh.episodes():
            extra = f" + {ep.slack:g} s preload allowance" if ep.slack else ""
            line = (f"{ep.cluster} stale while its PVE was healthy, t={ep.start:.0f}..{ep.t:.0f} s: {ep.what} "
                    f"(limit {ep.limit:g} s{extra}; of that time the machine stood still {ep.machine:.1f} s, "
                    f"the daemon's event loop {ep.loop:.1f} s)")  # fmt: skip
            allowed = ep.limit + 1.5 + ep.slack
            if ep.age - ep.machine <= allowed:
                kinds["machine"] += 1
                self.notes.append(f"not counted (whole machine stalled): {line}")
            elif ep.age - ep.loop <= allowed:
                kinds["loop"] += 1
                if preload:
                    self.notes.append(f"not counted (the daemon's loop stalled; libfaketime preloaded): {line}")
                else:
                    self.fail(f"daemon stalled: {line}")
            else:
                kinds["schedule"] += 1
                self.fail(line)
        self.stale_kinds = kinds
        for g in self.fresh.ghosts[:5]:
            self.fail(g)
        for b in self.fresh.backwards:
            self.fail(f"/metrics went back in time: {b}")
        daemon_log = self.daemon.log.read_text(errors="replace") if self.daemon.log.exists() else ""
        errors = Counter()
        for line in daemon_log.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                if line.strip() and ("Traceback" in line or "Error" in line or "Unclosed" in line):
                    errors[line.strip()[:140]] += 1
                continue
            if rec.get("level") in ("error", "critical") or rec.get("exc_info") or rec.get("exception"):
                errors[f"{rec.get('level')}: {rec.get('event')}"] += 1
        lat = {k: sorted(v) for k, v in self.stats.latencies.items()}
        pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")  # noqa: E731
        rows = [
            ("machine", machine()),
            ("run", f"{self.a.minutes:g} min, seed {self.a.seed}, sim {len(self.names)} clusters × {self.a.nodes} "
                    f"nodes × {self.a.guests_per_node} guests; daemon starts with {self.baseline}"),
            ("reloads", (", ".join(f"{k} {v}" for k, v in sorted(self.reloads.items())) or "none")
             + f"; the reload metric showed the outcome within {self.reload_metric_lag:.2f} s"),
            ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items())) or "none"),
            ("wall-clock steps", ", ".join(f"{k} {v}" for k, v in sorted(self.steps.items()))
             or "none (no libfaketime)"),
            ("/metrics scrapes", f"gzip {self.stats.ok['gzip']}, plain {self.stats.ok['plain']} ok; "
                                 f"{len(scrape_failures)} failed; {self.stats.planned_errors} refused in the "
                                 f"SIGKILL window"),
            ("scrape latency", "; ".join(f"{k} p50 {pct(v, .5):.1f} / p99 {pct(v, .99):.1f} / max "
                                         f"{pct(v, 1):.1f} ms" for k, v in sorted(lat.items()))),
            ("freshness", f"{self.fresh.checked} checks while healthy; max age {self.fresh.max_age:.1f} s "
                          f"(by change), {self.fresh.max_ts_age:.1f} s (timestamp vs simulator clock); "
                          f"stale episodes: {kinds['schedule']} not explained by stalls, {kinds['loop']} while the "
                          f"daemon's loop stood still, {kinds['machine']} while the machine did"),
            ("stalls", f"daemon loop (/-/healthy > 0.5 s) {len(self.fresh.loop_stalls)}× "
                       f"{sum(b - a for a, b in self.fresh.loop_stalls):.1f} s in all, longest "
                       f"{max((b - a for a, b in self.fresh.loop_stalls), default=0):.1f} s; whole machine "
                       f"{len(self.fresh.stalls)}× {sum(b - a for a, b in self.fresh.stalls):.1f} s"),
            ("power requests", ", ".join(f"{k} {v}" for k, v in sorted(self.answers.items()))),
            ("operations", f"{opsum.get('ops', 0)} ("
                           + ", ".join(f"{k} {v}" for k, v in sorted(opsum.get("statuses", {}).items()))
                           + f"); {opsum.get('guests', 0)} guests' last operation and {opsum.get('tasks', 0)} PVE "
                           f"tasks checked, {opsum.get('mismatches', 0)} mismatches"),
            ("SIGKILL + restart", f"at t={self.restart.get('killed_at', float('nan')):.0f} s; /metrics answering "
                                  f"after {self.restart.get('listening_after', float('nan')):.2f} s, ready after "
                                  f"{self.restart.get('ready_after', float('nan')):.2f} s"),
        ]
        for k, (x, y) in growth.items():
            label = k if "(" in k else f"{k} (first → last third)"
            rows.append((label, f"{x:.1f} → {y:.1f} ({y - x:+.1f})"))
        rows.append(("daemon log errors", "; ".join(f"{k} ×{v}" for k, v in errors.most_common(8)) or "none"))
        width = max(len(k) for k, _ in rows)
        print("\nsummary")
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        for n in self.notes:
            print(f"  note: {n}")
        if self.failures:
            print(f"\nFAILED: {len(self.failures)} problem(s)")
            for f in self.failures:
                print(f"  - {f}")
            print(f"  (daemon log and config kept in {self.workdir})")
            return 1
        print("\nPASSED: no growth, every operation terminal and true to PVE, /metrics never failed nor went stale")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--guests-per-node", type=int, default=8)
    ap.add_argument("--interval", type=float, default=3.0, help="starting interval of every cluster (s)")
    ap.add_argument("--settle-seconds", type=float, default=120.0,
                    help="how long to wait at the end for operations to finish")
    ap.add_argument("--no-faketime", action="store_true", help="do not step the daemon's wall clock")
    ap.add_argument("--faketime-cache", type=float, default=1.0,
                    help="libfaketime re-reads the step file at most this often (s); 0 = on every call")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (config, history, daemon log)")
    a = ap.parse_args()
    if a.minutes <= 0 or a.minutes > 60:
        ap.error("--minutes must be in (0, 60]")
    print(f"chaos: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="pve-chaos-"))
    rc = 1
    with SimProc(4, a.nodes, a.guests_per_node, latency_ms=10, seed=a.seed) as sim:
        chaos = Chaos(a, sim, workdir)
        try:
            rc = chaos.run()
        finally:
            chaos.daemon.stop()
    if rc == 0 and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"work dir kept: {workdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
