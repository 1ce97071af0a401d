"""The line protocol for a fixed, varied set of snapshots, byte for byte as recorded in
tests/golden/influx_lines.txt: an encoder made faster must write exactly the same bytes.
Review a difference, then rerun with UPDATE_GOLDEN=1 if it is intended."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pve_exporter.export.influx import snapshot_to_lines
from pve_exporter.snapshot import Payload, Snapshot
from tests.test_influx_encoding import (
    LXC_RUNNING,
    NODE_STATUS,
    NODE_STORAGE,
    ODD_NAMES,
    QEMU_RUNNING,
    QEMU_STOPPED,
    RESOURCES,
    _random_value,
)

GOLDEN = Path(__file__).parent / "golden" / "influx_lines.txt"
T0 = 1_760_000_000.0


def _snap(cluster: str, payloads: dict[str, Any], stale: dict[str, Any] | None = None) -> Snapshot:
    p = {k: Payload(v, T0 + 2) for k, v in payloads.items()}
    for k, v in (stale or {}).items():
        p[k] = Payload(v, T0 - 15)
    return Snapshot(cluster=cluster, seq=1, started_at=T0, finished_at=T0 + 10.7, reachable=True, last_success=T0,
                    families=(), results=MappingProxyType({}), payloads=MappingProxyType(p),
                    started_mono=T0)  # fmt: skip


def corpus() -> list[Snapshot]:
    rng = random.Random(1207)
    snaps = []
    # PVE-shaped: nodes, running and stopped VMs, containers, storage lists and the resources fallback.
    qemu = []
    for i, name in enumerate(ODD_NAMES):
        row = copy.deepcopy(QEMU_RUNNING if i % 3 else QEMU_STOPPED)
        row.update(vmid=300 + i, name=name)
        if i % 4 == 1:
            row["cpu"] = float("nan")
        qemu.append(row)
    lxc = []
    for i in range(6):
        row = copy.deepcopy(LXC_RUNNING)
        row.update(vmid=400 + i, name=f"ct {i}" if i % 2 else f"ct-{i}", tags="" if i == 3 else "a;b")
        lxc.append(row)
    lxc.append({**LXC_RUNNING, "vmid": "401x", "name": 12.0})  # PVE 6 strings, a numeric name
    lxc.append({**LXC_RUNNING, "vmid": None})  # no vmid: skipped
    status2 = copy.deepcopy(NODE_STATUS)
    status2["rootfs"] = {"total": 100, "used": 40, "avail": 50}  # no `free`: derived
    snaps.append(_snap("prod", {
        "/nodes/pve1/status": NODE_STATUS, "/nodes/pve2/status": status2, "/nodes/pve1/qemu?full=1": qemu,
        "/nodes/pve2/qemu?full=1": [copy.deepcopy(QEMU_RUNNING)], "/nodes/pve1/lxc": lxc,
        "/nodes/pve1/storage": NODE_STORAGE, "/cluster/resources": RESOURCES,
    }, stale={"/nodes/pve3/status": NODE_STATUS}))  # fmt: skip
    # Random hashes in PVE's nesting (nested → measurement, twice nested → instance, deeper → flattened).
    for c in range(3):
        rows = []
        for v in range(40):
            row: dict[str, Any] = {k: _random_value(rng, 0) for k in rng.sample(["a", "b", "cpu", "status", "x y",
                                                                                 "k,v", "pct%d", "z"], 5)}  # fmt: skip
            row.update(vmid=1000 * c + v, name=rng.choice([*ODD_NAMES, "", None, 7]))
            if rng.random() < 0.5:
                row["nics"] = {f"tap{v}i{n}": {"netin": rng.randrange(10**9), "netout": rng.random()} for n in range(2)}
            rows.append(row)
        snaps.append(_snap(f"c {c},x=y", {"/nodes/node a/qemu?full=1": rows, "/nodes/n2/lxc": rows[:10]}))
    return snaps


def render() -> str:
    return "".join(line + "\n" for s in corpus() for line in snapshot_to_lines(s))


def test_line_protocol_is_byte_identical_to_the_recorded_golden():
    text = render()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text.count("\n") > 200
    assert text == GOLDEN.read_text(), "line protocol changed: review, then rerun with UPDATE_GOLDEN=1"
