"""Print the README's metric table from a real cycle against the simulator (names, type, labels, help).

    python tools/metrics_table.py > /tmp/table.md
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.simharness import cycle, sim_daemon

PPE = set((Path(__file__).resolve().parent.parent / "tests" / "ppe_metric_names.txt").read_text().split())


async def main() -> None:
    async with sim_daemon(clusters=(("lab", 4, 6),), sim_kw={"ceph": True}) as (daemon, _, _):
        await cycle(daemon)
        fams = {f.name: (f, True) for f in daemon.store.get("lab").families}
        for f in daemon.stats.families():
            fams.setdefault(f.name, (f, False))
    print("| metric | type | labels (besides `cluster`) | source | meaning |")
    print("|---|---|---|---|---|")
    for name in sorted(fams):
        f, _data = fams[name]
        labels = ", ".join(f"`{lb}`" for lb in f.labels if lb != "cluster") or "–"
        origin = "PPE" if name in PPE else ("self" if name.startswith("pve_exporter_") else "new")
        print(f"| `{name}` | {f.kind} | {labels} | {origin} | {f.help.replace('|', '/')} |")


if __name__ == "__main__":
    asyncio.run(main())
