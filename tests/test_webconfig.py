"""TLS and basic auth for the listener (exporter-toolkit web config), with a certificate made at test time."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import textwrap
import threading
import time

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter import cli, webconfig
from pve_exporter.app import build_app
from pve_exporter.settings import ConfigError
from pve_exporter.webconfig import BasicAuth, BasicAuthLimited, WebConfig, load_web_config
from tests.servers import free_port, require_binary
from tests.simharness import FixedClock, cycle, sim_daemon

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
    ip = "10.0.0.9"
    assert await auth.check(basic("u", "pw"), ip) == "u"
    assert await auth.check(basic("u", "pw"), ip) == "u"
    assert await auth.check(basic("u", "nope"), ip) is None
    assert await auth.check("Basic !!notbase64", ip) is None
    assert await auth.check("Bearer x", ip) is None
    t[0] += BasicAuth.CACHE_SECONDS + 1
    assert await auth.check(basic("u", "pw"), ip) == "u"  # re-checked against bcrypt, still right
    await auth.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}", "cert_file: file not found"),
        ("basic_auth_users: {alice: plaintext}", "basic_auth_users.alice: must be a bcrypt hash"),
        ("unknown: 1", "unknown: unknown key"),
        ("basic_auth_users: {alice: '$2b$12$short'}", "basic_auth_users.alice: must be a bcrypt hash"),
        ("basic_auth_users: {alice: '$2b$99$" + "a" * 53 + "'}", "basic_auth_users.alice: must be a bcrypt hash"),
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


# ---- issue 11 item 13: long passwords, a bounded executor, a failure limit, no user-name oracle ----


async def test_password_over_72_bytes_is_401_not_500():
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = BasicAuth({"u": h})
    assert await auth.check(basic("u", "x" * 73), "10.0.0.1") is None
    assert await auth.check(basic("u", "é" * 40), "10.0.0.1") is None  # 80 bytes in UTF-8
    assert await auth.check(basic("nobody", "x" * 500), "10.0.0.1") is None
    async with sim_daemon() as (daemon, _, _):
        await cycle(daemon)
        wc = WebConfig(basic_auth_users={"prometheus": h})
        async with TestClient(TestServer(build_app(daemon, wc))) as client:
            resp = await client.get("/metrics", headers={"Authorization": basic("prometheus", "p" * 100)})
            assert resp.status == 401 and (await resp.json())["error_code"] == "UNAUTHORIZED"


class BlockingBcrypt:
    """bcrypt whose checkpw waits for the test: counts how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0
        self.hashes: list[bytes] = []
        self.hashpw, self.gensalt = bcrypt.hashpw, bcrypt.gensalt

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            self.hashes.append(hashed)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return False


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_a_flood_of_wrong_passwords_does_not_stall_the_default_executor(monkeypatch):
    fake = BlockingBcrypt()
    monkeypatch.setattr(webconfig, "bcrypt", fake)
    auth = BasicAuth({"u": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()})
    try:
        flood = [asyncio.create_task(auth.check(basic("u", f"wrong{i}"), f"10.0.{i}.1")) for i in range(24)]
        await wait_for(lambda: fake.running == BasicAuth.THREADS)
        # collection's worker threads (asyncio.to_thread, the default executor) are not waiting behind bcrypt
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=5) == 42
        fake.release.set()
        results = await asyncio.gather(*flood, return_exceptions=True)
        assert fake.most <= BasicAuth.THREADS <= 2
        assert all(r is None or isinstance(r, BasicAuthLimited) for r in results)
        assert sum(isinstance(r, BasicAuthLimited) for r in results) == 24 - BasicAuth.MAX_PENDING  # bounded queue
    finally:
        fake.release.set()
        await auth.close()


async def test_failed_checks_are_limited_per_address_on_the_monotonic_clock(monkeypatch):
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    clock = FixedClock(100.0)
    auth = BasicAuth({"u": h}, clock=clock)
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", lambda p, s: calls.append(p) or real(p, s))
    try:
        assert await auth.check(basic("u", "pw"), "10.0.0.1") == "u"
        for i in range(BasicAuth.FAILURE_BURST):
            assert await auth.check(basic("u", f"no{i}"), "10.0.0.1") is None
        before = len(calls)
        with pytest.raises(BasicAuthLimited) as info:
            await auth.check(basic("u", "no-more"), "10.0.0.1")
        assert info.value.retry_after > 0 and len(calls) == before  # no bcrypt for a locked-out address
        assert await auth.check(basic("u", "no"), "10.0.0.2") is None  # other addresses are checked
        assert await auth.check(basic("u", "pw"), "10.0.0.1") == "u"  # known-good credentials still pass
        clock.t += BasicAuth.CACHE_SECONDS + 1
        for i in range(BasicAuth.FAILURE_BURST):
            assert await auth.check(basic("u", f"again{i}"), "10.0.0.1") is None
        with pytest.raises(BasicAuthLimited):
            await auth.check(basic("u", "no-more"), "10.0.0.1")
        assert await auth.check(basic("u", "pw"), "10.0.0.1") == "u"  # stale but known-good: re-checked
        clock.t += 60
        assert await auth.check(basic("u", "no-again"), "10.0.0.1") is None
    finally:
        await auth.close()


async def test_locked_out_address_gets_429_with_the_error_body():
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    async with sim_daemon() as (daemon, _, _):
        await cycle(daemon)
        async with TestClient(TestServer(build_app(daemon, WebConfig(basic_auth_users={"u": h})))) as client:
            assert (await client.get("/metrics", headers={"Authorization": basic("u", "pw")})).status == 200
            for i in range(BasicAuth.FAILURE_BURST):
                assert (await client.get("/metrics", headers={"Authorization": basic("u", f"x{i}")})).status == 401
            resp = await client.get("/metrics", headers={"Authorization": basic("u", "x")})
            body = await resp.json()
            assert resp.status == 429 and body["error_code"] == "RATE_LIMITED" and int(resp.headers["Retry-After"]) >= 1
            # the scraper that authenticated before keeps scraping from the locked-out address
            assert (await client.get("/metrics", headers={"Authorization": basic("u", "pw")})).status == 200


async def test_unknown_users_cost_the_same_as_real_ones(monkeypatch):
    fake = BlockingBcrypt()
    fake.release.set()
    monkeypatch.setattr(webconfig, "bcrypt", fake)
    users = {name: bcrypt.hashpw(b"pw", bcrypt.gensalt(6)).decode() for name in ("a", "b")}
    auth = BasicAuth(users)
    try:
        assert await auth.check(basic("nobody", "pw"), "10.0.0.1") is None
        assert await auth.check(basic("a", "wrong"), "10.0.0.2") is None
        costs = [h[:7] for h in fake.hashes]
        assert costs == [b"$2b$06$", b"$2b$06$"]  # the dummy hash has the configured cost (not a cheaper one)
    finally:
        await auth.close()
