"""Reload (SIGHUP / POST /api/v1/reload): clusters added, removed, changed; a bad file keeps the old config."""

from __future__ import annotations

from pve_exporter.app import Daemon
from pve_exporter.settings import load_settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests.simharness import FixedClock, config_yaml, ids, series


def config_text(urls: dict[str, str], interval: int = 15) -> str:
    return config_yaml(urls, interval=interval)


def own(daemon, name):
    text = daemon.metrics_body(sorted(daemon.clusters), False).decode()
    return next((v for (n, _), v in series(text).items() if n == name), None)


async def test_add_remove_change_and_reject(tmp_path):
    clock = FixedClock()
    sim = build_simulator([("a", 2, 2), ("b", 2, 2), ("c", 2, 2)], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        urls = server.urls
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text({"a": urls["a"], "b": urls["b"]}))
        daemon = Daemon(
            load_settings(cfg), config_path=str(cfg), autostart=False, clock=clock, monotonic=clock.monotonic
        )
        await daemon.start()
        try:
            for name in ("a", "b"):
                await daemon.clusters[name].poller.run_once()
            before_a = daemon.exposition.body(["a"])
            poller_a = daemon.clusters["a"].poller

            # add c, drop b, change nothing about a
            cfg.write_text(config_text({"a": urls["a"], "c": urls["c"]}))
            assert await daemon.reload()
            assert sorted(daemon.clusters) == ["a", "c"]
            assert daemon.clusters["a"].poller is poller_a  # unchanged cluster untouched
            assert daemon.exposition.body(["a"]) == before_a  # its series did not disappear
            text = daemon.exposition.body(sorted(daemon.clusters)).decode()
            assert 'cluster="b"' not in text  # a removed cluster's series go away at once
            await daemon.clusters["c"].poller.run_once()
            assert ids(daemon.exposition.body(["c"]).decode(), "pve_node_info") == {"node/pve1", "node/pve2"}

            # change a's interval: a is rebuilt, but its last snapshot keeps serving meanwhile
            cfg.write_text(config_text({"a": urls["a"], "c": urls["c"]}, interval=30))
            assert await daemon.reload()
            assert daemon.clusters["a"].poller is not poller_a
            assert daemon.clusters["a"].poller.timing.interval == 30
            assert daemon.exposition.body(["a"]) == before_a
            assert own(daemon, "pve_exporter_config_last_reload_successful") == 1.0

            # a bad file is rejected and the running config stays
            cfg.write_text(config_text({"a": urls["a"]}) + "    bogus: 1\n")
            assert not await daemon.reload()
            assert sorted(daemon.clusters) == ["a", "c"]
            assert own(daemon, "pve_exporter_config_last_reload_successful") == 0.0
        finally:
            await daemon.stop()


async def test_reload_with_new_collect_settings_updates_running_pollers(tmp_path):
    clock = FixedClock()
    sim = build_simulator([("a", 2, 2)], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text({"a": server.urls["a"]}))
        daemon = Daemon(
            load_settings(cfg), config_path=str(cfg), autostart=False, clock=clock, monotonic=clock.monotonic
        )
        await daemon.start()
        try:
            poller = daemon.clusters["a"].poller
            assert "agent" not in {c.name for c in poller.collectors}
            cfg.write_text(config_text({"a": server.urls["a"]}) + "collect: {guest_agent_filesystems: true}\n")
            assert await daemon.reload()
            assert daemon.clusters["a"].poller is poller  # the cluster itself did not change
            assert "agent" in {c.name for c in poller.collectors}
            await poller.run_once()
        finally:
            await daemon.stop()
