"""The simulator sends PSI pressure as PVE does (avg10 percentages), and the daemon publishes it /100.

See tests/test_parsers_pressure.py for the PVE sources; here the point is that the demo and every
test built on the simulator see the real unit, so a ratio bug cannot hide behind small fake values.
"""

from __future__ import annotations

import aiohttp
import pytest

from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET
from tests.simharness import cycle, series, sim_daemon

AUTH = {"Authorization": f"PVEAPIToken={DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}"}
GUEST_FIELDS = {
    "pressurecpusome": "cpu_some", "pressurecpufull": "cpu_full", "pressureiosome": "io_some",
    "pressureiofull": "io_full", "pressurememorysome": "memory_some", "pressurememoryfull": "memory_full",
}  # fmt: skip


async def _get(url: str, path: str, **params: str) -> list[dict]:
    async with aiohttp.ClientSession(headers=AUTH) as s, s.get(f"{url}/api2/json{path}", params=params) as r:
        assert r.status == 200
        return (await r.json())["data"]


async def test_simulated_guest_pressure_is_percent_and_published_as_ratio():
    async with sim_daemon(clusters=(("lab", 3, 12),)) as (daemon, sim, server):
        await cycle(daemon)
        text = daemon.exposition.body(["lab"]).decode()
        url = server.urls["lab"]
        raw: dict[str, dict] = {}
        for node in sim.cluster("lab").nodes:
            for kind in ("qemu", "lxc"):
                for row in await _get(url, f"/nodes/{node}/{kind}"):
                    if row.get("status") == "running":
                        raw[f"{kind}/{row['vmid']}"] = row
    s = series(text)
    values = [float(row[f]) for row in raw.values() for f in GUEST_FIELDS if row.get(f) is not None]
    assert values and max(values) > 1.0, "PVE sends percentages: some guest must be above 1 %"
    assert all(0.0 <= v <= 100.0 for v in values)
    checked = 0
    for gid, row in raw.items():
        for field, name in GUEST_FIELDS.items():
            if row.get(field) is None:
                continue
            exposed = s[(f"pve_guest_pressure_{name}_ratio", frozenset({("cluster", "lab"), ("id", gid)}))]
            assert exposed == pytest.approx(float(row[field]) / 100)
            checked += 1
    assert checked == len(values)


async def test_simulated_node_rrd_pressure_is_percent_and_published_as_ratio():
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, _sim, server):
        await cycle(daemon)
        text = daemon.exposition.body(["lab"]).decode()
        rows = await _get(server.urls["lab"], "/nodes/pve1/rrddata", timeframe="hour", cf="AVERAGE")
    newest = next(r for r in reversed(rows) if "pressurecpusome" in r)
    s = series(text)
    exposed = s[("pve_node_pressure_cpu_some_ratio", frozenset({("cluster", "lab"), ("id", "node/pve1")}))]
    assert exposed == pytest.approx(newest["pressurecpusome"] / 100)
    assert max(r.get("pressurecpusome", 0.0) for r in rows) > 1.0, "node CPU pressure is a percentage"
