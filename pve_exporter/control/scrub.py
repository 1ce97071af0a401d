"""Scrub secrets out of text that PVE (or a proxy in front of it) sent back, before it is stored.

An operation's `error_message` is PVE's own text. It is kept in the history and answered to every
`read` token, so anything that looks like a credential is masked first: PVE API token headers,
`Authorization:` / `Cookie:` values, bearer tokens, PVE tickets, `key=value` pairs whose key says
secret, and UUID-shaped values after `=` or `:` (PVE token secrets are UUIDs). Configured secrets
are masked by value too (`logs.redact_text`). Pure: no I/O, safe to call on every answer.
"""

from __future__ import annotations

import re

from pve_exporter.logs import MASK, redact_text

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PVEAPIToken=user@realm!name=SECRET (also PBS's `PBSAPIToken=user@realm!name:SECRET`)
    (re.compile(r"\b((?:PVE|PBS)APIToken[=\s]+[^\s=:!]+![^\s=:]+[=:])[^\s,;'\"}\]]+", re.I), rf"\1{MASK}"),
    # header lines as some proxies echo them
    (re.compile(r"\b((?:Proxy-)?Authorization|Cookie|Set-Cookie|CSRFPreventionToken)(\s*[:=]\s*)[^\r\n'\"}]+", re.I),
     rf"\1\2{MASK}"),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\1 {MASK}"),
    # PVE tickets: PVE:user@realm:HEX::BASE64SIG
    (re.compile(r"\bPVE(?:AuthCookie=)?:?[^\s:]+@[^\s:]+:[0-9A-F]{8}::[A-Za-z0-9+/=]+"), MASK),
    # key=value / "key": "value" where the key names a secret
    (re.compile(r"\b(?!(?:PVE|PBS)APIToken\b)([\w-]*(?:secret|password|passwd|token|api[_-]?key|ticket)[\w-]*[\"']?\s*[=:]\s*[\"']?)"
                r"[^\s,;&'\"}\]]+", re.I), rf"\1{MASK}"),
    # any UUID that is a value (after = or :): PVE token secrets look like this
    (re.compile(rf"([=:]\s*[\"']?){_UUID}\b"), rf"\1{MASK}"),
)  # fmt: skip


def scrub_secrets(text: str | None) -> str | None:
    """`text` with anything that looks like a credential replaced by the log mask."""
    if not text:
        return text
    out = redact_text(text)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out
