"""What a Grafana dashboard or a Prometheus rule file asks of an exporter: metric names and labels.

A small PromQL lexer, not a full parser: it finds every selector (`name{label="…"}`, bare names,
`{__name__="…"}`), every label named in `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`,
in `label_values(…)`/`label_replace(…)`-style calls, in Grafana legends (`{{label}}`) and in alert
templates (`$labels.x`). Grafana variables (`$x`, `${x}`, `[[x]]`, `$__rate_interval`) are read as
placeholders. Pure functions; the readers raise `RefsError` for input they cannot read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}) | GROUPING
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile", "limitk", "limit_ratio"})  # fmt: skip


def _label_arg(fn: str, arg: int) -> str | None:
    """Whether string argument `arg` of `fn` names a label the data must have ("need") or one the
    query makes ("made"): label_replace(v, made, repl, need, re), label_join(v, made, sep, need…),
    count_values(made, v), sort_by_label(v, need…)."""
    if fn == "label_replace":
        return {1: "made", 3: "need"}.get(arg)
    if fn == "label_join":
        return "made" if arg == 1 else "need" if arg >= 3 else None
    if fn == "count_values":
        return "made" if arg == 0 else None
    if fn in ("sort_by_label", "sort_by_label_desc"):
        return "need" if arg >= 1 else None
    return None


_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\[\[[^\]]*\]\]|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[a-z]+\d*)*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:.]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[{}()\[\],=<>+\-*/%^@:])
  | (?P<space>\s+|\#[^\n]*)
  | (?P<other>.)
    """,
    re.VERBOSE,
)


class RefsError(ValueError):
    """Input that is not a readable dashboard or rule file."""


@dataclass
class ExprRefs:
    """Metric names (with the labels matched on each), and labels named outside a selector."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    name_patterns: list[str] = field(default_factory=list)  # {__name__=~"…"}
    labels: set[str] = field(default_factory=set)  # by/on/…, label_* calls, legends, $labels.x, bare {x="…"}
    made: set[str] = field(default_factory=set)  # labels the query itself creates (label_replace, count_values)

    def merge(self, other: ExprRefs) -> None:
        for m, lbls in other.metrics.items():
            self.metrics.setdefault(m, set()).update(lbls)
        self.name_patterns.extend(other.name_patterns)
        self.labels |= other.labels
        self.made |= other.made


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup or "other"
        if kind != "space":
            out.append((kind, m.group()))
    return out


def _unquote(s: str) -> str:
    body = s[1:-1]
    return body if s[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def expr_refs(expr: str) -> ExprRefs:
    """Metric names and labels one PromQL expression uses (Grafana variables allowed)."""
    refs = ExprRefs()
    toks = _tokens(expr)
    i, n = 0, len(toks)
    depth_range = 0
    call_stack: list[tuple[str, int]] = []  # (function name, argument index) per open paren
    while i < n:
        kind, val = toks[i]
        nxt = toks[i + 1] if i + 1 < n else ("", "")
        if kind == "op" and val == "[":
            depth_range += 1
        elif kind == "op" and val == "]":
            depth_range = max(0, depth_range - 1)
        elif depth_range:
            pass  # durations, subquery steps
        elif kind == "ident" and val.lower() in GROUPING and nxt == ("op", "("):
            j = i + 2
            while j < n and toks[j] != ("op", ")"):
                if toks[j][0] == "ident":
                    refs.labels.add(toks[j][1])
                j += 1
            i = j
        elif kind == "ident" and nxt == ("op", "("):
            call_stack.append((val, 0))
            i += 1
        elif kind == "op" and val == "(":
            call_stack.append(("", 0))
        elif kind == "op" and val == ")":
            if call_stack:
                call_stack.pop()
        elif kind == "op" and val == "," and call_stack:
            fn, arg = call_stack[-1]
            call_stack[-1] = (fn, arg + 1)
        elif kind == "string" and call_stack:
            role = _label_arg(*call_stack[-1])
            label = _unquote(val)
            if role is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
                (refs.labels if role == "need" else refs.made).add(label)
        elif kind == "ident" and val.lower() in AGGREGATIONS and nxt[0] == "ident" and nxt[1].lower() in GROUPING:
            pass  # `sum by (x) (…)`: the grouping is read next
        elif kind == "op" and val == "{":
            i = _matchers(toks, i, None, refs)
        elif kind == "ident" and val.lower() not in KEYWORDS and "." not in val:
            if nxt == ("op", "{"):
                refs.metrics.setdefault(val, set())
                i = _matchers(toks, i + 1, val, refs)
            else:
                refs.metrics.setdefault(val, set())
        i += 1
    return refs


def _matchers(toks: list[tuple[str, str]], i: int, metric: str | None, refs: ExprRefs) -> int:
    """Read `{label op "value", …}` starting at the `{` at i; returns the index of the `}`."""
    j = i + 1
    while j < len(toks) and toks[j] != ("op", "}"):
        kind, val = toks[j]
        if kind in ("ident", "string") and j + 2 < len(toks) and toks[j + 1][1] in ("=", "!=", "=~", "!~"):
            label = _unquote(val) if kind == "string" else val
            op, (vkind, value) = toks[j + 1][1], toks[j + 2]
            if label == "__name__" and vkind == "string":
                name = _unquote(value)
                if op == "=":
                    refs.metrics.setdefault(name, set())
                    metric = metric or name
                elif op == "=~":
                    refs.name_patterns.append(name)
            elif metric is not None:
                refs.metrics.setdefault(metric, set()).add(label)
            else:
                refs.labels.add(label)
            j += 3
            continue
        j += 1
    return j


# -- Grafana dashboards -------------------------------------------------------------------------

_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((.*)\)\s*$", re.S)
_METRICS_VAR = re.compile(r"^\s*metrics\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Use:
    """One expression and where it is used (a panel title, a variable, an alert)."""

    where: str
    refs: ExprRefs


def _variable_refs(query: str) -> ExprRefs:
    if m := _LABEL_VALUES.match(query):
        inner = m.group(1)
        head, _, label = inner.rpartition(",")
        refs = expr_refs(head) if head.strip() else ExprRefs()
        label = label.strip()
        if head.strip() and len(refs.metrics) == 1 and not refs.labels:
            refs.metrics[next(iter(refs.metrics))].add(label)
        else:
            refs.labels.add(label)
        return refs
    if m := _QUERY_RESULT.match(query):
        return expr_refs(m.group(1))
    if _METRICS_VAR.match(query):
        return ExprRefs()  # a regex over metric names, nothing to require
    return expr_refs(query)


def _walk(node: Any, title: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        here = str(node.get("title") or title)
        yield here, node
        for v in node.values():
            yield from _walk(v, here)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, title)


def dashboard_uses(doc: Any) -> list[Use]:
    """Every PromQL query of a dashboard: panel targets (with legends) and query variables."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("panels", doc.get("rows", [])), list):
        raise RefsError("not a Grafana dashboard (no panels list)")
    uses: list[Use] = []
    variables = doc.get("templating", {}).get("list", []) if isinstance(doc.get("templating"), Mapping) else []
    for var in variables if isinstance(variables, list) else []:
        if not isinstance(var, Mapping) or var.get("type") != "query":
            continue
        q = var.get("query")
        if isinstance(q, Mapping):
            q = q.get("query")
        if isinstance(q, str) and q.strip():
            uses.append(Use(f"variable ${var.get('name', '?')}", _variable_refs(q)))
    for title, node in _walk({k: v for k, v in doc.items() if k != "templating"}, "dashboard"):
        expr = node.get("expr")
        if isinstance(expr, str) and expr.strip():
            refs = expr_refs(expr)
            legend = node.get("legendFormat")
            if isinstance(legend, str):
                refs.labels |= set(_LEGEND.findall(legend))
            uses.append(Use(f"panel {title!r}", refs))
    return uses


def read_dashboard(text: str) -> list[Use]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RefsError(f"not JSON: {exc}") from exc
    if isinstance(doc, Mapping) and isinstance(doc.get("dashboard"), Mapping):
        doc = doc["dashboard"]  # the API's {"dashboard": …, "meta": …} export
    return dashboard_uses(doc)


# -- Prometheus rule files ----------------------------------------------------------------------

_TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)|\.Labels\.([A-Za-z_][A-Za-z0-9_]*)")


def rule_uses(doc: Any) -> list[Use]:
    """Every rule's expr, plus labels its annotations and labels templates read (`$labels.x`)."""
    if isinstance(doc, Mapping) and isinstance(doc.get("spec"), Mapping):
        doc = doc["spec"]  # a PrometheusRule resource
    groups = doc.get("groups") if isinstance(doc, Mapping) else None
    if not isinstance(groups, list):
        raise RefsError("not a Prometheus rule file (no groups list)")
    uses: list[Use] = []
    for g in groups:
        if not isinstance(g, Mapping) or not isinstance(g.get("rules", []), list):
            raise RefsError("a rule group without a rules list")
        for r in g.get("rules", []):
            if not isinstance(r, Mapping) or not isinstance(r.get("expr"), str | int | float):
                raise RefsError(f"a rule without expr in group {g.get('name')!r}")
            name = r.get("alert") or r.get("record") or "?"
            refs = expr_refs(str(r["expr"]))
            for section in ("labels", "annotations"):
                for v in (r.get(section) or {}).values():
                    for a, b in _TEMPLATE_LABEL.findall(str(v)):
                        refs.labels.add(a or b)
            uses.append(Use(f"{'alert' if r.get('alert') else 'rule'} {name!r}", refs))
    return uses


def read_rules(text: str) -> list[Use]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RefsError(f"not YAML: {exc}") from exc
    return rule_uses(doc)
