"""The standard `process_*` and `python_*` families, from prometheus_client's own collectors.

Generic dashboards and alerts (process CPU, resident memory, open file descriptors, restarts via
`process_start_time_seconds`) expect these on every exporter. The collectors are registered in a
private registry (the global one stays unused) and turned into plain Families, so they render
through the same exposition as everything else. Like `pve_exporter_build_info` they describe the
daemon, not a cluster: no `cluster` label, present whatever `?cluster=` selects. Reading them costs
a few /proc reads per scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric

from pve_exporter.collect.base import Family, Kind


def _family(m: Metric) -> Family | None:
    kind: Kind = "counter" if m.type == "counter" else "gauge" if m.type in ("gauge", "info") else "untyped"
    name = m.name + "_total" if kind == "counter" else m.name
    samples = [s for s in m.samples if s.name == name or (kind != "counter" and s.name == m.name)]
    if not samples:
        return None
    labels: list[str] = []
    for s in samples:
        labels += [k for k in s.labels if k not in labels]
    rows = tuple((tuple(s.labels.get(k, "") for k in labels), float(s.value)) for s in samples)
    return Family(name, kind, m.documentation, tuple(labels), rows)


class StandardMetrics:
    """Process (Linux /proc), platform (`python_info`) and garbage-collector metrics of this process."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)

    def families(self, clusters: set[str] | None = None) -> list[Family]:
        """`clusters` is ignored: these series belong to the daemon (see the module docstring)."""
        out = []
        for m in self._registry.collect():
            f = _family(m)
            if f is not None:
                out.append(f)
        return out
