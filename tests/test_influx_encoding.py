"""Snapshot → line protocol in PVE's External Metric Server schema (+ `cluster`), checked two ways:
golden lines written by hand from notes/influx-dashboards-alerts.md §1, and every line parsed back
by an independent parser (the `line-protocol-parser` package, a C implementation)."""

from __future__ import annotations

import math
import random
from types import MappingProxyType
from typing import Any

import pytest
from line_protocol_parser import LineFormatError, parse_line

from pve_exporter.export import influx
from pve_exporter.export.influx import format_value, snapshot_to_lines, tag_escape
from pve_exporter.snapshot import Payload, Snapshot

T0 = 1_760_000_000.0
TS = 1_760_000_010  # int(finished_at): the collection time in seconds


def snap(payloads: dict[str, Any], *, stale: dict[str, Any] | None = None, cluster: str = "prod") -> Snapshot:
    p = {k: Payload(v, T0 + 2) for k, v in payloads.items()}
    for k, v in (stale or {}).items():
        p[k] = Payload(v, T0 - 15)  # kept from an earlier cycle: not this cycle's data
    return Snapshot(
        cluster=cluster, seq=1, started_at=T0, finished_at=TS + 0.7, reachable=True, last_success=T0,
        families=(), results=MappingProxyType({}), payloads=MappingProxyType(p), started_mono=T0,
    )  # fmt: skip


def parsed(line: str) -> dict[str, Any]:
    return parse_line(line.encode())


def check_all(lines: list[str]) -> list[dict[str, Any]]:
    """Every line must parse, carry `cluster`, and be stamped with the collection time in seconds."""
    out = []
    for line in lines:
        p = parsed(line)
        assert p["time"] == TS, line
        assert p["tags"].get("cluster"), line
        assert p["fields"], line
        out.append(p)
    return out


NODE_STATUS = {
    "uptime": 864000, "cpu": 0.0345, "wait": 0.0012, "loadavg": ["0.52", "0.58", "0.61"],
    "cpuinfo": {"cpus": 16, "model": "AMD EPYC", "sockets": 1, "cores": 8, "mhz": "3000.000"},
    "memory": {"total": 67108864000, "used": 27108864000, "free": 20000000000, "available": 40000000000},
    "swap": {"total": 8589934592, "used": 0, "free": 8589934592},
    "ksm": {"shared": 1048576},
    "rootfs": {"total": 100000000000, "used": 30000000000, "avail": 65000000000, "free": 70000000000},
    "kversion": "Linux 6.8.12-4-pve", "pveversion": "pve-manager/9.1.4/abc",
}  # fmt: skip

QEMU_RUNNING = {
    "vmid": 100, "name": "web-01", "status": "running", "qmpstatus": "running", "pid": 48213, "uptime": 864211,
    "cpus": 4, "cpu": 0.0512394, "maxmem": 4294967296, "mem": 2254857830, "memhost": 2390753280,
    "freemem": 1912602624, "balloon": 4294967296, "balloon_min": 2147483648, "shares": 1000,
    "maxdisk": 34359738368, "disk": 0, "diskread": 5368712192, "diskwrite": 21474836480, "netin": 9871234567,
    "netout": 1234987654, "pressurecpusome": 0.12, "pressurecpufull": 0.05, "pressureiosome": 0, "pressureiofull": 0,
    "pressurememorysome": 0, "pressurememoryfull": 0, "tags": "prod;web", "serial": 1,
    "nics": {"tap100i0": {"netin": 9871234567, "netout": 1234987654}},
    "blockstat": {
        "scsi0": {"rd_bytes": 5368712192, "wr_bytes": 21474836480, "rd_operations": 412345, "flush_operations": 98765,
                  "idle_time_ns": 123456789, "account_invalid": True, "account_failed": True, "timed_stats": []},
        "ide2": {"rd_bytes": 0, "wr_bytes": 0, "account_invalid": False, "timed_stats": []},
    },
    "ballooninfo": {"actual": 4294967296, "max_mem": 4294967296, "total_mem": 4102029312, "free_mem": 1912602624,
                    "mem_swapped_in": 0, "mem_swapped_out": 0, "major_page_faults": 1811,
                    "minor_page_faults": 3803793, "last_update": 1738650301},
    "running-machine": "pc-q35-9.2+pve1", "running-qemu": "9.2.0",
    "proxmox-support": {"pbs-dirty-bitmap": True, "backup-max-workers": True, "pbs-library-version": "1.5.1 (UNKNOWN)"},
}  # fmt: skip

QEMU_STOPPED = {
    "vmid": 101, "name": "VM 101", "status": "stopped", "qmpstatus": "stopped", "uptime": 0, "cpus": 2, "cpu": 0,
    "maxmem": 2147483648, "mem": 0, "memhost": 0, "maxdisk": 34359738368, "disk": 0, "netin": 0, "netout": 0,
    "lock": "backup", "diskread": None, "diskwrite": None, "template": 1,
}  # fmt: skip

LXC_RUNNING = {
    "vmid": 200, "type": "lxc", "name": "dns-01", "status": "running", "pid": 51234, "uptime": 432000, "cpus": "1.5",
    "cpu": 0.0061, "maxmem": 1073741824, "mem": 134217728, "swap": 0, "maxswap": 536870912, "maxdisk": 8589934592,
    "disk": 1610612736, "netin": 45678901, "netout": 12345678, "diskread": 104857600, "diskwrite": 52428800,
    "tags": "infra", "pressurecpusome": "0.00", "pressurecpufull": "0.00", "pressureiosome": "0.12",
    "pressureiofull": "0.10", "pressurememorysome": None, "pressurememoryfull": None,
}  # fmt: skip

NODE_STORAGE = [
    {"storage": "local", "type": "dir", "content": "vztmpl,iso,backup", "shared": 0, "enabled": 1, "active": 1,
     "total": 100861726720, "used": 12884901888, "avail": 82814287872, "used_fraction": 0.127746282567979},
    {"storage": "nfs-backup", "type": "nfs", "content": "backup", "shared": 1, "enabled": 1, "active": 0,
     "total": 0, "used": 0, "avail": 0},
    {"storage": "s3-archive", "type": "dir", "content": "backup", "shared": 0, "enabled": 1, "active": 1,
     "total": 1.12589990684262e15, "used": 0, "avail": 1125899906842624, "used_fraction": 0},
]  # fmt: skip

RESOURCES = [
    {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online"},
    {"id": "storage/pve1/local", "type": "storage", "storage": "local", "node": "pve1", "plugintype": "dir",
     "status": "available", "shared": 0, "content": "vztmpl,iso,backup", "disk": 1, "maxdisk": 2},
    {"id": "storage/pve2/local-lvm", "type": "storage", "storage": "local-lvm", "node": "pve2",
     "plugintype": "lvmthin", "status": "available", "shared": 0, "content": "images,rootdir", "disk": 402653184000,
     "maxdisk": 1836660096000},
    {"id": "storage/pve2/nfs-backup", "type": "storage", "storage": "nfs-backup", "node": "pve2", "plugintype": "nfs",
     "status": "unknown", "shared": 1, "content": "backup"},
]  # fmt: skip


# -- golden lines --------------------------------------------------------------------------------


def test_node_lines_golden():
    lines = snapshot_to_lines(snap({"/nodes/pve1/status": NODE_STATUS}))
    tags = "object=nodes,host=pve1,cluster=prod"
    assert lines == [
        f"blockstat,{tags} bavail=65000000000,bfree=70000000000,blocks=100000000000,per=32,used=30000000000 {TS}",
        f"cpustat,{tags} avg1=0.52,avg15=0.61,avg5=0.58,cpu=0.0345,cpus=16,wait=0.0012 {TS}",
        f"memory,{tags} memavailable=40000000000,memfree=20000000000,memshared=1048576,memtotal=67108864000,"
        f"memused=27108864000,swapfree=8589934592,swaptotal=8589934592,swapused=0 {TS}",
        f"system,{tags} uptime=864000 {TS}",
    ]
    check_all(lines)


def test_qemu_lines_golden_with_nics_blockstat_ballooninfo():
    lines = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [QEMU_RUNNING]}))
    tags = "object=qemu,vmid=100,nodename=pve1,host=web-01,cluster=prod"
    assert lines == [
        f"ballooninfo,{tags} actual=4294967296,free_mem=1912602624,last_update=1738650301,major_page_faults=1811,"
        f"max_mem=4294967296,mem_swapped_in=0,mem_swapped_out=0,minor_page_faults=3803793,total_mem=4102029312 {TS}",
        f"blockstat,{tags},instance=ide2 rd_bytes=0,wr_bytes=0 {TS}",
        f"blockstat,{tags},instance=scsi0 flush_operations=98765,idle_time_ns=123456789,rd_bytes=5368712192,"
        f"rd_operations=412345,wr_bytes=21474836480 {TS}",
        f"nics,{tags},instance=tap100i0 netin=9871234567,netout=1234987654 {TS}",
        f'proxmox-support,{tags} pbs-library-version="1.5.1 (UNKNOWN)" {TS}',
        f"system,{tags} balloon=4294967296,balloon_min=2147483648,cpu=0.0512394,cpus=4,disk=0,diskread=5368712192,"
        f"diskwrite=21474836480,freemem=1912602624,maxdisk=34359738368,maxmem=4294967296,mem=2254857830,"
        f'memhost=2390753280,name="web-01",netin=9871234567,netout=1234987654,pid=48213,pressurecpufull=0.05,'
        f"pressurecpusome=0.12,pressureiofull=0,pressureiosome=0,pressurememoryfull=0,pressurememorysome=0,"
        f'qmpstatus="running",running-machine="pc-q35-9.2+pve1",running-qemu="9.2.0",serial=1,shares=1000,'
        f'status="running",tags="prod;web",uptime=864211 {TS}',
    ]
    ps = check_all(lines)
    assert all(p["tags"]["vmid"] == "100" and "vmid" not in p["fields"] for p in ps)  # a tag, never a field
    assert isinstance(ps[-1]["fields"]["running-qemu"], str)


def test_stopped_qemu_skips_nulls_and_keeps_strings():
    lines = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [QEMU_STOPPED]}))
    assert lines == [
        rf"system,object=qemu,vmid=101,nodename=pve1,host=VM\ 101,cluster=prod cpu=0,cpus=2,disk=0,"
        f'lock="backup",maxdisk=34359738368,maxmem=2147483648,mem=0,memhost=0,name="VM 101",netin=0,netout=0,'
        f'qmpstatus="stopped",status="stopped",template=1,uptime=0 {TS}'
    ]
    assert parsed(lines[0])["tags"]["host"] == "VM 101"


def test_lxc_line_golden_numeric_strings_become_numbers():
    lines = snapshot_to_lines(snap({"/nodes/pve2/lxc": [LXC_RUNNING]}))
    assert lines == [
        "system,object=lxc,vmid=200,nodename=pve2,host=dns-01,cluster=prod cpu=0.0061,cpus=1.5,disk=1610612736,"
        "diskread=104857600,diskwrite=52428800,maxdisk=8589934592,maxmem=1073741824,maxswap=536870912,mem=134217728,"
        'name="dns-01",netin=45678901,netout=12345678,pid=51234,pressurecpufull=0.00,pressurecpusome=0.00,'
        f'pressureiofull=0.10,pressureiosome=0.12,status="running",swap=0,tags="infra",type="lxc",uptime=432000 {TS}'
    ]
    f = parsed(lines[0])["fields"]
    assert f["cpus"] == 1.5 and f["pressureiosome"] == 0.12 and f["type"] == "lxc"


def test_storage_lines_active_only_type_is_tag_and_field():
    lines = snapshot_to_lines(snap({"/nodes/pve1/storage": NODE_STORAGE}))
    assert lines == [
        'system,object=storages,nodename=pve1,host=local,type=dir,cluster=prod active=1,avail=82814287872,'
        f'content="vztmpl,iso,backup",enabled=1,shared=0,total=100861726720,type="dir",used=12884901888 {TS}',
        'system,object=storages,nodename=pve1,host=s3-archive,type=dir,cluster=prod active=1,avail=1125899906842624,'
        f'content="backup",enabled=1,shared=0,total=1125899906842620.0,type="dir",used=0 {TS}',
    ]  # nfs-backup is inactive: pvestatd skips it; used_fraction is the API's, not storage_info's
    p = parsed(lines[0])
    assert p["tags"]["type"] == "dir" and p["fields"]["type"] == "dir"


def test_storage_falls_back_to_cluster_resources_for_nodes_without_a_storage_list():
    lines = snapshot_to_lines(snap({"/nodes/pve1/storage": NODE_STORAGE[:1], "/cluster/resources": RESOURCES}))
    assert lines == [
        'system,object=storages,nodename=pve1,host=local,type=dir,cluster=prod active=1,avail=82814287872,'
        f'content="vztmpl,iso,backup",enabled=1,shared=0,total=100861726720,type="dir",used=12884901888 {TS}',
        "system,object=storages,nodename=pve2,host=local-lvm,type=lvmthin,cluster=prod active=1,"
        f'content="images,rootdir",shared=0,total=1836660096000,type="lvmthin",used=402653184000 {TS}',
    ]  # pve1 from its own list (not the resources row); pve2's `unknown` nfs-backup is not active


def test_whole_snapshot_order_and_only_fresh_payloads():
    s = snap(
        {"/nodes/pve1/status": NODE_STATUS, "/nodes/pve1/qemu?full=1": [QEMU_STOPPED, QEMU_RUNNING],
         "/nodes/pve1/lxc": [LXC_RUNNING], "/nodes/pve1/storage": NODE_STORAGE, "/cluster/resources": RESOURCES},
        stale={"/nodes/pve2/status": NODE_STATUS, "/nodes/pve2/qemu?full=1": [dict(QEMU_RUNNING, vmid=300)]},
    )  # fmt: skip
    ps = check_all(snapshot_to_lines(s))
    objects = [p["tags"]["object"] for p in ps]
    assert objects == sorted(objects, key=["nodes", "qemu", "lxc", "storages"].index)
    assert {p["tags"].get("host") for p in ps if p["tags"]["object"] == "nodes"} == {"pve1"}  # pve2 is stale
    vmids = [p["tags"]["vmid"] for p in ps if p["tags"]["object"] == "qemu" and p["measurement"] == "system"]
    assert vmids == ["100", "101"]  # sorted by vmid, stale 300 absent
    assert {p["tags"]["cluster"] for p in ps} == {"prod"}


def test_empty_snapshot_and_unreachable_cluster_give_no_lines():
    assert snapshot_to_lines(snap({})) == []
    assert snapshot_to_lines(snap({}, stale={"/nodes/pve1/status": NODE_STATUS})) == []


# -- names, escaping, types ----------------------------------------------------------------------

ODD_NAMES = ["web 01", "a,b", 'q"uote', "k=v", "ümläut ☃", "tab\there", "back\\slash", "trailing\\", "66601", "12.5"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_guest_names_round_trip_through_an_independent_parser(name):
    row = dict(QEMU_STOPPED, name=name, tags="a b;c,d")
    (line,) = snapshot_to_lines(snap({"/nodes/node 1/qemu?full=1": [row]}, cluster="my,cluster=x"))
    p = parsed(line)
    # As influxdb-client writes them: control whitespace as `\t` text, a trailing backslash + space.
    expected_tag = name.replace("\t", "\\t").rstrip("\\") + (" " if name.endswith("\\") else "")
    assert p["tags"]["host"] == expected_tag
    assert p["tags"]["nodename"] == "node 1"
    assert p["tags"]["cluster"] == "my,cluster=x"
    assert p["fields"]["name"] == name  # string fields keep everything, quotes and backslashes included
    assert isinstance(p["fields"]["name"], str)
    assert p["fields"]["tags"] == "a b;c,d"


def test_guest_named_66601_stays_a_string_field_even_as_a_json_number():
    for name in ("66601", 66601):
        (line,) = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [dict(QEMU_STOPPED, name=name)]}))
        assert 'name="66601"' in line and ",host=66601," in line
        assert parsed(line)["fields"]["name"] == "66601"


def test_empty_tags_and_empty_name_are_left_out():
    row = dict(QEMU_STOPPED, name="", tags="", lock="")
    (line,) = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [row]}))
    p = parsed(line)
    assert "host" not in p["tags"]
    assert not {"name", "tags", "lock"} & set(p["fields"])


def test_nan_inf_booleans_arrays_and_nulls_are_dropped():
    row = dict(QEMU_STOPPED, cpu=math.nan, mem=math.inf, netin="NaN", netout="-Infinity", agent=True,
               spice=False, clipboard=None, serial=[1, 2])  # fmt: skip
    (line,) = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [row]}))
    f = parsed(line)["fields"]
    assert not {"cpu", "mem", "netin", "netout", "agent", "spice", "clipboard", "serial"} & set(f)
    assert "nan" not in line.lower().replace("nodename", "") and "inf" not in line.lower()


def test_hashes_below_an_instance_are_flattened_into_its_line():
    row = dict(QEMU_RUNNING, blockstat={"scsi0": {"rd_bytes": 5, "deeper": {"x": 1, "rd_bytes": 9}}})
    lines = snapshot_to_lines(snap({"/nodes/pve1/qemu?full=1": [row]}))
    (bs,) = [line for line in lines if line.startswith("blockstat,")]
    assert bs.endswith(f",instance=scsi0 rd_bytes=5,x=1 {TS}")  # the first value of a repeated key wins


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"), (-3, "-3"), (12345678901234567890, "12345678901234567890"), (0.5, "0.5"), (1e-05, "1e-05"),
        (4294967296.0, "4294967296.0"), ("0.00", "0.00"), (" 1.5 ", "1.5"), ("+5", "5.0"), (".5", "0.5"),
        ("1e5", "100000.0"), ("-7", "-7"), ("nan", None), ("Inf", None), ("", None), (None, None), (True, None),
        ([1], None), ("running", '"running"'), ("9.2.0", '"9.2.0"'), ('a"b\\c', r'"a\"b\\c"'), ("  ", '"  "'),
    ],
)  # fmt: skip
def test_values_as_pve_writes_them(value, expected):
    assert format_value("x", value) == expected
    if expected is not None:
        assert parse_line(f"m x={expected} 1".encode())["fields"]["x"] is not None


def test_tag_escaping_matches_line_protocol():
    assert tag_escape("a b,c=d") == r"a\ b\,c\=d"
    assert tag_escape("new\nline") == r"new\nline"
    assert parsed(f"m,t={tag_escape('x y,z=w')} f=1 1")["tags"]["t"] == "x y,z=w"


def test_timestamp_is_the_collection_time_in_whole_seconds():
    s = snap({"/nodes/pve1/status": {"uptime": 5}})
    assert snapshot_to_lines(s) == [f"system,object=nodes,host=pve1,cluster=prod uptime=5 {TS}"]


def test_unparseable_line_would_be_caught_by_the_parser():
    """The independent parser is strict enough to be a real check (not a rubber stamp)."""
    for bad in ('m,t=a b x=1 1', 'm x="unterminated 1', "m x=+5 1", "m,t= x=1 1"):
        with pytest.raises(LineFormatError):
            parse_line(bad.encode())


# -- the fast path equals the field-by-field reference -------------------------------------------

_KEYS = ["a", "b", "cpu", "name", "tags", "vmid", "status", "x y", "k,v", "pct%d", "z"]


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(12 if depth < 3 else 10)
    return [
        lambda: rng.randrange(-10**12, 10**12),
        lambda: rng.random() * 10 ** rng.randrange(-8, 20),
        lambda: rng.choice(["running", "0.00", " 7 ", "", "NaN", "inf", "9.2.0", 'q"x', "b\\s", "ü ☃", "1e3", "+1"]),
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: [1, 2],
        lambda: rng.choice([math.nan, math.inf, 0.0, -0.0, 1.0]),
        lambda: 66601,
        lambda: "66601",
        lambda: rng.randrange(3),
        lambda: {k: _random_value(rng, depth + 1) for k in rng.sample(_KEYS, rng.randrange(1, 5))},
        lambda: {f"i{n}": {k: _random_value(rng, depth + 2) for k in rng.sample(_KEYS, 3)} for n in range(2)},
    ][kind]()


def test_fast_path_matches_the_generic_reference_byte_for_byte():
    rng = random.Random(20261123)
    shapes = [rng.sample(_KEYS, rng.randrange(1, len(_KEYS))) for _ in range(40)]
    for _ in range(3000):
        row = {k: _random_value(rng, 0) for k in rng.choice(shapes)}
        for excluded in (None, frozenset({"vmid"})):
            fast: list[str] = []
            ref: list[str] = []
            influx._encode(fast, row, "object=qemu,cluster=c", "1", excluded)
            influx._encode_generic(ref, row, "object=qemu,cluster=c", "1", excluded)
            assert fast == ref, row
            for line in fast:
                parsed(line)


def test_rows_whose_nested_hashes_differ_from_the_first_row_of_their_shape_match_the_reference():
    """A plan encodes nested hashes shaped like its first row's inline; every other shape of them
    (another instance layout, other keys, a NaN, a scalar) must still give the reference's bytes."""
    first = {"vmid": 1, "cpu": 0.5, "nics": {"tap1i0": {"netin": 1, "netout": 2}},
             "ballooninfo": {"actual": 1, "free_mem": 2}}  # fmt: skip
    variants = [
        {"tap1i0": {"netin": 3, "netout": 4}},  # the spec's shape
        {"tap1i0": {"netin": 3, "netout": 4}, "tap1i1": {"netin": 5, "netout": 6}},  # two instances
        {"tap 1": {"netin": 3, "netout": 4}},  # an instance name to escape
        {"tap1i0": {"netin": float("nan"), "netout": 4}},  # NaN: the generic own line
        {"tap1i0": {"netin": 3}},  # fewer keys
        {"tap1i0": {"netin": 3, "rx": 4}},  # other keys, same types
        {"tap1i0": {"netin": "x", "netout": 4}},  # other types
        {"tap1i0": 7},  # not a hash of instances
        {"tap1i0": {"netin": 3, "netout": {"deep": 1}}},  # a hash below an instance: flattened
        {},
    ]
    balloons = [
        {"actual": 5, "free_mem": 6}, {"actual": 5}, {"actual": 5, "max_mem": 6},
        {"actual": float("inf"), "free_mem": 6}, {"actual": {"x": 1}, "free_mem": 2}, {"a": {"x": 1}}, {},
    ]  # fmt: skip
    for nics in variants:
        for balloon in balloons:
            fast: list[str] = []
            ref: list[str] = []
            for row in (first, {**first, "nics": nics, "ballooninfo": balloon}):
                influx._encode(fast, row, "object=qemu,cluster=c", "1", frozenset({"vmid"}))
                influx._encode_generic(ref, row, "object=qemu,cluster=c", "1", frozenset({"vmid"}))
            assert fast == ref, (nics, balloon)


# -- the per-shape row functions (`_compile_row`) equal the reference ------------------------------

_FLOATS = [0.0, -0.0, 0.5, 0.0512394, 1e-05, 9.999e-05, 1e-4, 0.00012, 1.5e-07, 5e-324, 1e15, 9999999999999998.0,
           1e16, 1.2345678901234568e17, 1e22, -3.25, 1.7976931348623157e308, 4294967296.0, 0.1 + 0.2]  # fmt: skip
_INTS = [0, 1, -1, 4294967296, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**20)]
_STRS = ["running", "", "0.00", " 7 ", "nan", "-Infinity", "1e3", "9.2.0", 'q"x', "b\\s", "ü ☃", "a,b=c d", "x\ny",
         "tab\there", "trailing\\"]  # fmt: skip


def _pve_row(vmid: int) -> dict[str, Any]:
    """A running VM as `/nodes/{n}/qemu?full=1` has it: scalars, two instance hashes, one measurement hash."""
    return {
        "vmid": vmid, "name": f"vm-{vmid}", "status": "running", "cpu": 0.0512394, "mem": 2254857830,
        "pressurecpusome": 0.12, "pressureiofull": 0.0, "tags": "prod;web", "template": None, "agent": True,
        "serial": [1], "nics": {f"tap{vmid}i0": {"netin": 9871234567, "netout": 1234987654}},
        "blockstat": {"scsi0": {"rd_bytes": 5368712192, "idle_time_ns": 12, "account_failed": True,
                                "timed_stats": [], "latency": 0.25}},
        "ballooninfo": {"actual": 4294967296, "free_mem": 1912602624, "last_update": 1738650301},
    }  # fmt: skip


def _fast_and_reference(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], int]:
    """Encode `rows` as snapshot_to_lines does (row function first) and field by field; count the rows
    the row function took."""
    fast: list[str] = []
    ref: list[str] = []
    taken = 0
    ctx = influx._root(frozenset({"vmid"}))
    for row in rows:
        fn = ctx.fast.get(len(row))
        if fn is not None and fn(row, fast, "object=qemu,cluster=c", "1"):
            taken += 1
        else:
            influx._enc(fast, row, "object=qemu,cluster=c", "1", ctx, None)
        influx._encode_generic(ref, row, "object=qemu,cluster=c", "1", frozenset({"vmid"}))
    return fast, ref, taken


def test_row_function_takes_pve_shaped_rows_and_writes_the_reference_bytes():
    rows = [_pve_row(v) for v in range(100, 110)]
    rows[3]["blockstat"]["ide2"] = {"rd_bytes": 1, "idle_time_ns": 2, "account_failed": False, "timed_stats": [],
                                    "latency": 0.5}  # two instances of one shape  # fmt: skip
    rows[4]["nics"] = {"net 0,x=y": {"netin": 1, "netout": 2}}  # an instance name to escape
    fast, ref, taken = _fast_and_reference(rows)
    assert fast == ref
    assert taken == 9  # every row but the first (which compiles the shape)
    assert ",instance=net\\ 0\\,x\\=y " in "\n".join(fast)
    for line in fast:
        parsed(line)


@pytest.mark.parametrize("value", [*_FLOATS, math.nan, math.inf, -math.inf])
def test_row_function_floats_are_written_as_repr_or_dropped(value):
    """Every float as repr writes it (exponents, values below 1e-4, -0.0, the largest), NaN/±Inf
    dropped by the reference path; in a line with one float and in one with several."""
    rows = [_pve_row(1), _pve_row(2)]
    rows[1]["cpu"] = value
    rows[1]["blockstat"]["scsi0"]["latency"] = value  # a line with a single float
    fast, ref, _ = _fast_and_reference(rows)
    assert fast == ref
    if math.isfinite(value):  # lines of the second row: ballooninfo, blockstat, nics, system
        assert f"cpu={value!r}," in fast[7] and f"latency={value!r}," in fast[5]
    else:
        assert "cpu=" not in fast[-1] and "latency=" not in fast[-3]


def test_row_function_matches_the_reference_for_random_values_of_one_shape():
    """Same keys and types as the compiled shape, values drawn from the awkward ones: huge and
    negative ints (beyond orjson's 64 bits), exponent floats, NaN, empty, numeric and escaped strings,
    unicode, and bools/ints/strings where the shape had something else."""
    rng = random.Random(1207)
    rows = [_pve_row(1)]
    for v in range(2, 1500):
        row = _pve_row(v)
        row["cpu"] = rng.choice([*_FLOATS, math.nan])
        row["pressurecpusome"] = rng.choice(_FLOATS)
        row["mem"] = rng.choice(_INTS)
        row["status"] = rng.choice(_STRS)
        row["name"] = rng.choice(_STRS)
        row["nics"][f"tap{v}i0"]["netin"] = rng.choice(_INTS)
        row["blockstat"]["scsi0"]["latency"] = rng.choice(_FLOATS)
        row["ballooninfo"]["actual"] = rng.choice(_INTS)
        if rng.random() < 0.1:
            row["ballooninfo"]["free_mem"] = rng.choice([True, None, "12", 1.5, [1]])
        if rng.random() < 0.05:
            row["agent"] = rng.choice([1, "1", None])
        rows.append(row)
    fast, ref, taken = _fast_and_reference(rows)
    assert fast == ref
    assert taken > 500  # most rows went through the row function
