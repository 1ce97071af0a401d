"""Injected faults: which requests they hit and how often (the HTTP effect lives in app.py).

A fault matches on method, a path prefix under `/api2/json` and the `{node}` in the path, and
can be limited to the next `count` matching requests, after which it removes itself.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("node_down", "http_error", "timeout", "slow", "auth_fail", "forbidden")
# Statuses whose real counterpart is a pveproxy relay failure: empty body, errno text as reason.
PROXY_FAILURE_REASONS = {
    595: "No route to host",
    596: "Connection timed out",
    597: "Connection reset by peer",
    599: "Connection timed out",
}


@dataclass(slots=True)
class Fault:
    id: str
    kind: str
    node: str | None = None
    path: str | None = None
    method: str | None = None
    status: int = 500
    message: str | None = None
    latency_ms: float = 0.0
    count: int | None = None  # remaining matches; None = until removed

    def matches(self, method: str, rel_path: str, node: str | None) -> bool:
        if self.kind == "node_down":
            return False  # acts through the model, not per request
        if self.method and self.method.upper() != method:
            return False
        if self.node and self.node != node:
            return False
        if self.path:
            prefix = self.path.rstrip("/") or "/"
            if prefix != "/" and rel_path != prefix and not rel_path.startswith(prefix + "/"):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if self.kind != "http_error":
            d.pop("status", None)
        if self.kind != "slow":
            d.pop("latency_ms", None)
        return d


class FaultError(ValueError):
    """An invalid fault description (HTTP 400 on the control API)."""


class FaultSet:
    """The active faults of one cluster, in insertion order."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._faults)

    def list(self) -> list[Fault]:
        return list(self._faults.values())

    def get(self, fault_id: str) -> Fault | None:
        return self._faults.get(fault_id)

    def add(
        self,
        kind: str,
        *,
        node: str | None = None,
        path: str | None = None,
        method: str | None = None,
        status: int | None = None,
        message: str | None = None,
        latency_ms: float | None = None,
        count: int | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise FaultError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if kind == "node_down" and not node:
            raise FaultError("node_down needs 'node'")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise FaultError("'path' must start with '/' (a path under /api2/json)")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not 400 <= status <= 599):
            raise FaultError("'status' must be an integer from 400 to 599")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise FaultError("'count' must be a positive integer")
        if latency_ms is not None and (isinstance(latency_ms, bool)
                                       or not isinstance(latency_ms, int | float) or latency_ms < 0):
            raise FaultError("'latency_ms' must be a non-negative number")
        if kind == "slow" and not latency_ms:
            raise FaultError("slow needs 'latency_ms'")
        if path is not None and (path == "/api2/json" or path.startswith("/api2/json/")):
            path = path[len("/api2/json"):] or "/"
        fault = Fault(
            id=f"f{next(self._ids)}",
            kind=kind,
            node=node,
            path=path,
            method=method.upper() if method else None,
            status=status if status is not None else 500,
            message=message,
            latency_ms=float(latency_ms or 0.0),
            count=count,
        )
        self._faults[fault.id] = fault
        return fault

    def remove(self, fault_id: str) -> Fault | None:
        return self._faults.pop(fault_id, None)

    def clear(self) -> list[Fault]:
        removed = list(self._faults.values())
        self._faults.clear()
        return removed

    def take(self, method: str, rel_path: str, node: str | None) -> list[Fault]:
        """The faults to apply to this request: every `slow` one plus the first other one.

        Only applied faults count against their `count`.
        """
        hit = [f for f in self._faults.values() if f.matches(method, rel_path, node)]
        terminal = next((f for f in hit if f.kind != "slow"), None)
        hit = [f for f in hit if f.kind == "slow"] + ([terminal] if terminal else [])
        for fault in hit:
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    del self._faults[fault.id]
        return hit
