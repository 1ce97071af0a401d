"""API-token authentication and privileges, with PVE's exact 401 texts (pve-api.md §1.3, §1.4, §6).

Privileges are granted on `/` and inherited everywhere, which is how an exporter token is
normally set up (PVEAuditor on `/`). Per-path ACLs are not simulated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from pve_exporter.simulator.versions import PveVersion

PVE_AUDITOR = frozenset({"Sys.Audit", "VM.Audit", "Datastore.Audit", "Pool.Audit", "SDN.Audit"})
DEFAULT_TOKEN_ID = "monitor@pve!exporter"
DEFAULT_TOKEN_SECRET = "00000000-0000-4000-8000-000000000001"
DEFAULT_PRIVILEGES = PVE_AUDITOR | {"VM.PowerMgmt"}
# A second default token with PVEAuditor only: power actions with it get PVE's 403 (VM.PowerMgmt).
AUDITOR_TOKEN_ID = "auditor@pve!ro"
AUDITOR_TOKEN_SECRET = "00000000-0000-4000-8000-000000000002"

TokenTable = Mapping[str, tuple[str, "frozenset[str] | set[str]"]]

_TOKEN_HEADER_RE = re.compile(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)")
_TOKEN_ID_RE = re.compile(r"^(\S+@\S+)!([A-Za-z][A-Za-z0-9.\-_]+)$")


def default_tokens() -> dict[str, tuple[str, frozenset[str]]]:
    return {
        DEFAULT_TOKEN_ID: (DEFAULT_TOKEN_SECRET, DEFAULT_PRIVILEGES),
        AUDITOR_TOKEN_ID: (AUDITOR_TOKEN_SECRET, PVE_AUDITOR),
    }


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated token: `userid` is `user@realm`, `tokenid` the part after `!`."""

    userid: str
    tokenid: str | None
    privileges: frozenset[str]

    @property
    def authid(self) -> str:
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid

    def has(self, privilege: str) -> bool:
        return privilege in self.privileges


class AuthError(Exception):
    """A 401: the message is the HTTP reason phrase; the body stays empty."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticate(
    authorization: str | None, cookie: str | None, tokens: TokenTable, version: PveVersion
) -> Caller:
    """Check the `Authorization` header the way pve-manager `PVE/HTTPServer.pm` does."""
    match = _TOKEN_HEADER_RE.search(authorization or "")
    if match is None:
        if "PVEAuthCookie" in (authorization or "") or "PVEAuthCookie=" in (cookie or ""):
            # Tickets are not simulated: any ticket is one PVE would reject.
            raise AuthError(
                "Authentication failed!" if version.generic_auth_failure
                else "permission denied - invalid PVE ticket"
            )
        raise AuthError("No ticket")
    value = unquote(match.group(1).strip())
    token_id, sep, secret = value.rpartition("=")  # split at the LAST `=`
    if not sep:
        token_id, secret = value, ""
    try:
        return _verify(token_id, secret, tokens)
    except AuthError:
        if version.generic_auth_failure:
            raise AuthError("Authentication failed!") from None
        raise


def _verify(token_id: str, secret: str, tokens: TokenTable) -> Caller:
    if not token_id:
        raise AuthError("no tokenid specified")
    m = _TOKEN_ID_RE.match(token_id)
    if m is None:
        raise AuthError(f"'{token_id}' is not a valid token ID - not able to split into user and token parts")
    user, token = m.group(1), m.group(2)
    entry = tokens.get(token_id)
    if entry is None:
        if not any(known.split("!", 1)[0] == user for known in tokens):
            raise AuthError(f"no such user ('{user}')")
        raise AuthError(f"no such token '{token}' for user '{user}'")
    expected, privileges = entry
    if secret != expected:
        raise AuthError("invalid token value!")
    return Caller(user, token, frozenset(privileges))
