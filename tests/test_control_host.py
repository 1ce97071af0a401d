"""The control plane's seam to the daemon (issue 11 item 23): a small typed protocol, the plane in a
typed app key, no import of app.py from the control package, and clusters looked up on every use
(a reload that replaces a cluster's client mid-operation does not strand the operation)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

from pve_exporter.app import Daemon
from pve_exporter.control import host as host_module
from pve_exporter.control.host import ClusterView, ControlHost
from pve_exporter.control.plane import CONTROL_PLANE, ControlPlane
from tests.controlharness import control_app, control_cfg
from tests.simharness import cluster_cfg

CONTROL = Path(host_module.__file__).resolve().parent


def test_the_control_package_never_imports_the_app_module() -> None:
    code = ("import sys, pve_exporter.control.routes, pve_exporter.control.openapi, pve_exporter.control.plane; "
            "print(sorted(m for m in sys.modules if m == 'pve_exporter.app'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for path in CONTROL.glob("*.py"):
        assert "pve_exporter.app" not in path.read_text(), path.name


def test_no_untyped_daemon_or_plane_parameters() -> None:
    """`daemon: Any` / `plane: Any` were the old seam; parameters of the control package name a type."""
    offenders = []
    for path in CONTROL.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and node.arg in ("daemon", "plane", "host"):
                ann = ast.unparse(node.annotation) if node.annotation else "<none>"
                if ann in ("Any", "<none>"):
                    offenders.append(f"{path.name}: {node.arg}: {ann}")
    assert not offenders, offenders
    assert "daemon" not in inspect.signature(ControlPlane).parameters


def test_the_daemon_implements_every_member_of_the_host_protocol(tmp_path: Path) -> None:
    members = {n for n in vars(ControlHost) if not n.startswith("_")}
    assert {"cluster_names", "cluster_view", "latest_snapshot", "monotonic", "clock", "collect_now"} <= members
    from pve_exporter.settings import Settings

    daemon = Daemon(Settings(listen="127.0.0.1:0"), autostart=False)
    missing = [m for m in sorted(members) if not hasattr(daemon, m)]
    assert not missing, missing
    assert daemon.cluster_view("nope") is None and daemon.cluster_names() == []


async def test_the_plane_sits_in_a_typed_app_key_and_sees_clusters_through_the_host(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        plane = ctl.client.app[CONTROL_PLANE]
        assert plane is ctl.daemon.control and plane.host is ctl.daemon
        view = plane.host.cluster_view("lab")
        assert isinstance(view, ClusterView) and view.client is ctl.daemon.clusters["lab"].client
        assert view.token_id == "monitor@pve!exporter"


async def test_a_reload_that_replaces_the_client_mid_operation_does_not_strand_it(tmp_path: Path) -> None:
    """The lead's reload swaps a changed cluster's runtime (new client, old one closed). The runner
    asks the host for the cluster on every call, so the operation follows its task with the new client."""
    cfg_file = tmp_path / "config.yaml"
    db = tmp_path / "ops.sqlite"
    async with control_app(db, config_path=str(cfg_file)) as ctl:
        ctl.sim.cluster("lab").power.overrides[102] = 100.0
        op = await ctl.act("lab", 102, "restart", force=True, timeout_seconds=300)
        await ctl.wait_upid(op["id"])
        old = ctl.daemon.clusters["lab"].client
        cfg = {"listen": "127.0.0.1:0", "control": control_cfg(db),
               "clusters": [cluster_cfg(n, [u], timeout_seconds=7) for n, u in ctl.urls.items()]}  # fmt: skip
        cfg_file.write_text(json.dumps(cfg))
        status, body, _ = await ctl.call("POST", "/api/v1/reload", token="boss")
        assert status == 200, body
        assert ctl.daemon.clusters["lab"].client is not old and old.closed
        ctl.advance(101)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "succeeded", done
