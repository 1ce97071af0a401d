"""TLS and basic auth for the daemon's own listener, in the Prometheus exporter-toolkit format.

    # web-config.yml (the same file node_exporter's --web.config.file takes)
    tls_server_config:
      cert_file: /etc/pve-exporter/tls/server.crt
      key_file: /etc/pve-exporter/tls/server.key
      # client_auth_type: RequireAndVerifyClientCert
      # client_ca_file: /etc/pve-exporter/tls/clients-ca.pem
      # min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...            # bcrypt hash: htpasswd -nBC 12 "" | tr -d ':\\n'

Basic auth guards every path except `/-/healthy` (liveness probes) and `/api/v1/…`, which has its
own bearer tokens (both use the Authorization header). bcrypt is slow on purpose, so checks run in
their own two threads (never the default executor that collection uses), with a bounded queue and a
failure limit per client address; a successful check is remembered (by a SHA-256 of user and
password) for a while, and remembered credentials pass even while their address is locked out.
Unknown users are checked against a dummy hash of the configured cost, so timing does not tell
which user names exist; passwords over bcrypt's 72 bytes are wrong passwords, not errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import bcrypt
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pve_exporter.control.ratelimit import KeyedLimiter, retry_after_header
from pve_exporter.httperrors import error_response
from pve_exporter.settings import ConfigError, format_validation_error

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
OPEN_PATHS = ("/-/healthy",)
OWN_AUTH_PREFIX = "/api/v1/"
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
BCRYPT_MAX_BYTES = 72


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: Literal[
        "NoClientCert", "RequestClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v


class WebConfig(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, v: dict[str, str]) -> dict[str, str]:
        for user, h in v.items():
            if not _BCRYPT_HASH.match(h):
                raise ValueError(f"{user}: must be a bcrypt hash ($2y$…), e.g. from `htpasswd -nBC 12 {user}`")
        return v

    def secret_files(self) -> list[Path]:
        """Files whose content is secret (the TLS private key), for the permission warning."""
        return [self.tls_server_config.key_file] if self.tls_server_config is not None else []

    def ssl_context(self) -> ssl.SSLContext | None:
        tls = self.tls_server_config
        if tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"tls_server_config: cannot load cert_file/key_file: {exc}") from None
        ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        if tls.client_ca_file is not None:
            ctx.load_verify_locations(str(tls.client_ca_file))
        elif ctx.verify_mode != ssl.CERT_NONE:
            need = tls.client_auth_type
            raise ConfigError(f"tls_server_config.client_ca_file: required with client_auth_type {need}")
        return ctx


def load_web_config(path: str | Path) -> WebConfig:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"web config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping (tls_server_config, basic_auth_users)")
    try:
        cfg = WebConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{p}: " + format_validation_error(exc).replace("\n", f"\n{p}: ")) from None
    cfg.ssl_context()  # fail at start, not at the first connection
    return cfg


class BasicAuthLimited(Exception):
    """The address failed too often, or too many checks wait already: answer 429."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.1f} s")
        self.retry_after = retry_after


def _common_cost(hashes: Iterable[str]) -> int:
    """The bcrypt cost most configured hashes use (the dummy hash must cost the same)."""
    costs = Counter(int(h[4:6]) for h in hashes)
    return costs.most_common(1)[0][0] if costs else 12


class BasicAuth:
    """Checks `Authorization: Basic …` against bcrypt hashes in its own small executor, with a
    bounded cache of successes and a failure limit per address (monotonic clock)."""

    CACHE_SECONDS = 300.0
    CACHE_SIZE = 256
    THREADS = 2
    MAX_PENDING = 16  # checks queued or running; beyond, 429 at once (memory and latency stay bounded)
    FAILURE_BURST = 10
    FAILURES_PER_MINUTE = 30.0

    def __init__(self, users: dict[str, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self._clock = clock
        self._ok: OrderedDict[bytes, float] = OrderedDict()
        self._failures = KeyedLimiter(self.FAILURE_BURST, self.FAILURES_PER_MINUTE, clock=clock)
        self._executor = ThreadPoolExecutor(max_workers=self.THREADS, thread_name_prefix="basic-auth")
        self._pending = 0
        self._dummy: bytes | None = None  # made by prepare(), in the executor (cost 12 is ~0.25 s of CPU)

    async def prepare(self) -> None:
        """Make the dummy hash for unknown users, at the cost most configured hashes use."""
        if self._dummy is None:
            salt = bcrypt.gensalt(_common_cost(self.users.values()))
            loop = asyncio.get_running_loop()
            self._dummy = await loop.run_in_executor(self._executor, bcrypt.hashpw, b"not a password", salt)

    async def _checkpw(self, password: bytes, hashed: bytes) -> bool:
        if self._pending >= self.MAX_PENDING:
            raise BasicAuthLimited(1.0)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, bcrypt.checkpw, password, hashed)
        finally:
            self._pending -= 1

    async def check(self, header: str | None, address: str) -> str | None:
        """The user name if the header carries valid credentials, else None; raises BasicAuthLimited
        (before any bcrypt work) when `address` failed too often or the queue is full."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        stored = self.users.get(user)
        key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()
        seen = self._ok.get(key)
        if seen is not None and self._clock() - seen < self.CACHE_SECONDS:
            return user
        wait = self._failures.retry_after(address)
        if wait > 0 and seen is None:
            raise BasicAuthLimited(wait)
        secret = password.encode()
        if stored is None or len(secret) > BCRYPT_MAX_BYTES:
            # Same cost as a real check, so neither a probe nor a long password tells what exists.
            await self.prepare()
            assert self._dummy is not None
            await self._checkpw(secret[:BCRYPT_MAX_BYTES], self._dummy)
            ok = False
        else:
            ok = await self._checkpw(secret, stored.encode())
        if not ok:
            self._failures.failure(address)
            return None
        self._ok[key] = self._clock()
        self._ok.move_to_end(key)
        while len(self._ok) > self.CACHE_SIZE:
            self._ok.popitem(last=False)
        return user

    async def close(self) -> None:
        """Stop the threads: queued checks are dropped, a running one (≤ one bcrypt round) is awaited."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)


def basic_auth_middleware(auth: BasicAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path in OPEN_PATHS or path.startswith(OWN_AUTH_PREFIX):
            return await handler(request)
        try:
            user = await auth.check(request.headers.get("Authorization"), request.remote or "unknown")
        except BasicAuthLimited as exc:
            return error_response(
                429, "RATE_LIMITED", "too many failed basic authentications from this address",
                details={"retry_after_seconds": round(exc.retry_after, 1)},
                recovery=["Wait the number of seconds in the Retry-After header, then retry."],
                headers={"Retry-After": retry_after_header(exc.retry_after)},
            )  # fmt: skip
        if user is None:
            resp = error_response(
                401, "UNAUTHORIZED", "basic authentication required",
                recovery=["Send the user and password of web config's basic_auth_users (Prometheus: basic_auth)."],
                headers={"WWW-Authenticate": 'Basic realm="pve_exporter"'},
            )  # fmt: skip
            return resp
        return await handler(request)

    return middleware
