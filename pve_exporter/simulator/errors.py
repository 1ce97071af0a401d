"""The two ways a simulated PVE call fails: a JSON error envelope, or a relay failure with no body."""

from __future__ import annotations


class ApiError(Exception):
    """A handler error: HTTP `status`, reason = first line of `message`, JSON envelope body."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class EmptyError(Exception):
    """An error PVE sends with an empty body: 401s and pveproxy's 595/596 relay failures."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def param_error(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def permission_error(path: str, privilege: str) -> ApiError:
    return ApiError(403, f"Permission check failed ({path}, {privilege})")
