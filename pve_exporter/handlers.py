"""The HTTP handlers of the monitoring side: /metrics, /pve (prometheus-pve-exporter's scrape path),
the landing page and the health checks. They read finished snapshots and pre-rendered pages only."""

from __future__ import annotations

import html
from collections.abc import Sequence

from aiohttp import web

from pve_exporter import __version__, htmlsecurity
from pve_exporter.control.plane import ControlPlane
from pve_exporter.daemon import Daemon
from pve_exporter.export.gzipjoin import combine
from pve_exporter.export.prometheus import CONTENT_TYPE
from pve_exporter.freshness import no_fresh_data
from pve_exporter.httperrors import error_response
from pve_exporter.shard import shard_of

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")



def _wants_gzip(request: web.Request) -> bool:
    """Accept-Encoding with q-values (RFC 9110 §12.5.3): gzip (or x-gzip) unless its q is 0; `*` stands
    for every coding not named; an unparsable q counts as 0."""
    named: dict[str, float] = {}
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                digits = value.strip()
                q = float(digits) if digits.isascii() and digits.replace(".", "", 1).isdigit() else 0.0
        if coding:
            named[coding.lower()] = min(max(q, 0.0), 1.0)
    for coding in ("gzip", "x-gzip"):
        if coding in named:
            return named[coding] > 0
    return named.get("*", 0.0) > 0


async def _metrics_response(
    request: web.Request, selection: list[str], servers: Sequence[str] = ()
) -> web.StreamResponse:
    """The pre-rendered page (gzip: joined from parts compressed at render time) and the small
    self-metrics part; nothing is rendered or compressed as a whole per scrape."""
    daemon = request.app[DAEMON]
    resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
    own = daemon.own_metrics(selection)  # rendered at most once a second per selection
    if _wants_gzip(request):
        # One gzip stream: the cached, pre-compressed parts plus the self-metrics part.
        extra = combine(own.part, daemon.pbs.gzip_part(servers))  # backup servers' data: compressed once per cycle
        chunks = await daemon.exposition.gzip_chunks(selection, extra=extra)  # joined in a worker thread
        resp.headers["Content-Encoding"] = "gzip"
    else:
        page = await daemon.exposition.plain(selection)  # made in a worker thread, kept per snapshot
        chunks = [page, own.text, daemon.pbs.page(servers)]
    resp.content_length = sum(len(c) for c in chunks)
    await resp.prepare(request)
    for c in chunks:
        view = memoryview(c)  # 1 MiB writes: no MB-scale copy into the transport, backpressure between them
        for i in range(0, len(view), _WRITE_CHUNK):
            await resp.write(view[i : i + _WRITE_CHUNK])
    await resp.write_eof()
    return resp


_WRITE_CHUNK = 1 << 20


def _unknown_cluster(name: str, known: list[str], param: str) -> web.Response:
    return error_response(
        400,
        "UNKNOWN_CLUSTER",
        f"{param} {name!r} is not a configured cluster",
        details={param: name, "configured": known},
        recovery=["Use the name of a cluster from the daemon's config (or one of its endpoint hosts for /pve)."],
    )


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    known = sorted(daemon.clusters)
    wanted = list(dict.fromkeys(request.query.getall("cluster", [])))  # each once, in the order asked
    servers = list(dict.fromkeys(request.query.getall("server", [])))  # backup servers (?server=NAME)
    for name in servers:
        if name not in daemon.pbs.servers:
            return error_response(400, "UNKNOWN_BACKUP_SERVER", f"server {name!r} is not a configured backup server",
                                  details={"server": name, "configured": sorted(daemon.pbs.servers)},
                                  recovery=["Use the name of a backup server from the daemon's config."])  # fmt: skip
    if not wanted and not servers:
        return await _metrics_response(request, known, sorted(daemon.pbs.servers))
    for name in wanted:
        if name not in daemon.clusters:
            return _unknown_cluster(name, known, "cluster")
    return await _metrics_response(request, wanted, servers)


async def handle_pve(request: web.Request) -> web.StreamResponse:
    """prometheus-pve-exporter's `/pve?target=…` for drop-in scrape configs; only configured targets."""
    daemon = request.app[DAEMON]
    target = request.query.get("target", "")
    known = sorted(daemon.clusters)
    elsewhere = next((c for c in daemon.settings.clusters if c.name == target and c.name not in daemon.clusters), None)
    if elsewhere is not None and daemon.settings.shard is not None:  # configured, polled by another shard
        shard = daemon.settings.shard
        return web.Response(status=404, text=f"cluster {target!r} is served by shard "
                            f"{shard_of(target, shard.total)} of {shard.total}, not by this one ({shard.index})\n")
    if elsewhere is not None and daemon.coord is not None:  # coordination: another replica holds its lease
        return web.Response(status=404, text=f"cluster {target!r} is polled by another replica now (its lease moves); "
                            "scrape every replica's /metrics instead of /pve\n")
    for name, rt in daemon.clusters.items():
        host_ports = {e.split("://", 1)[1] for e in rt.cfg.endpoints}  # host:port, as PPE users write it
        hosts = {hp.rsplit(":", 1)[0].strip("[]") for hp in host_ports}
        if target == name or target in hosts or target in host_ports or target in rt.cfg.endpoints:
            # PPE's contract: a scrape of a cluster without fresh data fails, so `up` tells the truth.
            fast = {c.name for c in rt.poller.collectors if c.tier == "fast"}
            reason = no_fresh_data(name, daemon.store.get(name), fast)
            if reason is not None:
                return web.Response(status=503, text=reason + "\n")
            return await _metrics_response(request, [name])
    return _unknown_cluster(target, known, "target")


async def handle_healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def handle_ready(request: web.Request) -> web.Response:
    if request.app[DAEMON].ready():
        return web.Response(text="ready\n")
    return web.Response(status=503, text="waiting for the first collection cycle\n")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s ago"


async def handle_index(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    rows = []
    for name in sorted(daemon.clusters):
        snap = daemon.store.get(name)
        e = html.escape(name)
        if snap is None:
            rows.append(f"<tr><td>{e}</td><td>starting</td><td>never</td><td>0</td><td>0</td><td></td></tr>")
            continue
        series = sum(len(f.samples) for f in snap.families)
        failing = [r.name for r in snap.results.values() if not r.ok]
        state = "ok" if snap.reachable and not failing else ("unreachable" if not snap.reachable else "partial")
        age = _age(snap.age(daemon.monotonic()))
        rows.append(
            f"<tr><td>{e}</td><td class='{state}'>{state}</td><td>{age}</td><td>{len(snap.guests)}</td>"
            f"<td>{series}</td><td><a href='metrics?cluster={e}'>metrics</a>"
            f"{' · failing: ' + html.escape(', '.join(failing)) if failing else ''}</td></tr>"
        )
    page = _INDEX.format(version=__version__, rows="\n".join(rows), style=_INDEX_STYLE)
    if daemon.pbs.servers:
        page = page.replace("</body>", _backup_servers(daemon) + "</body>")
    if daemon.control is not None:
        page = page.replace("</body>", await _operation_counts(daemon.control) + "</body>")
    return web.Response(text=page, content_type="text/html", headers={"Content-Security-Policy": _INDEX_CSP})


def _backup_servers(daemon: Daemon) -> str:
    """The landing page's table of Proxmox Backup Servers: state, data age, datastores, a link."""
    rows = []
    for name in sorted(daemon.pbs.servers):
        e = html.escape(name)
        snap = daemon.pbs.snapshots.get(name)
        if not daemon.owns(name):
            rows.append(f"<tr><td>{e}</td><td>served by another replica</td><td></td><td></td></tr>")
            continue
        if snap is None:
            rows.append(f"<tr><td>{e}</td><td>starting</td><td>never</td><td></td></tr>")
            continue
        failing = [r.name for r in snap.results.values() if not r.ok]
        state = "ok" if snap.reachable and not failing else ("unreachable" if not snap.reachable else "partial")
        age = _age(None if snap.reached_mono is None else max(0.0, daemon.monotonic() - snap.reached_mono))
        rows.append(
            f"<tr><td>{e}</td><td class='{state}'>{state}</td><td>{age}</td>"
            f"<td><a href='metrics?server={e}'>metrics</a>"
            f"{' · failing: ' + html.escape(', '.join(failing)) if failing else ''}</td></tr>"
        )
    return ("<h2>Backup servers</h2>\n<table id='backup-servers'><tr><th>server</th><th>state</th>"
            "<th>last success</th><th></th></tr>\n" + "\n".join(rows) + "\n</table>")


async def _operation_counts(control: ControlPlane) -> str:
    """The landing page is public: a link to the control page and operation counts by status only
    (names, users, addresses and PVE's messages need a `read` token, on /ui/)."""
    counts = await control.operation_counts()
    if counts is None:
        body = "<tr><td colspan='2'>the operation history is unavailable (see the daemon log)</td></tr>"
    else:
        body = "\n".join(f"<tr><td>{html.escape(s)}</td><td>{n}</td></tr>" for s, n in counts.items())
    return (
        "<h2>Control</h2><p><a href='ui/'>Guest power control and operation history</a> · "
        "<a href='api/v1/openapi.json'>API (OpenAPI)</a></p>\n<h3>Operations</h3>\n"
        f"<table id='operation-counts'><tr><th>status</th><th>operations</th></tr>\n{body}\n</table>"
    )


_INDEX_STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px}.ok{color:green}.partial{color:#b60}.unreachable{color:red}"""
_INDEX_CSP = htmlsecurity.csp(styles=[_INDEX_STYLE])  # the page's one inline style, allowed by its hash
_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>pve_exporter</title>
<style>{style}</style>
</head><body>
<h1>pve_exporter {version}</h1>
<p><a href="metrics">/metrics</a> (all clusters) · <a href="-/healthy">/-/healthy</a> ·
<a href="-/ready">/-/ready</a></p>
<table><tr><th>cluster</th><th>state</th><th>last success</th><th>guests</th><th>series</th><th></th></tr>
{rows}
</table></body></html>
"""
