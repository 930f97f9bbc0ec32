"""The one hierarchy of refusals, each carrying the public error code clients receive.

Every layer raises these: an aggregate's `decide` (an impossible date, a closed huddle),
the write side (a stale expectedVersion), the access gate (not signed in, not on the
team), the audit hand-off (the log cannot take the records). They carry the code in
`extensions`, the attribute GraphQL copies onto the error it reports, so no layer below
the API imports GraphQL while the client still gets `extensions.code`. Messages are for
clinicians and name ids, never PHI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    # Not the client's doing: a part the answer depends on (the audit log) is away.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class Refused(Exception):
    """A request that was not carried out, with the code that tells the client why."""

    code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The code goes last so a caller's extra extensions cannot overwrite it.
        self.extensions: dict[str, Any] = {**(extensions or {}), "code": str(self.code)}


class InvalidInput(Refused):
    """The request itself is wrong, whatever the record's state (an impossible date)."""

    code = ErrorCode.BAD_USER_INPUT


class Unauthenticated(Refused):
    """No credentials, or credentials that were not accepted."""

    code = ErrorCode.UNAUTHENTICATED


class NotPermitted(Refused):
    """The caller may not do this (a non-lead changing the roster, a stranger reading)."""

    code = ErrorCode.FORBIDDEN


class Missing(Refused):
    """A part named inside a record the caller can see does not exist (an unknown goal)."""

    code = ErrorCode.NOT_FOUND


class StateConflict(Refused):
    """The record's current state does not allow this (a completed plan, a closed huddle),
    or it changed since the caller read it."""

    code = ErrorCode.CONFLICT


class Unavailable(Refused):
    """The request cannot be answered right now; trying again later may succeed."""

    code = ErrorCode.SERVICE_UNAVAILABLE
