"""Snapshot → InfluxDB line protocol in PVE's own External Metric Server schema (pure, no I/O).

pvestatd pushes the Perl hashes it already has; `build_influxdb_payload` in pve-manager's
`PVE/Status/InfluxDB.pm` turns top-level scalars into measurement `system`, each nested hash
into a measurement named after its key, and a second nesting level into an `instance` tag. This
module rebuilds those hashes from the API payloads of one snapshot and encodes them the same way:

    system,object=qemu,vmid=100,nodename=pve1,host=web01,cluster=prod cpu=0.021,name="web01",... 1760000010
    nics,object=qemu,vmid=100,nodename=pve1,host=web01,cluster=prod,instance=tap100i0 netin=1,netout=2 1760000010

What PVE does and this does too: keys sorted; numbers (and numeric strings) written as they are,
without the `i` suffix, so InfluxDB stores floats; NaN/Inf dropped; `name` and `tags` always
quoted (a guest named `66601` stays a string); empty values, booleans and arrays skipped; `vmid`
only as a tag. What it does better: every tag and key is escaped per line protocol (PVE escapes
only whitespace), string fields escape backslashes too, and every line carries `cluster`.
Timestamps are the snapshot's collection time in whole seconds (write with precision=s).

Sources, all fetched in the snapshot's own cycle (`Snapshot.fresh_payloads`): `/nodes/{n}/status`
(node system/cpustat/memory/blockstat), `/nodes/{n}/qemu?full=1` (qemu system, nics, blockstat,
ballooninfo, proxmox-support), `/nodes/{n}/lxc`, and `/nodes/{n}/storage` — or, for a node whose
storage list was not fetched, that node's storage rows of `/cluster/resources`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from pve_exporter.collect.node_status import node_payloads
from pve_exporter.collect.zfs_arc import arc_sizes
from pve_exporter.snapshot import Snapshot

__all__ = ["format_value", "node_hash", "snapshot_to_lines", "storage_hashes", "tag_escape"]

_TAG_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_MEAS_ESC = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_STR_ESC = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
# Perl's looks_like_number, which decides in PVE whether a string is written as a number.
_NUMERIC_RE = r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)\s*"
_NUMERIC = re.compile(_NUMERIC_RE, re.IGNORECASE)
_LP_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # written as-is, like PVE ("0.00" stays "0.00")
_NUMERIC_START = frozenset("0123456789+-. \t\n\r\fiInN")
_ALWAYS_QUOTED = frozenset(("name", "tags"))  # pve-manager fix #3815 and "always quote tags"
_GUEST_EXCLUDED = frozenset(("vmid",))  # a tag, never a field (pve-manager fix #3440)
_STORAGE_FIELDS = ("type", "total", "avail", "used", "shared", "content", "active", "enabled")  # storage_info()
_SKIPPED_TYPES = (type(None), bool, list, tuple)
_JUST_DICT = {dict}

_field_keys: dict[str, str] = {}
_measurements: dict[str, str] = {}


def tag_escape(value: str) -> str:
    """Escape a tag key or value (also used for field keys): comma, `=`, space, control whitespace."""
    out = value.translate(_TAG_ESC)
    if out.endswith("\\"):
        out += " "  # as influxdb-client does: a trailing backslash would escape the separator after it
    return out


class _TagMemo(dict[str, str]):
    """Tag value → escaped form, for values that repeat (instances like scsi0, node names)."""

    __slots__ = ()

    def __missing__(self, value: str) -> str:
        out = tag_escape(value)
        if len(self) >= 65536:
            self.clear()
        self[value] = out
        return out


_tag_memo = _TagMemo()


def _field_key(key: str) -> str:
    fk = _field_keys.get(key)
    if fk is None:
        fk = tag_escape(key) + "="
        if len(_field_keys) < 65536:  # keys come from PVE's hashes: a small, fixed set in practice
            _field_keys[key] = fk
    return fk


def _measurement(name: str) -> str:
    m = _measurements.get(name)
    if m is None:
        m = name.translate(_MEAS_ESC)
        if len(_measurements) < 4096:
            _measurements[name] = m
    return m


def _fmt_float(v: float) -> str | None:
    if v - v != 0.0:  # NaN or ±Inf: InfluxDB cannot store them, PVE drops them
        return None
    return repr(v)


def _numeric_string(s: str) -> str | None:
    """A string PVE would write as a number; kept as written when every InfluxDB parser reads it."""
    s = s.strip()
    if _LP_NUMBER.fullmatch(s):
        return s
    return _fmt_float(float(s))


def _quote(s: str) -> str:
    return '"' + s.translate(_STR_ESC) + '"'


def format_value(key: str, value: Any) -> str | None:
    """One field value as PVE's `prepare_value` writes it; None when the field is skipped."""
    t = type(value)
    if key in _ALWAYS_QUOTED:
        if t is str:
            return _quote(value) if value else None
        if t is int:
            return '"' + str(value) + '"'
        if t is float:
            return '"' + (str(int(value)) if value.is_integer() else repr(value)) + '"'
        return None
    if t is int:
        return str(value)
    if t is float:
        return _fmt_float(value)
    if t is str:
        if not value:
            return None
        if value[0] in _NUMERIC_START and _NUMERIC.fullmatch(value):
            return _numeric_string(value)
        return _quote(value)
    return None  # None, booleans, lists (and dicts, handled by the caller)


def _flatten(data: Mapping[str, Any], into: list[tuple[str, str]]) -> None:
    """PVE's get_recursive_values: hashes nested deeper than measurement/instance join the line."""
    for key in sorted(data):
        v = data[key]
        if type(v) is dict:
            _flatten(v, into)
        else:
            s = format_value(key, v)
            if s is not None:
                into.append((key, s))


def _encode_generic(
    out: list[str],
    data: Mapping[str, Any],
    tags: str,
    ts: str,
    excluded: frozenset[str] | None,
    measurement: str | None = None,
    instance: str | None = None,
    *,
    own_line_only: bool = False,
) -> None:
    """`build_influxdb_payload`, field by field: the reference the fast path must match byte for byte."""
    pairs: list[tuple[str, str]] = []
    deeper: list[tuple[str, str]] = []
    for key in sorted(data):
        if excluded is not None and key in excluded:
            continue
        v = data[key]
        if isinstance(v, Mapping):
            if own_line_only and instance is None:
                continue  # the fast path has written the nested lines already
            if measurement is None:
                _encode(out, v, tags, ts, excluded, key)
            elif instance is None:
                _encode(out, v, tags, ts, excluded, measurement, key)
            else:
                _flatten(v, deeper)
            continue
        s = format_value(key, v)
        if s is not None:
            pairs.append((key, s))
    if deeper:  # rare (nothing in PVE's hashes today): the first value of a repeated key wins
        have = {key for key, _ in pairs}
        for key, s in deeper:
            if key not in have:
                have.add(key)
                pairs.append((key, s))
        pairs.sort(key=lambda p: p[0])
    if pairs:
        _line(out, measurement, instance, tags, ",".join([_field_key(k) + s for k, s in pairs]), ts)


def _line(out: list[str], measurement: str | None, instance: str | None, tags: str, fields: str, ts: str) -> None:
    m = _measurement(measurement) if measurement is not None else "system"
    if instance is not None:
        out.append(f"{m},{tags},instance={tag_escape(instance)} {fields} {ts}")
    else:
        out.append(f"{m},{tags} {fields} {ts}")


class _StringMemo(dict[str, str | None]):
    """String value → its line-protocol form (None: skip the field); values repeat across guests."""

    __slots__ = ("quoted",)

    def __init__(self, quoted: bool) -> None:
        super().__init__()
        self.quoted = quoted

    def __missing__(self, value: str) -> str | None:
        if self.quoted:
            out = _quote(value) if value else None
        else:
            out = format_value("", value)
        if len(self) >= 65536:  # names are unique per guest: keep the memo bounded
            self.clear()
        self[value] = out
        return out


_STRINGS = _StringMemo(quoted=False)
_QUOTED = _StringMemo(quoted=True)


class _Plan:
    """How to encode every hash with one exact key order and value types: one `%` format per line.

    PVE's hashes of one kind (a running VM's status, a QMP blockstat, ...) share their keys and
    types, so sorting, skipping, key escaping and quoting are decided once per shape, and a line
    is one C-level `fmt % values`. String values go through a memo (they repeat: `running`,
    `pc-q35-9.2+pve1`, ...). An empty string or a NaN sends the hash down the generic path.
    `apply` is a small function made for the shape (see `_compile`): fetch, check, format, append.
    """

    __slots__ = ("apply", "field_keys", "fields", "float_keys", "floats", "fmt", "nest", "nested", "prefix", "row",
                 "shape", "specs", "strings")  # fmt: skip

    def __init__(
        self, keys: tuple[str, ...], types: tuple[type, ...], excluded: frozenset[str] | None, measurement: str | None
    ) -> None:
        nested, fields, floats, parts = [], [], [], []
        strings: list[tuple[int, _StringMemo]] = []
        self.shape = tuple(sorted(zip(keys, types, strict=True), key=itemgetter(0)))  # (key, type), by key
        for key, t in self.shape:
            if excluded is not None and key in excluded:
                continue
            if t is dict:
                nested.append(key)
                continue
            if t in _SKIPPED_TYPES:
                continue
            fk = _field_key(key).replace("%", "%%")
            if t is str:
                strings.append((len(fields), _QUOTED if key in _ALWAYS_QUOTED else _STRINGS))
                parts.append(fk + "%s")
            elif t is int and key not in _ALWAYS_QUOTED:
                parts.append(fk + "%s")  # str(int): faster than %d, same digits (bools never get here)
            elif t is int:
                parts.append(fk + '"%s"')
            elif t is float and key not in _ALWAYS_QUOTED:
                floats.append(key)
                parts.append(fk + "%s")  # str(float) is repr(float): the shortest exact form
            else:
                raise _Unplannable
            fields.append(key)
        self.nested = tuple(nested)
        self.field_keys = tuple(fields)
        self.float_keys = frozenset(floats)
        self.fields = _getter(fields)
        self.strings = tuple(strings)
        self.floats = _getter(floats)
        self.fmt = ",".join(parts)
        self.prefix = (_measurement(measurement) if measurement is not None else "system") + ","
        self.apply = _compile(self, fields, floats) if fields else None
        self.specs: tuple[_Spec, ...] = ()  # set by _Ctx.plan_for for top-level plans
        self.nest: Callable[[dict[str, Any], list[str], str, str], None] | None = None  # _compile_nest(specs)
        self.row: _Apply | None = None  # _compile_row: the whole hash, nested lines included (top level)


class _Spec:
    """A top-level nested hash as the first row of a plan had it: its key, and the shape and plan of
    its lines (kind INSTANCES: every value a hash of `keys`/`types`, one line each, like nics and
    blockstat; kind MEASUREMENT: one line of scalars, like ballooninfo). A row whose nested hash has
    another shape takes the general path for that hash, so the output never depends on the spec."""

    __slots__ = ("apply", "ctx", "key", "keys", "kind", "measurement", "plan", "types")

    GENERAL, INSTANCES, MEASUREMENT = 0, 1, 2

    def __init__(self, key: str, parent: _Ctx, sample: Any) -> None:
        self.key = key
        self.measurement = key
        self.kind = _Spec.GENERAL
        self.keys: tuple[str, ...] = ()
        self.types: tuple[type, ...] = ()
        self.apply: _Apply | None = None
        self.plan: _Plan | None = None
        self.ctx = parent.child(key)
        if type(sample) is not dict or not sample:
            return
        vals = list(sample.values())
        if set(map(type, vals)) == _JUST_DICT:
            leaf = vals[0]
            kind, ctx = _Spec.INSTANCES, self.ctx.instance()
        elif dict not in set(map(type, vals)):
            leaf = sample
            kind, ctx = _Spec.MEASUREMENT, self.ctx
        else:
            return
        keys, types = tuple(leaf), tuple(map(type, leaf.values()))
        if kind == _Spec.INSTANCES and dict in types:
            return  # flattened below an instance: the generic path
        plan = ctx.plan_for(keys, types)
        if plan is None or plan.nested or plan.apply is None:
            return
        self.kind, self.keys, self.types, self.apply, self.plan = kind, keys, types, plan.apply, plan


_Apply = Callable[[Mapping[str, Any], list[str], str, str], bool]


def _compile(plan: _Plan, fields: list[str], floats: list[str]) -> _Apply:
    """The plan as straight-line Python: one C-level fetch of every field, a `v - v == 0.0` check per
    float (False for NaN and ±Inf), a memo lookup per string, one `%` and an append. Returns False
    (nothing appended) when a value sends the line down the generic path. The source names only
    local variables; keys, memos and the format are bound as constants, never pasted into the code."""
    n = len(fields)
    args = [f"a{i}" for i in range(n)]
    consts: dict[str, object] = {"FMT": plan.prefix.replace("%", "%%") + "%s " + plan.fmt + " %s"}
    code = ["def apply(d, out, tags, ts):"]
    if n == 1:
        consts["K"] = fields[0]
        code.append("    a0 = d[K]")
    else:
        consts["G"] = itemgetter(*fields)
        code.append(f"    {', '.join(args)} = G(d)")
    at = {key: i for i, key in enumerate(fields)}
    if floats:
        code.append(f"    if not ({' and '.join(f'a{at[k]} - a{at[k]} == 0.0' for k in floats)}):")
        code.append("        return False")
    for i, memo in plan.strings:
        name = "Q" if memo is _QUOTED else "S"
        consts[name] = memo
        code.append(f"    a{i} = {name}[a{i}]")
        code.append(f"    if a{i} is None:")
        code.append("        return False")
    code.append(f"    out.append(FMT % (tags, {', '.join(args)}, ts))")
    code.append("    return True")
    exec("\n".join(code), consts)  # generated from a fixed template (see the docstring)
    fn = consts["apply"]
    assert callable(fn)
    return fn  # type: ignore[return-value]


class _Unplannable(Exception):
    pass


def _getter(keys: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]] | None:
    if not keys:
        return None
    if len(keys) == 1:
        k = keys[0]
        return lambda d: (d[k],)
    return itemgetter(*keys)


class _Ctx:
    """Where a hash sits (excluded keys, measurement, below an instance or not) and its plans by
    shape. The plan used last is checked first: a node's guest list repeats a few shapes, and two
    tuple comparisons cost less than hashing a (keys, types) key."""

    __slots__ = ("below", "children", "excluded", "fast", "inst", "last", "measurement", "plans")

    def __init__(self, excluded: frozenset[str] | None, measurement: str | None, below: bool) -> None:
        self.excluded = excluded
        self.measurement = measurement
        self.below = below
        self.plans: dict[tuple[tuple[str, ...], tuple[type, ...]], _Plan | None] = {}
        # (keys, types, plan) used last: one attribute, so threads encoding at once never mix two
        self.last: tuple[tuple[str, ...] | None, tuple[type, ...] | None, _Plan | None] = (None, None, None)
        self.children: dict[str, _Ctx] = {}
        self.inst: _Ctx | None = None
        # top level: number of keys → the row function of the shape seen last with that many keys
        self.fast: dict[int, _Apply] = {}

    def child(self, measurement: str) -> _Ctx:
        """A nested hash: its own measurement (top level) or an instance of ours (measurement level)."""
        c = self.children.get(measurement)
        if c is None:
            if len(self.children) >= 4096:
                self.children.clear()
            c = self.children[measurement] = _Ctx(self.excluded, measurement, False)
        return c

    def instance(self) -> _Ctx:
        if self.inst is None:
            self.inst = _Ctx(self.excluded, self.measurement, True)
        return self.inst

    def plan_for(
        self, keys: tuple[str, ...], types: tuple[type, ...], sample: Mapping[str, Any] | None = None
    ) -> _Plan | None:
        last = self.last
        if types == last[1] and keys == last[0]:
            return last[2]
        pkey = (keys, types)
        plan = self.plans.get(pkey, _NO_PLAN)
        if plan is _NO_PLAN:
            try:
                plan = _Plan(keys, types, self.excluded, self.measurement)
                if self.below and plan.nested:
                    plan = None  # hashes below an instance are flattened: the generic path does that
            except _Unplannable:
                plan = None
            if plan is not None and plan.nested and self.measurement is None and sample is not None:
                plan.specs = tuple(_Spec(key, self, sample[key]) for key in plan.nested)
                plan.nest = _compile_nest(plan.specs)
            if plan is not None and self.measurement is None and not self.below and (plan.specs or not plan.nested):
                plan.row = _compile_row(plan)
            if len(self.plans) >= 4096:
                self.plans.clear()
            self.plans[pkey] = plan
        self.last = (keys, types, plan)
        return plan


_NO_PLAN: Any = object()
_roots: dict[tuple[frozenset[str] | None, str | None, bool], _Ctx] = {}


def _root(excluded: frozenset[str] | None, measurement: str | None = None, below: bool = False) -> _Ctx:
    ctx = _roots.get((excluded, measurement, below))
    if ctx is None:
        if len(_roots) >= 1024:
            _roots.clear()
        ctx = _roots[(excluded, measurement, below)] = _Ctx(excluded, measurement, below)
    return ctx


def _encode(
    out: list[str],
    data: Mapping[str, Any],
    tags: str,
    ts: str,
    excluded: frozenset[str] | None,
    measurement: str | None = None,
    instance: str | None = None,
) -> None:
    """`build_influxdb_payload`: nested lines first (as PVE emits them), then this level's own line."""
    ctx = _root(excluded, measurement, instance is not None)
    if instance is None and measurement is None:
        row = ctx.fast.get(len(data))
        if row is not None and row(data, out, tags, ts):
            return
    _enc(out, data, tags, ts, ctx, instance)


def _enc(out: list[str], data: Mapping[str, Any], tags: str, ts: str, ctx: _Ctx, instance: str | None) -> None:
    if type(data) is not dict:
        _encode_generic(out, data, tags, ts, ctx.excluded, ctx.measurement, instance)
        return
    types = tuple(map(type, data.values()))
    measurement = ctx.measurement
    if instance is None and measurement is not None and types.count(dict) == len(types):
        ictx = ctx.instance()
        for key in sorted(data):  # nics / blockstat: one instance per key (tap100i0, scsi0, ...)
            _enc(out, data[key], tags, ts, ictx, key)
        return
    keys = tuple(data)
    last = ctx.last
    plan = last[2] if types == last[1] and keys == last[0] else ctx.plan_for(keys, types, data)
    if plan is None:
        _encode_generic(out, data, tags, ts, ctx.excluded, measurement, instance)
        return
    if plan.row is not None:  # the next hash of this shape takes it (see _encode, _guests)
        fast = ctx.fast
        if fast.get(len(keys)) is not plan.row:
            if len(fast) >= 256:
                fast.clear()
            fast[len(keys)] = plan.row
    if plan.nest is not None:
        plan.nest(data, out, tags, ts)
    elif plan.nested:
        for key in plan.nested:
            sub = data[key]
            if measurement is not None:
                _enc(out, sub, tags, ts, ctx.instance(), key)
            else:
                _nested(out, sub, tags, ts, ctx.child(key))
    apply = plan.apply
    if apply is None:
        return
    if instance is not None:
        inst = instance if instance.isalnum() else _tag_memo[instance]  # tap100i0, scsi0: nothing to escape
        line_tags = f"{tags},instance={inst}"
    else:
        line_tags = tags
    if not apply(data, out, line_tags, ts):  # a NaN / ±Inf (PVE drops them) or an empty string
        _encode_generic(out, data, tags, ts, ctx.excluded, measurement, instance, own_line_only=True)


def _nested(out: list[str], sub: Any, tags: str, ts: str, ctx: _Ctx) -> None:
    """A hash nested in a top-level one: measurement `ctx.measurement`, one line per instance when
    every value is a hash (nics, blockstat), else one line."""
    if type(sub) is dict and sub and set(map(type, sub.values())) == _JUST_DICT:
        ictx = ctx.instance()
        for inst in sorted(sub):  # nics / blockstat: one line per instance (tap100i0, scsi0, ...)
            _enc(out, sub[inst], tags, ts, ictx, inst)
    else:
        _enc(out, sub, tags, ts, ctx, None)


def _instances(out: list[str], sub: Any, tags: str, ts: str, spec: _Spec) -> None:
    """An INSTANCES spec's hash when it is not one instance of the expected shape: each instance of
    that shape is encoded right here, anything else the general way."""
    apply = spec.apply
    if apply is None or type(sub) is not dict or not sub or set(map(type, sub.values())) != _JUST_DICT:
        _nested(out, sub, tags, ts, spec.ctx)
        return
    for inst in sorted(sub):  # one line per instance (scsi0, scsi1, ...)
        leaf = sub[inst]
        if tuple(map(type, leaf.values())) == spec.types and tuple(leaf) == spec.keys:
            it = inst if inst.isalnum() else _tag_memo[inst]  # tap100i0, scsi0: nothing to escape
            if not apply(leaf, out, f"{tags},instance={it}", ts):
                _encode_generic(out, leaf, tags, ts, spec.ctx.excluded, spec.measurement, inst, own_line_only=True)
        else:
            _enc(out, leaf, tags, ts, spec.ctx.instance(), inst)


def _compile_nest(specs: tuple[_Spec, ...]) -> Callable[[dict[str, Any], list[str], str, str], None]:
    """A row's nested hashes as straight-line Python (like `_compile`): each hash shaped as its spec
    expects (one scalar hash; a single instance) is checked and encoded inline, anything else goes
    to `_instances` / `_nested`, which give the same lines the general way."""
    consts: dict[str, object] = {"NESTED": _nested, "INSTANCES": _instances, "GEN": _encode_generic}
    consts["TAGMEMO"] = _tag_memo
    code = ["def nest(d, out, tags, ts):"]
    for n, spec in enumerate(specs):
        consts.update({f"K{n}": spec.key, f"C{n}": spec.ctx, f"SP{n}": spec, f"T{n}": spec.types, f"KS{n}": spec.keys,
                       f"A{n}": spec.apply, f"M{n}": spec.measurement, f"X{n}": spec.ctx.excluded})  # fmt: skip
        code.append(f"    s = d[K{n}]")
        if spec.kind == _Spec.MEASUREMENT:
            code += [
                f"    if type(s) is dict and tuple(map(type, s.values())) == T{n} and tuple(s) == KS{n}:",
                f"        if not A{n}(s, out, tags, ts):",
                f"            GEN(out, s, tags, ts, X{n}, M{n}, None, own_line_only=True)",
                "    else:",
                f"        NESTED(out, s, tags, ts, C{n})",
            ]
        elif spec.kind == _Spec.INSTANCES:
            code += [
                "    if type(s) is dict and len(s) == 1:",
                "        for i, leaf in s.items():",
                "            pass",
                f"        if type(leaf) is dict and tuple(map(type, leaf.values())) == T{n} and tuple(leaf) == KS{n}:",
                f'            if not A{n}(leaf, out, f"{{tags}},instance={{i if i.isalnum() else TAGMEMO[i]}}", ts):',
                f"                GEN(out, leaf, tags, ts, X{n}, M{n}, i, own_line_only=True)",
                "        else:",
                f"            NESTED(out, s, tags, ts, C{n})",
                "    else:",
                f"        INSTANCES(out, s, tags, ts, SP{n})",
            ]
        else:
            code.append(f"    NESTED(out, s, tags, ts, C{n})")
    exec("\n".join(code), consts)  # generated from a fixed template; values are bound constants
    fn = consts["nest"]
    assert callable(fn)
    return fn  # type: ignore[return-value]


class _RowSource:
    """The source of one `_compile_row` function: lines, local names, and the constants it binds."""

    def __init__(self, nested: bool) -> None:
        self.consts: dict[str, object] = {"TAGMEMO": _tag_memo}
        self.code = ["def row(d, out, tags, ts):"]
        self.miss = ["del out[mark:]", "return False"] if nested else ["return False"]
        self.names = 0

    def const(self, value: object) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = value
        return name

    def var(self) -> str:
        self.names += 1
        return f"v{self.names}"

    def emit(self, ind: int, *lines: str) -> None:
        self.code += [" " * ind + line for line in lines]

    def unless(self, ind: int, cond: str) -> None:
        """Leave for the general path (after dropping what this row appended) unless `cond` holds."""
        self.emit(ind, f"if not ({cond}):")
        self.emit(ind + 4, *self.miss)

    def fetch(
        self, ind: int, src: str, shape: tuple[tuple[str, type], ...], used: Iterable[str], names: dict[str, str]
    ) -> dict[str, str]:
        """Bind the values of the hash `src` (exactly the keys of `shape`, checked by its caller's `len`)
        that are `used` to locals named in `names` (new ones when missing), the others to `_`: fewer
        locals make a cheaper frame. Every value's type is checked. Returns key → local name."""
        for key in used:
            if key not in names:
                names[key] = self.var()
        keys, types = [k for k, _ in shape], tuple(t for _, t in shape)
        if len(keys) <= 3:  # a NIC: a check per value costs less than building a list
            for key in keys:
                names.setdefault(key, self.var())
                self.emit(ind, f"{names[key]} = {src}[{self.const(key)}]")
            self.unless(ind, " and ".join(f"type({names[k]}) is {self.const(t)}" for k, t in shape))
        else:
            targets = ", ".join(names.get(k, "_") for k in keys)
            self.emit(ind, f"{targets}, = w = {self.const(itemgetter(*keys))}({src})")
            self.unless(ind, f"list(map(type, w)) == {self.const(list(types))}")  # a list: cheaper than a tuple
        return names

    def line(self, ind: int, plan: _Plan, names: dict[str, str], instance: str | None = None) -> None:
        """One line of `plan` from bound locals: floats checked (NaN, ±Inf: the general path) and
        written by `%s` (repr), strings through their memo. (orjson writes floats faster, but with
        the split and the checks it needs to match repr it cost ~4% more here: measured, dropped.)"""
        if not plan.field_keys:
            return
        vals = [names[k] for k in plan.field_keys]
        floats = [names[k] for k in plan.field_keys if k in plan.float_keys]
        if floats:
            self.unless(ind, " and ".join(f"{f} - {f} == 0.0" for f in floats))
        for i, memo in plan.strings:
            self.emit(ind, f"{vals[i]} = {self.const(memo)}[{vals[i]}]")
            self.unless(ind, f"{vals[i]} is not None")
        if instance is None:
            fmt = self.const(plan.prefix.replace("%", "%%") + "%s " + plan.fmt + " %s")
            self.emit(ind, f"out.append({fmt} % (tags, {', '.join(vals)}, ts))")
        else:  # the instance tag written by the same `%` (no intermediate string)
            fmt = self.const(plan.prefix.replace("%", "%%") + "%s,instance=%s " + plan.fmt + " %s")
            self.emit(ind, f"out.append({fmt} % (tags, {instance}, {', '.join(vals)}, ts))")


def _compile_row(plan: _Plan) -> _Apply | None:
    """A top-level hash of `plan`'s shape, nested hashes included, as one straight-line function.

    It checks the whole shape first (keys, the type of every value, each nested hash as its spec
    expects, instances of one shape) and appends the lines `_enc` would: nested ones in key order,
    then its own. Anything else (another shape, a NaN, an empty string) drops what it appended and
    returns False, and the row takes `_enc`. None when a nested hash has no spec to check against.
    """
    if any(spec.kind == _Spec.GENERAL or spec.plan is None for spec in plan.specs):
        return None
    specs = {spec.key: spec for spec in plan.specs}
    src = _RowSource(bool(specs))
    src.emit(4, f"if type(d) is not dict or len(d) != {len(plan.shape)}:", "    return False")
    if specs:
        src.emit(4, "mark = len(out)")
    src.emit(4, "try:")
    names = src.fetch(8, "d", plan.shape, (*plan.field_keys, *specs), {})
    for key, spec in specs.items():
        assert spec.plan is not None
        sub = names[key]
        shape = tuple(sorted(zip(spec.keys, spec.types, strict=True), key=itemgetter(0)))
        if spec.kind == _Spec.MEASUREMENT:  # one line of scalars, like ballooninfo
            src.unless(8, f"len({sub}) == {len(shape)}")
            src.line(8, spec.plan, src.fetch(8, sub, shape, spec.plan.field_keys, {}))
        else:  # one line per instance, like nics and blockstat: tap100i0, scsi0, ...
            i, leaf, it = src.var(), src.var(), src.var()
            src.emit(8, f"if len({sub}) == 1:")  # the usual case: one NIC, one disk
            src.emit(12, f"({i}, {leaf}), = {sub}.items()")
            ind = 12
            leaf_names: dict[str, str] = {}  # the same locals in both branches
            for many in (False, True):
                if many:
                    src.emit(8, "else:")
                    src.emit(12, f"for {i} in sorted({sub}):")
                    src.emit(16, f"{leaf} = {sub}[{i}]")
                    ind = 16
                src.unless(ind, f"type({leaf}) is dict and len({leaf}) == {len(shape)}")
                src.fetch(ind, leaf, shape, spec.plan.field_keys, leaf_names)
                src.emit(ind, f"{it} = {i} if {i}.isalnum() else TAGMEMO[{i}]")  # tap100i0, scsi0: nothing to escape
                src.line(ind, spec.plan, leaf_names, it)
    src.line(8, plan, names)
    src.emit(8, "return True")
    src.emit(4, "except (KeyError, TypeError, AttributeError):  # not this shape after all")
    src.emit(8, *src.miss)
    exec("\n".join(src.code), src.consts)  # generated from fixed templates; keys and formats are constants
    fn = src.consts["row"]
    assert callable(fn)
    return fn  # type: ignore[return-value]


# -- PVE hashes from API payloads ---------------------------------------------------------------


def _sub(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d.get(key)
    return v if isinstance(v, Mapping) else {}


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "":
        target[key] = value


def node_hash(st: Mapping[str, Any], arcsize: float | None = None) -> dict[str, Any]:
    """pvestatd's `$node_metric` as far as `/nodes/{n}/status` has it (no jiffies, no per-NIC data);
    `arcsize` from the node RRD (PVE 9), which has no arcmin/arcmax."""
    cpustat: dict[str, Any] = {}
    _put(cpustat, "cpu", st.get("cpu"))
    _put(cpustat, "wait", st.get("wait"))
    load = st.get("loadavg")
    if isinstance(load, list | tuple) and len(load) == 3:
        for key, v in zip(("avg1", "avg5", "avg15"), load, strict=True):
            _put(cpustat, key, v)
    _put(cpustat, "cpus", _sub(st, "cpuinfo").get("cpus"))

    mem, swap = _sub(st, "memory"), _sub(st, "swap")
    memory: dict[str, Any] = {}
    _put(memory, "memtotal", mem.get("total"))
    _put(memory, "memused", mem.get("used"))
    _put(memory, "memfree", mem.get("free"))
    _put(memory, "memavailable", mem.get("available"))  # PVE 9 and later
    _put(memory, "swaptotal", swap.get("total"))
    _put(memory, "swapused", swap.get("used"))
    _put(memory, "swapfree", swap.get("free"))
    _put(memory, "memshared", _sub(st, "ksm").get("shared"))
    _put(memory, "arcsize", arcsize)

    blockstat: dict[str, Any] = {}
    root = _sub(st, "rootfs")
    total, used, avail, free = root.get("total"), root.get("used"), root.get("avail"), root.get("free")
    _put(blockstat, "blocks", total)
    _put(blockstat, "used", used)
    _put(blockstat, "bavail", avail)
    if free is None and _is_num(total) and _is_num(used):
        free = total - used
    _put(blockstat, "bfree", free)
    per = _df_percent(total, free, avail)
    _put(blockstat, "per", per)

    out: dict[str, Any] = {}
    _put(out, "uptime", st.get("uptime"))
    if cpustat:
        out["cpustat"] = cpustat
    if memory:
        out["memory"] = memory
    if blockstat:
        out["blockstat"] = blockstat
    return out


def _is_num(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _df_percent(blocks: Any, bfree: Any, bavail: Any) -> int | None:
    """Filesys::Df's `per`: percent used as seen by non-root users, rounded half up (df(1) style)."""
    if not (_is_num(blocks) and _is_num(bfree) and _is_num(bavail)) or blocks <= 0:
        return None
    used = blocks - bfree
    if bfree > bavail:
        user_blocks = blocks - (bfree - bavail)
        if user_blocks <= 0:
            return None
        per = (-bavail / user_blocks) if bavail < 0 else (user_blocks - bavail) / user_blocks
    else:
        per = used / blocks
    per = per * 100 + 0.5
    if bavail < 0:
        per += 100
    return int(per)


def storage_hashes(
    fresh: Mapping[str, Any], resources: Any, nodes_with_list: set[str]
) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(node, storage id, plugin type, storage_info hash) of every ACTIVE storage, like pvestatd.

    `/nodes/{n}/storage` rows are used as they are; for nodes without such a list this cycle, the
    node's `/cluster/resources` storage rows stand in (no `avail` there; `available` means active).
    """
    out: list[tuple[str, str, str | None, dict[str, Any]]] = []
    for key, rows in fresh.items():
        parts = key.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != "nodes" or parts[3] != "storage" or not isinstance(rows, list):
            continue
        node = parts[2]
        for row in rows:
            if not isinstance(row, Mapping) or not row.get("storage"):
                continue
            if row.get("active") not in (1, True, "1"):
                continue  # pvestatd: `next if !$d->{active};`
            d = {k: row[k] for k in _STORAGE_FIELDS if k in row}
            out.append((node, str(row["storage"]), _type_of(row.get("type")), d))
    if isinstance(resources, list):
        for row in resources:
            if not isinstance(row, Mapping) or row.get("type") != "storage":
                continue
            node, sid = row.get("node"), row.get("storage")
            if not node or not sid or node in nodes_with_list or row.get("status") != "available":
                continue
            d = {"active": 1}
            for src, dst in (("plugintype", "type"), ("maxdisk", "total"), ("disk", "used"), ("shared", "shared"),
                             ("content", "content")):  # fmt: skip
                if src in row:
                    d[dst] = row[src]
            out.append((str(node), str(sid), _type_of(row.get("plugintype")), d))
    out.sort(key=lambda x: (x[0], x[1]))
    return out


def _type_of(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


_by_node = node_payloads  # `/nodes/<name>/<suffix>` payloads as (name, data), by node name


_BY_VMID = itemgetter("vmid")


def _vmid_key(row: Any) -> tuple[int, str]:
    v = row.get("vmid") if isinstance(row, Mapping) else None
    try:
        return (int(v), "")
    except (TypeError, ValueError):
        return (1 << 62, str(v))


def _guests(
    out: list[str], kind: str, per_node: list[tuple[str, Any]], cluster_tag: str, ts: str, esc: Callable[[str], str]
) -> None:
    ctx = _root(_GUEST_EXCLUDED)
    fast = ctx.fast
    for node, rows in per_node:
        if not isinstance(rows, list):
            continue
        head = f"object={kind},vmid="
        node_tag = ",nodename=" + esc(node)
        try:
            ordered = sorted(rows, key=_BY_VMID)  # integer vmids (PVE 7+): the C-level key
        except (TypeError, KeyError, AttributeError):
            ordered = sorted((r for r in rows if isinstance(r, Mapping)), key=_vmid_key)
        for row in ordered:
            vmid = row.get("vmid")
            name = row.get("name")
            if type(vmid) is int and type(name) is str and name:  # PVE 7+: one f-string, the name escaped once
                tags = f"{head}{vmid!s}{node_tag},host={_tag_memo[name]}{cluster_tag}"
                fn = fast.get(len(row))
                if fn is None or not fn(row, out, tags, ts):
                    _enc(out, row, tags, ts, ctx, None)
                continue
            if type(vmid) is int:
                vmid_s = str(vmid)
            elif vmid is None or vmid == "" or type(vmid) is bool:
                continue
            else:  # PVE 6 sent strings
                vmid_s = tag_escape(str(int(vmid)) if type(vmid) is float else str(vmid))
            if type(name) is str and name:
                host = ",host=" + _tag_memo[name]  # names repeat every cycle: escaped once
            elif name is None or name == "" or type(name) is bool:
                host = ""
            else:  # a numeric JSON name
                host = ",host=" + tag_escape(str(int(name)) if type(name) is float else str(name))
            tags = f"{head}{vmid_s}{node_tag}{host}{cluster_tag}"
            fn = fast.get(len(row))
            if fn is None or not fn(row, out, tags, ts):
                _enc(out, row, tags, ts, ctx, None)


def snapshot_to_lines(snap: Snapshot) -> list[str]:
    """Every point PVE's pvestatd would push for the data fetched in this snapshot's cycle, plus `cluster`.

    Lines have no trailing newline. Order: nodes, qemu, lxc, storages (by node, then vmid / storage).
    """
    fresh = snap.fresh_payloads()
    if not fresh:
        return []
    ts = str(int(snap.finished_at))
    cache: dict[str, str] = {}

    def esc(s: str) -> str:
        e = cache.get(s)
        if e is None:
            e = cache[s] = tag_escape(s)
        return e

    cluster_tag = ",cluster=" + esc(snap.cluster)
    out: list[str] = []
    arc = arc_sizes(snap)  # the RRD is read once a minute: its newest value, fetched this cycle or not
    for node, st in _by_node(fresh, "status"):
        if isinstance(st, Mapping):
            _encode(out, node_hash(st, arc.get(node)), f"object=nodes,host={esc(node)}{cluster_tag}", ts, None)
    _guests(out, "qemu", _by_node(fresh, "qemu"), cluster_tag, ts, esc)
    _guests(out, "lxc", _by_node(fresh, "lxc"), cluster_tag, ts, esc)
    listed = {node for node, rows in _by_node(fresh, "storage") if isinstance(rows, list)}
    for node, sid, plugin, data in storage_hashes(fresh, fresh.get("/cluster/resources"), listed):
        tags = f"object=storages,nodename={esc(node)},host={esc(sid)}"
        if plugin:
            tags += ",type=" + esc(plugin)
        _encode(out, data, tags + cluster_tag, ts, None)
    return out
