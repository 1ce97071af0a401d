"""`GET /cluster/ha/status/current` (slow tier, one call per cluster) → HA resource counts and manager state.

    pvesh get /cluster/ha/status/current
    # HELP pve_ha_resources HA resources by their current state
    pve_ha_resources{cluster="prod",state="started"} 12
    pve_ha_manager_info{cluster="prod",node="pve2",state="active"} 1

pve-ha-manager `src/PVE/API2/HA/Status.pm`: a `quorum` entry first (quorate int 0/1), a `master`
entry only while a CRM master exists (status `"<node> (<state>, <ctime>)"`), one `service`
entry per HA resource with its verbose `state`. Per-guest HA state stays in `pve_ha_state`
(from /cluster/resources, fast tier); this adds the cluster view.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import flag, text

HA_CURRENT = Request("/cluster/ha/status/current")
# Always exported (0 when none), so `pve_ha_resources{state="error"} > 0` has a series to compare.
STATES = ("started", "stopped", "disabled", "ignored", "error", "fence", "recovery")
_MASTER_STATE = re.compile(r"^\S+ \(([^,()]+)")


def parse_ha_status(entries: Any) -> list[Family]:
    if not isinstance(entries, list):
        return []
    g = "gauge"
    resources = FamilyBuilder("pve_ha_resources", g, "HA resources by their current state", ("state",))
    quorate = FamilyBuilder("pve_ha_quorate", g, "1 if the node answering the HA status is quorate", ())
    manager = FamilyBuilder(
        "pve_ha_manager_info", g, "The HA cluster resource manager's master node and its state (1)", ("node", "state")
    )
    counts: Counter[str] = Counter()
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        kind = e.get("type")
        if kind == "quorum":
            q = flag(e.get("quorate"))
            quorate.add((), None if q is None else float(q))
        elif kind == "master":
            m = _MASTER_STATE.match(text(e.get("status")) or "")
            manager.add((text(e.get("node")) or "", m.group(1).strip() if m else ""), 1.0)
        elif kind == "service":
            counts[text(e.get("state")) or "unknown"] += 1
    for state in STATES:
        resources.add((state,), float(counts.pop(state, 0)))
    for state in sorted(counts):
        resources.add((state,), float(counts[state]))
    return build_all((resources, quorate, manager))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [HA_CURRENT]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_ha_status(payloads.get(HA_CURRENT.key))


COLLECTOR = Collector("ha", "slow", _plan, _parse)
