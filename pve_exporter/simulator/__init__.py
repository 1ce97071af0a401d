"""A built-in Proxmox VE API simulator: several clusters, faults, PVE 7/8/9 quirks.

It follows /work/shared/notes/pve-api.md (shapes, JSON types, error texts, offline nodes), so
the exporter's tests and benchmarks can run against something that fails the way PVE fails.

    sim = build_simulator([("lab", 3, 10)], clock=fake_clock)
    async with SimulatorServer(sim) as server:
        url = server.urls["lab"]  # http://127.0.0.1:PORT, API under /api2/json
"""

from pve_exporter.simulator.app import make_app
from pve_exporter.simulator.auth import (
    AUDITOR_TOKEN_ID,
    AUDITOR_TOKEN_SECRET,
    DEFAULT_PRIVILEGES,
    DEFAULT_TOKEN_ID,
    DEFAULT_TOKEN_SECRET,
    PVE_AUDITOR,
    Caller,
)
from pve_exporter.simulator.builder import build_simulator
from pve_exporter.simulator.faults import FAULT_KINDS, Fault, FaultError
from pve_exporter.simulator.model import (
    ReplicationJob,
    SimCluster,
    SimGuest,
    SimNode,
    SimStorage,
    SimTask,
    Simulator,
)
from pve_exporter.simulator.power import PowerTimings
from pve_exporter.simulator.server import SimulatorServer
from pve_exporter.simulator.upid import Upid, format_upid, parse_upid
from pve_exporter.simulator.versions import PveVersion

DEFAULT_AUTH_HEADER = f"PVEAPIToken={DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}"

__all__ = [
    "AUDITOR_TOKEN_ID",
    "AUDITOR_TOKEN_SECRET",
    "DEFAULT_AUTH_HEADER",
    "DEFAULT_PRIVILEGES",
    "DEFAULT_TOKEN_ID",
    "DEFAULT_TOKEN_SECRET",
    "FAULT_KINDS",
    "PVE_AUDITOR",
    "Caller",
    "Fault",
    "FaultError",
    "PowerTimings",
    "PveVersion",
    "ReplicationJob",
    "SimCluster",
    "SimGuest",
    "SimNode",
    "SimStorage",
    "SimTask",
    "Simulator",
    "SimulatorServer",
    "Upid",
    "build_simulator",
    "format_upid",
    "make_app",
    "parse_upid",
]
