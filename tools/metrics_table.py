"""Print the README's metric table from real cycles against the simulator (names, type, labels, help).

    python tools/metrics_table.py > /tmp/table.md

Two runs: the alert/dashboard tests' exposition (InfluxDB output and control API on, one
collector failing) and one with Ceph and the opt-in guest-agent collector, so every family shows.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pve_exporter.settings import Settings  # noqa: E402
from tests.monitoring import exposition  # noqa: E402
from tests.simharness import cycle, sim_daemon  # noqa: E402

PPE = set((ROOT / "tests" / "ppe_metric_names.txt").read_text().split())
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


async def extra_exposition() -> str:
    async with sim_daemon(clusters=(("lab", 3, 6),), sim_kw={"ceph": True}) as (daemon, _, _):
        daemon.settings = Settings(**{**daemon.settings.model_dump(), "collect": {"guest_agent_filesystems": True}})
        daemon.clusters["lab"].poller.collectors = daemon._collectors()
        await cycle(daemon)
        daemon.clock.t += 15
        await cycle(daemon)
        return daemon.metrics_body(["lab"], False).decode()


def families(text: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, help_ = line.split(" ", 3)
            out.setdefault(name, {"help": help_, "type": "untyped", "labels": set()})
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out.setdefault(name, {"help": "", "labels": set()})["type"] = kind
        elif line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            if name in out:
                out[name]["labels"].update(_LABEL.findall(line.split("{", 1)[1]) if "{" in line else [])
    return out


def main() -> None:
    fams = families(exposition())
    for name, f in families(asyncio.run(extra_exposition())).items():
        fams.setdefault(name, f)
    print("| metric | type | labels (besides `cluster`) | source | meaning |")
    print("|---|---|---|---|---|")
    for name in sorted(fams):
        f = fams[name]
        labels = ", ".join(f"`{lb}`" for lb in sorted(f["labels"]) if lb != "cluster") or "–"
        origin = "PPE" if name in PPE else ("self" if name.startswith("pve_exporter_") else "new")
        print(f"| `{name}` | {f['type']} | {labels} | {origin} | {f['help'].replace('|', '/')} |")


if __name__ == "__main__":
    main()
