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
a worker thread and a successful check is remembered (by a SHA-256 of user and password) for a while.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import bcrypt
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
            if not h.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"{user}: must be a bcrypt hash ($2y$…), e.g. from `htpasswd -nBC 12 {user}`")
        return v

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


class BasicAuth:
    """Checks `Authorization: Basic …` against bcrypt hashes, off the event loop, with a bounded cache."""

    CACHE_SECONDS = 300.0
    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self._clock = clock
        self._ok: OrderedDict[bytes, float] = OrderedDict()

    async def check(self, header: str | None) -> str | None:
        """The user name if the header carries valid credentials, else None."""
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
        if stored is None:
            # Same cost as a real check, so a probe cannot tell which users exist.
            await asyncio.to_thread(bcrypt.checkpw, password.encode(), _DUMMY)
            return None
        if not await asyncio.to_thread(bcrypt.checkpw, password.encode(), stored.encode()):
            return None
        self._ok[key] = self._clock()
        while len(self._ok) > self.CACHE_SIZE:
            self._ok.popitem(last=False)
        return user


_DUMMY = bcrypt.hashpw(b"not a password", bcrypt.gensalt(10))


def basic_auth_middleware(auth: BasicAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path in OPEN_PATHS or path.startswith(OWN_AUTH_PREFIX):
            return await handler(request)
        if await auth.check(request.headers.get("Authorization")) is None:
            resp = error_response(
                401, "UNAUTHORIZED", "basic authentication required",
                recovery=["Send the user and password of web config's basic_auth_users (Prometheus: basic_auth)."],
                headers={"WWW-Authenticate": 'Basic realm="pve_exporter"'},
            )  # fmt: skip
            return resp
        return await handler(request)

    return middleware
