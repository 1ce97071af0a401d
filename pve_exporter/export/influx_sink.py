"""Where batches go: InfluxDB 2.x API via influxdb-client, or InfluxDB 1.x `/write` via aiohttp.

A sink sends one batch and classifies the answer; it never retries (the writer does, with its
injected clock and sleep) and never raises for HTTP or network trouble. Outcomes:

* `ok`: 2xx.
* `rejected` (no retry, the batch is dropped and counted): 400 (bad line protocol, InfluxDB names
  the line), 413 (body larger than the server's max-body-size), 422 (points outside retention).
* anything else is retried: 429 and 5xx (honouring `Retry-After`), 401/403/404 (a token or
  database being fixed by an operator), timeouts and connection errors.

No outcome, log line or metric label carries a credential: the output label is `api:url` of a
URL that settings already refused to accept with user info in it.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp

from pve_exporter.settings import InfluxSettings

if TYPE_CHECKING:  # imported when first used: influxdb-client is slow to import and only v2 needs it
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
    from influxdb_client.service.write_service import WriteService

REJECTED_STATUSES = frozenset({400, 413, 422})
_LINE_NO = re.compile(r"line (\d+)")
_MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    ok: bool
    rejected: bool = False
    reason: str | None = None  # "timeout", "connection", "http_503", ...: a bounded label value
    status: int | None = None
    retry_after: float | None = None
    message: str = ""


OK = WriteOutcome(ok=True)


class Sink(Protocol):
    output: str

    async def write(self, body_gz: bytes) -> WriteOutcome: ...

    async def close(self) -> None: ...


def output_label(cfg: InfluxSettings) -> str:
    return f"{cfg.api}:{cfg.url}"


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


def error_message(body: bytes | str | None) -> str:
    """InfluxDB's error text (`{"error": ...}` on 1.x, `{"message": ...}` on 2.x), shortened."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        text = str(doc.get("error") or doc.get("message") or text)
    text = text.strip()
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def offending_line(message: str, body_gz: bytes) -> str | None:
    """The line a 400 complains about, when the server names it by number (InfluxDB 2.x style)."""
    m = _LINE_NO.search(message)
    if not m:
        return None
    n = int(m.group(1))
    try:
        lines = gzip.decompress(body_gz).split(b"\n")
    except (OSError, EOFError):
        return None
    if 1 <= n <= len(lines):
        line = lines[n - 1].decode("utf-8", "replace")
        return line if len(line) <= _MAX_MESSAGE else line[:_MAX_MESSAGE] + "…"
    return None


def classify(status: int, retry_after: str | None, body: bytes | str | None) -> WriteOutcome:
    if 200 <= status < 300:
        return OK
    return WriteOutcome(
        ok=False,
        rejected=status in REJECTED_STATUSES,
        reason=f"http_{status}",
        status=status,
        retry_after=parse_retry_after(retry_after),
        message=error_message(body),
    )


def _ssl_context(cfg: InfluxSettings) -> ssl.SSLContext | bool:
    if cfg.ca_file is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_file))
    return bool(cfg.verify_ssl)


class V1Sink:
    """InfluxDB 1.x: `POST {url}/write?db=&rp=&precision=s`, basic auth, gzip body."""

    def __init__(self, cfg: InfluxSettings) -> None:
        self.cfg = cfg
        self.output = output_label(cfg)
        self._session: aiohttp.ClientSession | None = None
        self._params = {"db": cfg.database or "", "precision": "s"}
        if cfg.retention_policy:
            self._params["rp"] = cfg.retention_policy
        self._auth = None
        if cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password is not None else ""
            self._auth = aiohttp.BasicAuth(cfg.username, pw)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_context(self.cfg), limit=4),
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds),
                raise_for_status=False,
            )
        return self._session

    async def write(self, body_gz: bytes) -> WriteOutcome:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        try:
            async with self._client().post(
                f"{self.cfg.url}/write", params=self._params, data=body_gz, headers=headers, auth=self._auth
            ) as resp:
                body = await resp.read()
                return classify(resp.status, resp.headers.get("Retry-After"), body)
        except TimeoutError:
            return WriteOutcome(ok=False, reason="timeout", message="no answer within timeout_seconds")
        except aiohttp.ClientError as exc:
            return WriteOutcome(ok=False, reason="connection", message=f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Sink:
    """InfluxDB 2.x API through influxdb-client's async `WriteService` (`POST /api/v2/write`, precision s).

    The batch is already gzipped: it is posted as it is (`Content-Encoding: gzip`), so nothing is
    inflated or compressed again on the event loop. The client is made with `enable_gzip=False`,
    which keeps it from compressing the body a second time.
    """

    def __init__(self, cfg: InfluxSettings) -> None:
        self.cfg = cfg
        self.output = output_label(cfg)
        self._client: InfluxDBClientAsync | None = None
        self._service: WriteService | None = None

    def _write_service(self) -> WriteService:
        if self._service is None:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
            from influxdb_client.service.write_service import WriteService

            kwargs: dict[str, object] = {"verify_ssl": self.cfg.verify_ssl}
            if self.cfg.ca_file is not None:
                kwargs["ssl_ca_cert"] = str(self.cfg.ca_file)
            assert self.cfg.token is not None
            self._client = InfluxDBClientAsync(
                url=self.cfg.url,
                token=self.cfg.token.get_secret_value(),
                org=self.cfg.org,
                timeout=int(self.cfg.timeout_seconds * 1000),
                enable_gzip=False,  # the body is gzipped already
                **kwargs,
            )
            self._service = WriteService(self._client.api_client)
        return self._service

    async def write(self, body_gz: bytes) -> WriteOutcome:
        from influxdb_client.rest import ApiException

        try:
            await self._write_service().post_write_async(
                org=self.cfg.org, bucket=self.cfg.bucket, body=body_gz, precision="s", content_encoding="gzip",
                content_type="text/plain; charset=utf-8", async_req=False, _return_http_data_only=False,
            )  # fmt: skip
            return OK
        except ApiException as exc:
            headers = exc.headers or {}
            return classify(int(exc.status or 0), headers.get("Retry-After"), exc.body)
        except TimeoutError:
            return WriteOutcome(ok=False, reason="timeout", message="no answer within timeout_seconds")
        except aiohttp.ClientError as exc:
            return WriteOutcome(ok=False, reason="connection", message=f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._service = None


def make_sink(cfg: InfluxSettings) -> Sink:
    return V2Sink(cfg) if cfg.api == "v2" else V1Sink(cfg)
