"""The simulator's network side: one port per cluster, clean stop, and the CLI entry points."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from pve_exporter.simulator import DEFAULT_AUTH_HEADER, SimulatorServer, build_simulator
from pve_exporter.simulator.cli import add_arguments, build_from_args

AUTH = {"Authorization": DEFAULT_AUTH_HEADER}


async def test_clusters_on_separate_ports() -> None:
    sim = build_simulator([("alpha", 2, 3), {"name": "beta", "nodes": 3, "guests_per_node": 2, "pve_version": 8}])
    async with SimulatorServer(sim) as server, aiohttp.ClientSession(headers=AUTH) as session:
        urls = server.urls
        assert set(urls) == {"alpha", "beta"}
        assert len(set(server.ports.values())) == 2
        assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+", u) for u in urls.values())
        for name, version in (("alpha", "9.1.5"), ("beta", "8.4.1")):
            async with session.get(urls[name] + "/api2/json/version") as resp:
                assert (await resp.json())["data"]["version"] == version
            async with session.get(urls[name] + "/api2/json/cluster/status") as resp:
                assert (await resp.json())["data"][0]["name"] == name
        async with session.get(urls["beta"] + "/_sim/stats") as resp:
            assert (await resp.json())["total"] == 2
    assert server.urls == {}


async def test_base_port_numbering() -> None:
    for _ in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        server = SimulatorServer(build_simulator(2), base_port=base)
        try:
            await server.start()
        except OSError:
            continue  # somebody took base or base+1 meanwhile
        try:
            assert server.ports == {"sim1": base, "sim2": base + 1}
        finally:
            await server.stop()
        return
    pytest.skip("no two consecutive free ports found")


async def test_stop_releases_hanging_requests() -> None:
    sim = build_simulator(1)
    server = SimulatorServer(sim)
    await server.start()
    sim.clusters["sim1"].add_fault("timeout", path="/nodes")
    async with aiohttp.ClientSession(headers=AUTH) as session:
        hanging = asyncio.ensure_future(session.get(server.urls["sim1"] + "/api2/json/nodes"))
        stats = sim.clusters["sim1"].stats
        for _ in range(1000):  # wait until the request has reached the server
            if stats.total:
                break
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        await server.stop()
        assert time.perf_counter() - started < 3.0
        resp = await hanging
        assert (resp.status, resp.reason) == (596, "Connection timed out")
        resp.release()


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.port, args.host, args.clusters, args.nodes, args.guests_per_node) == (8006, "127.0.0.1", 1, 3, 10)
    assert (args.pve_version, args.auth_delay_ms, args.latency_ms, args.seed) == ("9", 3000.0, 0.0, "1")
    args = parser.parse_args(["--cluster-names", "a,b", "--nodes", "2", "--guests-per-node", "4",
                              "--pve-version", "7", "--token", "x@pve!tok=abc", "--auth-delay-ms", "0"])
    sim = build_from_args(args)
    assert list(sim.clusters) == ["a", "b"]
    assert sim.clusters["a"].version.version == "7.4-17" and len(sim.clusters["b"].guests) == 8
    assert set(sim.tokens) == {"x@pve!tok"} and sim.auth_delay == 0
    with pytest.raises(ValueError):
        build_from_args(parser.parse_args(["--token", "nonsense"]))


_CLI = (
    "import argparse, sys\n"
    "from pve_exporter.simulator.cli import add_arguments, run\n"
    "p = argparse.ArgumentParser()\n"
    "add_arguments(p)\n"
    "sys.exit(run(p.parse_args(sys.argv[1:])))\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_runs_until_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "--port", "0", "--clusters", "2", "--nodes", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all("token monitor@pve!exporter=00000000-0000-4000-8000-000000000001" in ln for ln in lines)
        url = re.search(r"(http://127\.0\.0\.1:\d+)/api2/json", lines[0])
        assert url is not None and lines[0].startswith("sim1: ")

        async def probe() -> int:
            async with aiohttp.ClientSession(headers=AUTH) as session, \
                    session.get(url.group(1) + "/api2/json/version") as resp:
                return resp.status

        assert asyncio.run(probe()) == 200
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
