"""Unit tests for the pure collector parsers and the value helpers.

Fixtures under tests/fixtures/pve{7,8,9}/ are hand-written from /work/shared/notes/pve-api.md
(§2, §3, §5, §7, §8): each file is the body PVE sends, `{"data": ...}` envelope included.
Metric names, types and label names follow prometheus-pve-exporter (peer-exporters.md §2.3).

The shared cluster in every version: nodes pve1 and pve2 online, pve3 offline for more than 5 min
(no stats, no ip), 10 guests (two of them on pve3 with only config-derived fields), 7 storage
entries (two `unknown`), pools, and sdn (7.x, 8.x) or network (9.x) entries.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pve_exporter.collect import cluster_extra, node_extra
from pve_exporter.collect.base import CacheView, Family, FamilyBuilder, NodeRef, Request, Shared, build_all
from pve_exporter.collect.cluster_extra import parse_not_backed_up, parse_qdevice, parse_version
from pve_exporter.collect.config import config_path, parse_onboot, plan_configs
from pve_exporter.collect.node_extra import parse_due_date, parse_replication, parse_subscription
from pve_exporter.collect.resources import GUEST_HA_STATES, LOCK_STATES, NODE_HA_STATES, parse_resources
from pve_exporter.collect.status import make_shared, parse_cluster_status
from pve_exporter.pve.values import flag, integer, num, sorted_csv, split_tags, text

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = ("pve7", "pve8", "pve9")
CLUSTER = "prod"  # the configured name; PVE itself calls the fixture cluster "lab"

Key = tuple[str, frozenset[tuple[str, str]]]

# prometheus-pve-exporter's metric list (peer-exporters.md §2.3): name -> (type, label names).
# `pve_not_backed_up_total` is deliberately `untyped` here (a gauge must not end in `_total`).
PPE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pve_up": ("gauge", ("id",)),
    "pve_version_info": ("gauge", ("release", "repoid", "version")),
    "pve_node_info": ("gauge", ("id", "level", "name", "nodeid")),
    "pve_cluster_info": ("gauge", ("id", "nodes", "quorate", "version")),
    "pve_qdevice_up": ("gauge", ("id",)),
    "pve_qdevice_info": ("gauge", ("id", "model", "algorithm", "qnetd_host", "tie_breaker", "state")),
    "pve_disk_size_bytes": ("gauge", ("id",)),
    "pve_disk_usage_bytes": ("gauge", ("id",)),
    "pve_memory_size_bytes": ("gauge", ("id",)),
    "pve_memory_usage_bytes": ("gauge", ("id",)),
    "pve_network_transmit_bytes": ("gauge", ("id",)),
    "pve_network_receive_bytes": ("gauge", ("id",)),
    "pve_disk_write_bytes": ("gauge", ("id",)),
    "pve_disk_read_bytes": ("gauge", ("id",)),
    "pve_cpu_usage_ratio": ("gauge", ("id",)),
    "pve_cpu_usage_limit": ("gauge", ("id",)),
    "pve_uptime_seconds": ("gauge", ("id",)),
    "pve_storage_shared": ("gauge", ("id",)),
    "pve_network_transmit_bytes_total": ("counter", ("id",)),
    "pve_network_receive_bytes_total": ("counter", ("id",)),
    "pve_disk_written_bytes_total": ("counter", ("id",)),
    "pve_disk_read_bytes_total": ("counter", ("id",)),
    "pve_ha_state": ("gauge", ("id", "state")),
    "pve_lock_state": ("gauge", ("id", "state")),
    "pve_guest_info": ("gauge", ("id", "node", "name", "type", "template", "tags")),
    "pve_storage_info": ("gauge", ("id", "node", "storage", "plugintype", "content")),
    "pve_not_backed_up_total": ("untyped", ("id",)),
    "pve_not_backed_up_info": ("gauge", ("id",)),
    "pve_onboot_status": ("gauge", ("id", "node", "type")),
    "pve_replication_info": ("gauge", ("id", "type", "source", "target", "guest")),
    "pve_replication_duration_seconds": ("gauge", ("id",)),
    "pve_replication_last_sync_timestamp_seconds": ("gauge", ("id",)),
    "pve_replication_last_try_timestamp_seconds": ("gauge", ("id",)),
    "pve_replication_next_sync_timestamp_seconds": ("gauge", ("id",)),
    "pve_replication_failed_syncs": ("gauge", ("id",)),
    "pve_subscription_info": ("gauge", ("id", "level")),
    "pve_subscription_status": ("gauge", ("id", "status")),
    "pve_subscription_next_due_timestamp_seconds": ("gauge", ("id",)),
}

USAGE_METRICS = ("pve_cpu_usage_ratio", "pve_memory_usage_bytes", "pve_uptime_seconds", "pve_disk_usage_bytes")
COUNTER_PAIRS = (
    ("pve_network_transmit_bytes_total", "pve_network_transmit_bytes"),
    ("pve_network_receive_bytes_total", "pve_network_receive_bytes"),
    ("pve_disk_written_bytes_total", "pve_disk_write_bytes"),
    ("pve_disk_read_bytes_total", "pve_disk_read_bytes"),
)
ONLINE_GUESTS = ("qemu/100", "qemu/1000", "qemu/101", "qemu/102", "lxc/200", "lxc/201", "lxc/202", "qemu/9000")
DEAD_GUESTS = ("qemu/300", "lxc/301")  # on pve3, offline for > 5 min: only config-derived fields
ALL_GUESTS = ONLINE_GUESTS + DEAD_GUESTS


# ---- helpers ---------------------------------------------------------------------------------


def load(version: str, name: str) -> Any:
    """The payload of one fixture; also checks it is wrapped exactly like PVE wraps it."""
    body = json.loads((FIXTURES / version / f"{name}.json").read_text(encoding="utf-8"))
    assert set(body) == {"data"}, f"{version}/{name}.json is not a bare {{'data': ...}} envelope"
    return body["data"]


def samples(families: Iterable[Family]) -> dict[Key, float]:
    """{(metric name, frozenset of (label, value))}: value}; fails on a duplicate series."""
    out: dict[Key, float] = {}
    for f in families:
        for values, value in f.samples:
            key = (f.name, frozenset(zip(f.labels, values, strict=True)))
            assert key not in out, f"duplicate series {key}"
            out[key] = value
    return out


def k(metric: str, /, **labels: str) -> Key:
    return (metric, frozenset(labels.items()))


def series(s: Mapping[Key, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in s.items() if n == name}


def ids(s: Mapping[Key, float], name: str) -> set[str]:
    return {dict(labels)["id"] for labels in series(s, name)}


def by_id(s: Mapping[Key, float], name: str) -> dict[str, float]:
    """For single-label (`id`) families: {id: value}."""
    return {dict(labels)["id"]: v for labels, v in series(s, name).items()}


def enum_of(s: Mapping[Key, float], name: str, rid: str) -> dict[str, float]:
    """For (`id`, `state`) enum families: {state: value} of one id."""
    return {dict(lb)["state"]: v for lb, v in series(s, name).items() if dict(lb)["id"] == rid}


def names(families: Iterable[Family]) -> set[str]:
    return {f.name for f in families}


def metrics_of(s: Mapping[Key, float], rid: str) -> set[str]:
    """Every metric name that has a series for this id."""
    return {n for (n, labels) in s if dict(labels).get("id") == rid}


def cfg(rid: str, node: str) -> str:
    """The config path of a guest: `cfg("qemu/100", "pve1")`."""
    kind, vmid = rid.split("/")
    return f"/nodes/{node}/{kind}/{vmid}/config"


def shared_for(version: str) -> Shared:
    return make_shared(CLUSTER, load(version, "cluster_status"), load(version, "cluster_resources"))


def resources(version: str, **kw: Any) -> dict[Key, float]:
    return samples(parse_resources(load(version, "cluster_resources"), **kw))


def all_families(version: str, *, all_enum_states: bool = False) -> list[Family]:
    """Every parser over every fixture of one version (what one full cycle would produce)."""
    shared = shared_for(version)
    res = load(version, "cluster_resources")
    configs = {
        cfg("qemu/100", "pve1"): load(version, "qemu_config"),
        cfg("lxc/200", "pve2"): load(version, "lxc_config"),
    }
    return [
        *parse_cluster_status(load(version, "cluster_status")),
        *parse_resources(res, all_enum_states=all_enum_states),
        *parse_version(load(version, "version")),
        *parse_not_backed_up(shared, load(version, "not_backed_up")),
        *parse_qdevice(shared, load(version, "qdevice")),
        *parse_replication([("pve1", load(version, "node_replication"))]),
        *parse_subscription([("pve1", load(version, "node_subscription_active"))]),
        *parse_onboot(res, configs),
    ]


# ---- every fixture, every version ------------------------------------------------------------


def test_every_fixture_is_a_pve_envelope() -> None:
    files = sorted(FIXTURES.glob("pve*/*.json"))
    assert len(files) >= 3 * 12
    for path in files:
        assert set(json.loads(path.read_text(encoding="utf-8"))) == {"data"}, path


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_has_the_same_fixture_set(version: str) -> None:
    expected = {
        "cluster_status", "cluster_status_standalone", "cluster_resources", "version", "not_backed_up",
        "qdevice", "qdevice_none", "node_replication", "node_subscription_active", "node_subscription_notfound",
        "qemu_config", "lxc_config",
    }  # fmt: skip
    present = {p.stem for p in (FIXTURES / version).glob("*.json")}
    assert expected <= present


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("all_enum_states", [False, True])
def test_every_fixture_parses_and_matches_the_ppe_metric_list(version: str, all_enum_states: bool) -> None:
    families = all_families(version, all_enum_states=all_enum_states)
    for f in families:
        assert f.name in PPE_METRICS, f"{f.name} is not a prometheus-pve-exporter metric"
        kind, labels = PPE_METRICS[f.name]
        assert (f.kind, f.labels) == (kind, labels), f.name
        assert f.help
        assert f.samples, f"{f.name}: empty families must be dropped"
        for values, value in f.samples:
            assert len(values) == len(f.labels)
            assert all(isinstance(v, str) for v in values)
            assert isinstance(value, float)
    # one full cycle over these fixtures produces every family of the list
    assert names(families) == set(PPE_METRICS)


def _parse_fixture(version: str, stem: str) -> list[Family]:
    """The parser that reads this fixture, fed the way the collector feeds it."""
    data = load(version, stem)
    shared = shared_for(version)
    if stem.startswith("cluster_status"):
        return parse_cluster_status(data)
    if stem.startswith("cluster_resources"):
        return parse_resources(data)
    if stem == "qemu_config":
        return parse_onboot(load(version, "cluster_resources"), {cfg("qemu/100", "pve1"): data})
    if stem == "lxc_config":
        return parse_onboot(load(version, "cluster_resources"), {cfg("lxc/200", "pve2"): data})
    by_stem = {
        "version": lambda: parse_version(data),
        "not_backed_up": lambda: parse_not_backed_up(shared, data),
        "qdevice": lambda: parse_qdevice(shared, data),
        "qdevice_none": lambda: parse_qdevice(shared, data),
        "node_replication": lambda: parse_replication([("pve1", data)]),
        "node_subscription_active": lambda: parse_subscription([("pve1", data)]),
        "node_subscription_notfound": lambda: parse_subscription([("pve1", data)]),
    }
    assert stem in by_stem, f"fixture {version}/{stem}.json has no parser in this test"
    return by_stem[stem]()


# total samples per fixture; /cluster/resources differs only by node `hastate` (8.3+)
FIXTURE_SAMPLES = {
    "cluster_status": 4 + 3 + 1,  # pve_up (3 nodes + quorum), 3 node_info, 1 cluster_info
    "cluster_status_standalone": 2,
    "cluster_resources": 238,  # the 2 guests of the dead node keep pve_guest_info; +5: /pool/prod aggregates
    "cluster_resources_7.2": 238,
    "version": 1,
    "not_backed_up": 1 + 3,
    "qdevice": 2,
    "qdevice_none": 0,
    "node_replication": 4 + 3 + 3 + 3 + 2 + 4,  # info, duration, last_sync, last_try, next_sync, failed
    "node_subscription_active": 1 + 6 + 1,
    "node_subscription_notfound": 1 + 6,
    "qemu_config": 1,
    "lxc_config": 1,
}
ALL_FIXTURES = sorted((p.parent.name, p.stem) for p in FIXTURES.glob("pve*/*.json"))


@pytest.mark.parametrize(("version", "stem"), ALL_FIXTURES, ids=[f"{v}/{s}" for v, s in ALL_FIXTURES])
def test_every_fixture_parses_with_the_expected_sample_count(version: str, stem: str) -> None:
    expected = FIXTURE_SAMPLES[stem]
    if stem == "cluster_resources" and version != "pve7":
        expected += 3 * len(NODE_HA_STATES)
    assert len(samples(_parse_fixture(version, stem))) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_ids_use_pve_formats(version: str) -> None:
    s = samples(all_families(version, all_enum_states=True))
    id_re = re.compile(
        r"(node/pve\d|cluster/lab|cluster/lab|(qemu|lxc)/\d+|storage/pve\d/[a-z-]+|\d+-\d+|/pool/[a-z]+)"
    )
    all_ids = {dict(labels)["id"] for _, labels in s if "id" in dict(labels)}
    assert all_ids
    assert [i for i in all_ids if not id_re.fullmatch(i)] == []


@pytest.mark.parametrize(
    ("version", "fixture"),
    [(v, "cluster_resources") for v in VERSIONS] + [("pve7", "cluster_resources_7.2")],
)
def test_resources_sample_counts(version: str, fixture: str) -> None:
    counts: dict[str, int] = {}
    for name, _ in samples(parse_resources(load(version, fixture))):
        counts[name] = counts.get(name, 0) + 1
    node_ha = 0 if version == "pve7" else 3 * len(NODE_HA_STATES)
    assert counts == {
        "pve_up": 10 + 7,  # guests + storages; node pve_up comes from /cluster/status
        "pve_guest_info": 10,  # also the dead node's guests: joins still find them
        "pve_storage_info": 7,
        "pve_storage_shared": 7,
        "pve_disk_size_bytes": 2 + 8 + 5,  # nodes + guests with data + available storages
        "pve_disk_usage_bytes": 2 + 3 + 5,  # nodes + LXC (not QEMU) + available storages
        "pve_memory_size_bytes": 2 + 8 + 1,  # +1: the pool with a running member (/pool/prod)
        "pve_memory_usage_bytes": 2 + 8 + 1,
        "pve_cpu_usage_ratio": 2 + 8 + 1,
        "pve_cpu_usage_limit": 2 + 8 + 1,
        "pve_uptime_seconds": 2 + 8 + 1,
        **{name: 8 for pair in COUNTER_PAIRS for name in pair},
        "pve_ha_state": 3 * len(GUEST_HA_STATES) + 1 + node_ha,  # +1: qemu/102 has `disabled`
        "pve_lock_state": 2 * len(LOCK_STATES) + 1,  # +1: lxc/201 has `mounted`
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_resources_sample_counts_with_all_enum_states(version: str) -> None:
    s = resources(version, all_enum_states=True)
    assert len(series(s, "pve_ha_state")) == 10 * len(GUEST_HA_STATES) + 1 + 3 * len(NODE_HA_STATES)
    assert len(series(s, "pve_lock_state")) == 10 * len(LOCK_STATES) + 1


# ---- values.py (pve-api.md §1.5, §8) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (1, 1.0),
        (-3, -3.0),
        (0.0512394, 0.0512394),
        (4.5e-05, 4.5e-05),
        (1.12589990684262e15, 1.12589990684262e15),
        (18446744073709551615, 18446744073709551615.0),  # u64 counter beyond 2^53
        ("0.35", 0.35),
        ("3200.000", 3200.0),
        ("1.1e+15", 1.1e15),
        ("4.5e-05", 4.5e-05),
        (" 42 ", 42.0),
        ("", None),
        ("   ", None),
        (None, None),
        (True, None),
        (False, None),
        ("abc", None),
        ("1,5", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("1e400", None),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        ([1], None),
        ({"v": 1}, None),
    ],
)
def test_num(value: Any, expected: float | None) -> None:
    assert num(value) == expected


def test_num_of_an_int_beyond_float_range_is_none() -> None:
    # json.loads("1" + "0" * 400) gives a Python int; float() of it raises, so one bad field
    # would abort the whole /cluster/resources parse instead of dropping one sample.
    assert num(10**400) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (16, 16),
        ("16", 16),
        (3.9, 3),
        ("1.12589990684262e+15", 1125899906842620),
        (1.12589990684262e15, 1125899906842620),
        ("", None),
        (None, None),
        (True, None),
        ("nan", None),
        ("x", None),
    ],
)
def test_integer(value: Any, expected: int | None) -> None:
    result = integer(value)
    assert result == expected
    assert result is None or type(result) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (0, False),
        (2, True),
        (0.0, False),
        ("1", True),
        ("0", False),
        ("", False),  # a Perl false (`!!0`) comes out as ""
        (" 1 ", True),
        ("true", True),
        ("False", False),
        ("yes", True),
        ("off", False),
        (True, True),
        (False, False),
        (None, None),
        ("maybe", None),
        ([], None),
    ],
)
def test_flag(value: Any, expected: bool | None) -> None:
    assert flag(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("web-01", "web-01"),
        ("", ""),
        (66601, "66601"),  # a guest named 66601 may be decoded as a number
        (66601.0, "66601"),
        (1.5, "1.5"),
        (0, "0"),
        (True, "1"),
        (False, "0"),
        ('café-"q"-back\\slash-☃', 'café-"q"-back\\slash-☃'),
    ],
)
def test_text(value: Any, expected: str | None) -> None:
    assert text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("prod;web", ("prod", "web")),
        ("web;prod", ("prod", "web")),
        ("web,prod", ("prod", "web")),  # hand-edited configs (§7.44)
        ("web prod", ("prod", "web")),
        ("web, prod  dmz;backup", ("backup", "dmz", "prod", "web")),
        ("web;web;prod", ("prod", "web")),
        (";prod;;web;", ("prod", "web")),
        ("go-proxmox+cloud-init;v1.2", ("go-proxmox+cloud-init", "v1.2")),
        ("\tdb\n", ("db",)),
        (66601, ("66601",)),
        (" ; , ", ()),
        ("", ()),
        (None, ()),
    ],
)
def test_split_tags(value: Any, expected: tuple[str, ...]) -> None:
    assert split_tags(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vztmpl,iso,backup", "backup,iso,vztmpl"),
        ("rootdir,images", "images,rootdir"),
        ("images, rootdir", "images,rootdir"),
        ("backup", "backup"),
        ("iso,,backup,", "backup,iso"),
        ("", ""),
        (None, ""),
    ],
)
def test_sorted_csv(value: Any, expected: str) -> None:
    assert sorted_csv(value) == expected


# ---- base.py ---------------------------------------------------------------------------------


def test_builder_skips_none_keeps_zero_and_stores_floats() -> None:
    b = FamilyBuilder("pve_x", "gauge", "help", ("id",))
    b.add(("a",), None)
    b.add(("b",), 0)
    b.add(("c",), 7)
    f = b.build()
    assert f == Family("pve_x", "gauge", "help", ("id",), ((("b",), 0.0), (("c",), 7.0)))
    assert all(type(v) is float for _, v in f.samples)


def test_build_all_drops_empty_families_and_keeps_order() -> None:
    empty = FamilyBuilder("pve_empty", "gauge", "h", ("id",))
    first = FamilyBuilder("pve_first", "gauge", "h", ("id",))
    second = FamilyBuilder("pve_second", "counter", "h", ("id",))
    second.add(("x",), 1)
    first.add(("x",), 1)
    assert [f.name for f in build_all((empty, first, second))] == ["pve_first", "pve_second"]
    assert build_all(()) == []


def test_request_key() -> None:
    assert Request("/cluster/resources").key == "/cluster/resources"
    assert Request("/nodes/pve1/rrddata", (("timeframe", "hour"), ("cf", "AVERAGE"))).key == (
        "/nodes/pve1/rrddata?timeframe=hour&cf=AVERAGE"
    )
    assert Request("/nodes/pve1/replication", node="pve1").key == "/nodes/pve1/replication"


def test_cache_view_age() -> None:
    cache = CacheView(now=1000.0, fetched_at={"/a": 940.0})
    assert cache.age("/a") == 60.0
    assert cache.age("/missing") is None
    assert CacheView(now=5.0).age("/a") is None


def test_shared_online_nodes() -> None:
    nodes = (NodeRef("a", True, None, 1, False), NodeRef("b", False, None, 2, False), NodeRef("c", True, None, 3, True))
    assert Shared("x", None, None, nodes).online_nodes() == ["a", "c"]
    assert Shared("x", None, None).online_nodes() == []


# ---- status.py: make_shared ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_make_shared_nodes_from_cluster_status(version: str) -> None:
    shared = shared_for(version)
    assert shared.cluster == CLUSTER
    assert shared.pve_cluster_name == "lab"
    assert shared.nodes == (
        NodeRef("pve1", True, "10.10.0.11", 1, True),
        NodeRef("pve2", True, "10.10.0.12", 2, False),
        NodeRef("pve3", False, None, 3, False),  # offline, pmxcfs has not learned its ip (§7.9)
    )
    assert shared.online_nodes() == ["pve1", "pve2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_make_shared_standalone_node(version: str) -> None:
    shared = make_shared(CLUSTER, load(version, "cluster_status_standalone"), None)
    assert shared.pve_cluster_name is None
    assert shared.nodes == (NodeRef("pve", True, "192.168.1.20", 0, True),)


@pytest.mark.parametrize("version", VERSIONS)
def test_make_shared_falls_back_to_resource_nodes(version: str) -> None:
    rows = load(version, "cluster_resources")
    shared = make_shared(CLUSTER, None, rows)
    assert shared.pve_cluster_name is None
    assert shared.nodes == (
        NodeRef("pve1", True, None, None, False),
        NodeRef("pve2", True, None, None, False),
        NodeRef("pve3", False, None, None, False),
    )
    assert shared.resources is rows
    assert shared.status is None


def test_make_shared_without_any_data_has_no_nodes() -> None:
    shared = make_shared(CLUSTER, None, None)
    assert shared.nodes == ()
    assert shared.online_nodes() == []


def test_make_shared_node_order_does_not_depend_on_hash_order() -> None:
    status = load("pve9", "cluster_status")
    assert make_shared(CLUSTER, status[::-1], None).nodes == make_shared(CLUSTER, status, None).nodes


# ---- status.py: parse_cluster_status ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_cluster_status_up_for_nodes_and_quorum(version: str) -> None:
    s = samples(parse_cluster_status(load(version, "cluster_status")))
    assert by_id(s, "pve_up") == {"node/pve1": 1.0, "node/pve2": 1.0, "node/pve3": 0.0, "cluster/lab": 1.0}


@pytest.mark.parametrize("version", VERSIONS)
def test_cluster_status_node_info(version: str) -> None:
    s = samples(parse_cluster_status(load(version, "cluster_status")))
    level = "b" if version == "pve8" else "c"
    assert series(s, "pve_node_info") == {
        frozenset({"id": "node/pve1", "level": level, "name": "pve1", "nodeid": "1"}.items()): 1.0,
        frozenset({"id": "node/pve2", "level": level, "name": "pve2", "nodeid": "2"}.items()): 1.0,
        frozenset({"id": "node/pve3", "level": "", "name": "pve3", "nodeid": "3"}.items()): 1.0,
    }


@pytest.mark.parametrize(("version", "config_version"), [("pve7", "3"), ("pve8", "7"), ("pve9", "11")])
def test_cluster_status_cluster_info_has_a_fixed_label_set(version: str, config_version: str) -> None:
    s = samples(parse_cluster_status(load(version, "cluster_status")))
    assert series(s, "pve_cluster_info") == {
        frozenset({"id": "cluster/lab", "nodes": "3", "quorate": "1", "version": config_version}.items()): 1.0
    }


def test_cluster_info_ignores_extra_keys_of_the_cluster_entry() -> None:
    status = [{"type": "cluster", "id": "cluster", "name": "lab", "nodes": 2, "version": 4, "quorate": 1, "x": "y"}]
    (info,) = [f for f in parse_cluster_status(status) if f.name == "pve_cluster_info"]
    assert info.labels == ("id", "nodes", "quorate", "version")


def test_cluster_without_quorum_is_down() -> None:
    status = [
        {"type": "cluster", "id": "cluster", "name": "lab", "nodes": 3, "version": 7, "quorate": 0},
        {"type": "node", "id": "node/pve1", "name": "pve1", "nodeid": 1, "local": 1, "online": 1, "level": ""},
    ]
    s = samples(parse_cluster_status(status))
    assert by_id(s, "pve_up") == {"cluster/lab": 0.0, "node/pve1": 1.0}
    assert s[k("pve_cluster_info", id="cluster/lab", nodes="3", quorate="0", version="7")] == 1.0


@pytest.mark.parametrize("version", VERSIONS)
def test_standalone_node_has_no_cluster_series(version: str) -> None:
    families = parse_cluster_status(load(version, "cluster_status_standalone"))
    assert names(families) == {"pve_up", "pve_node_info"}
    s = samples(families)
    assert by_id(s, "pve_up") == {"node/pve": 1.0}
    assert s[k("pve_node_info", id="node/pve", level="", name="pve", nodeid="0")] == 1.0


def test_cluster_status_is_independent_of_entry_order() -> None:
    status = load("pve9", "cluster_status")
    assert samples(parse_cluster_status(status[::-1])) == samples(parse_cluster_status(status))


def test_cluster_status_empty() -> None:
    assert parse_cluster_status([]) == []


# ---- resources.py: absent-not-zero -----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_offline_node_publishes_no_usage(version: str) -> None:
    s = resources(version)
    # not even sizes: it is past the 5 min window (§7.1); only the HA manager's view of it (8.3+)
    assert metrics_of(s, "node/pve3") == (set() if version == "pve7" else {"pve_ha_state"})
    assert {
        "pve_cpu_usage_ratio", "pve_cpu_usage_limit", "pve_memory_usage_bytes", "pve_memory_size_bytes",
        "pve_uptime_seconds", "pve_disk_usage_bytes", "pve_disk_size_bytes",
    } <= metrics_of(s, "node/pve1")  # fmt: skip


def test_recently_offline_node_keeps_sizes_but_no_usage() -> None:
    row = {"id": "node/pve3", "type": "node", "node": "pve3", "status": "offline", "level": "c", "maxcpu": 8,
           "maxmem": 34359738368, "maxdisk": 100861726720, "cgroup-mode": 2}  # fmt: skip
    s = samples(parse_resources([row]))
    assert metrics_of(s, "node/pve3") == {"pve_cpu_usage_limit", "pve_memory_size_bytes", "pve_disk_size_bytes"}


@pytest.mark.parametrize("version", VERSIONS)
def test_guest_on_dead_node_keeps_info_but_has_no_numbers(version: str) -> None:
    s = resources(version)
    assert metrics_of(s, "lxc/301") == {"pve_up", "pve_guest_info"}
    assert metrics_of(s, "qemu/300") == {"pve_up", "pve_ha_state", "pve_guest_info"}  # hastate comes from config
    assert by_id(s, "pve_up")["lxc/301"] == 0.0
    # Never seen with status data: name and template unknown (empty, like prometheus-pve-exporter).
    assert guest_info(s)["lxc/301"] == {"id": "lxc/301", "node": "pve3", "name": "", "type": "lxc", "template": "",
                                        "tags": ""}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_storage_has_no_size_or_usage(version: str) -> None:
    s = resources(version)
    for rid in ("storage/pve3/local", "storage/pve1/nfs-backup"):
        assert by_id(s, "pve_up")[rid] == 0.0
        assert rid not in ids(s, "pve_disk_size_bytes")
        assert rid not in ids(s, "pve_disk_usage_bytes")
        assert rid in ids(s, "pve_storage_info")
        assert rid in ids(s, "pve_storage_shared")


@pytest.mark.parametrize("version", VERSIONS)
def test_available_storage_sizes(version: str) -> None:
    s = resources(version)
    assert by_id(s, "pve_up")["storage/pve1/local"] == 1.0
    assert by_id(s, "pve_disk_size_bytes")["storage/pve1/local"] == 100861726720.0
    assert by_id(s, "pve_disk_usage_bytes")["storage/pve1/local"] == 12884901888.0


@pytest.mark.parametrize("version", VERSIONS)
def test_qemu_disk_zero_is_not_published_as_usage(version: str) -> None:
    s = resources(version)
    usage = ids(s, "pve_disk_usage_bytes")
    assert not {i for i in usage if i.startswith("qemu/")}
    assert by_id(s, "pve_disk_size_bytes")["qemu/100"] == 34359738368.0  # the size still is


@pytest.mark.parametrize("version", VERSIONS)
def test_lxc_disk_usage_is_published_even_when_zero(version: str) -> None:
    usage = by_id(resources(version), "pve_disk_usage_bytes")
    assert usage["lxc/200"] == 1610612736.0
    assert usage["lxc/201"] == 0.0  # stopped container


def test_qemu_disk_nonzero_is_published() -> None:
    row = {"id": "qemu/5", "type": "qemu", "vmid": 5, "node": "pve1", "status": "running", "name": "x", "disk": 1024}
    assert by_id(samples(parse_resources([row])), "pve_disk_usage_bytes") == {"qemu/5": 1024.0}


# ---- resources.py: values --------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_guest_up_means_running(version: str) -> None:
    up = by_id(resources(version), "pve_up")
    assert {g: up[g] for g in ALL_GUESTS} == {
        "qemu/100": 1.0,
        "qemu/1000": 0.0,  # paused: the QMP run state (§7.13)
        "qemu/101": 0.0,
        "qemu/102": 1.0,
        "lxc/200": 1.0,
        "lxc/201": 0.0,
        "lxc/202": 1.0,
        "qemu/9000": 0.0,
        "qemu/300": 0.0,
        "lxc/301": 0.0,
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_node_values(version: str) -> None:
    s = resources(version)
    assert by_id(s, "pve_cpu_usage_ratio")["node/pve1"] == 0.0412
    assert by_id(s, "pve_cpu_usage_limit")["node/pve1"] == 16.0
    assert by_id(s, "pve_memory_usage_bytes")["node/pve1"] == 28033671168.0
    assert by_id(s, "pve_memory_size_bytes")["node/pve1"] == 67276496896.0
    assert by_id(s, "pve_uptime_seconds")["node/pve1"] == 1209640.0
    assert "node/pve1" not in ids(s, "pve_up")  # node pve_up comes from /cluster/status only


@pytest.mark.parametrize("version", VERSIONS)
def test_exponent_form_cpu(version: str) -> None:
    assert by_id(resources(version), "pve_cpu_usage_ratio")["qemu/1000"] == 4.5e-05


@pytest.mark.parametrize("version", VERSIONS)
def test_lxc_fractional_maxcpu(version: str) -> None:
    assert by_id(resources(version), "pve_cpu_usage_limit")["lxc/200"] == 1.5


def test_memhost_is_not_memory_usage() -> None:
    usage = by_id(resources("pve9"), "pve_memory_usage_bytes")
    assert usage["qemu/100"] == 2254857830.0  # `mem`, not `memhost` (2390753280)


@pytest.mark.parametrize("version", VERSIONS)
def test_counters_and_deprecated_gauges_carry_the_same_values(version: str) -> None:
    s = resources(version)
    for counter, gauge in COUNTER_PAIRS:
        assert by_id(s, counter) == by_id(s, gauge)
        assert set(by_id(s, counter)) == set(ONLINE_GUESTS)
    assert by_id(s, "pve_network_receive_bytes_total")["qemu/100"] == 9871234567.0
    assert by_id(s, "pve_network_transmit_bytes_total")["qemu/100"] == 1234987654.0
    assert by_id(s, "pve_disk_read_bytes_total")["qemu/100"] == 5368712192.0
    assert by_id(s, "pve_disk_written_bytes_total")["qemu/100"] == 21474836480.0
    assert by_id(s, "pve_disk_written_bytes_total")["qemu/101"] == 0.0  # stopped: 0, not absent


def test_counter_and_gauge_types() -> None:
    kinds = {f.name: f.kind for f in parse_resources(load("pve9", "cluster_resources"))}
    for counter, gauge in COUNTER_PAIRS:
        assert (kinds[counter], kinds[gauge]) == ("counter", "gauge")


def test_huge_counter_beyond_2_pow_53() -> None:
    row = {"id": "qemu/7", "type": "qemu", "vmid": 7, "node": "pve1", "status": "running", "name": "big",
           "netin": 18446744073709551615}  # fmt: skip
    assert by_id(samples(parse_resources([row])), "pve_network_receive_bytes_total") == {"qemu/7": 2.0**64}


# ---- resources.py: HA and lock enums ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_ha_state_only_for_ha_managed_by_default(version: str) -> None:
    s = resources(version)
    nodes = set() if version == "pve7" else {"node/pve1", "node/pve2", "node/pve3"}  # node hastate since 8.3
    assert ids(s, "pve_ha_state") == {"qemu/100", "qemu/102", "qemu/300"} | nodes


@pytest.mark.parametrize(("rid", "state"), [("qemu/100", "started"), ("qemu/300", "fence")])
@pytest.mark.parametrize("version", VERSIONS)
def test_guest_ha_state_all_states_exactly_one_set(version: str, rid: str, state: str) -> None:
    enum = enum_of(resources(version), "pve_ha_state", rid)
    assert set(enum) == set(GUEST_HA_STATES)
    assert [st for st, v in enum.items() if v == 1.0] == [state]
    assert sum(enum.values()) == 1.0


@pytest.mark.parametrize("version", VERSIONS)
def test_unlisted_ha_state_is_still_emitted(version: str) -> None:
    enum = enum_of(resources(version), "pve_ha_state", "qemu/102")  # `disabled`: requested state (§2.3.2)
    assert set(enum) == {*GUEST_HA_STATES, "disabled"}
    assert [st for st, v in enum.items() if v == 1.0] == ["disabled"]


@pytest.mark.parametrize(
    ("rid", "state"), [("node/pve1", "online"), ("node/pve2", "maintenance"), ("node/pve3", "unknown")]
)
@pytest.mark.parametrize("version", ["pve8", "pve9"])
def test_node_ha_state(version: str, rid: str, state: str) -> None:
    enum = enum_of(resources(version), "pve_ha_state", rid)
    assert set(enum) == set(NODE_HA_STATES)
    assert [st for st, v in enum.items() if v == 1.0] == [state]


@pytest.mark.parametrize("version", VERSIONS)
def test_lock_state_only_for_locked_guests_by_default(version: str) -> None:
    assert ids(resources(version), "pve_lock_state") == {"qemu/101", "lxc/201"}


@pytest.mark.parametrize("version", VERSIONS)
def test_known_lock_all_states_exactly_one_set(version: str) -> None:
    enum = enum_of(resources(version), "pve_lock_state", "qemu/101")
    assert set(enum) == set(LOCK_STATES)
    assert [st for st, v in enum.items() if v == 1.0] == ["backup"]


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_lock_is_still_emitted(version: str) -> None:
    enum = enum_of(resources(version), "pve_lock_state", "lxc/201")
    assert set(enum) == {*LOCK_STATES, "mounted"}
    assert [st for st, v in enum.items() if v == 1.0] == ["mounted"]
    assert sum(enum.values()) == 1.0


@pytest.mark.parametrize("version", VERSIONS)
def test_all_enum_states_emits_every_state_for_every_guest_and_node(version: str) -> None:
    s = resources(version, all_enum_states=True)
    for rid in ALL_GUESTS:
        ha = enum_of(s, "pve_ha_state", rid)
        lock = enum_of(s, "pve_lock_state", rid)
        assert set(GUEST_HA_STATES) <= set(ha)
        assert set(LOCK_STATES) <= set(lock)
        assert sum(ha.values()) == (1.0 if rid in ("qemu/100", "qemu/102", "qemu/300") else 0.0)
        assert sum(lock.values()) == (1.0 if rid in ("qemu/101", "lxc/201") else 0.0)
    for rid in ("node/pve1", "node/pve2", "node/pve3"):
        assert set(enum_of(s, "pve_ha_state", rid)) == set(NODE_HA_STATES)
    assert ids(s, "pve_lock_state") == set(ALL_GUESTS)  # never for nodes or storages


def test_all_enum_states_keeps_the_same_ones() -> None:
    default = resources("pve9")
    every = resources("pve9", all_enum_states=True)
    for name in ("pve_ha_state", "pve_lock_state"):
        ones = {key for key, v in series(every, name).items() if v == 1.0}
        assert ones == {key for key, v in series(default, name).items() if v == 1.0}


# ---- resources.py: info series ---------------------------------------------------------------


def guest_info(s: Mapping[Key, float]) -> dict[str, dict[str, str]]:
    return {dict(lb)["id"]: dict(lb) for lb in series(s, "pve_guest_info")}


@pytest.mark.parametrize("version", VERSIONS)
def test_guest_info_labels(version: str) -> None:
    info = guest_info(resources(version))
    assert set(info) == set(ONLINE_GUESTS) | set(DEAD_GUESTS)
    assert info["qemu/100"] == {"id": "qemu/100", "node": "pve1", "name": "web-01", "type": "qemu", "template": "0",
                                "tags": "prod;web"}  # fmt: skip
    assert info["lxc/200"] == {"id": "lxc/200", "node": "pve2", "name": "dns-01", "type": "lxc", "template": "0",
                               "tags": "infra"}  # fmt: skip
    assert info["qemu/101"]["name"] == "VM 101"


@pytest.mark.parametrize("version", VERSIONS)
def test_guest_tags_sorted_and_joined_with_semicolons(version: str) -> None:
    info = guest_info(resources(version))
    assert info["qemu/102"]["tags"] == "backup;dmz;prod;web"  # raw: "web, prod  dmz;backup"
    assert info["qemu/9000"]["tags"] == ""


def test_pre_7_3_has_no_tags() -> None:
    info = guest_info(samples(parse_resources(load("pve7", "cluster_resources_7.2"))))
    assert {i["tags"] for i in info.values()} == {""}


@pytest.mark.parametrize("version", VERSIONS)
def test_template_label(version: str) -> None:
    info = guest_info(resources(version))
    assert {rid for rid, i in info.items() if i["template"] == "1"} == {"qemu/9000"}


@pytest.mark.parametrize("version", VERSIONS)
def test_numeric_looking_name(version: str) -> None:
    assert guest_info(resources(version))["qemu/102"]["name"] == "66601"


def test_name_decoded_as_a_number_is_stringified() -> None:
    row = {"id": "qemu/102", "type": "qemu", "vmid": 102, "node": "pve1", "status": "stopped", "name": 66601,
           "template": 0}  # fmt: skip
    assert guest_info(samples(parse_resources([row])))["qemu/102"]["name"] == "66601"


@pytest.mark.parametrize("version", VERSIONS)
def test_name_with_quotes_backslash_unicode_passes_unchanged(version: str) -> None:
    assert guest_info(resources(version))["lxc/202"]["name"] == 'café-"quoted"-back\\slash-☃'


def test_guest_with_only_template_key_gets_info() -> None:
    row = {"id": "lxc/5", "type": "lxc", "vmid": 5, "node": "pve1", "status": "stopped", "template": 1}
    assert guest_info(samples(parse_resources([row])))["lxc/5"] == {
        "id": "lxc/5", "node": "pve1", "name": "", "type": "lxc", "template": "1", "tags": ""}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_storage_info_labels_and_sorted_content(version: str) -> None:
    info = {dict(lb)["id"]: dict(lb) for lb in series(resources(version), "pve_storage_info")}
    assert info["storage/pve1/local"] == {"id": "storage/pve1/local", "node": "pve1", "storage": "local",
                                          "plugintype": "dir", "content": "backup,iso,vztmpl"}  # fmt: skip
    # the same storage reports its content in another random order on each node
    assert info["storage/pve2/local"]["content"] == "backup,iso,vztmpl"
    assert info["storage/pve1/local-lvm"]["content"] == info["storage/pve2/local-lvm"]["content"] == "images,rootdir"


@pytest.mark.parametrize("version", VERSIONS)
def test_storage_shared(version: str) -> None:
    shared = by_id(resources(version), "pve_storage_shared")
    assert shared["storage/pve1/nfs-backup"] == shared["storage/pve2/nfs-backup"] == 1.0
    assert shared["storage/pve1/local"] == 0.0


@pytest.mark.parametrize("version", VERSIONS)
def test_pools_sdn_and_network_entries_are_ignored(version: str) -> None:
    rows = [r for r in load(version, "cluster_resources") if r["type"] in ("sdn", "network")]
    assert rows
    assert parse_resources(rows) == []
    # pool rows: only prometheus-pve-exporter's usage families, and only with aggregates (issue 13)
    pools = [r for r in load(version, "cluster_resources") if r["type"] == "pool"]
    assert {f.name for f in parse_resources(pools)} == {
        "pve_cpu_usage_ratio", "pve_cpu_usage_limit", "pve_memory_size_bytes", "pve_memory_usage_bytes",
        "pve_uptime_seconds",
    }  # fmt: skip


def test_include_up_false_drops_only_pve_up() -> None:
    rows = load("pve9", "cluster_resources")
    without = samples(parse_resources(rows, include_up=False))
    assert series(without, "pve_up") == {}
    assert {key: v for key, v in resources("pve9").items() if key[0] != "pve_up"} == without


def test_resources_row_order_is_irrelevant() -> None:
    rows = list(load("pve9", "cluster_resources"))
    random.Random(7).shuffle(rows)
    assert samples(parse_resources(rows)) == resources("pve9")


def test_resources_rows_without_id_are_skipped() -> None:
    assert parse_resources([{"type": "qemu", "vmid": 1, "node": "pve1", "status": "running", "name": "x"}]) == []
    assert parse_resources([]) == []


# ---- cluster_extra.py ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "labels"),
    [
        ("pve7", {"release": "7.4", "repoid": "513c62be", "version": "7.4-17"}),
        ("pve8", {"release": "8.4", "repoid": "2a5fa54a8503f96d", "version": "8.4.1"}),
        ("pve9", {"release": "9.1", "repoid": "5cacb35d8e4f7a21", "version": "9.1.5"}),
    ],
)
def test_version_info(version: str, labels: dict[str, str]) -> None:
    assert samples(parse_version(load(version, "version"))) == {k("pve_version_info", **labels): 1.0}


@pytest.mark.parametrize("data", [None, {}, {"release": "9.1", "repoid": "x"}, {"version": ""}, []])
def test_version_without_a_version_publishes_nothing(data: Any) -> None:
    assert parse_version(data) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_not_backed_up(version: str) -> None:
    families = parse_not_backed_up(shared_for(version), load(version, "not_backed_up"))
    assert {f.name: f.kind for f in families} == {
        "pve_not_backed_up_total": "untyped",
        "pve_not_backed_up_info": "gauge",
    }
    s = samples(families)
    assert by_id(s, "pve_not_backed_up_total") == {"cluster/lab": 3.0}  # PVE's cluster name, not the configured one
    assert by_id(s, "pve_not_backed_up_info") == {"qemu/1000": 1.0, "qemu/102": 1.0, "lxc/202": 1.0}


def test_not_backed_up_none_missing_publishes_a_zero_total() -> None:
    families = parse_not_backed_up(shared_for("pve9"), [])
    assert samples(families) == {k("pve_not_backed_up_total", id="cluster/lab"): 0.0}


def test_not_backed_up_on_a_standalone_node_uses_the_configured_name() -> None:
    shared = make_shared(CLUSTER, load("pve9", "cluster_status_standalone"), None)
    s = samples(parse_not_backed_up(shared, [{"type": "qemu", "vmid": 100}]))
    assert by_id(s, "pve_not_backed_up_total") == {"cluster/prod": 1.0}


def test_not_backed_up_skips_rows_without_vmid_or_type() -> None:
    rows = [{"type": "qemu", "vmid": 100}, {"type": "lxc"}, {"vmid": 7}, {"type": "lxc", "vmid": "201"}]
    s = samples(parse_not_backed_up(shared_for("pve9"), rows))
    assert by_id(s, "pve_not_backed_up_info") == {"qemu/100": 1.0, "lxc/201": 1.0}
    assert by_id(s, "pve_not_backed_up_total") == {"cluster/lab": 2.0}


@pytest.mark.parametrize("data", [None, {}, "error"])
def test_not_backed_up_without_a_list_publishes_nothing(data: Any) -> None:
    assert parse_not_backed_up(shared_for("pve9"), data) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_qdevice(version: str) -> None:
    s = samples(parse_qdevice(shared_for(version), load(version, "qdevice")))
    assert s == {
        k("pve_qdevice_up", id="cluster/lab"): 1.0,
        k("pve_qdevice_info", id="cluster/lab", model="Net", algorithm="Fifty-Fifty split",
          qnetd_host="10.10.0.50:5403", tie_breaker="Node with lowest node ID", state="Connected"): 1.0,
    }  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_no_qdevice_configured(version: str) -> None:
    assert parse_qdevice(shared_for(version), load(version, "qdevice_none")) == []


def test_qdevice_not_connected_is_down() -> None:
    data = {"Model": "Net", "QNetd host": "10.10.0.50:5403", "Algorithm": "LMS", "State": "Waiting for connection"}
    s = samples(parse_qdevice(shared_for("pve9"), data))
    assert by_id(s, "pve_qdevice_up") == {"cluster/lab": 0.0}
    assert s[k("pve_qdevice_info", id="cluster/lab", model="Net", algorithm="LMS", qnetd_host="10.10.0.50:5403",
               tie_breaker="", state="Waiting for connection")] == 1.0  # fmt: skip


@pytest.mark.parametrize("data", [None, [], "x"])
def test_qdevice_garbage_publishes_nothing(data: Any) -> None:
    assert parse_qdevice(shared_for("pve9"), data) == []


def test_qdevice_is_planned_only_for_a_real_cluster() -> None:
    cache = CacheView(now=0.0)
    standalone = make_shared(CLUSTER, load("pve9", "cluster_status_standalone"), None)
    assert cluster_extra.QDEVICE_COLLECTOR.plan(standalone, cache) == []
    assert cluster_extra.QDEVICE_COLLECTOR.plan(shared_for("pve9"), cache) == [cluster_extra.QDEVICE]


# ---- node_extra.py: replication --------------------------------------------------------------


def replication(version: str) -> dict[Key, float]:
    return samples(parse_replication([("pve1", load(version, "node_replication"))]))


@pytest.mark.parametrize("version", VERSIONS)
def test_replication_info(version: str) -> None:
    info = {dict(lb)["id"]: dict(lb) for lb in series(replication(version), "pve_replication_info")}
    assert info == {
        "100-0": {"id": "100-0", "type": "local", "source": "node/pve1", "target": "node/pve2",
                              "guest": "qemu/100"},
        "101-0": {"id": "101-0", "type": "local", "source": "node/pve1", "target": "node/pve3",
                              "guest": "qemu/101"},
        # never ran, so no `source` yet: the node that listed it is the source
        "102-1": {"id": "102-1", "type": "local", "source": "node/pve1", "target": "node/pve2",
                              "guest": "qemu/102"},
        "201-0": {"id": "201-0", "type": "local", "source": "node/pve1", "target": "node/pve2",
                              "guest": "lxc/201"},
    }  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_replication_zero_timestamps_publish_nothing(version: str) -> None:
    s = replication(version)
    assert by_id(s, "pve_replication_last_sync_timestamp_seconds") == {
        "100-0": 1738650000.0,
        "101-0": 1738600000.0,
        "201-0": 1738650600.0,
    }
    assert by_id(s, "pve_replication_last_try_timestamp_seconds") == {
        "100-0": 1738650000.0,
        "101-0": 1738650900.0,
        "201-0": 1738650600.0,
    }
    assert by_id(s, "pve_replication_next_sync_timestamp_seconds") == {
        "100-0": 1738651800.0, "201-0": 1738651500.0}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_replication_duration_and_failures(version: str) -> None:
    s = replication(version)
    assert by_id(s, "pve_replication_duration_seconds") == {
        "100-0": 3.452118,
        "101-0": 0.513,
        "201-0": 0.12,
    }
    assert by_id(s, "pve_replication_failed_syncs") == {
        "100-0": 0.0,
        "101-0": 3.0,
        "102-1": 0.0,
        "201-0": 0.0,
    }


def test_replication_label_values_match_prometheus_pve_exporter() -> None:
    # PPE collector/node.py NodeReplicationCollector: id=str(job['id']), source=f"node/{source}",
    # target=f"node/{target}", guest=f"{vmtype}/{guest}"; the same bare id on every replication family.
    s = replication("pve9")
    info = k("pve_replication_info", id="100-0", type="local", source="node/pve1", target="node/pve2", guest="qemu/100")
    assert s[info] == 1.0
    assert by_id(s, "pve_replication_failed_syncs")["100-0"] == 0.0


def test_replication_job_listed_by_two_nodes_is_counted_once() -> None:
    jobs = load("pve9", "node_replication")
    s = samples(parse_replication([("pve1", jobs), ("pve2", jobs)]))
    assert len(series(s, "pve_replication_info")) == len(jobs)


def test_replication_job_with_config_fields_only() -> None:
    s = samples(parse_replication([("pve2", [{"id": "105-2", "target": "pve1"}])]))
    assert s == {
        k("pve_replication_info", id="105-2", type="local", source="node/pve2", target="node/pve1",
          guest="qemu/105"): 1.0,
    }  # fmt: skip


@pytest.mark.parametrize("jobs", [None, {}, "x"])
def test_replication_non_list_payload_is_skipped(jobs: Any) -> None:
    assert parse_replication([("pve1", jobs)]) == []
    assert parse_replication([]) == []


def test_replication_per_node_requests_and_payload_routing() -> None:
    shared = shared_for("pve9")
    plan = node_extra.REPLICATION_COLLECTOR.plan(shared, CacheView(now=0.0))
    assert [(r.key, r.node) for r in plan] == [
        ("/nodes/pve1/replication", "pve1"),
        ("/nodes/pve2/replication", "pve2"),
    ]  # offline pve3 not asked
    payloads = {"/nodes/pve1/replication": load("pve9", "node_replication"), "/nodes/pve1/subscription": {}}
    s = samples(node_extra.REPLICATION_COLLECTOR.parse(shared, payloads))
    assert len(series(s, "pve_replication_info")) == 4


# ---- node_extra.py: subscription -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01", 1772323200.0),
        ("2026-03-01 00:00:00", 1772323200.0),
        (" 2026-03-01 ", 1772323200.0),
        ("2024-01-10", 1704844800.0),
        ("", None),
        (None, None),
        ("never", None),
        ("2026-02-30", None),
        ("01.03.2026", None),
    ],
)
def test_parse_due_date(value: Any, expected: float | None) -> None:
    assert parse_due_date(value) == expected


def test_due_date_does_not_depend_on_the_local_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(time, "tzset"):
        pytest.skip("no time.tzset on this platform")
    try:
        for tz in ("America/New_York", "Asia/Tokyo"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            assert parse_due_date("2026-03-01") == 1772323200.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("version", "level", "due"), [("pve7", "c", 1704844800.0), ("pve8", "b", 1752537600.0), ("pve9", "c", 1772323200.0)]
)
def test_active_subscription(version: str, level: str, due: float) -> None:
    s = samples(parse_subscription([("pve1", load(version, "node_subscription_active"))]))
    assert series(s, "pve_subscription_info") == {frozenset({"id": "node/pve1", "level": level}.items()): 1.0}
    assert enum_of_status(s, "node/pve1") == {
        "new": 0.0,
        "notfound": 0.0,
        "active": 1.0,
        "invalid": 0.0,
        "expired": 0.0,
        "suspended": 0.0,
    }
    assert by_id(s, "pve_subscription_next_due_timestamp_seconds") == {"node/pve1": due}


def enum_of_status(s: Mapping[Key, float], rid: str) -> dict[str, float]:
    return {dict(lb)["status"]: v for lb, v in series(s, "pve_subscription_status").items() if dict(lb)["id"] == rid}


@pytest.mark.parametrize("version", VERSIONS)
def test_no_subscription(version: str) -> None:
    families = parse_subscription([("pve2", load(version, "node_subscription_notfound"))])
    assert names(families) == {"pve_subscription_info", "pve_subscription_status"}  # no due date at all
    s = samples(families)
    assert s[k("pve_subscription_info", id="node/pve2", level="unknown")] == 1.0  # prometheus-pve-exporter's value
    status = enum_of_status(s, "node/pve2")
    assert [st for st, v in status.items() if v == 1.0] == ["notfound"]
    assert len(status) == 6


@pytest.mark.parametrize(("raw", "state"), [("Active", "active"), ("NotFound", "notfound"), ("Expired", "expired")])
def test_capitalised_subscription_status_from_old_files(raw: str, state: str) -> None:
    status = enum_of_status(samples(parse_subscription([("pve1", {"status": raw})])), "node/pve1")
    assert [st for st, v in status.items() if v == 1.0] == [state]


def test_unknown_subscription_status_is_still_emitted() -> None:
    status = enum_of_status(samples(parse_subscription([("pve1", {"status": "unverified"})])), "node/pve1")
    assert len(status) == 7
    assert [st for st, v in status.items() if v == 1.0] == ["unverified"]


def test_subscription_per_node_and_garbage_skipped() -> None:
    subs = [("pve1", load("pve9", "node_subscription_active")), ("pve2", None), ("pve3", "error")]
    s = samples(parse_subscription(subs))
    assert ids(s, "pve_subscription_info") == {"node/pve1"}
    assert parse_subscription([]) == []


# ---- config.py: plan_configs -----------------------------------------------------------------


def plan(shared: Shared, fetched_at: Mapping[str, float] | None = None, *, now: float = 10_000.0,
         max_per_cycle: int = 50, refresh: float = 3600.0) -> list[str]:  # fmt: skip
    cache = CacheView(now=now, fetched_at=dict(fetched_at or {}))
    requests = plan_configs(shared, cache, max_per_cycle=max_per_cycle, refresh_seconds=refresh)
    for r in requests:
        assert r.node == r.path.split("/")[2]  # routed to the node that holds the config
        assert r.params == ()
    return [r.path for r in requests]


ONLINE_CONFIGS = [
    cfg("qemu/100", "pve1"), cfg("qemu/1000", "pve2"), cfg("qemu/101", "pve1"), cfg("qemu/102", "pve1"),
    cfg("lxc/200", "pve2"), cfg("lxc/201", "pve1"), cfg("lxc/202", "pve2"), cfg("qemu/9000", "pve1"),
]  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_plan_all_new_guests_on_online_nodes(version: str) -> None:
    got = plan(shared_for(version))
    assert sorted(got) == sorted(ONLINE_CONFIGS)  # pve3's guests are skipped; templates are not
    nodes = [p.split("/")[2] for p in got]
    assert nodes[:2] == ["pve1", "pve2"]  # new guests are read one node after the other, not node by node


def test_plan_caps_per_cycle() -> None:
    assert plan(shared_for("pve9"), max_per_cycle=3) == ONLINE_CONFIGS[:3]
    assert plan(shared_for("pve9"), max_per_cycle=0) == []


def test_plan_skips_fresh_entries() -> None:
    fetched = dict.fromkeys(ONLINE_CONFIGS, 10_000.0 - 60)
    assert plan(shared_for("pve9"), fetched) == []


def test_plan_refreshes_old_entries_oldest_first_after_new_ones() -> None:
    fetched = dict.fromkeys(ONLINE_CONFIGS, 10_000.0 - 60)
    fetched[cfg("lxc/200", "pve2")] = 10_000.0 - 3600  # exactly at the refresh age
    fetched[cfg("qemu/100", "pve1")] = 10_000.0 - 9000  # the oldest
    del fetched[cfg("qemu/9000", "pve1")]  # new
    assert plan(shared_for("pve9"), fetched) == [
        cfg("qemu/9000", "pve1"), cfg("qemu/100", "pve1"), cfg("lxc/200", "pve2")]  # fmt: skip


def test_plan_cap_prefers_new_guests_over_refreshes() -> None:
    fetched = dict.fromkeys(ONLINE_CONFIGS, 0.0)  # all stale
    del fetched[cfg("lxc/202", "pve2")]
    assert plan(shared_for("pve9"), fetched, max_per_cycle=1) == [cfg("lxc/202", "pve2")]


def test_plan_moved_guest_is_a_new_key() -> None:
    rows = [dict(r) for r in load("pve9", "cluster_resources")]
    for r in rows:
        if r["id"] == "qemu/100":
            r["node"] = "pve2"  # migrated; the cache only knows its config on pve1
    shared = make_shared(CLUSTER, load("pve9", "cluster_status"), rows)
    fetched = dict.fromkeys(ONLINE_CONFIGS, 10_000.0 - 60)
    assert plan(shared, fetched) == [cfg("qemu/100", "pve2")]


def test_plan_skips_offline_nodes() -> None:
    status = [dict(r) for r in load("pve9", "cluster_status")]
    for r in status:
        if r.get("name") == "pve2":
            r["online"] = 0
    shared = make_shared(CLUSTER, status, load("pve9", "cluster_resources"))
    assert all("/pve1/" in p for p in plan(shared))
    assert len(plan(shared)) == 5


def test_plan_without_resources() -> None:
    assert plan(make_shared(CLUSTER, load("pve9", "cluster_status"), None)) == []


def test_config_path() -> None:
    assert config_path({"type": "qemu", "node": "pve1", "vmid": 100}) == "/nodes/pve1/qemu/100/config"
    assert config_path({"type": "lxc", "node": "pve2", "vmid": "200"}) == "/nodes/pve2/lxc/200/config"
    assert config_path({"type": "storage", "node": "pve1", "storage": "local"}) is None
    assert config_path({"type": "qemu", "vmid": 100}) is None
    assert config_path({"type": "qemu", "node": "pve1"}) is None


# ---- config.py: parse_onboot -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_onboot_from_configs(version: str) -> None:
    payloads = {
        cfg("qemu/100", "pve1"): load(version, "qemu_config"),
        cfg("lxc/200", "pve2"): load(version, "lxc_config"),
    }
    s = samples(parse_onboot(load(version, "cluster_resources"), payloads))
    assert s == {
        k("pve_onboot_status", id="qemu/100", node="pve1", type="qemu"): 1.0,
        k("pve_onboot_status", id="lxc/200", node="pve2", type="lxc"): 0.0,  # key absent = default 0
    }


@pytest.mark.parametrize(("onboot", "expected"), [(1, 1.0), (0, 0.0), ("1", 1.0), ("", 0.0), (True, 1.0)])
def test_onboot_value_encodings(onboot: Any, expected: float) -> None:
    rows = [{"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running"}]
    s = samples(parse_onboot(rows, {cfg("qemu/100", "pve1"): {"digest": "x", "onboot": onboot}}))
    assert by_id(s, "pve_onboot_status") == {"qemu/100": expected}


def test_onboot_without_payload_or_with_garbage_publishes_nothing() -> None:
    rows = load("pve9", "cluster_resources")
    assert parse_onboot(rows, {}) == []
    assert parse_onboot(rows, {cfg("qemu/100", "pve1"): None, cfg("lxc/200", "pve2"): []}) == []
    assert parse_onboot(None, {cfg("qemu/100", "pve1"): {"onboot": 1}}) == []


def test_onboot_of_a_moved_guest_ignores_the_old_nodes_config() -> None:
    rows = [{"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve2", "status": "running"}]
    assert parse_onboot(rows, {cfg("qemu/100", "pve1"): {"onboot": 1}}) == []
