"""Request counters per templated path, so tests can assert how many API calls a scrape makes."""

from __future__ import annotations

from collections import Counter
from typing import Any


class RequestStats:
    """Counts `/api2` requests by `METHOD /templated/{path}` and by the `{node}` they name."""

    def __init__(self) -> None:
        self.total = 0
        self.requests: Counter[str] = Counter()
        self.by_node: Counter[str] = Counter()

    def record(self, method: str, template: str, node: str | None) -> None:
        self.total += 1
        self.requests[f"{method} {template}"] += 1
        if node:
            self.by_node[node] += 1

    def reset(self) -> None:
        self.total = 0
        self.requests.clear()
        self.by_node.clear()

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "requests": dict(self.requests), "by_node": dict(self.by_node)}
