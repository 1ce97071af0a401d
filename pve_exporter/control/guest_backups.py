"""`GET /api/v1/clusters/{cluster}/guests/{vmid}/backups` (read): a guest's recent backups from every
source — the cluster's backup storages and the Proxmox Backup Servers linked to it (pbs/guest_backups.py).

Registered into routes.ROUTES (imported at the end of routes.py), documented in openapi.py.
"""

from __future__ import annotations

from aiohttp import web

from pve_exporter.control.auth import Principal
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.plane import ControlPlane
from pve_exporter.control.routes import _json, _query, _vmid, route


@route("GET", "/clusters/{cluster}/guests/{vmid}/backups", "read")
async def guest_backups(request: web.Request, plane: ControlPlane, who: Principal | None) -> web.StreamResponse:
    _query(request, set())
    cluster = request.match_info["cluster"]
    vmid = _vmid(request.match_info["vmid"])
    guest = await plane.runner.locate(cluster, vmid)  # CLUSTER_NOT_FOUND; PVE_ERROR when PVE cannot say
    if guest is None:
        raise ApiProblem("GUEST_NOT_FOUND", f"no guest {vmid} in cluster {cluster!r}",
                         details={"cluster": cluster, "vmid": vmid})  # fmt: skip
    return _json({"cluster": cluster, **await plane.host.guest_backups(cluster, guest)})
