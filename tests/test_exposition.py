"""Exposition: format, escaping, cluster label, grouping across clusters, gzip, parse-back."""

from __future__ import annotations

import gzip
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from pve_exporter.collect.base import Family
from pve_exporter.export.prometheus import Exposition, fmt_value, render
from pve_exporter.snapshot import Snapshot


def snap(cluster: str, families, seq: int = 1) -> Snapshot:
    return Snapshot(cluster, seq, 0.0, 1.0, True, 1.0, tuple(families), MappingProxyType({}))


UP = Family(
    "pve_up", "gauge", "Node/VM/CT-Status is online/running", ("id",), ((("node/pve1",), 1.0), (("qemu/100",), 0.0))
)
NET = Family("pve_network_receive_bytes_total", "counter", "Received.", ("id",), ((("qemu/100",), 12345678901234.0),))
INFO = Family(
    "pve_guest_info", "gauge", "VM/CT info", ("id", "node", "name", "type", "template", "tags"),
    ((("qemu/100", "pve1", 'we"ird\\name\nx', "qemu", "0", "a;b"), 1.0),),
)  # fmt: skip


def test_fmt_value():
    assert fmt_value(1.0) == "1"
    assert fmt_value(0.0512394) == "0.0512394"
    assert fmt_value(1.12589990684262e15) == "1125899906842620"
    assert fmt_value(float("inf")) == "+Inf"
    assert fmt_value(float("nan")) == "NaN"


def test_render_has_cluster_first_and_no_timestamps():
    text = render([UP, INFO], "prod").decode()
    assert '# TYPE pve_up gauge\n' in text
    assert 'pve_up{cluster="prod",id="node/pve1"} 1\n' in text
    assert 'name="we\\"ird\\\\name\\nx"' in text
    for line in text.splitlines():
        if not line.startswith("#"):
            assert len(line.rsplit(" ", 2)) == 2  # name{labels} value, never a timestamp


def test_round_trip_through_prometheus_parser():
    text = render([UP, NET, INFO], "prod").decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["pve_network_receive_bytes"].type == "counter"
    (s,) = fams["pve_guest_info"].samples
    assert s.labels["name"] == 'we"ird\\name\nx'
    assert s.labels["cluster"] == "prod"


async def test_families_grouped_across_clusters_and_gzip_cached():
    e = Exposition()
    e.update(snap("a", [UP, NET]))
    e.update(snap("b", [UP]))
    body = e.body(["a", "b"]).decode()
    assert body.count("# TYPE pve_up gauge") == 1
    assert 'pve_up{cluster="a",id="node/pve1"}' in body and 'pve_up{cluster="b",id="node/pve1"}' in body
    gz = e.gzipped(["a", "b"])
    assert gzip.decompress(gz) == e.body(["a", "b"])  # one stream of many members, read whole
    assert e.gzipped(["b", "a"]) == gz
    assert gzip.decompress(e.body(["a", "b"], gzipped=True)) == e.body(["a", "b"])
    only_b = e.body(["b"]).decode()
    assert 'cluster="a"' not in only_b
    e.update(snap("b", [], seq=2))
    assert 'cluster="b"' not in e.body(["a", "b"]).decode()
    assert 'cluster="b"' not in gzip.decompress(e.gzipped(["a", "b"])).decode()


def test_gzip_join_is_one_standard_member():
    import random
    import zlib

    from pve_exporter.export.gzipjoin import Part, join

    rng = random.Random(5)
    datas = [bytes(rng.choice(b'ab{}"=\n') for _ in range(rng.randint(0, 3000))) for _ in range(50)]
    out = join([Part.of(d) for d in datas])
    d = zlib.decompressobj(31)
    assert d.decompress(out) == b"".join(datas)
    assert d.eof and not d.unused_data  # a single member: clients that stop after one read it all
    assert gzip.decompress(join([])) == b""


# -- issue 11 item 21: selection, page cache key, prepared entries ---------------------------------


def test_a_cluster_selected_twice_is_served_once():
    e = Exposition()
    e.update(snap("a", [UP]))
    e.update(snap("b", [NET]))
    assert e.body(["a", "a"]) == e.body(["a"])
    assert gzip.decompress(e.gzipped(["b", "a", "b"])) == e.body(["a", "b"])


def test_a_rebuilt_poller_restarting_at_seq_1_never_gets_the_old_page():
    """A reload rebuilds a poller: its sequence numbers start again at 1, the page must still change."""
    e = Exposition()
    e.update(snap("a", [UP], seq=1))
    before = e.gzipped(["a"])
    assert b"pve_up" in gzip.decompress(before)
    e.update(snap("a", [NET], seq=1))  # the new poller's first snapshot
    after = gzip.decompress(e.gzipped(["a"]))
    assert b"pve_network_receive_bytes_total" in after and b"pve_up" not in after
    assert b"pve_up" not in e.body(["a"])


def test_a_prepared_page_is_matched_by_snapshot_not_by_seq():
    e = Exposition()
    old = snap("a", [UP], seq=3)
    e.prepare(old)  # an old poller's cycle, cancelled before its swap
    new = snap("a", [NET], seq=3)  # the rebuilt poller's snapshot with the same seq
    e.update(new)
    assert b"pve_up" not in e.body(["a"]) and b"pve_network_receive_bytes_total" in e.body(["a"])


def test_prepared_entries_are_bounded_per_cluster_and_dropped_on_remove():
    e = Exposition()
    for seq in range(1, 50):  # cycles cancelled after prepare, before store.put
        e.prepare(snap("a", [UP], seq=seq))
    e.prepare(snap("b", [UP]))
    assert len(e._prepared) == 2
    last = snap("a", [NET], seq=50)
    e.prepare(last)
    e.update(last)
    assert set(e._prepared) == {"b"}
    e.remove("b")
    assert e._prepared == {}
