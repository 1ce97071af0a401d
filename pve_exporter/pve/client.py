"""aiohttp client for one PVE cluster: token auth, several endpoints with failover, typed errors.

It knows no metrics: it reports each request to an optional observer (the self-metrics) and
returns the unwrapped `data` of PVE's `{"data": ...}` envelope.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from pve_exporter.pve.errors import (
    PveApiError,
    PveAuthError,
    PveCertificateError,
    PveClientClosedError,
    PveError,
    PveNotFoundError,
    PvePermissionError,
    PveProtocolError,
    PveTimeoutError,
    PveUnreachableError,
)

log = structlog.get_logger("pve_exporter.pve")

# Statuses after which another endpoint may do better: the one we asked is broken or overloaded.
_FAILOVER_STATUSES = frozenset({500, 502, 503, 504, 595, 596, 597, 599})
# Pseudo-statuses pveproxy relays when *it* cannot reach the node it proxies to (pve-api.md §1.4).
_PROXY_STATUSES = frozenset({595, 596, 597, 599})
_NODE_PATH = re.compile(r"^/nodes/[^/]+/")

_TEMPLATE_RULES = (
    (re.compile(r"^/nodes/[^/]+"), "/nodes/{node}"),
    (re.compile(r"/(qemu|lxc)/\d+"), r"/\1/{vmid}"),
    (re.compile(r"/tasks/[^/]+"), "/tasks/{upid}"),
    (re.compile(r"/storage/[^/]+"), "/storage/{storage}"),
    (re.compile(r"/replication/[^/]+"), "/replication/{id}"),
)


def template_path(path: str) -> str:
    """`/nodes/pve1/qemu/100/config` → `/nodes/{node}/qemu/{vmid}/config` (bounded label values)."""
    path = path.split("?", 1)[0]
    for rx, repl in _TEMPLATE_RULES:
        path = rx.sub(repl, path)
    return path


def normalize_endpoint(raw: str, default_port: int = 8006) -> str:
    """`pve1.example.com` → `https://pve1.example.com:8006`; scheme and port are optional
    (`default_port` 8007 for a Proxmox Backup Server)."""
    raw = raw.strip().rstrip("/")
    if "://" not in raw:
        raw = "https://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a host[:port] or http(s) URL: {raw!r}")
    port = parts.port or default_port
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


class RequestObserver(Protocol):
    def api_request(self, endpoint: str, method: str, path: str, outcome: str, seconds: float) -> None: ...

    def endpoint_health(self, endpoint: str, up: bool) -> None: ...


@dataclass
class EndpointState:
    """Health of one configured endpoint, as seen by the last request sent to it."""

    url: str
    up: bool | None = None
    last_error: str | None = None
    last_change: float = field(default=0.0)  # wall time, shown by the control API
    changed_mono: float = field(default=0.0)  # monotonic time of the same change, for the re-probe schedule


class PveClient:
    """One aiohttp session per cluster; requests bounded by a semaphore; endpoint failover."""

    def __init__(
        self,
        endpoints: Sequence[str],
        token_id: str,
        token_secret: str,
        *,
        verify_ssl: bool = True,
        ca_file: str | None = None,
        timeout: float = 5.0,
        max_concurrency: int = 8,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        global_limit: asyncio.Semaphore | None = None,
        fingerprint: bytes | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = [EndpointState(normalize_endpoint(e, self.DEFAULT_PORT)) for e in endpoints]
        self._auth = self.auth_header(token_id, token_secret)
        self._ssl: ssl.SSLContext | bool | aiohttp.Fingerprint
        if fingerprint is not None:
            # Pinned: the chain is not verified, the peer certificate's SHA-256 is, on every connection.
            self._ssl = aiohttp.Fingerprint(fingerprint)
        elif ca_file:
            self._ssl = ssl.create_default_context(cafile=ca_file)
        elif verify_ssl:
            self._ssl = True
        else:
            self._ssl = False
        self.timeout = timeout
        self._sem = asyncio.Semaphore(max_concurrency)
        self._global = global_limit  # shared by every cluster's client: a bound on the whole daemon
        self._max_concurrency = max_concurrency
        self._observer = observer
        self._clock = clock
        self._monotonic = monotonic
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    DEFAULT_PORT = 8006

    @staticmethod
    def auth_header(token_id: str, token_secret: str) -> str:
        """PVE's token header; the PBS client sends its own form."""
        return f"PVEAPIToken={token_id}={token_secret}"

    @property
    def preferred_endpoint(self) -> str:
        return self.endpoints[self._preferred].url

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A request that outlives close() must not open a session nobody will close.
            raise PveClientClosedError("the client of this cluster was closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrency, ssl=self._ssl),
                headers={"Authorization": self._auth, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        """Refuse every later request, detach the observer (a removed cluster's self-metrics stay
        gone), and close the session."""
        self._closed = True
        self._observer = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, params: dict[str, Any] | None = None, *, endpoint: str | None = None) -> Any:
        """GET `path` (relative to /api2/json) and return the envelope's `data`."""
        return await self.request("GET", path, params=params, endpoint=endpoint)

    async def get_page(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, int | None]:
        """GET a paged list: (`data`, the envelope's `total`), e.g. a task log."""
        doc = await self.request("GET", path, params=params, envelope=True)
        total = doc.get("total")
        return doc["data"], total if isinstance(total, int) and not isinstance(total, bool) else None

    async def post(self, path: str, data: dict[str, Any] | None = None, *, failover: bool = True) -> Any:
        """POST; `failover=False` for calls that must not run twice (power actions): another endpoint
        is tried only when the connection could not even be opened, and any PVE answer is final."""
        return await self.request("POST", path, data=data, failover=failover)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        endpoint: str | None = None,
        failover: bool = True,
        envelope: bool = False,
    ) -> Any:
        """Try the preferred endpoint first, then the others; remember the one that answered.

        `endpoint` pins one base URL (a node's own address) and disables failover.
        """
        node_scoped = bool(_NODE_PATH.match(path))
        if endpoint is not None:
            url = normalize_endpoint(endpoint)
            # A configured endpoint keeps its own health record; a node's address gets a scratch one.
            order = [next((e for e in self.endpoints if e.url == url), None) or EndpointState(url)]
        else:
            n = len(self.endpoints)
            order = [self.endpoints[(self._preferred + i) % n] for i in range(n)]
        last: PveError | None = None
        for ep in order:
            try:
                result = await self._once(ep, method, path, params, data, envelope)
            except PveError as exc:
                last = exc
                if isinstance(exc, PveTimeoutError | PveUnreachableError) and exc.status is None:
                    self._mark(ep, False, str(exc))  # transport failure: this endpoint is down
                    if not failover and not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                        raise  # the request may have arrived: never send it twice
                    continue
                relay_failure = node_scoped and exc.status in _PROXY_STATUSES
                if failover and exc.status in _FAILOVER_STATUSES and not relay_failure:
                    self._mark(ep, False, str(exc))
                    continue
                self._mark(ep, True, None)  # PVE answered: the endpoint works, the request does not
                raise
            self._mark(ep, True, None)
            if endpoint is None:
                self._preferred = self.endpoints.index(ep)
            return result
        assert last is not None
        raise last

    async def probe_down_endpoints(self, retry_after: float) -> None:
        """Ask endpoints marked down (for `retry_after` s or more) for /version, so their health
        recovers even while another endpoint is preferred and they get no real traffic."""
        now = self._monotonic()
        due = [e for e in self.endpoints if e.up is False and now - e.changed_mono >= retry_after]
        for e in due:
            e.changed_mono = now  # one probe per `retry_after`, whatever its outcome
        results = await asyncio.gather(*(self.get("/version", endpoint=e.url) for e in due), return_exceptions=True)
        for e, r in zip(due, results, strict=True):
            if not isinstance(r, BaseException):
                log.info("endpoint answers again", endpoint=e.url)

    def _mark(self, ep: EndpointState, up: bool, error: str | None) -> None:
        if ep.up != up:
            ep.last_change = self._clock()
            ep.changed_mono = self._monotonic()
            if up and ep.up is False:
                log.info("endpoint recovered", endpoint=ep.url)
            elif not up:
                log.warning("endpoint failing", endpoint=ep.url, error=error)
        ep.up = up
        ep.last_error = error
        if self._observer is not None:
            self._observer.endpoint_health(ep.url, up)

    async def _once(
        self, ep: EndpointState, method: str, path: str, params: dict[str, Any] | None, data: Any,
        envelope: bool = False,
    ) -> Any:
        url = f"{ep.url}/api2/json{path}"
        template = template_path(path)
        started = time.monotonic()
        outcome = "error"
        try:
            async with self._sem, self._global or _NO_LIMIT:
                started = time.monotonic()
                session = self._get_session()
                async with session.request(method, url, params=params, data=data) as resp:
                    outcome = str(resp.status)
                    body = await resp.read()
                    return _decode(resp.status, resp.reason or "", body, path=path, endpoint=ep.url, envelope=envelope)
        except PveError:
            raise
        except aiohttp.ServerFingerprintMismatch as exc:
            outcome = "certificate"
            raise PveCertificateError(
                f"server certificate SHA-256 {_colons(exc.got)} is not the pinned fingerprint {_colons(exc.expected)}",
                path=path, endpoint=ep.url,
            ) from exc  # fmt: skip
        except TimeoutError as exc:
            outcome = "timeout"
            raise PveTimeoutError(f"no answer within {self.timeout:g}s", path=path, endpoint=ep.url) from exc
        except (aiohttp.ClientError, OSError) as exc:
            outcome = "unreachable"
            raise PveUnreachableError(f"{type(exc).__name__}: {_safe(exc)}", path=path, endpoint=ep.url) from exc
        finally:
            if self._observer is not None:
                self._observer.api_request(ep.url, method, template, outcome, time.monotonic() - started)


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def _safe(exc: BaseException) -> str:
    """Exception text without request details (aiohttp reprs may carry headers)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status} {exc.message}"
    return str(exc)[:300]


def _loads(body: bytes) -> Any:
    """orjson decodes PVE's big lists about twice as fast; the stdlib takes what it refuses."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _decode(status: int, reason: str, body: bytes, *, path: str, endpoint: str, envelope: bool = False) -> Any:
    """Unwrap `{"data": ...}` (the whole envelope with `envelope`) or turn the error answer into a typed PveError."""
    if status == 200:
        try:
            doc = _loads(body)
        except ValueError as exc:
            raise PveProtocolError("answer is not JSON", status=status, path=path, endpoint=endpoint) from exc
        if not isinstance(doc, dict) or "data" not in doc:
            raise PveProtocolError("answer has no data envelope", status=status, path=path, endpoint=endpoint)
        return doc if envelope else doc["data"]
    message = reason.strip()
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            if doc.get("message"):
                message = str(doc["message"]).strip()
            if doc.get("errors"):
                message = f"{message} {doc['errors']}".strip()
    message = message or f"HTTP {status}"
    kw = {"status": status, "path": path, "endpoint": endpoint}
    if status == 401:
        raise PveAuthError(message, **kw)
    if status == 403:
        raise PvePermissionError(message, **kw)
    if status in (404, 501):
        raise PveNotFoundError(message, **kw)
    if status in _PROXY_STATUSES:
        raise PveUnreachableError(message, **kw)
    raise PveApiError(message, **kw)
