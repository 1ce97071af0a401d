"""`pve-exporter simulate`: argparse wiring and the run loop (until SIGINT/SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys

from pve_exporter.simulator.auth import DEFAULT_PRIVILEGES, default_tokens
from pve_exporter.simulator.builder import build_simulator
from pve_exporter.simulator.model import Simulator
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
from pve_exporter.simulator.server import SimulatorServer
from pve_exporter.simulator.versions import PveVersion


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8006,
                        help="port of the first cluster; cluster i listens on PORT+i; 0 = ephemeral "
                             "(default: %(default)s)")
    parser.add_argument("--clusters", type=int, default=1, help="number of clusters (default: %(default)s)")
    parser.add_argument("--cluster-names", default=None,
                        help="comma-separated cluster names (default: sim1..simC)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes per cluster (default: %(default)s)")
    parser.add_argument("--guests-per-node", type=int, default=10, help="guests per node (default: %(default)s)")
    parser.add_argument("--storages", type=int, default=3, help="storages per node (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added latency of every API request (default: %(default)s)")
    parser.add_argument("--seed", default="1", help="seed of the generated state (default: %(default)s)")
    parser.add_argument("--pve-version", default="9",
                        help="PVE flavour: 7, 8, 9 or a version like 8.2.4 (default: %(default)s)")
    parser.add_argument("--auth-delay-ms", type=float, default=3000.0,
                        help="delay of every 401, as real PVE (default: %(default)s)")
    parser.add_argument("--token", action="append", default=None, metavar="ID=SECRET",
                        help="API token accepted (repeatable; replaces the default "
                             "monitor@pve!exporter token), e.g. user@pve!name=SECRET")
    parser.add_argument("--node-ip", default="127.0.0.1",
                        help="node IP in /cluster/status; '{n}' is the node number (default: %(default)s)")
    parser.add_argument("--ceph", action="store_true", help="answer /cluster/ceph/status")
    parser.add_argument("--tls-cert", default=None, metavar="PEM",
                        help="serve HTTPS with this certificate (chain) file, like PVE's pveproxy")
    parser.add_argument("--tls-key", default=None, metavar="PEM",
                        help="private key of --tls-cert (default: read it from the --tls-cert file)")
    parser.add_argument("--pbs-port", type=int, default=0,
                        help="port of the simulated Proxmox Backup Server (backup groups that follow the clusters' "
                             "guests); printed at start (default: 0 = an ephemeral port)")
    parser.add_argument("--no-pbs", action="store_true", help="no simulated Proxmox Backup Server")


def build_from_args(args: argparse.Namespace) -> Simulator:
    """Turn parsed arguments into a `Simulator`; raises ValueError on a bad combination."""
    if args.clusters < 1 or args.nodes < 1 or args.guests_per_node < 0 or args.storages < 0:
        raise ValueError("--clusters and --nodes must be >= 1; --guests-per-node and --storages >= 0")
    if args.cluster_names:
        names = [n.strip() for n in args.cluster_names.split(",") if n.strip()]
    else:
        names = [f"sim{i}" for i in range(1, args.clusters + 1)]
    if len(set(names)) != len(names):
        raise ValueError("--cluster-names must be unique")
    tokens = default_tokens()
    if args.token:
        tokens = {}
        for item in args.token:
            token_id, sep, secret = item.rpartition("=")
            if not sep or "!" not in token_id or not secret:
                raise ValueError(f"--token must look like user@realm!name=SECRET, got {item!r}")
            tokens[token_id] = (secret, DEFAULT_PRIVILEGES)
    seed: int | str = int(args.seed) if str(args.seed).isdigit() else args.seed
    return build_simulator(
        [(name, args.nodes, args.guests_per_node, args.storages) for name in names],
        seed=seed,
        pve_version=PveVersion.parse(args.pve_version),
        auth_delay=args.auth_delay_ms / 1000,
        latency_ms=args.latency_ms,
        tokens=tokens,
        node_ip=args.node_ip,
        ceph=args.ceph,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 if a port cannot be bound, 2 on bad args."""
    try:
        sim = build_from_args(args)
        ssl_context = _ssl_context(args.tls_cert, args.tls_key)
    except ValueError as exc:
        print(f"pve-exporter simulate: {exc}", file=sys.stderr)
        return 2
    try:
        pbs_port = None if args.no_pbs else args.pbs_port
        return asyncio.run(_serve(sim, args.host, args.port, ssl_context, pbs_port))
    except KeyboardInterrupt:  # signal handlers could not be installed (e.g. not the main thread)
        return 0


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server context from --tls-cert/--tls-key, or None (plain HTTP); ValueError if unusable."""
    if cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    return ctx


async def _serve(
    sim: Simulator, host: str, port: int, ssl_context: ssl.SSLContext | None = None, pbs_port: int | None = None
) -> int:
    server = SimulatorServer(sim, host=host, base_port=port, ssl_context=ssl_context)
    pbs = PbsServer(SimPbs(sim, "backup1"), host=host, port=pbs_port) if pbs_port is not None else None
    try:
        await server.start()
        if pbs is not None:
            await pbs.start()
    except OSError as exc:
        await server.stop()
        print(f"pve-exporter simulate: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    token_id, (secret, _privs) = next(iter(sim.tokens.items()))
    for name, url in server.urls.items():
        c = sim.clusters[name]
        print(f"{name}: {url}/api2/json  PVE {c.version.version}, {len(c.nodes)} nodes, {len(c.guests)} guests"
              f"  token {token_id}={secret}", flush=True)
    if pbs is not None:
        print(f"backup1 (Proxmox Backup Server): {pbs.url}/api2/json  linked to {', '.join(sim.clusters)}"
              f"  token {PBS_TOKEN_ID}:{PBS_TOKEN_SECRET}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if pbs is not None:
            await pbs.stop()
        await server.stop()
    return 0
