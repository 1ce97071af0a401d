"""Typed settings: the YAML of design §2.2, every key also settable as `PVE_EXPORTER_…` (nested with `__`).

Unknown keys are errors (`extra="forbid"`), secrets are SecretStr and may come from files, and
every validation problem becomes one line that names the key (`clusters[0].token_id: …`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pve_exporter.pve.client import normalize_endpoint

TOKEN_ID = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
                out.append(normalize_endpoint(e))
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return out

    @field_validator("token_id")
    @classmethod
    def _token_id(cls, v: str) -> str:
        if not TOKEN_ID.match(v):
            raise ValueError(f"must look like user@realm!tokenname (e.g. monitor@pve!exporter), got {v!r}")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @model_validator(mode="after")
    def _secret(self) -> ClusterSettings:
        if self.token_secret is None and self.token_secret_file is None:
            raise ValueError("token_secret or token_secret_file is required")
        if self.token_secret is not None and self.token_secret_file is not None:
            raise ValueError("give token_secret or token_secret_file, not both")
        if self.token_secret_file is not None:
            object.__setattr__(self, "token_secret", _read_secret(self.token_secret_file, "token_secret_file"))
        return self

    def secret(self) -> str:
        assert self.token_secret is not None
        return self.token_secret.get_secret_value()

    @property
    def stale_after(self) -> float:
        return self.stale_after_seconds or 4 * self.interval_seconds


class CollectSettings(Strict):
    """Knobs shared by all clusters' collectors."""

    slow_interval_factor: int = Field(default=20, ge=1, description="Slow tier runs every N fast intervals")
    all_enum_states: bool = Field(
        default=False, description="Emit pve_ha_state / pve_lock_state for every guest (PPE behaviour)"
    )
    config_max_per_cycle: int = Field(default=50, ge=0)
    config_refresh_seconds: float = Field(default=3600, ge=60)


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """The whole daemon configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PVE_EXPORTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: str = "0.0.0.0:9221"
    clusters: list[ClusterSettings] = Field(default_factory=list)
    collect: CollectSettings = Field(default_factory=CollectSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

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
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        seen: set[str] = set()
        for i, c in enumerate(self.clusters):
            if c.name in seen:
                raise ValueError(f"clusters[{i}].name: duplicate cluster name {c.name!r}")
            seen.add(c.name)
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def secrets(self) -> list[str]:
        """Every secret value, so the log redactor can mask them wherever they appear."""
        return [c.secret() for c in self.clusters]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = _loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        head = msg.split(": ", 1)[0]
        if head.startswith("clusters["):
            lines.append(msg)  # the validator already named the full key
        elif key and re.fullmatch(r"[a-z_]+", head) and ": " in msg:
            lines.append(f"{key}.{msg}")  # a model validator named a field of this object
        elif key:
            lines.append(f"{key}: {msg}")
        else:
            lines.append(msg)
    return "\n".join(lines)


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
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def masked(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced by `********`."""
    doc = settings.model_dump(mode="json")
    for c in doc.get("clusters", []):
        if c.get("token_secret") is not None:
            c["token_secret"] = "********"
    return doc
