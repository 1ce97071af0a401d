"""Control API security: tokens, scopes, rate limits, secrets, the disabled API, and its settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.control.auth import TokenAuthenticator, effective_scopes
from pve_exporter.control.ratelimit import KeyedLimiter, TokenBucket, retry_after_header
from pve_exporter.settings import ConfigError, ControlToken, Settings, load_settings
from pve_exporter.simulator import DEFAULT_TOKEN_SECRET
from tests.controlharness import TOKENS, control_app, sha
from tests.simharness import FixedClock, cluster_cfg


def test_token_bucket_and_keyed_limiter_follow_the_injected_clock() -> None:
    clock = FixedClock(0.0)
    b = TokenBucket(2, 0.5, clock)
    assert b.take() == 0 and b.take() == 0
    assert b.take() == pytest.approx(2.0)  # one token every 2 s
    clock.t += 1.0
    assert b.retry_after() == pytest.approx(1.0)
    clock.t += 1.0
    assert b.take() == 0
    lim = KeyedLimiter(3, 60, clock=clock, max_keys=2)
    for _ in range(3):
        lim.failure("10.0.0.1")
    assert lim.retry_after("10.0.0.1") == pytest.approx(1.0) and lim.retry_after("10.0.0.2") == 0
    lim.failure("10.0.0.2")
    lim.failure("10.0.0.3")  # beyond max_keys: the least recently used goes
    assert len(lim._buckets) == 2
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_authenticator_compares_every_hash_and_nests_scopes() -> None:
    tokens = [ControlToken(name=n, sha256=sha(t), scopes=s) for n, (t, s) in TOKENS.items()]
    auth = TokenAuthenticator(tokens)
    assert auth.check(None).reason == "missing"
    assert auth.check("Basic abc").reason == "malformed"
    assert auth.check("Bearer nope").reason == "invalid"
    ok = auth.check(f"bearer  {TOKENS['ops'][0]} ")
    assert ok.principal is not None and ok.principal.name == "ops"
    assert ok.principal.scopes == {"read", "power"} and not ok.principal.allows("admin")
    assert effective_scopes(["admin"]) == {"read", "power", "admin"} and effective_scopes(["read"]) == {"read"}


def test_settings_name_the_key_for_every_mistake(tmp_path: Path) -> None:
    ok = {"name": "ops", "sha256": "A" * 64, "scopes": ["power"]}
    bad = [
        ({"enabled": True, "history_db": str(tmp_path / "h.db")}, "control.tokens: at least one token"),
        ({"tokens": [{"name": "ops", "sha256": "abc", "scopes": ["read"]}]},
         "control.tokens[0].sha256: must be the 64 hex characters"),
        ({"tokens": [{"name": "ops", "scopes": ["read"]}]}, "control.tokens[0].sha256: give exactly one"),
        ({"tokens": [{**ok, "secret_file": str(tmp_path / "x")}]}, "control.tokens[0].sha256: give exactly one"),
        ({"tokens": [{**ok, "scopes": ["root"]}]}, "control.tokens[0].scopes[0]"),
        ({"tokens": [{**ok, "scopes": []}]}, "control.tokens[0].scopes"),
        ({"tokens": [{"name": "ops", "secret_file": str(tmp_path / "none"), "scopes": ["read"]}]},
         "control.tokens[0].secret_file: file not found"),
        ({"tokens": [ok, {**ok, "sha256": "b" * 64}]}, "control.tokens: duplicate token name 'ops'"),
        ({"tokens": [ok, {**ok, "name": "other"}]}, "has the same secret as an earlier token"),
        ({"enabled": True, "tokens": [ok], "history_db": "/nonexistent/dir/ops.sqlite"},
         "control.history_db: directory not found"),
        ({"max_body_bytes": 10}, "control.max_body_bytes"),
        ({"power_limit": {"burst": 0, "per_minute": 1}}, "control.power_limit.burst"),
        ({"colour": "red"}, "control.colour: unknown key"),
    ]  # fmt: skip
    for control, expected in bad:
        with pytest.raises(ConfigError) as info:
            load_settings(None, data={"control": control})
        assert expected in str(info.value), (control, str(info.value))
    secret = tmp_path / "token"
    secret.write_text("file-token-0123456789\n")
    s = load_settings(None, data={"control": {"enabled": True, "history_db": str(tmp_path / "h.db"), "tokens": [
        {"name": "ops", "sha256": "A" * 64, "scopes": ["power"]},
        {"name": "cron", "secret_file": str(secret), "scopes": ["read"]}]}})  # fmt: skip
    assert s.control.tokens[0].sha256 == "a" * 64  # normalised
    assert s.control.tokens[1].digest() == hashlib.sha256(b"file-token-0123456789").digest()
    assert "file-token-0123456789" in s.secrets()  # so the log redactor masks it
    assert not Settings().control.enabled


async def test_no_token_wrong_token_and_wrong_scope(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        status, body, hd = await ctl.call("GET", "/api/v1/guests", token=None)
        assert status == 401 and body["error_code"] == "UNAUTHORIZED" and body["details"]["reason"] == "missing"
        assert hd["WWW-Authenticate"].startswith("Bearer") and body["success"] is False
        assert body["recovery_suggestions"] and body["request_id"] and body["timestamp"].endswith("Z")
        status, body, _ = await ctl.call("GET", "/api/v1/guests", token="wrong-token-value")
        assert status == 401 and body["details"]["reason"] == "invalid"
        status, body, _ = await ctl.call("GET", "/api/v1/guests", token=None, headers={"Authorization": "Basic eDp5"})
        assert status == 401 and body["details"]["reason"] == "malformed"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/restart", token="viewer")
        assert status == 403 and body["error_code"] == "FORBIDDEN"
        assert body["details"] == {"required_scope": "power", "token": "viewer", "scopes": ["read"]}
        status, body, _ = await ctl.call("POST", "/api/v1/reload", token="ops")
        assert status == 403 and body["details"]["required_scope"] == "admin"
        status, body, _ = await ctl.call("GET", "/api/v1/whoami", token="boss")
        assert status == 200 and body == {"user": "boss", "scopes": ["read", "power", "admin"]}
        status, body, _ = await ctl.call("GET", "/api/v1/openapi.json", token=None)  # public
        assert status == 200 and body["openapi"].startswith("3.1")
        status, body, _ = await ctl.call("POST", "/api/v1/reload", token="boss")
        assert status == 409 and body["error_code"] == "RELOAD_UNAVAILABLE"


async def test_failed_auth_is_rate_limited_per_address(tmp_path: Path) -> None:
    limits = {"auth_failure_limit": {"burst": 3, "per_minute": 6}}
    async with control_app(tmp_path / "ops.sqlite", control=limits) as ctl:
        for _ in range(3):
            assert (await ctl.call("GET", "/api/v1/guests", token="guess"))[0] == 401
        status, body, hd = await ctl.call("GET", "/api/v1/guests", token="guess")
        assert status == 429 and body["error_code"] == "RATE_LIMITED" and body["details"]["limit"] == "auth_failures"
        assert hd["Retry-After"] == "10"  # 6 per minute: one try every 10 s
        # while limited a valid token is still served (issue 11 item 11); failures keep getting 429
        assert (await ctl.call("GET", "/api/v1/guests", token="viewer"))[0] == 200
        assert (await ctl.call("GET", "/api/v1/guests", token="guess-again"))[0] == 429
        ctl.advance(10)
        assert (await ctl.call("GET", "/api/v1/guests", token="guess-again"))[0] == 401
        text = ctl.daemon.metrics_body(["lab"], False).decode()
        assert 'pve_exporter_control_rate_limited_total{limit="auth"} 2' in text
        assert 'pve_exporter_control_auth_failures_total{reason="invalid"} 4' in text


async def test_power_requests_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite", control={"power_limit": {"burst": 2, "per_minute": 2}}) as ctl:
        assert (await ctl.call("POST", "/api/v1/clusters/lab/guests/102/restart"))[0] == 202
        assert (await ctl.call("POST", "/api/v1/clusters/lab/guests/105/restart"))[0] == 202
        status, body, hd = await ctl.call("POST", "/api/v1/clusters/lab/guests/108/restart")
        assert status == 429 and body["details"]["limit"] == "power_requests" and hd["Retry-After"] == "30"
        assert (await ctl.call("GET", "/api/v1/operations", token="viewer"))[0] == 200  # reads are not limited
        ctl.advance(30)
        assert (await ctl.call("POST", "/api/v1/clusters/lab/guests/108/stop", json={"force": True}))[0] == 202


async def test_secrets_never_reach_logs_or_answers(tmp_path: Path, log_buffer) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        answers = []
        for token in ("ops", "viewer", "boss", "a-wrong-token-1234567"):
            for method, path in [("GET", "/api/v1/clusters"), ("GET", "/api/v1/guests"),
                                 ("POST", "/api/v1/clusters/lab/guests/102/restart"), ("GET", "/api/v1/operations"),
                                 ("GET", "/api/v1/whoami")]:  # fmt: skip
                answers.append(json.dumps((await ctl.call(method, path, token=token))[1]))
        op = json.loads(answers[2])
        await ctl.wait_upid(op["id"])
        ctl.advance(60)
        answers.append(json.dumps(await ctl.wait_op(op["id"])))
        answers.append(await (await ctl.client.get("/")).text())
        answers.append(ctl.daemon.metrics_body(["lab"], False).decode())
    logged = log_buffer.getvalue()
    assert '"audit": true' in logged and "power action requested" in logged and "power action finished" in logged
    assert '"user": "ops"' in logged and '"client_ip": "127.0.0.1"' in logged
    everything = logged + "\n".join(answers)
    for secret in [t for t, _ in TOKENS.values()] + ["a-wrong-token-1234567", DEFAULT_TOKEN_SECRET]:
        assert secret not in everything, secret
    assert "monitor@pve!exporter" in answers[-3]  # the PVE token *id* is in the UPID; its secret is not


async def test_disabled_control_answers_404_everywhere(tmp_path: Path) -> None:
    settings = Settings(listen="127.0.0.1:0", clusters=[cluster_cfg("lab", ["http://127.0.0.1:1"])])
    daemon = Daemon(settings, autostart=False, clock=FixedClock())
    async with TestClient(TestServer(build_app(daemon))) as client:
        for method, path in [("GET", "/api/v1/guests"), ("POST", "/api/v1/clusters/lab/guests/100/start"),
                             ("GET", "/api/v1/openapi.json"), ("DELETE", "/api/v1/actions/x"), ("GET", "/api/v1"),
                             ("PUT", "/api/v1/anything/else")]:  # fmt: skip
            resp = await client.request(method, path, headers={"Authorization": f"Bearer {TOKENS['ops'][0]}"})
            body = await resp.json()
            assert resp.status == 404 and body["error_code"] == "NOT_FOUND", (method, path)
            assert "control.enabled" in body["error"]
        assert (await client.get("/ui/")).status == 404
        assert "api/v1" not in await (await client.get("/")).text()
    assert daemon.control is None


async def test_landing_page_links_the_control_page_and_shows_only_counts(tmp_path: Path) -> None:
    """`/` needs no token: it shows operation counts by status, never names, users, addresses or
    PVE's messages (issue 11 item 12); those stay behind `read` on /ui/ and the API."""
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        op = await ctl.act("lab", 102, "restart")
        await ctl.wait_upid(op["id"])
        ctl.advance(60)
        await ctl.wait_op(op["id"])
        bad = await ctl.act("lab", 104, "start")  # a template: fails with PVE's message
        await ctl.wait_upid(bad["id"])
        ctl.advance(60)
        failed = await ctl.wait_op(bad["id"])
        assert failed["status"] == "failed" and failed["error_message"]
        page = await (await ctl.client.get("/")).text()
        assert "href='ui/'" in page and "operation-counts" in page
        assert "<tr><td>succeeded</td><td>1</td></tr>" in page and "<tr><td>failed</td><td>1</td></tr>" in page
        assert "<tr><td>running</td><td>0</td></tr>" in page
        for private in ("ops", "127.0.0.1", "quoted", failed["error_message"], op["id"], "restart"):
            assert private not in page.split("<h2>Control</h2>", 1)[1], private
        ui = await ctl.client.get("/ui/")
        assert ui.status == 200 and "script-src 'self'" in ui.headers["Content-Security-Policy"]
        assert "app.js" in await ui.text()
        assert (await ctl.client.get("/ui/app.js")).headers["Content-Type"].startswith("application/javascript")
        assert (await ctl.client.get("/ui/../settings.py")).status == 404
        assert (await ctl.client.get("/ui/secret.txt")).status == 404


async def test_reload_applies_new_tokens_and_rejects_a_bad_file(tmp_path: Path) -> None:
    from tests.controlharness import control_cfg

    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("clusters: [")  # not even YAML yet: the daemon was started from Settings
    db = tmp_path / "ops.sqlite"
    async with control_app(db, config_path=str(cfg_file)) as ctl:
        status, body, _ = await ctl.call("POST", "/api/v1/reload", token="boss")
        assert status == 422 and body["error_code"] == "RELOAD_FAILED"
        assert (await ctl.call("GET", "/api/v1/whoami", token="viewer"))[0] == 200
        control = control_cfg(db)
        control["tokens"] = [t for t in control["tokens"] if t["name"] != "viewer"]
        cfg = {"listen": "127.0.0.1:0", "control": control,
               "clusters": [cluster_cfg(name, [url]) for name, url in ctl.urls.items()]}  # fmt: skip
        cfg_file.write_text(json.dumps(cfg))
        status, body, _ = await ctl.call("POST", "/api/v1/reload", token="boss")
        assert status == 200 and body == {"reloaded": True, "clusters": ["lab"]}
        status, body, _ = await ctl.call("GET", "/api/v1/whoami", token="viewer")
        assert status == 401 and body["details"]["reason"] == "invalid"
        assert (await ctl.call("GET", "/api/v1/whoami", token="ops"))[0] == 200


def test_docs_list_every_error_code() -> None:
    from pve_exporter.control.errors import CATALOGUE

    text = (Path(__file__).resolve().parent.parent / "docs" / "control-api.md").read_text()
    missing = [code for code in CATALOGUE if f"`{code}`" not in text]
    assert not missing, f"docs/control-api.md does not document {missing}"
    for route in ("/api/v1/guests", "/api/v1/actions", "/api/v1/operations", "/collect", "/api/v1/reload",
                  "/api/v1/openapi.json", "/api/v1/whoami", "/api/v1/clusters"):
        assert route in text, route
