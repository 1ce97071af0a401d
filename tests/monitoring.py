"""Shared by the alert and dashboard tests: the daemon's real /metrics and a small PromQL reader.

`exposition()` runs the simulator and the daemon in-process (two clusters, one collector
failing, an InfluxDB output pointed at a closed port so its failure counters exist, the control
API enabled with a few operations counted) and returns the text a scrape would get. Tests
take metric names and label sets from it instead of from a hand-written list, so a rule or panel
can never name a metric the daemon does not expose.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from pve_exporter.app import Daemon
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
from tests.controlharness import control_cfg
from tests.servers import free_port
from tests.simharness import FixedClock, cluster_cfg

ROOT = Path(__file__).resolve().parent.parent

# Series Prometheus makes itself, not the daemon (the exporter-down alert needs `up`).
PROMETHEUS_SERIES = {"up"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


def load_module(path: Path) -> ModuleType:
    """Import a generator script (alerts/generate.py, dashboards/generate.py) by path."""
    name = "_gen_" + "_".join(path.relative_to(ROOT).with_suffix("").parts)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- the real exposition ------------------------------------------------------------------------


@dataclass
class FamilyInfo:
    type: str
    label_sets: set[frozenset[str]] = field(default_factory=set)

    @property
    def labels(self) -> set[str]:
        return set().union(*self.label_sets) if self.label_sets else set()


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+\S+$")


def parse_exposition(text: str) -> dict[str, FamilyInfo]:
    """{sample name: its family type and the label-name sets seen} (sample names, e.g. `x_total`)."""
    types: dict[str, str] = {}
    out: dict[str, FamilyInfo] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        name, body = m.group(1), m.group(2) or ""
        labels = frozenset(k for k, _ in _LABEL.findall(body))
        out.setdefault(name, FamilyInfo(types.get(name, "untyped"))).label_sets.add(labels)
    return out


@dataclass
class Collected:
    exposition: str
    influx_lines: list[str]  # line protocol of every cycle, as the InfluxDB output encodes it


async def _collect() -> Collected:
    from pve_exporter.export.influx import snapshot_to_lines

    clock = FixedClock()
    sim = build_simulator([("lab", 3, 4), ("prod", 2, 3)], seed=7, auth_delay=0.0, clock=clock)
    # A failing collector, so pve_exporter_collector_error_info is there too.
    sim.cluster("prod").add_fault("http_error", path="/cluster/config/qdevice", status=500)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pve-exposition-") as tmp:
        async with SimulatorServer(sim) as server, PbsServer(SimPbs(sim, "backup1", ["lab"])) as pbs:
            # A backup server linked to lab, one of its collectors failing (error_info is there too).
            pbs.pbs.faults.add("forbidden", path="/admin/datastore/store2/snapshots")
            settings = Settings(
                listen="127.0.0.1:0",
                clusters=[cluster_cfg(name, [url]) for name, url in server.urls.items()],
                backup_servers=[{"name": "backup1", "endpoints": [pbs.url], "token_id": PBS_TOKEN_ID,
                                 "token_secret": PBS_TOKEN_SECRET, "clusters": ["lab"]}],
                influxdb={
                    "api": "v1", "url": f"http://127.0.0.1:{free_port()}", "database": "pve",
                    "spool_dir": str(Path(tmp) / "spool"), "timeout_seconds": 1, "flush_interval_seconds": 0,
                    "retry_initial_seconds": 0.05, "retry_max_seconds": 0.1,
                },
                control=control_cfg(Path(tmp) / "operations.sqlite"),
            )
            daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
            await daemon.start()
            try:
                _record_operations(daemon)
                for _ in range(3):  # three cycles 15 s apart: rates and derivatives have points to work on
                    for bs in daemon.pbs.servers.values():
                        await bs.poller.run_once()
                    for name, rt in daemon.clusters.items():
                        await rt.poller.run_once()
                        snap = daemon.store.get(name)
                        assert snap is not None
                        lines.extend(snapshot_to_lines(snap))
                    clock.t += 15
                deadline = time.monotonic() + 15
                body = ""
                while time.monotonic() < deadline:  # the writer fails against the closed port
                    body = daemon.metrics_body(sorted(daemon.clusters), False, sorted(daemon.pbs.servers)).decode()
                    if "pve_exporter_influx_failures_total{" in body:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await daemon.stop()
    return Collected(body, lines)


def _record_operations(daemon: Daemon) -> None:
    """Finished operations, refused and rate-limited requests, as the control plane counts them.

    Its families appear on /metrics only once something happened; the operation tests
    (tests/test_control_*.py) drive real actions, this only needs every family and label set.
    """
    assert daemon.control is not None
    m = daemon.control.metrics
    for action, result in (("start", "succeeded"), ("start", "failed"), ("stop", "timed_out"),
                           ("restart", "cancelled"), ("restart", "interrupted")):
        m.operation_finished("lab", action, result, 1.5)
    m.in_progress["lab"] += 0
    m.auth_failures["invalid"] += 1
    m.rate_limited["auth"] += 1


@functools.cache
def collected() -> Collected:
    return asyncio.run(_collect())


def exposition() -> str:
    return collected().exposition


def influx_lines() -> list[str]:
    return collected().influx_lines


@functools.cache
def exposed() -> dict[str, FamilyInfo]:
    return parse_exposition(exposition())


# -- PromQL, as far as the tests need it ---------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def clauses(expr: str) -> list[tuple[str, list[str]]]:
    """Every `by (...)`, `on (...)`, `group_left (...)`, ... with its label list."""
    return [(kw, [x.strip() for x in labels.split(",") if x.strip()]) for kw, labels in
            _CLAUSE.findall(strip_strings(expr))]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (bare names and names before `{`)."""
    text = strip_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _CLAUSE.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name in _KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def range_function_args(expr: str) -> list[tuple[str, str]]:
    """(function, metric) for every rate/irate/increase/deriv/predict_linear... over a metric's range."""
    text = strip_strings(expr)
    pat = re.compile(r"\b(rate|irate|increase|delta|deriv|predict_linear|[a-z]+_over_time)\s*\(\s*"
                     r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^}]*\})?\s*\[")
    return pat.findall(text)


COUNTER_FUNCS = {"rate", "irate", "increase"}


def counter_problems(expr: str, families: dict[str, FamilyInfo]) -> list[str]:
    """rate()/increase() only over counters, and counters only inside rate()/increase()."""
    problems = []
    inside = set()
    for func, metric in range_function_args(expr):
        fam = families.get(metric)
        if func in COUNTER_FUNCS:
            inside.add(metric)
            if fam is None or fam.type != "counter":
                problems.append(f"{func}() over {metric}, which is not a counter ({fam.type if fam else 'absent'})")
        elif fam is not None and fam.type == "counter":
            problems.append(f"{func}() over counter {metric}")
    for metric in metric_names(expr):
        fam = families.get(metric)
        if fam is not None and fam.type == "counter" and metric not in inside:
            problems.append(f"counter {metric} used outside rate()/irate()/increase()")
    return problems


def cluster_problems(expr: str, families: dict[str, FamilyInfo]) -> list[str]:
    """Every aggregation and vector-matching clause keeps `cluster` when the metrics carry it."""
    names = metric_names(expr) - PROMETHEUS_SERIES
    if not names or not all("cluster" in families[n].labels for n in names if n in families):
        return []  # e.g. the InfluxDB output's self-metrics: per output, no cluster
    return [f"`{kw} ({', '.join(labels)})` without cluster" for kw, labels in clauses(expr)
            if kw in ("by", "on") and "cluster" not in labels]
