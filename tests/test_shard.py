"""Static sharding (`shard: {index, total}`): Prometheus's hashmod over target names, nothing polled twice."""

from __future__ import annotations

import pytest

from pve_exporter.app import Daemon
from pve_exporter.settings import ConfigError, Settings, load_settings
from pve_exporter.shard import owned, shard_of
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests.simharness import FixedClock, config_yaml, series


def test_hashmod_is_prometheus_hashmod():
    # prometheus/prometheus model/relabel/relabel_test.go: `c: "baz"`, action hashmod, modulus 1000 → "976"
    assert shard_of("baz", 1000) == 976


def test_every_target_has_exactly_one_owner_and_the_split_is_balanced_enough():
    names = [f"cluster-{i}" for i in range(300)]
    for total in (1, 2, 3, 5):
        owners = [[i for i in range(total) if owned(n, i, total)] for n in names]
        assert all(len(o) == 1 for o in owners)
        counts = [sum(1 for o in owners if o == [i]) for i in range(total)]
        assert min(counts) > 300 / total * 0.6, counts
    assert owned("anything", None, None)


def test_shard_index_must_be_below_total():
    with pytest.raises(ValueError, match=r"shard.index"):
        Settings(shard={"index": 2, "total": 2})


def test_bad_shard_in_a_file_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("shard:\n  index: 3\n  total: 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert "shard" in str(e.value)


def config(urls: dict[str, str], index: int, total: int) -> str:
    return config_yaml(urls, top=f"shard:\n  index: {index}\n  total: {total}\n")


async def test_two_shards_split_the_clusters_and_a_reload_moves_them(tmp_path):
    names = ["a", "b", "c", "d", "e"]
    clock = FixedClock()
    sim = build_simulator([(n, 1, 1) for n in names], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        daemons = []
        for i in range(2):
            path = tmp_path / f"c{i}.yaml"
            path.write_text(config(server.urls, i, 2))
            d = Daemon(load_settings(path), config_path=str(path), autostart=False, clock=clock,
                       monotonic=clock.monotonic)  # fmt: skip
            await d.start()
            daemons.append(d)
        try:
            polled = [set(d.clusters) for d in daemons]
            assert polled[0] | polled[1] == set(names) and not polled[0] & polled[1]
            for d in daemons:
                for rt in d.clusters.values():
                    await rt.poller.run_once()
            for i, d in enumerate(daemons):
                text = d.metrics_body(sorted(d.clusters), False).decode()
                s = series(text)
                owned_by_me = {dict(lab)["target"] for (n, lab), v in s.items()
                               if n == "pve_exporter_target_owned" and v == 1.0}  # fmt: skip
                assert owned_by_me == polled[i]
                assert {dict(lab)["cluster"] for (n, lab) in s if n == "pve_up"} == polled[i]
            # one shard goes away: the other takes every target on reload (total 1)
            path = tmp_path / "c0.yaml"
            path.write_text(config(server.urls, 0, 1))
            assert await daemons[0].reload()
            assert set(daemons[0].clusters) == set(names)
        finally:
            for d in daemons:
                await d.stop()
