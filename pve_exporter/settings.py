"""Typed settings: the YAML of design §2.2, every key also settable as `PVE_EXPORTER_…` (nested with `__`).

Unknown keys are errors (`extra="forbid"`), secrets are SecretStr and may come from files, and
every validation problem becomes one line that names the key (`clusters[0].token_id: …`). No message
echoes a secret: values of secret-shaped keys are never quoted, URL userinfo and anything after
`=`/`:` in a token id are masked (people paste the whole `PVEAPIToken=user@realm!name=secret`).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import socket
import stat
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pve_exporter.pve.client import normalize_endpoint
from pve_exporter.shard import owned

TOKEN_ID = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MASK = "********"
PBS_PORT = 8007  # Proxmox Backup Server API
SECRET_KEYS = frozenset({"token_secret", "token", "password", "dsn", "secret"})  # their values are never shown
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")
_TOKEN_ID_SECRET = re.compile(r"(![A-Za-z0-9._-]*)\s*[=:].*", re.S)
AUTH_DELAY_SECONDS = 3.0  # pveproxy answers every failed authentication after this delay
# Notes about accepted-but-adjusted values, collected while `load_settings` validates (see `config_notes`).
_NOTES: ContextVar[list[str] | None] = ContextVar("config_notes", default=None)


def _endpoint(raw: str, default_port: int = 8006) -> str:
    """normalize_endpoint, noting a trimmed `/api2/json` (the client adds it to every path itself)."""
    path = urlsplit(raw.strip() if "://" in raw else "https://" + raw.strip()).path.rstrip("/")
    url = normalize_endpoint(raw, default_port)
    notes = _NOTES.get()
    if path == "/api2/json" and notes is not None:
        notes.append(f"endpoint {raw.strip()!r}: the /api2/json path was trimmed to {url} (it is added to every "
                     "request)")  # fmt: skip
    return url


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (key: problem)."""


def _read_secret(path: Path, key: str) -> SecretStr:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"{key}: file not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{key}: file is empty: {path}")
    return SecretStr(value)


def _token_id(v: str, example: str) -> str:
    """A PVE or PBS API token id, refused (without echoing it) when the secret was pasted along."""
    if "=" in v or ":" in v:  # `user@realm!name=secret` (PVE's header form) or `…!name:secret` (PBS's)
        raise ValueError(
            "token_id must be user@realm!tokenname without the secret; put the secret in token_secret_file"
        )
    if not TOKEN_ID.match(v):
        raise ValueError(f"must look like user@realm!tokenname (e.g. {example}), got {v!r}")
    return v


def _resolve_token_secret(model: ClusterSettings | BackupServerSettings) -> None:
    """Exactly one of token_secret / token_secret_file; the file is read once, at load."""
    if model.token_secret is None and model.token_secret_file is None:
        raise ValueError("token_secret or token_secret_file is required")
    if model.token_secret is not None and model.token_secret_file is not None:
        raise ValueError("give token_secret or token_secret_file, not both")
    if model.token_secret_file is not None:
        object.__setattr__(model, "token_secret", _read_secret(model.token_secret_file, "token_secret_file"))


def _existing_file(v: Path | None) -> Path | None:
    if v is not None and not v.is_file():
        raise ValueError(f"file not found: {v}")
    return v


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSettings(Strict):
    """One PVE cluster (or standalone node) to watch."""

    name: str = Field(description="Becomes the `cluster` label and tag")
    endpoints: list[str] = Field(min_length=1, description="host[:port] or http(s)://host:port of API nodes")
    token_id: str
    token_secret: SecretStr | None = None
    token_secret_file: Path | None = None
    verify_ssl: bool = True
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    interval_seconds: float = Field(default=15.0, ge=1, le=3600)
    max_concurrency: int = Field(default=8, ge=1, le=256)
    stale_after_seconds: float | None = Field(
        default=None, gt=0, description="Keep last good data this long when collection fails (default 4 intervals)"
    )
    direct_node_calls: bool = Field(
        default=True,
        description="Send /nodes/<n>/… requests to node n's own address (from /cluster/status) instead of "
        "letting an endpoint proxy them; falls back to the endpoints when the node's address does not answer",
    )
    node_endpoints: dict[str, str] = Field(
        default_factory=dict, description="Per-node address overrides: {node name: host[:port] or URL}"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '.', '_' or '-'")
        return v

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        out = []
        for e in v:
            try:
                out.append(_endpoint(e))
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return out

    @field_validator("node_endpoints")
    @classmethod
    def _node_endpoints(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for node, e in v.items():
            try:
                out[node] = _endpoint(e)
            except ValueError as exc:
                raise ValueError(f"{node}: {exc}") from None
        return out

    _token_id = field_validator("token_id")(classmethod(lambda cls, v: _token_id(v, "monitor@pve!exporter")))

    _ca_file = field_validator("ca_file")(classmethod(lambda cls, v: _existing_file(v)))

    @model_validator(mode="after")
    def _secret(self) -> ClusterSettings:
        _resolve_token_secret(self)
        return self

    def secret(self) -> str:
        assert self.token_secret is not None
        return self.token_secret.get_secret_value()

    @property
    def stale_after(self) -> float:
        return self.stale_after_seconds or 4 * self.interval_seconds


class BackupServerSettings(Strict):
    """One Proxmox Backup Server to watch (same rules as a cluster; default port 8007).

    `fingerprint` pins the server certificate by its SHA-256 (`aa:bb:…`, as PVE's own PBS storage
    config takes it): the chain is not checked then, the certificate's digest is, on every connection.
    """

    name: str = Field(description="Becomes the `server` label")
    endpoints: list[str] = Field(min_length=1, description="host[:port] or http(s)://host:port (port 8007 default)")
    token_id: str = Field(description="PBS API token user@realm!name (needs Datastore.Audit and Sys.Audit on /)")
    token_secret: SecretStr | None = None
    token_secret_file: Path | None = None
    fingerprint: str | None = Field(
        default=None, description="SHA-256 of the server certificate (aa:bb:…); pins it instead of a CA check"
    )
    verify_ssl: bool = True
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    interval_seconds: float = Field(default=15.0, ge=1, le=3600)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    stale_after_seconds: float | None = Field(
        default=None, gt=0, description="Keep last good data this long when collection fails (default 4 intervals)"
    )
    clusters: list[str] = Field(
        default_factory=list, description="The PVE clusters (by name) whose guests back up to this server"
    )
    cluster_namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="Per linked cluster, the PBS namespace its backups go to (it and the namespaces below it count "
        "for that cluster's guests); a cluster not named here matches its vmids in every namespace",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '.', '_' or '-'")
        return v

    _token_id = field_validator("token_id")(classmethod(lambda cls, v: _token_id(v, "monitor@pbs!exporter")))

    _ca_file = field_validator("ca_file")(classmethod(lambda cls, v: _existing_file(v)))

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        out = []
        for e in v:
            try:
                out.append(_endpoint(e, default_port=PBS_PORT))
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return out

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is None:
            return None
        digits = v.strip().lower().replace(":", "")
        if not _SHA256_HEX.match(digits):
            raise ValueError("must be the certificate's SHA-256 as 32 hex pairs (aa:bb:…:ff), as PBS shows it")
        return ":".join(digits[i : i + 2] for i in range(0, 64, 2))

    @model_validator(mode="after")
    def _secret(self) -> BackupServerSettings:
        if self.fingerprint is not None and self.ca_file is not None:
            raise ValueError("fingerprint: give fingerprint or ca_file, not both")
        _resolve_token_secret(self)
        return self

    def secret(self) -> str:
        assert self.token_secret is not None
        return self.token_secret.get_secret_value()

    def fingerprint_bytes(self) -> bytes | None:
        return bytes.fromhex(self.fingerprint.replace(":", "")) if self.fingerprint else None

    @property
    def stale_after(self) -> float:
        return self.stale_after_seconds or 4 * self.interval_seconds


class CollectSettings(Strict):
    """Knobs shared by all clusters' collectors."""

    slow_interval_factor: int = Field(default=20, ge=1, description="Slow tier runs every N fast intervals")
    slow_min_interval_seconds: float = Field(
        default=300.0, ge=0, le=86_400,
        description="The slow tier runs at most this often, however short the fast interval (gentle on PVE)",
    )
    node_interval_seconds: float = Field(
        default=60.0, ge=1, le=3600,
        description="Node tier: per-node detail (node status, per-node guest lists) once per this many seconds "
        "per node, the nodes spread over the fast cycles; at least each cluster's interval_seconds",
    )
    all_enum_states: bool = Field(
        default=False, description="Emit pve_ha_state / pve_lock_state for every guest (PPE behaviour)"
    )
    config_max_per_cycle: int = Field(default=50, ge=0)
    config_refresh_seconds: float = Field(default=3600, ge=60)
    qemu_full_status: bool = Field(
        default=False,
        description="Ask /nodes/<n>/qemu in full mode (balloon, per-NIC and per-disk QMP stats; costs PVE a "
        "QMP round trip per VM). Always on when the InfluxDB output is configured",
    )
    guest_agent_filesystems: bool = Field(
        default=False,
        description="Ask the QEMU guest agent of running VMs for filesystem usage (opt-in; needs "
        "VM.GuestAgent.Audit on PVE 9, VM.Monitor on PVE 8)",
    )
    guest_agent_max_per_cycle: int = Field(default=20, ge=1)
    guest_agent_refresh_seconds: float = Field(default=300, ge=30)
    guest_devices: bool = Field(
        default=False,
        description="Per-NIC and per-disk guest I/O counters (pve_guest_network_*, pve_guest_disk_*; one series "
        "per VM and device). Turns on full-mode QEMU lists",
    )
    guest_name_label: bool = Field(
        default=False,
        description="Add the guest name as a `name` label to guest usage series (a rename starts new series; "
        "the join on pve_guest_info works without it)",
    )
    max_concurrency_total: int = Field(
        default=64, ge=1, le=4096, description="In-flight API requests over all clusters together"
    )


class WebSettings(Strict):
    """The HTTP listener's limits against idle, slow and too many clients (need a restart to change)."""

    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="A new connection must send its first request's headers (and finish TLS) within this",
    )
    idle_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="A keep-alive connection idle this long is closed"
    )
    max_connections: int = Field(
        default=512, ge=4, le=1_000_000,
        description="Open connections at most; a new one beyond closes the least recently active idle one "
        "(or is refused when all are busy). Lowered at start to the open-file limit (LimitNOFILE) minus 256",
    )
    request_timeout_seconds: float = Field(
        default=120.0, gt=0, le=86_400,
        description="A request still running after this long (e.g. a client that does not read its answer) "
        "may be closed to make room when max_connections is reached",
    )


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


# -- influxdb: (InfluxDB output) -------------------------------------------------------------------


class InfluxSettings(Strict):
    """Push every snapshot to InfluxDB in PVE's External Metric Server schema (docs/influxdb.md)."""

    url: str = Field(description="http(s)://host:port of InfluxDB (or VictoriaMetrics); no credentials in it")
    api: Literal["v2", "v1"] = Field(default="v2", description="v2: org/bucket/token; v1: database/user/password")
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    database: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    retention_policy: str | None = None
    schema_name: Literal["pve"] = Field(default="pve", alias="schema", description="Only PVE's own layout for now")
    spool_dir: Path | None = Field(default=None, description="Batches wait here while InfluxDB is down or slow")
    max_spool_bytes: ByteSize = Field(
        default=ByteSize(1 << 30), ge=1024, description="Oldest batches are dropped beyond"
    )
    max_queue_bytes: ByteSize = Field(
        default=ByteSize(16 << 20), ge=1024, description="In memory before the spool is used"
    )
    batch_bytes: ByteSize = Field(
        default=ByteSize(1 << 20), ge=1024, le=64 << 20, description="Uncompressed line protocol per request"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    verify_ssl: bool = True
    ca_file: Path | None = None
    flush_interval_seconds: float = Field(
        default=1.0, ge=0, le=60, description="How long a part-filled batch waits for more snapshots"
    )
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=60)
    retry_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    shutdown_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="On stop: how long an in-flight write may finish before the spool"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be http(s)://host[:port], got {v!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials (use token / username and password)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        try:
            parts.port  # noqa: B018 (validates the port)
        except ValueError:
            raise ValueError(f"invalid port in {v!r}") from None
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    _ca_file = field_validator("ca_file")(classmethod(lambda cls, v: _existing_file(v)))

    @model_validator(mode="after")
    def _by_api(self) -> InfluxSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("token: give token or token_file, not both")
        if self.password is not None and self.password_file is not None:
            raise ValueError("password: give password or password_file, not both")
        if self.api == "v2":
            for key in ("database", "username", "password", "password_file", "retention_policy"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only used with api: v1 (v2 takes org, bucket and token)")
            for key in ("org", "bucket"):
                if not getattr(self, key):
                    raise ValueError(f"{key}: required with api: v2")
            if self.token is None and self.token_file is None:
                raise ValueError("token: required with api: v2 (token or token_file)")
            if self.token_file is not None:
                object.__setattr__(self, "token", _read_secret(self.token_file, "token_file"))
        else:
            for key in ("org", "bucket", "token", "token_file"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only used with api: v2 (v1 takes database, username and password)")
            if not self.database:
                raise ValueError("database: required with api: v1")
            if (self.password is not None or self.password_file is not None) and not self.username:
                raise ValueError("username: required when a password is given")
            if self.password_file is not None:
                object.__setattr__(self, "password", _read_secret(self.password_file, "password_file"))
        if self.max_spool_bytes < self.batch_bytes:
            raise ValueError("max_spool_bytes: must be at least batch_bytes")
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds: must be at least retry_initial_seconds")
        return self

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.token, self.password) if s is not None]


CONTROL_SCOPES = ("read", "power", "admin")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class ControlToken(Strict):
    """A bearer token of the control API. Only its SHA-256 is kept in the config (`pve-exporter
    hash-token`), or the token itself sits in `secret_file`. `name` is recorded as the operation's user."""

    name: str
    sha256: str | None = None
    secret_file: Path | None = None
    scopes: list[Literal["read", "power", "admin"]] = Field(
        min_length=1, description="read (inventory, history) < power (actions) < admin (collect, reload)"
    )
    _secret: SecretStr | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ControlToken:
        if (self.sha256 is None) == (self.secret_file is None):
            raise ValueError("sha256: give exactly one of sha256 or secret_file")
        if self.sha256 is not None:
            if not _SHA256_HEX.match(self.sha256):
                raise ValueError(
                    f"sha256: must be the 64 hex characters of a SHA-256 (see `pve-exporter hash-token`), "
                    f"got {len(self.sha256)} characters"
                )
            object.__setattr__(self, "sha256", self.sha256.lower())
        else:
            assert self.secret_file is not None
            self._secret = _read_secret(self.secret_file, "secret_file")
        return self

    def digest(self) -> bytes:
        """The SHA-256 of the token, as bytes (what incoming tokens are compared against)."""
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self._secret is not None
        return hashlib.sha256(self._secret.get_secret_value().encode()).digest()

    def secrets(self) -> list[str]:
        return [self._secret.get_secret_value()] if self._secret is not None else []


class RateLimit(Strict):
    """A token bucket: `burst` at once, refilled at `per_minute`."""

    burst: int = Field(ge=1, le=100_000)
    per_minute: float = Field(gt=0, le=600_000)


class ControlSettings(Strict):
    """The authenticated control API (/api/v1) with its operation history (design §2.5).

    Power actions use each cluster's own PVE token, so that token needs VM.PowerMgmt on the guests
    (e.g. PVEVMUser, or a role with VM.PowerMgmt + VM.Audit on /vms) for actions to succeed.
    """

    enabled: bool = False
    history_db: Path = Path("/var/lib/pve-exporter/operations.sqlite")
    tokens: list[ControlToken] = Field(default_factory=list)
    max_operations: int = Field(default=100_000, ge=10, description="History rows kept (oldest dropped first)")
    max_age_days: float = Field(default=90.0, gt=0, description="History rows older than this are dropped")
    max_body_bytes: int = Field(default=16_384, ge=256, le=1 << 20)
    default_timeout_seconds: float = Field(default=120.0, ge=1, le=3600)
    auth_failure_limit: RateLimit = Field(default_factory=lambda: RateLimit(burst=10, per_minute=6))
    power_limit: RateLimit = Field(default_factory=lambda: RateLimit(burst=20, per_minute=60))
    max_bulk_concurrency: int = Field(default=8, ge=1, le=64)
    task_poll_seconds: float = Field(default=1.0, gt=0, le=30, description="How often a PVE task is polled")
    shutdown_grace_seconds: float = Field(
        default=5.0, ge=0, le=120, description="On stop: how long running actions may finish before they are cut off"
    )
    recovery_give_up_seconds: float = Field(
        default=3600.0, ge=60, le=7 * 86_400,
        description="After a restart, how long an unfinished operation stays `running` while PVE does not answer "
                    "about its task; then it becomes `interrupted`",
    )  # fmt: skip

    @model_validator(mode="after")
    def _tokens(self) -> ControlSettings:
        names: set[str] = set()
        digests: set[bytes] = set()
        for i, t in enumerate(self.tokens):
            if t.name in names:
                raise ValueError(f"tokens: duplicate token name {t.name!r} (tokens[{i}])")
            if t.digest() in digests:
                raise ValueError(f"tokens: tokens[{i}] ({t.name}) has the same secret as an earlier token")
            names.add(t.name)
            digests.add(t.digest())
        if self.enabled and not self.tokens:
            raise ValueError("tokens: at least one token is required when control is enabled")
        return self  # history_db's directory: checked by Settings (with coordination the history is elsewhere)

    def secrets(self) -> list[str]:
        return [s for t in self.tokens for s in t.secrets()]


class ShardSettings(Strict):
    """Static sharding: this replica polls the targets whose name hashes to `index` (Prometheus hashmod)."""

    index: int = Field(ge=0, description="This replica's shard, 0 … total-1")
    total: int = Field(ge=1, le=1024, description="How many replicas share the targets")

    @model_validator(mode="after")
    def _in_range(self) -> ShardSettings:
        if self.index >= self.total:
            raise ValueError(f"shard.index: {self.index} must be below shard.total ({self.total})")
        return self


class CoordinationSettings(Strict):
    """Replicas sharing the targets through leases in PostgreSQL (README: Scaling out)."""

    dsn: SecretStr | None = Field(default=None, description="postgresql://user:password@host:5432/db (a secret)")
    dsn_file: Path | None = Field(default=None, description="A file holding the DSN (instead of dsn)")
    lease_seconds: float = Field(
        default=30.0, ge=1, le=3600, description="A dead replica's targets move after at most this (+ one renewal)"
    )
    replica: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=200,
        description="This replica's name, unique among the replicas (default: the host name)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _dsn(self) -> CoordinationSettings:
        if (self.dsn is None) == (self.dsn_file is None):
            raise ValueError("dsn: give exactly one of dsn or dsn_file")
        if self.dsn_file is not None:
            object.__setattr__(self, "dsn", _read_secret(self.dsn_file, "dsn_file"))
        scheme = urlsplit(self.secret()).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("dsn: must be a postgresql:// URL (the value is not shown: it may hold a password)")
        return self

    def secret(self) -> str:
        assert self.dsn is not None  # set by the validator
        return self.dsn.get_secret_value()

    def secrets(self) -> list[str]:
        """The DSN and its password, so that neither is ever logged."""
        password = urlsplit(self.secret()).password
        return [self.secret()] + ([password] if password else [])


class Settings(BaseSettings):
    """The whole daemon configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PVE_EXPORTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: str = "0.0.0.0:9221"
    web_config_file: Path | None = Field(
        default=None, description="exporter-toolkit web config: TLS and basic auth for the listener"
    )
    clusters: list[ClusterSettings] = Field(default_factory=list)
    backup_servers: list[BackupServerSettings] = Field(
        default_factory=list, description="Proxmox Backup Servers (README: Proxmox Backup Server)"
    )
    collect: CollectSettings = Field(default_factory=CollectSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    influxdb: InfluxSettings | None = None
    control: ControlSettings = Field(default_factory=ControlSettings)
    shard: ShardSettings | None = Field(
        default=None, description="Static sharding over replicas without a database (README: Scaling out)"
    )
    coordination: CoordinationSettings | None = Field(
        default=None, description="Replicas sharing the targets through PostgreSQL leases (README: Scaling out)"
    )

    _notes: list[str] = PrivateAttr(default_factory=list)  # from load_settings: see config_notes()

    def owns(self, name: str) -> bool:
        """Whether this replica polls the target `name` (always, without `shard`)."""
        return owned(name, self.shard.index if self.shard else None, self.shard.total if self.shard else None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host, sep, port = v.rpartition(":")
        if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        seen: set[str] = set()
        for i, c in enumerate(self.clusters):
            if c.name in seen:
                raise ValueError(f"clusters[{i}].name: duplicate cluster name {c.name!r}")
            seen.add(c.name)
            if self.collect.node_interval_seconds < c.interval_seconds:
                raise ValueError(
                    f"collect.node_interval_seconds: {self.collect.node_interval_seconds:g} is shorter than "
                    f"clusters[{i}].interval_seconds ({c.interval_seconds:g}); the node tier cannot run more "
                    "often than the fast tier"
                )
        return self

    @model_validator(mode="after")
    def _replicas(self) -> Settings:
        if self.coordination is not None and self.shard is not None:
            raise ValueError("coordination and shard: give one or the other (leases move targets between replicas, "
                             "static shards do not)")
        default_history = ControlSettings.model_fields["history_db"].default
        if self.coordination is not None and self.control.history_db != default_history:
            raise ValueError("coordination and control.history_db: with coordination the operation history lives in "
                             "PostgreSQL; remove control.history_db")
        if self.control.enabled and self.coordination is None:
            parent = self.control.history_db.expanduser().parent
            if not parent.is_dir():
                raise ValueError(f"control.history_db: directory not found: {parent}")
        return self

    @model_validator(mode="after")
    def _backup_servers(self) -> Settings:
        seen: set[str] = set()
        clusters = {c.name for c in self.clusters}
        for i, b in enumerate(self.backup_servers):
            if b.name in seen:
                raise ValueError(f"backup_servers[{i}].name: duplicate backup server name {b.name!r}")
            seen.add(b.name)
            for c in b.clusters:
                if c not in clusters:
                    raise ValueError(f"backup_servers[{i}].clusters: {c!r} is not a configured cluster")
            for c in b.cluster_namespaces:
                if c not in b.clusters:
                    raise ValueError(f"backup_servers[{i}].cluster_namespaces: {c!r} is not in its clusters")
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def secrets(self) -> list[str]:
        """Every secret value, so the log redactor can mask them wherever they appear."""
        influx = self.influxdb.secrets() if self.influxdb else []
        pbs = [b.secret() for b in self.backup_servers]
        coord = self.coordination.secrets() if self.coordination else []
        return [c.secret() for c in self.clusters] + pbs + influx + self.control.secrets() + coord


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def scrub(text: str) -> str:
    """Mask URL userinfo and whatever follows `=`/`:` after a token name (`!name=secret`)."""
    return _TOKEN_ID_SECRET.sub(rf"\1={MASK}", _URL_USERINFO.sub(rf"\1{MASK}@", text))


def _secret_input(err: Any) -> list[str]:
    """The text of a value given for a secret-shaped key (or inside one), to be masked in the message."""
    if not any(isinstance(p, str) and p in SECRET_KEYS for p in err.get("loc", ())):
        return []
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and len(v) >= 4:
            found.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)

    walk(err.get("input"))
    return found


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = _loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        msg = scrub(msg.removeprefix("Value error, "))
        for value in _secret_input(err):
            msg = msg.replace(value, MASK)
        if err.get("type") == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(tuple(err.get("loc", ())))
        head = msg.split(": ", 1)[0]
        if head.startswith("clusters["):
            lines.append(msg)  # the validator already named the full key
        elif key and re.fullmatch(r"[a-z_][a-z0-9_]*", head) and ": " in msg:
            lines.append(f"{key}.{msg}")  # a model validator named a field of this object
        elif key:
            lines.append(f"{key}: {msg}")
        else:
            lines.append(msg)
    return "\n".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model that holds the last key of `loc` (list indexes and Optional unwrapped)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [a for c in list(candidates) for a in get_args(c)]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """`; did you mean `interval_seconds`?` for a misspelt key, from the keys its section knows."""
    model = _model_at(loc)
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def config_notes(settings: Settings) -> list[str]:
    """Things the config got away with that its author should know: trimmed endpoints, timeouts so
    short that PVE's delayed answer to a bad token would look like a timeout."""
    notes = list(settings._notes)
    for i, c in enumerate(settings.clusters):
        if c.timeout_seconds <= AUTH_DELAY_SECONDS:
            notes.append(f"clusters[{i}].timeout_seconds: {c.timeout_seconds:g} s is too short: PVE answers a wrong "
                         f"or revoked token only after {AUTH_DELAY_SECONDS:g} s, so it would look like a timeout "
                         "instead of a clear 401; use 5 or more")  # fmt: skip
    return notes


def load_settings(path: str | Path | None, *, data: dict[str, Any] | None = None) -> Settings:
    """Read the YAML file (if any), merge the environment, validate. Raises ConfigError."""
    raw: Any = dict(data or {})
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys (listen, clusters, ...)")
    notes: list[str] = []
    token = _NOTES.set(notes)
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    finally:
        _NOTES.reset(token)
    settings._notes.extend(notes)
    return settings


def _mask(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: MASK if k in SECRET_KEYS and v is not None else _mask(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mask(v) for v in doc]
    return scrub(doc) if isinstance(doc, str) else doc


def masked(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret-shaped key's value replaced by `********`."""
    doc = settings.model_dump(mode="json")
    for key, models in (("clusters", settings.clusters), ("backup_servers", settings.backup_servers)):
        for entry, model in zip(doc.get(key) or (), models, strict=False):
            entry["stale_after_seconds"] = model.stale_after  # the computed default, not null
    influx = doc.get("influxdb")
    if influx:
        influx["schema"] = influx.pop("schema_name", "pve")  # the YAML key
    out: dict[str, Any] = _mask(doc)
    return out


def _secret_files(settings: Settings) -> list[Path]:
    files = [c.token_secret_file for c in settings.clusters]
    files += [b.token_secret_file for b in settings.backup_servers]
    if settings.influxdb is not None:
        files += [settings.influxdb.token_file, settings.influxdb.password_file]
    files += [t.secret_file for t in settings.control.tokens]
    if settings.coordination is not None:
        files.append(settings.coordination.dsn_file)
    return [f for f in files if f is not None]


def permission_warnings(config_path: str | Path | None, settings: Settings) -> list[str]:
    """Files holding secrets that group or others may read: the config file when a secret is written in
    it, and every secret file. Warnings, not errors (a container may mount them so on purpose)."""
    candidates: list[Path] = []
    if config_path is not None:
        try:
            text = Path(config_path).read_text(encoding="utf-8")
        except OSError:
            text = ""
        if any(secret in text for secret in settings.secrets()):
            candidates.append(Path(config_path))
    return readable_by_others([*candidates, *_secret_files(settings)])


def readable_by_others(paths: Iterable[Path]) -> list[str]:
    """A warning for each of these secret-holding files that group or others may read."""
    out = []
    for path in paths:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o044:
            out.append(f"{path} holds secrets and is readable by group or others (mode {mode:04o}); chmod 600 {path}")
    return out
