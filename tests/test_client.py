"""PVE client against aioresponses: envelope, typed errors, failover, auth header, path templates."""

from __future__ import annotations

import re

import pytest
from aioresponses import aioresponses

from pve_exporter.pve.client import PveClient, normalize_endpoint, template_path
from pve_exporter.pve.errors import (
    PveApiError,
    PveAuthError,
    PveNotFoundError,
    PvePermissionError,
    PveProtocolError,
    PveTimeoutError,
    PveUnreachableError,
)

A = "https://pve1:8006/api2/json"
B = "https://pve2:8006/api2/json"
SECRET = "11111111-2222-4333-8444-555555555555"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, str]] = []
        self.health: dict[str, bool] = {}

    def api_request(self, endpoint, method, path, outcome, seconds):
        self.requests.append((endpoint, method, path, outcome))

    def endpoint_health(self, endpoint, up):
        self.health[endpoint] = up


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
async def client(rec):
    c = PveClient(["pve1", "pve2"], "monitor@pve!exporter", SECRET, observer=rec, timeout=2)
    yield c
    await c.close()


def test_normalize_endpoint():
    assert normalize_endpoint("pve1.example.com") == "https://pve1.example.com:8006"
    assert normalize_endpoint("https://pve2.example.com:8443/") == "https://pve2.example.com:8443"
    assert normalize_endpoint("http://127.0.0.1:18006") == "http://127.0.0.1:18006"
    assert normalize_endpoint("10.0.0.1:9000") == "https://10.0.0.1:9000"
    with pytest.raises(ValueError):
        normalize_endpoint("ftp://x")


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/cluster/resources", "/cluster/resources"),
        ("/nodes/pve1/status", "/nodes/{node}/status"),
        ("/nodes/pve-2/qemu/100/config", "/nodes/{node}/qemu/{vmid}/config"),
        ("/nodes/pve1/lxc/200/status/current", "/nodes/{node}/lxc/{vmid}/status/current"),
        (
            "/nodes/pve1/tasks/UPID:pve1:0001:0002:0003:qmstart:100:root@pam:/status",
            "/nodes/{node}/tasks/{upid}/status",
        ),
        ("/nodes/pve1/storage/local/rrddata", "/nodes/{node}/storage/{storage}/rrddata"),
        ("/nodes/pve1/replication/100-0/status", "/nodes/{node}/replication/{id}/status"),
        ("/nodes/pve1/replication", "/nodes/{node}/replication"),
        ("/cluster/resources?type=vm", "/cluster/resources"),
    ],
)
def test_template_path(path, template):
    assert template_path(path) == template


async def test_unwraps_envelope_and_sends_token(client, rec):
    with aioresponses() as m:
        m.get(f"{A}/version", payload={"data": {"version": "9.1.4"}})
        assert await client.get("/version") == {"version": "9.1.4"}
        (call,) = m.requests[("GET", next(iter(m.requests))[1])]
        assert call.kwargs["headers"]["Authorization"] == f"PVEAPIToken=monitor@pve!exporter={SECRET}"
    assert rec.requests == [("https://pve1:8006", "GET", "/version", "200")]


async def test_params_are_passed(client):
    with aioresponses() as m:
        m.get(re.compile(rf"{re.escape(A)}/cluster/resources\?type=vm$"), payload={"data": []})
        assert await client.get("/cluster/resources", {"type": "vm"}) == []


@pytest.mark.parametrize(
    ("status", "body", "reason", "exc", "message"),
    [
        (401, b"", "Authentication failed!", PveAuthError, "Authentication failed!"),
        (401, b"", "No ticket", PveAuthError, "No ticket"),
        (
            403,
            b'{"data":null,"message":"Permission check failed (/, Sys.Audit)\\n"}',
            "Permission check failed (/, Sys.Audit)",
            PvePermissionError,
            "Permission check failed (/, Sys.Audit)",
        ),
        # Before PVE 8.4 the message is only in the reason phrase.
        (403, b'{"data":null}', "Permission check failed (/, Sys.Audit)", PvePermissionError, "Permission check"),
        (501, b'{"data":null}', "Method 'GET /x' not implemented", PveNotFoundError, "not implemented"),
        (
            400,
            b'{"data":null,"errors":{"type":"value \'qemu\' does not have a value in the enumeration"}}',
            "Parameter verification failed.",
            PveApiError,
            "enumeration",
        ),
    ],
)
async def test_error_mapping_no_failover(client, status, body, reason, exc, message):
    with aioresponses() as m:
        m.get(f"{A}/cluster/status", status=status, body=body, reason=reason)
        with pytest.raises(exc) as info:
            await client.get("/cluster/status")
    assert message in str(info.value)
    assert info.value.status == status
    assert SECRET not in str(info.value)


async def test_failover_on_500_and_remembers_healthy(client, rec):
    with aioresponses() as m:
        m.get(f"{A}/cluster/resources", status=500, body=b'{"data":null}', reason="ipcc_send_rec[1] failed")
        m.get(f"{B}/cluster/resources", payload={"data": [1]})
        m.get(f"{B}/cluster/resources", payload={"data": [2]})
        assert await client.get("/cluster/resources") == [1]
        assert client.preferred_endpoint == "https://pve2:8006"
        # The next request goes straight to the healthy endpoint.
        assert await client.get("/cluster/resources") == [2]
    assert rec.health == {"https://pve1:8006": False, "https://pve2:8006": True}
    assert [r[3] for r in rec.requests] == ["500", "200", "200"]


async def test_failover_on_connection_error(client, rec):
    with aioresponses() as m:
        m.get(f"{A}/version", exception=OSError("Connection refused"))
        m.get(f"{B}/version", payload={"data": {"version": "8.4.1"}})
        assert await client.get("/version") == {"version": "8.4.1"}
    assert rec.requests[0][3] == "unreachable"


async def test_failover_on_timeout(client):
    with aioresponses() as m:
        m.get(f"{A}/version", exception=TimeoutError())
        m.get(f"{B}/version", payload={"data": {}})
        assert await client.get("/version") == {}


async def test_all_endpoints_down_raises_last_error(client):
    with aioresponses() as m:
        m.get(f"{A}/version", exception=OSError("refused"))
        m.get(f"{B}/version", exception=TimeoutError())
        with pytest.raises(PveTimeoutError):
            await client.get("/version")


async def test_node_proxy_595_is_not_failed_over(client, rec):
    """595 on /nodes/X/… means PVE cannot reach node X: every endpoint would say the same."""
    with aioresponses() as m:
        m.get(f"{A}/nodes/pve3/status", status=595, body=b"", reason="No route to host")
        with pytest.raises(PveUnreachableError) as info:
            await client.get("/nodes/pve3/status")
    assert "No route to host" in str(info.value)
    assert len(rec.requests) == 1
    assert rec.health["https://pve1:8006"] is True  # the endpoint itself answered


async def test_596_on_cluster_path_fails_over(client):
    with aioresponses() as m:
        m.get(f"{A}/cluster/status", status=596, body=b"", reason="Connection timed out")
        m.get(f"{B}/cluster/status", payload={"data": []})
        assert await client.get("/cluster/status") == []


async def test_non_json_and_missing_envelope(client):
    with aioresponses() as m:
        m.get(f"{A}/version", status=200, body=b"<html>proxy</html>")
        with pytest.raises(PveProtocolError):
            await client.get("/version")
        m.get(f"{A}/version", status=200, payload={"nodata": 1})
        with pytest.raises(PveProtocolError):
            await client.get("/version")


async def test_pinned_endpoint_disables_failover(client):
    with aioresponses() as m:
        m.get("https://10.0.0.7:8006/api2/json/nodes/pve7/status", exception=OSError("refused"))
        with pytest.raises(PveUnreachableError):
            await client.get("/nodes/pve7/status", endpoint="10.0.0.7")
    assert client.preferred_endpoint == "https://pve1:8006"


async def test_post_sends_form(client):
    with aioresponses() as m:
        m.post(f"{A}/nodes/pve1/qemu/100/status/start", payload={"data": "UPID:pve1:1:2:3:qmstart:100:x@pve!y:"})
        assert (await client.post("/nodes/pve1/qemu/100/status/start", {"timeout": 30})).startswith("UPID:")
