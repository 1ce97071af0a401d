"""Typed errors at the PVE boundary: callers branch on the class, never on message text."""

from __future__ import annotations


class PveError(Exception):
    """Base of every error the PVE client raises. `kind` is a closed set used as a metric label."""

    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, path: str = "", endpoint: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = f" ({self.endpoint}{self.path})" if self.path else ""
        status = f"HTTP {self.status}: " if self.status else ""
        return f"{status}{self.message}{where}"


class PveAuthError(PveError):
    """401: token unknown, expired, or its secret is wrong."""

    kind = "auth"


class PvePermissionError(PveError):
    """403: the token lacks a privilege on this path (PVE names it in the message)."""

    kind = "permission"


class PveNotFoundError(PveError):
    """501/404: the path or method does not exist on this PVE version."""

    kind = "not_found"


class PveTimeoutError(PveError):
    """The request did not finish within the per-request timeout."""

    kind = "timeout"


class PveUnreachableError(PveError):
    """No connection to the endpoint, or PVE could not reach the node it proxies to (595/596)."""

    kind = "unreachable"


class PveCertificateError(PveUnreachableError):
    """The server's certificate is not the pinned one (fingerprint mismatch): never talked to."""

    kind = "certificate"


class PveClientClosedError(PveError):
    """The cluster's client was closed (cluster removed or daemon stopping); nothing was sent."""

    kind = "closed"


class PveApiError(PveError):
    """PVE answered with an error status (400, 500, ...) and, on PVE >= 8.4, a message."""

    kind = "api"


class PveProtocolError(PveError):
    """The answer is not the JSON `{"data": ...}` envelope PVE always sends on success."""

    kind = "protocol"


ERROR_KINDS = ("auth", "permission", "not_found", "timeout", "unreachable", "certificate", "api", "protocol")
