"""The API route table: templated paths, their parameter schemas, ACL checks and proxying.

Endpoint modules register handlers with `@api(...)`; the app matches requests against
`ROUTES` and validates parameters with pve-common JSONSchema's exact wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pve_exporter.simulator.auth import Caller
from pve_exporter.simulator.errors import param_error
from pve_exporter.simulator.model import SimCluster, SimNode

_NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"

ParamKind = str | tuple[str, ...]  # "bool" | "int" | "uint" | "str" | "list" | enumeration


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. /nodes/{node}/status; also the stats key
    regex: re.Pattern[str]
    handler: Callable[[Ctx], Any]
    params: dict[str, ParamKind]
    proxied: bool  # served by the node in the path (`proxyto => 'node'`)
    perm: tuple[str, str] | None  # (ACL path template, privilege) checked before proxying


@dataclass
class Ctx:
    cluster: SimCluster
    now: float
    caller: Caller
    args: dict[str, str]
    params: dict[str, Any]
    node: SimNode | None


@dataclass
class Reply:
    """A payload with the top-level `total` some list endpoints add."""

    data: Any
    total: int | None = None


ROUTES: list[Route] = []


def api(
    method: str,
    template: str,
    *,
    params: dict[str, ParamKind] | None = None,
    proxied: bool = False,
    perm: tuple[str, str] | None = None,
) -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    """Register a handler; later modules (power actions) add POST routes the same way."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

    def deco(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        ROUTES.append(Route(method, template, regex, fn, params or {}, proxied, perm))
        return fn

    return deco


def match_route(method: str, rel: str) -> tuple[Route | None, dict[str, str]]:
    for r in ROUTES:
        if r.method == method and (m := r.regex.match(rel)):
            return r, m.groupdict()
    return None, {}


# ---- parameters -------------------------------------------------------------------------------------
def _convert(kind: ParamKind, raw: str) -> Any:
    """One parameter, checked with pve-common JSONSchema's wording; raises ValueError(message)."""
    if isinstance(kind, tuple):
        if raw not in kind:
            raise ValueError(f"value '{raw}' does not have a value in the enumeration '{', '.join(kind)}'")
        return raw
    if kind == "bool":
        if raw not in ("0", "1"):
            raise ValueError(f"type check ('boolean') failed - got '{raw}'")
        return raw == "1"
    if kind in ("int", "uint"):
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise ValueError(f"type check ('integer') failed - got '{raw}'")
        value = int(raw)
        if kind == "uint" and value < 0:
            raise ValueError("value must have a minimum value of 0")
        return value
    if kind == "list":
        return [part for part in re.split(r"[,;\s]+", raw) if part]
    return raw


def validate_params(route: Route, raw_params: dict[str, str], args: dict[str, str]) -> dict[str, Any]:
    """Check query/body parameters against the route's schema, collecting every error like PVE."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, raw in raw_params.items():
        if key == "_dc":
            continue
        if key in args:
            if raw != args[key]:
                errors[key] = "duplicate parameter (already defined in URI) with conflicting values!"
            continue
        kind = route.params.get(key)
        if kind is None:
            errors[key] = _NOT_IN_SCHEMA
            continue
        try:
            out[key] = _convert(kind, raw)
        except ValueError as exc:
            errors[key] = str(exc)
    if "vmid" in args:
        raw = args["vmid"]
        if not re.fullmatch(r"[+-]?\d+", raw):
            errors["vmid"] = f"type check ('integer') failed - got '{raw}'"
        elif int(raw) < 100:
            errors["vmid"] = "value must have a minimum value of 100"
        elif int(raw) > 999_999_999:
            errors["vmid"] = "value must have a maximum value of 999999999"
        else:
            out["vmid"] = int(raw)
    if errors:
        raise param_error(errors)
    return out
