"""The GraphQL error codes of the public API, and exceptions resolvers raise to produce them.

A resolver raises e.g. `NotFound("no care plan with that id")`; the client receives a
GraphQL error whose `extensions.code` is "NOT_FOUND". Messages are for clinicians and
never contain PHI of a record the caller may not see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from graphql import GraphQLError

from services.common.domain import Refused


class ErrorCode(StrEnum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    # Not the client's doing: a part the answer depends on (the audit log) is away.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class ApiError(GraphQLError):
    """An error the client caused and can act on; carries its code in extensions."""

    code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, extensions: dict[str, Any] | None = None) -> None:
        # The code goes last so a caller's extra extensions cannot overwrite it.
        super().__init__(message, extensions={**(extensions or {}), "code": str(self.code)})


class BadUserInput(ApiError):
    code = ErrorCode.BAD_USER_INPUT


class Unauthenticated(ApiError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ApiError):
    code = ErrorCode.FORBIDDEN


class NotFound(ApiError):
    code = ErrorCode.NOT_FOUND


class Conflict(ApiError):
    code = ErrorCode.CONFLICT


class ServiceUnavailable(ApiError):
    """The request cannot be answered right now; trying again later may succeed."""

    code = ErrorCode.SERVICE_UNAVAILABLE


def is_client_error(error: GraphQLError) -> bool:
    """True for errors the client caused: our ApiErrors, the domain's refusals, and GraphQL
    syntax, validation and argument-coercion errors.

    Anything else wraps an unexpected exception in the server.
    """
    original = error.original_error
    return original is None or isinstance(original, GraphQLError | Refused)


def ensure_code(error: GraphQLError) -> None:
    """Give a client error without a code (a bad enum value, an impossible date, a query
    that does not match the schema) the code BAD_USER_INPUT, so every client error has one.
    """
    if is_client_error(error) and "code" not in (error.extensions or {}):
        error.extensions = {**(error.extensions or {}), "code": str(ErrorCode.BAD_USER_INPUT)}
