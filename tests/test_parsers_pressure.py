"""PSI pressure is published as a 0–1 ratio, whatever unit PVE uses on the wire (issue 11, item 20).

The fixtures are built from PVE's own sources, not from our simulator:

- pve-common `src/PVE/ProcFSTools.pm`: `parse_pressure` reads `/proc/pressure/<res>` (and a cgroup's
  `<res>.pressure`) with `^(some|full)\\s+avg10=(\\d+\\.\\d+) ...` and keeps the captured text. The kernel
  writes avg10 as a *percentage* of wall time stalled ("some avg10=1.30" = 1.3 %), so every PVE
  `pressure*` field is a percentage. `read_pressure` covers cpu, memory and io.
- pve-manager `PVE/Service/pvestatd.pm` (`update_node_status`, PVE 9): writes
  `$pressures->{cpu}{some}{avg10}, {io}{some}, {io}{full}, {memory}{some}, {memory}{full}` of
  `read_pressure()` into the `pve-node-9.0` RRD. `GET /nodes/{node}/rrddata` returns them as the
  per-minute AVERAGE under `pressurecpusome`, `pressureiosome`, `pressureiofull`,
  `pressurememorysome`, `pressurememoryfull` (no cpu full for nodes: the RRD has no such source).
- qemu-server `PVE/QemuServer.pm` (`vmstatus`): `read_cgroup_pressure("qemu.slice/<vmid>.scope")`,
  then `$d->{pressurecpusome} = $pressures->{cpu}{some}{avg10} * 1` (and cpufull, iosome, iofull,
  memorysome, memoryfull): JSON numbers, for running VMs.
- pve-container `src/PVE/LXC.pm` (`vmstatus`): `read_cgroup_pressure("lxc/<vmid>")` and the same six
  fields *without* `* 1`, so the JSON carries the captured strings ("1.30"), or null when the cgroup
  file could not be read.
"""

from __future__ import annotations

import pytest

from pve_exporter.collect.guests import parse_guest_lists
from pve_exporter.collect.node_pressure import parse_node_pressure
from tests.test_parsers_extra import flat

# <cgroup>/*.pressure and /proc/pressure/* as the kernel writes them (percentages of time stalled);
# cpu full is a cgroup's (the node RRD has no cpu full source).
PROC_PRESSURE = {
    "cpu": "some avg10=1.30 avg60=0.95 avg300=0.40 total=123456789\n"
           "full avg10=0.40 avg60=0.30 avg300=0.10 total=4567\n",
    "io": "some avg10=12.50 avg60=8.00 avg300=2.10 total=99887766\n"
          "full avg10=4.25 avg60=3.00 avg300=1.00 total=55443322\n",
    "memory": "some avg10=0.75 avg60=0.20 avg300=0.05 total=1122\n"
              "full avg10=0.50 avg60=0.10 avg300=0.02 total=334\n",
}  # fmt: skip


def avg10(res: str, kind: str) -> str:
    """What ProcFSTools::parse_pressure captures for `$res->{$kind}{avg10}`: the text, unconverted."""
    for line in PROC_PRESSURE[res].splitlines():
        head, *fields = line.split()
        if head == kind:
            return dict(f.split("=") for f in fields)["avg10"]
    raise KeyError((res, kind))


FIELDS = {  # PVE field → (resource, some|full)
    "pressurecpusome": ("cpu", "some"), "pressurecpufull": ("cpu", "full"),
    "pressureiosome": ("io", "some"), "pressureiofull": ("io", "full"),
    "pressurememorysome": ("memory", "some"), "pressurememoryfull": ("memory", "full"),
}  # fmt: skip
NODE_FIELDS = ("pressurecpusome", "pressureiosome", "pressureiofull", "pressurememorysome", "pressurememoryfull")


def family(field: str) -> str:
    res, kind = FIELDS[field]
    return f"{res}_{kind}"


def qemu_row() -> dict:
    """`GET /nodes/{node}/qemu`: qemu-server's vmstatus numifies with `* 1`."""
    row = {"vmid": 100, "name": "web", "status": "running", "pid": 4242, "cpus": 4, "cpu": 0.02}
    row.update({f: float(avg10(*FIELDS[f])) for f in FIELDS})
    return row


def lxc_row() -> dict:
    """`GET /nodes/{node}/lxc`: pve-container's vmstatus passes the captured strings through."""
    row = {"vmid": 200, "type": "lxc", "name": "dns", "status": "running", "pid": 5151, "swap": 0, "maxswap": 0}
    row.update({f: avg10(*FIELDS[f]) for f in FIELDS})
    return row


def rrd_rows() -> list[dict]:
    """`GET /nodes/{node}/rrddata?timeframe=hour`: pvestatd writes avg10 every ~10 s into pve-node-9.0;
    a row is the minute's AVERAGE (here two equal samples, and a newest row without the sources yet)."""
    sample = {f: float(avg10(*FIELDS[f])) for f in NODE_FIELDS}
    return [
        {"time": 1738650000, "loadavg": 0.35, "cpu": 0.04, **sample},
        {"time": 1738650060, "loadavg": 0.41, "cpu": 0.04, **sample},
        {"time": 1738650120, "maxcpu": 16},
    ]


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_qemu_pressure_is_a_ratio(field):
    s = flat(parse_guest_lists([("pve1", [qemu_row()])], []))
    value = s[(f"pve_guest_pressure_{family(field)}_ratio", ("qemu/100",))]
    assert value == pytest.approx(float(avg10(*FIELDS[field])) / 100)
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_lxc_pressure_strings_are_a_ratio(field):
    s = flat(parse_guest_lists([], [("pve1", [lxc_row()])]))
    value = s[(f"pve_guest_pressure_{family(field)}_ratio", ("lxc/200",))]
    assert value == pytest.approx(float(avg10(*FIELDS[field])) / 100)


@pytest.mark.parametrize("field", NODE_FIELDS)
def test_node_rrd_pressure_is_a_ratio(field):
    s = flat(parse_node_pressure([("pve1", rrd_rows())]))
    value = s[(f"pve_node_pressure_{family(field)}_ratio", ("node/pve1",))]
    assert value == pytest.approx(float(avg10(*FIELDS[field])) / 100)


def test_one_point_three_percent_reads_0_013():
    """The issue's example: a node at 1.3 % CPU pressure must not read 1.3 (130 %)."""
    s = flat(parse_node_pressure([("pve1", rrd_rows())]))
    assert s[("pve_node_pressure_cpu_some_ratio", ("node/pve1",))] == pytest.approx(0.013)


def test_a_fully_stalled_guest_reads_one():
    row = dict(lxc_row(), pressurememoryfull="100.00")
    s = flat(parse_guest_lists([], [("pve1", [row])]))
    assert s[("pve_guest_pressure_memory_full_ratio", ("lxc/200",))] == 1.0


def test_unknown_pressure_stays_absent():
    """pve-container sends null when the cgroup file is missing: unknown, not 0."""
    row = dict(lxc_row(), pressureiosome=None)
    s = flat(parse_guest_lists([], [("pve1", [row])]))
    assert ("pve_guest_pressure_io_some_ratio", ("lxc/200",)) not in s


def test_help_texts_say_ratio_not_percent():
    fams = parse_guest_lists([("pve1", [qemu_row()])], []) + parse_node_pressure([("pve1", rrd_rows())])
    helps = {f.name: f.help for f in fams if "pressure" in f.name}
    assert len(helps) == 11
    assert all("0-1" in h for h in helps.values()), helps


def test_ratio_has_no_float_noise():
    """16.4094 % → 0.164094 in the exposition, not 0.16409400000000002."""
    s = flat(parse_node_pressure([("pve1", [{"time": 60, "pressurecpusome": 16.4094}])]))
    assert repr(s[("pve_node_pressure_cpu_some_ratio", ("node/pve1",))]) == "0.164094"
