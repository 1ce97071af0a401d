"""A drop-in for prometheus-pve-exporter users (issue 17): dead nodes' guests stay joinable, /pve tells
the truth about an unreachable cluster, and the migration check names what a dashboard or rule file
uses that this daemon does not expose."""

from __future__ import annotations

from types import MappingProxyType

from pve_exporter.collect.known import KnownGuest, guest_identity, remember_guests
from pve_exporter.collect.resources import parse_resources
from pve_exporter.collect.status import make_shared
from tests.simharness import cycle, series, sim_daemon

ALIVE = {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve3", "status": "running", "name": "db-01",
         "template": 0, "tags": "prod;db", "uptime": 5, "cpu": 0.1, "maxcpu": 2, "mem": 1, "maxmem": 2}  # fmt: skip
# The same guest once pmxcfs dropped pve3's status data (pve-api.md §7.3): config-derived keys only.
DEAD = {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve3", "status": "unknown", "tags": "prod;db",
        "hastate": "fence"}  # fmt: skip


def guest_info(families) -> dict[str, dict[str, str]]:
    out = {}
    for f in families:
        if f.name == "pve_guest_info":
            for values, _ in f.samples:
                labels = dict(zip(f.labels, values, strict=True))
                out[labels["id"]] = labels
    return out


def value(families, name: str, rid: str) -> float | None:
    for f in families:
        if f.name == name:
            for values, v in f.samples:
                if values[0] == rid:
                    return v
    return None


# -- the guest memory ----------------------------------------------------------------------------


def test_status_less_row_gets_last_known_name_template_and_tags() -> None:
    known = remember_guests({}, [ALIVE])
    dead = {k: v for k, v in DEAD.items() if k != "tags"}  # even tags missing: last known ones
    info = guest_info(parse_resources([dead], known=remember_guests(known, [dead])))
    assert info["qemu/100"] == {"id": "qemu/100", "node": "pve3", "name": "db-01", "type": "qemu", "template": "0",
                                "tags": "db;prod"}  # fmt: skip
    assert value(parse_resources([dead], known=known), "pve_up", "qemu/100") == 0.0


def test_rows_with_status_data_always_win() -> None:
    known = remember_guests({}, [ALIVE])
    renamed = dict(ALIVE, name="db-02", tags="", template=1)
    known = remember_guests(known, [renamed])
    assert known["qemu/100"] == KnownGuest("db-02", "1", "")
    assert guest_info(parse_resources([renamed], known=known))["qemu/100"]["name"] == "db-02"


def test_never_seen_guest_on_dead_node_has_empty_name_and_template() -> None:
    info = guest_info(parse_resources([DEAD]))
    assert info["qemu/100"] == {"id": "qemu/100", "node": "pve3", "name": "", "type": "qemu", "template": "",
                                "tags": "db;prod"}  # fmt: skip


def test_deleted_guests_are_forgotten_and_no_rows_keep_the_memory() -> None:
    known = remember_guests({}, [ALIVE])
    assert remember_guests(known, None) is known  # API unreachable, cached answer expired: keep
    assert dict(remember_guests(known, [])) == {}  # listed no more: deleted


def test_unchanged_guest_keeps_its_memory_object() -> None:
    known = remember_guests({}, [ALIVE])
    assert remember_guests(known, [ALIVE])["qemu/100"] is known["qemu/100"]
    assert guest_identity(DEAD, known["qemu/100"]) is known["qemu/100"]


def test_make_shared_carries_the_memory_forward() -> None:
    first = make_shared("prod", None, [ALIVE])
    assert isinstance(first.known_guests, MappingProxyType)
    second = make_shared("prod", None, [DEAD], first.known_guests)
    assert second.known_guests["qemu/100"].name == "db-01"
    assert make_shared("prod", None, None, second.known_guests).known_guests == second.known_guests


# -- through the poller, against the simulator ---------------------------------------------------


async def test_node_down_keeps_guest_info_with_names_and_the_guest_down_join_finds_them() -> None:
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, sim, _server):
        await cycle(daemon)
        lab = sim.cluster("lab")
        names = {f"{g.type}/{g.vmid}": g.display_name for g in lab.guests.values() if g.node == "pve2"}
        lab.add_fault("node_down", node="pve2")
        await cycle(daemon)
        await cycle(daemon)  # the memory lasts, not just one cycle
        text = daemon.exposition.body(["lab"]).decode()
    s = series(text)
    info = {dict(lbls)["id"]: dict(lbls) for (n, lbls) in s if n == "pve_guest_info"}
    up = {dict(lbls)["id"]: v for (n, lbls), v in s.items() if n == "pve_up"}
    assert names
    for rid, name in names.items():
        assert info[rid]["name"] == name and info[rid]["node"] == "pve2", info[rid]
        assert up[rid] == 0.0
    # (pve_guest_info * on(id) group_left(name) pve_up) == 0: every guest of the dead node is in it.
    down = {rid for rid in info if up.get(rid) == 0.0}
    assert set(names) <= down
