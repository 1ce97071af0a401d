"""`check-dashboard` / `check-rules`: what a prometheus-pve-exporter dashboard or rule file uses that
this daemon does not expose, and why.

The exposed names and labels are not a hand list: they come from the daemon itself, collecting once
from the built-in simulator with the default settings and once per opt-in setting (which is how
"only with an option" is found). Only the reasons for names prometheus-pve-exporter had and this
daemon dropped or renamed are written down (`GONE`); a test checks each of them is really absent.
Exit codes: 0 all found, 1 something missing, 2 unreadable input. Data on stdout, logs on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pve_exporter.promrefs import ExprRefs, RefsError, Use, read_dashboard, read_rules

EXIT_OK, EXIT_MISSING, EXIT_UNREADABLE = 0, 1, 2

# Opt-in settings (collect.*) that add metric names or labels; each gets its own simulator run.
OPTIONS: tuple[str, ...] = ("qemu_full_status", "guest_agent_filesystems", "guest_devices", "guest_name_label")
# Labels Prometheus attaches to every scraped series, and the series it makes itself.
TARGET_LABELS = frozenset({"job", "instance", "__name__"})
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                               "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
                               "ALERTS_FOR_STATE"})  # fmt: skip
OURS = re.compile(r"^pve_")  # prometheus-pve-exporter's names; anything else belongs to another exporter

# prometheus-pve-exporter names this daemon does not expose, with the reason (prefix match for families).
GONE: dict[str, str] = {
    "pve_collection_duration_seconds": (
        "removed on purpose: collection does not happen per scrape here; use pve_exporter_cycle_duration_seconds "
        "and pve_exporter_collector_duration_seconds{collector}"
    ),
    "pve_request_errors_total": (
        "removed on purpose: a scrape never fails because PVE does; use pve_exporter_cluster_up == 0, "
        "pve_exporter_collector_success == 0 or `up` of a /pve?target= job (503 without fresh data)"
    ),
    "pve_scrape_api_duration_seconds": (
        "renamed: pve_exporter_api_request_duration_seconds_total{cluster,method,path} (a counter of seconds, "
        "templated paths) with pve_exporter_api_requests_total for the count"
    ),
    "pve_scrape_api_errors_total": (
        'renamed: pve_exporter_api_requests_total{status!~"2.."} (by endpoint, templated path and status)'
    ),
    "pve_scrape_target_duration_seconds": (
        "removed on purpose: there is no per-scrape collection; use pve_exporter_cycle_duration_seconds{cluster}"
    ),
    "pve_scrape_target_errors_total": (
        "removed on purpose: use pve_exporter_cluster_up{cluster} and pve_exporter_collector_success"
    ),
}
# Names that are exposed but behave differently from prometheus-pve-exporter (printed as notes).
NOTES: dict[str, str] = {
    "pve_disk_usage_bytes": "no QEMU rows: PVE always reports 0 for VMs, which means unknown (LXC, nodes, "
    "storage as before)",
    "pve_ha_state": "only HA-managed guests and nodes with an HA state (collect.all_enum_states: true restores a "
    "row per state for every guest)",
    "pve_lock_state": "only locked guests (collect.all_enum_states: true restores a row per state for every guest)",
    "pve_guest_info": "tags sorted and joined with ';'; guests of an offline node keep their last known name",
    "pve_onboot_status": "a guest without `onboot` in its config reads 0 (PVE's default) instead of no series",
}


@dataclass(frozen=True)
class Exposed:
    """Sample names and the labels seen on each, by setting ("" = defaults, else the collect.* option)."""

    by_option: Mapping[str, Mapping[str, frozenset[str]]]

    @property
    def default(self) -> Mapping[str, frozenset[str]]:
        return self.by_option[""]

    def option_for_name(self, name: str) -> str | None:
        return next((o for o, names in self.by_option.items() if o and name in names), None)

    def option_for_label(self, name: str, label: str) -> str | None:
        return next((o for o, names in self.by_option.items() if o and label in names.get(name, ())), None)


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')


def parse_exposition(text: str) -> dict[str, frozenset[str]]:
    """{sample name: label names seen on it} from exposition text."""
    seen: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.split("{", 1)
        name = head[0].split(" ", 1)[0]
        labels = set(_LABEL.findall(head[1].rsplit("}", 1)[0])) if len(head) > 1 else set()
        seen.setdefault(name, set()).update(labels)
    return {k: frozenset(v) for k, v in seen.items()}


async def _scrape_simulator(option: str) -> dict[str, frozenset[str]]:
    """One collection cycle of the real daemon against the built-in simulator; the page it serves."""
    from pve_exporter.app import Daemon
    from pve_exporter.settings import Settings
    from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator

    sim = build_simulator([("lab", 3, 6), ("prod", 4, 6)], seed=7, auth_delay=0.0)
    async with SimulatorServer(sim) as server:
        token = {"token_id": DEFAULT_TOKEN_ID, "token_secret": DEFAULT_TOKEN_SECRET}
        clusters = [{"name": name, "endpoints": [url], **token} for name, url in server.urls.items()]
        collect = {option: True} if option else {}
        daemon = Daemon(Settings(listen="127.0.0.1:0", clusters=clusters, collect=collect), autostart=False)
        await daemon.start()
        try:
            for _ in range(2):  # per-guest collectors (guest agent) plan from what the first cycle read
                for rt in daemon.clusters.values():
                    await rt.poller.run_once()
            return parse_exposition(daemon.metrics_body(sorted(daemon.clusters), False).decode())
        finally:
            await daemon.stop()


@functools.cache
def exposed() -> Exposed:
    """What the daemon exposes with its defaults and with each opt-in (cached per process)."""

    async def run() -> Exposed:
        return Exposed({o: await _scrape_simulator(o) for o in ("", *OPTIONS)})

    return asyncio.run(run())


# -- the check ------------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str  # "metric" | "label" | "note" | "other"
    subject: str
    reason: str
    where: list[str] = field(default_factory=list)


def _gone_reason(name: str) -> str | None:
    for prefix, reason in GONE.items():
        if name == prefix or name.startswith(prefix + "_"):
            return reason
    return None


def _label_reason(metric: str, label: str, names: Mapping[str, frozenset[str]]) -> str:
    """No such label; if an info series keyed by the same `id` has it, say how to join it in."""
    reason = f"{metric} has no label {label!r}"
    if "id" in names.get(metric, ()):
        infos = sorted(n for n, lbls in names.items() if n.endswith("_info") and {"id", label} <= lbls)
        if infos:
            best = "pve_guest_info" if "pve_guest_info" in infos else infos[0]
            reason += f"; join it: * on(id, instance) group_left({label}) {best}"
    return reason


def check(uses: Sequence[Use], exp: Exposed) -> list[Finding]:
    """Every metric and label `uses` ask for that the default daemon lacks, with the reason."""
    found: dict[tuple[str, str], Finding] = {}
    names = exp.default

    def add(kind: str, subject: str, reason: str, where: str) -> None:
        f = found.setdefault((kind, subject), Finding(kind, subject, reason))
        if where not in f.where:
            f.where.append(where)

    for use in uses:
        refs: ExprRefs = use.refs
        present: list[str] = []
        for metric, labels in sorted(refs.metrics.items()):
            if metric in PROMETHEUS_SERIES:
                present.append(metric)
                continue
            if not OURS.match(metric):
                add("other", metric, "not a prometheus-pve-exporter metric: not checked", use.where)
                continue
            if metric not in names:  # sample names: a histogram is asked for by its _bucket/_sum/_count
                opt = exp.option_for_name(metric)
                reason = (
                    f"only with an option: collect.{opt}: true" if opt else _gone_reason(metric)
                    or ("a self-metric that appears once its feature is configured or its event happened"
                        if metric.startswith("pve_exporter_") else "not exposed by this daemon")
                )  # fmt: skip
                add("metric", metric, reason, use.where)
                continue
            present.append(metric)
            if metric in NOTES:
                add("note", metric, NOTES[metric], use.where)
            for label in sorted(labels - TARGET_LABELS - names[metric]):
                opt = exp.option_for_label(metric, label)
                reason = f"only with an option: collect.{opt}: true" if opt else _label_reason(metric, label, names)
                add("label", f"{metric}{{{label}}}", reason, use.where)
        # Labels named outside a selector must exist on one of the expression's metrics.
        pool = set(TARGET_LABELS) | refs.made
        for m in present:
            pool |= names.get(m, frozenset())
        unknown = False
        for m in refs.metrics:
            if m not in present:
                opt = exp.option_for_name(m)
                if opt is None:
                    unknown = True  # a missing metric's labels are unknown: do not guess
                else:
                    pool |= exp.by_option[opt][m]  # reported once, as a metric that needs the option
        if unknown:
            continue
        if not refs.metrics:  # e.g. label_values(node): any exposed series may carry it
            pool |= {label for lbls in names.values() for label in lbls}
        for label in sorted(refs.labels - pool):
            opt = next((exp.option_for_label(m, label) for m in present if exp.option_for_label(m, label)), None)
            reason = (f"only with an option: collect.{opt}: true" if opt
                      else f"none of {', '.join(sorted(refs.metrics))} has it")  # fmt: skip
            add("label", label, reason, use.where)
        for pattern in refs.name_patterns:
            if not any(re.fullmatch(pattern, n) for n in names):
                add("metric", f'{{__name__=~"{pattern}"}}', "no exposed name matches", use.where)
    order = {"metric": 0, "label": 1, "note": 2, "other": 3}
    return sorted(found.values(), key=lambda f: (order[f.kind], f.subject))


def render(path: str, uses: Sequence[Use], findings: Iterable[Finding]) -> tuple[str, int]:
    """The report (one finding per line, tab-separated: status, kind, subject, reason, where) and the exit code."""
    lines = []
    missing = 0
    for f in findings:
        status = {"metric": "MISSING", "label": "MISSING", "note": "NOTE", "other": "SKIPPED"}[f.kind]
        missing += status == "MISSING"
        where = ", ".join(f.where[:3]) + (f" (+{len(f.where) - 3} more)" if len(f.where) > 3 else "")
        lines.append(f"{status}\t{f.kind if f.kind != 'other' else 'metric'}\t{f.subject}\t{f.reason}\t{where}")
    lines.append(f"{path}: {len(uses)} queries checked, {missing} missing")
    return "\n".join(lines) + "\n", EXIT_MISSING if missing else EXIT_OK


def main(kind: str, argv: Sequence[str]) -> int:
    reader = {"dashboard": read_dashboard, "rules": read_rules}[kind]
    what = "a Grafana dashboard (JSON)" if kind == "dashboard" else "a Prometheus rule file (YAML)"
    p = argparse.ArgumentParser(
        prog=f"pve-exporter check-{kind}",
        description=f"List every metric and label {what} uses that this daemon does not expose, with the reason. "
        "Exit 0: all found; 1: something missing; 2: unreadable input.",
    )
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
        uses = reader(text)
    except (OSError, UnicodeDecodeError, RefsError) as exc:
        print(f"pve-exporter check-{kind}: {args.file}: cannot read {what}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    from pve_exporter import logs

    logs.configure("warning", "console", sys.stderr)  # the simulator run's logs stay off stdout
    report, code = render(args.file, uses, check(uses, exposed()))
    sys.stdout.write(report)
    return code
