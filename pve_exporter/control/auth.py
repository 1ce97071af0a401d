"""Bearer-token authentication and scopes for the control API.

Tokens come from `control.tokens`: only their SHA-256 is held (from the config, or computed
from `secret_file`). A presented token is hashed and compared with `hmac.compare_digest`
against *every* configured hash, so the time taken does not depend on which token (if any)
matched, nor on how many leading bytes were right.

Scopes nest (a deliberate choice, documented in docs/control-api.md): `admin` includes
`power`, which includes `read`. A token therefore lists the highest scope it needs; listing
the lower ones as well changes nothing.

Failed authentication (no token or an unknown one) counts against the client address and against
the presented token's prefix (a digest of its first characters), each in a token bucket. A valid
token is always served: behind a proxy or NAT one address is everybody, so a flood of wrong tokens
must not lock out the right ones. Once a bucket is empty, further *failures* get 429 with
Retry-After instead of 401. Every request does the same work (hash, compare with every token,
hash the prefix) whatever the outcome, so neither the answer time nor the lockout says which
prefix is close to a real token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pve_exporter.settings import ControlToken

SCOPE_ORDER = ("read", "power", "admin")
_IMPLIES = {"read": {"read"}, "power": {"read", "power"}, "admin": {"read", "power", "admin"}}
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
MAX_TOKEN_LENGTH = 4096
PREFIX_CHARS = 8  # the failure limit's second key: a stale token sent from many addresses is one key


def prefix_key(token: str) -> str:
    """The limiter key of a presented token: a digest of its first characters (never the text)."""
    head = token[:PREFIX_CHARS].encode("utf-8", "surrogatepass")
    return "prefix:" + hashlib.sha256(b"pve_exporter auth prefix\0" + head).hexdigest()[:32]


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for s in scopes:
        out |= _IMPLIES[s]
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's name (recorded as `user`) and its effective scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def highest_scope(self) -> str:
        return max(self.scopes, key=SCOPE_ORDER.index)


class AuthResult:
    """Outcome of checking an Authorization header: a principal, or why there is none, and the
    limiter key of the presented token's prefix (None when no token was presented)."""

    __slots__ = ("prefix", "principal", "reason")

    def __init__(self, principal: Principal | None, reason: str | None, prefix: str | None = None) -> None:
        self.principal = principal
        self.reason = reason  # "missing" | "malformed" | "invalid"
        self.prefix = prefix


class TokenAuthenticator:
    def __init__(self, tokens: Iterable[ControlToken]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        self.update(tokens)

    def update(self, tokens: Iterable[ControlToken]) -> None:
        """Replace the token table (config reload)."""
        self._entries = [(t.digest(), Principal(t.name, effective_scopes(t.scopes))) for t in tokens]

    @property
    def token_names(self) -> list[str]:
        return [p.name for _, p in self._entries]

    def check(self, authorization: str | None) -> AuthResult:
        if not authorization:
            return AuthResult(None, "missing")
        m = _BEARER.match(authorization)
        if m is None or len(m.group(1)) > MAX_TOKEN_LENGTH:
            return AuthResult(None, "malformed")
        token = m.group(1)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for expected, principal in self._entries:  # no early exit: every hash is compared
            if hmac.compare_digest(digest, expected) and found is None:
                found = principal
        return AuthResult(found, None if found else "invalid", prefix_key(token))
