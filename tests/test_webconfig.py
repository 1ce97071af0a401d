"""TLS and basic auth for the listener (exporter-toolkit web config), with a certificate made at test time."""

from __future__ import annotations

import base64
import ssl
import subprocess
import textwrap

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from pve_exporter import cli
from pve_exporter.app import build_app
from pve_exporter.settings import ConfigError
from pve_exporter.webconfig import BasicAuth, load_web_config
from tests.servers import free_port, require_binary
from tests.simharness import cycle, sim_daemon

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    openssl = require_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


def web_config_file(tmp_path, cert, users=True):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    text = f"""
        tls_server_config:
          cert_file: {cert[0]}
          key_file: {cert[1]}
    """
    if users:
        text += f"""
        basic_auth_users:
          prometheus: "{hashed}"
    """
    p = tmp_path / "web.yml"
    p.write_text(textwrap.dedent(text))
    return p


def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


async def test_tls_and_basic_auth(tmp_path, cert):
    wc = load_web_config(web_config_file(tmp_path, cert))
    async with sim_daemon() as (daemon, _, _):
        await cycle(daemon)
        runner = web.AppRunner(build_app(daemon, wc), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=wc.ssl_context()).start()
        client_ctx = ssl.create_default_context(cafile=str(cert[0]))
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as s:
                url = f"https://127.0.0.1:{port}"
                async with s.get(f"{url}/metrics", headers={"Authorization": basic("prometheus", PASSWORD)}) as r:
                    assert r.status == 200 and "pve_up" in await r.text()
                async with s.get(f"{url}/metrics", headers={"Authorization": basic("prometheus", "wrong")}) as r:
                    assert r.status == 401
                async with s.get(f"{url}/metrics", headers={"Authorization": basic("nobody", PASSWORD)}) as r:
                    assert r.status == 401
                async with s.get(f"{url}/metrics") as r:
                    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
                    assert (await r.json())["error_code"] == "UNAUTHORIZED"
                async with s.get(f"{url}/-/healthy") as r:
                    assert r.status == 200  # liveness probes need no credentials
            # Plain HTTP to the TLS port gets no answer.
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.ClientError):
                    async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                        await r.read()
        finally:
            await runner.cleanup()


async def test_basic_auth_caches_success_but_not_failure():
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    t = [0.0]
    auth = BasicAuth({"u": h}, clock=lambda: t[0])
    assert await auth.check(basic("u", "pw")) == "u"
    assert await auth.check(basic("u", "pw")) == "u"
    assert await auth.check(basic("u", "nope")) is None
    assert await auth.check("Basic !!notbase64") is None
    assert await auth.check("Bearer x") is None
    t[0] += BasicAuth.CACHE_SECONDS + 1
    assert await auth.check(basic("u", "pw")) == "u"  # re-checked against bcrypt, still right


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}", "cert_file: file not found"),
        ("basic_auth_users: {alice: plaintext}", "basic_auth_users.alice: must be a bcrypt hash"),
        ("unknown: 1", "unknown: unknown key"),
    ],
)
def test_bad_web_config_names_the_key(tmp_path, text, expected):
    p = tmp_path / "web.yml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_web_config(p)


def test_cli_rejects_bad_web_config_with_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""
        clusters:
          - {name: lab, endpoints: ["http://127.0.0.1:1"], token_id: "a@pve!b", token_secret: "x"}
    """))
    web_file = tmp_path / "web.yml"
    web_file.write_text("basic_auth_users: {alice: plaintext}\n")
    assert cli.main(["--config", str(cfg), "--web-config-file", str(web_file)]) == 2
    assert "must be a bcrypt hash" in capsys.readouterr().err
