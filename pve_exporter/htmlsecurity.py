"""Security headers on every HTML answer, set in one response hook so that no page can forget them.

Pages are strict: scripts and styles only from this server, no framing, no referrer, no forms
posting elsewhere. A page with an inline `<style>` allows exactly that style by its hash
(`csp(styles=...)`), never `unsafe-inline`. Every answer, HTML or not, gets `nosniff`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from aiohttp import web

HTML_HEADERS = {"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'{styles}; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def style_source(css: str) -> str:
    """The CSP source expression that allows exactly this inline style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def csp(*, styles: Iterable[str] = ()) -> str:
    """The Content-Security-Policy of our pages; `styles` are inline style blocks the page carries."""
    return _POLICY.format(styles="".join(" " + style_source(s) for s in styles))


DEFAULT_CSP = csp()


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: a page may bring its own CSP (for its inline style), the rest is fixed."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        response.headers.update(HTML_HEADERS)
        response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
