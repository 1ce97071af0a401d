"""The PBS client: its token header, default port, certificate pinning by fingerprint; PBS settings rules."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import textwrap

import pytest
from aiohttp import web

from pve_exporter.pbs.client import PbsClient
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveCertificateError
from pve_exporter.settings import ConfigError, load_settings, masked
from tests.servers import require_binary

TOKEN_ID, SECRET = "monitor@pbs!exporter", "8f7d0c35-0000-4000-8000-00000000abcd"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    openssl = require_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("pbs-tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    der = ssl.PEM_cert_to_DER_cert((d / "cert.pem").read_text())
    return d / "cert.pem", d / "key.pem", hashlib.sha256(der).digest()


@pytest.fixture
async def https_pbs(cert):
    """A tiny HTTPS server answering /api2/json/version, recording the Authorization headers it got."""
    seen: list[str] = []

    async def version(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"data": {"version": "3.4", "release": "1", "repoid": "x"}})

    app = web.Application()
    app.router.add_get("/api2/json/version", version)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_pinned_fingerprint_connects_and_sends_the_pbs_token_header(https_pbs, cert):
    url, seen = https_pbs
    client = PbsClient([url], TOKEN_ID, SECRET, fingerprint=cert[2])  # self-signed: no CA would accept it
    try:
        assert (await client.get("/version"))["version"] == "3.4"
    finally:
        await client.close()
    assert seen == [f"PBSAPIToken={TOKEN_ID}:{SECRET}"]  # a colon, not PVE's `=`


async def test_wrong_fingerprint_is_a_clear_error_and_nothing_is_sent(https_pbs, cert):
    url, seen = https_pbs
    client = PbsClient([url], TOKEN_ID, SECRET, fingerprint=bytes(32))
    try:
        with pytest.raises(PveCertificateError) as info:
            await client.get("/version")
    finally:
        await client.close()
    assert info.value.kind == "certificate"
    assert "is not the pinned fingerprint 00:00:" in str(info.value)
    assert cert[2].hex(":") in str(info.value)  # the certificate it got, for the operator to compare
    assert seen == []  # the token never left the client
    assert client.endpoints[0].up is False


async def test_without_pin_the_self_signed_certificate_is_refused(https_pbs):
    url, seen = https_pbs
    client = PbsClient([url], TOKEN_ID, SECRET)  # verify_ssl defaults to true: no silent fallback
    try:
        with pytest.raises(Exception) as info:
            await client.get("/version")
    finally:
        await client.close()
    assert "certificate" in str(info.value).lower() and seen == []


def test_default_port_and_pve_unchanged():
    assert PbsClient(["pbs.example.com"], TOKEN_ID, SECRET).endpoints[0].url == "https://pbs.example.com:8007"
    pve = PveClient(["pve.example.com"], "monitor@pve!x", "s")
    assert pve.endpoints[0].url == "https://pve.example.com:8006"
    assert pve.auth_header("monitor@pve!x", "s") == "PVEAPIToken=monitor@pve!x=s"


GOOD = f"""
clusters:
  - name: prod
    endpoints: ["pve1.example.com"]
    token_id: "monitor@pve!exporter"
    token_secret: "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"
backup_servers:
  - name: backup1
    endpoints: ["pbs1.example.com", "https://pbs2.example.com:8443"]
    token_id: "{TOKEN_ID}"
    token_secret: "{SECRET}"
    fingerprint: "{":".join(["AB"] * 32)}"
    clusters: [prod]
"""


def _load(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent(text))
    return load_settings(p)


def _error(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(info.value)


def test_backup_server_settings(tmp_path):
    s = _load(tmp_path, GOOD)
    (b,) = s.backup_servers
    assert b.endpoints == ["https://pbs1.example.com:8007", "https://pbs2.example.com:8443"]
    assert b.fingerprint == ":".join(["ab"] * 32) and b.fingerprint_bytes() == bytes([0xAB] * 32)
    assert (b.interval_seconds, b.timeout_seconds, b.clusters, b.stale_after) == (15.0, 5.0, ["prod"], 60.0)
    assert SECRET in s.secrets()
    dumped = str(masked(s))
    assert SECRET not in dumped and "backup1" in dumped


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "    bogus: 1\n", "backup_servers[0].bogus: unknown key"),
        (
            lambda t: t.replace("clusters: [prod]", "clusters: [nope]"),
            "backup_servers[0].clusters: 'nope' is not a configured cluster",
        ),
        (lambda t: t.replace(":".join(["AB"] * 32), "ab:cd"), "backup_servers[0].fingerprint: must be the certificate"),
        (lambda t: t.replace(f'"{TOKEN_ID}"', f'"{TOKEN_ID}:{SECRET}"'), "backup_servers[0].token_id: token_id must"),
        (
            lambda t: t.replace(f'    token_secret: "{SECRET}"\n', "", 1).replace(
                f'    token_secret: "{SECRET}"\n', ""
            ),
            "backup_servers[0]: token_secret or token_secret_file is required",
        ),
        (lambda t: t + "    ca_file: /etc/hostname\n", "backup_servers[0].fingerprint: give fingerprint or ca_file"),
        (
            lambda t: t + t.split("backup_servers:\n", 1)[1],
            "backup_servers[1].name: duplicate backup server name 'backup1'",
        ),
    ],
)
def test_backup_server_errors_name_the_key_and_never_the_secret(tmp_path, edit, expected):
    message = _error(tmp_path, edit(GOOD))
    assert expected in message
    assert SECRET not in message
