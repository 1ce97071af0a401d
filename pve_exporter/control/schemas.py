"""Request bodies of the control API (pydantic, strict, unknown fields rejected) and their limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

VMID_MIN, VMID_MAX = 100, 999_999_999
MAX_SELECTOR_VMIDS = 5_000
MAX_SELECTOR_TAGS = 32

Vmid = Annotated[int, Field(ge=VMID_MIN, le=VMID_MAX)]
Timeout = Annotated[float, Field(ge=1, le=3600, description="Seconds the action may take before it is timed_out")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ActionBody(Body):
    """`POST /api/v1/clusters/{cluster}/guests/{vmid}/{action}`; an empty body means the defaults."""

    force: bool = Field(default=False, description="stop: hard stop instead of shutdown; restart: reset "
                                                   "(qemu) or stop+start (lxc) instead of reboot")
    timeout_seconds: Timeout | None = Field(default=None, description="Default: control.default_timeout_seconds")


class Selector(Body):
    """Which guests a bulk action is for; every given criterion must match (tags: all of them)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra={"minProperties": 1})

    cluster: str | None = Field(default=None, min_length=1, max_length=128)
    node: str | None = Field(default=None, min_length=1, max_length=128)
    type: Literal["qemu", "lxc"] | None = None
    vmids: list[Vmid] | None = Field(default=None, min_length=1, max_length=MAX_SELECTOR_VMIDS)
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=MAX_SELECTOR_TAGS
    )

    @field_validator("tags")
    @classmethod
    def _lower(cls, v: list[str] | None) -> list[str] | None:
        return [t.lower() for t in v] if v is not None else None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("cluster", "node", "type", "vmids", "tags"))


class BulkBody(Body):
    """`POST /api/v1/actions`."""

    action: Literal["start", "stop", "restart"]
    selector: Selector
    force: bool = False
    dry_run: bool = Field(default=False, description="List what would be done; change nothing")
    concurrency: int = Field(default=4, ge=1, le=64, description="Actions at once (≤ control.max_bulk_concurrency)")
    timeout_seconds: Timeout | None = None
