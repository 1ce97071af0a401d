"""The standard process_*/python_* families are on /metrics (issue 13 item 8), without `cluster`."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pve_exporter.export.process_metrics import StandardMetrics
from tests.simharness import cycle, sim_daemon


async def test_process_and_python_families_on_the_page_for_every_selection():
    async with sim_daemon(clusters=(("lab", 2, 1),)) as (daemon, _sim, _):
        await cycle(daemon)
        for selection in (["lab"], []):
            text = daemon.metrics_body(selection, False).decode()
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            assert fams["process_cpu_seconds"].type == "counter"
            assert fams["process_resident_memory_bytes"].samples[0].value > 0
            assert fams["process_start_time_seconds"].samples[0].value > 1e9
            assert fams["python_info"].samples[0].labels["implementation"]
            assert {s.labels["generation"] for s in fams["python_gc_collections"].samples} == {"0", "1", "2"}
            for name in ("process_cpu_seconds", "process_open_fds", "python_info", "python_gc_collections"):
                assert all("cluster" not in s.labels for s in fams[name].samples), name


def test_families_are_typed_like_prometheus_client_and_values_move():
    m = StandardMetrics()
    first = {f.name: f for f in m.families()}
    assert first["process_cpu_seconds_total"].kind == "counter"
    assert first["process_open_fds"].kind == "gauge" and first["process_open_fds"].labels == ()
    assert first["python_gc_objects_collected_total"].labels == ("generation",)
    sum(i * i for i in range(200_000))  # burn a little CPU
    again = {f.name: f for f in m.families()}
    assert again["process_cpu_seconds_total"].samples[0][1] >= first["process_cpu_seconds_total"].samples[0][1]
