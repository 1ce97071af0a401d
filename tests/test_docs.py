"""The README stays true: every metric family the daemon exposes is in its table, every config key
of the settings models is documented somewhere in README or docs/."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from pve_exporter import settings
from tests.monitoring import exposition, parse_exposition

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = README + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))


def test_every_exposed_family_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `([a-z0-9_:]+)` \|", README, flags=re.M))
    exposed = set()
    for sample in parse_exposition(exposition()):
        base = re.sub(r"_(sum|count|bucket)$", "", sample)
        exposed.add(base)
    missing = sorted(n for n in exposed if n not in documented)
    assert not missing, f"add to README (python tools/metrics_table.py): {missing}"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        out.add(key)
        ann = field.annotation
        for cand in getattr(ann, "__args__", (ann,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                out |= _keys(cand)
            for inner in getattr(cand, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out |= _keys(inner)
    return out


def test_every_config_key_is_documented():
    missing = sorted(k for k in _keys(settings.Settings) if not re.search(rf"\b{re.escape(k)}\b", DOCS))
    assert not missing, f"document these config keys in README or docs/: {missing}"


def test_readme_starts_with_the_two_commands():
    head = README.split("## Running it", 1)[0]
    assert "make demo" in head and "make test" in head
