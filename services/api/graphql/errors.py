"""How the API reports errors: a client's mistake keeps its `extensions.code`; anything else
is the server's fault and is masked (services.api.graphql.schema).

Resolvers raise the refusals of services.common.errors; GraphQL copies their code from the
exception's `extensions`. Messages are for clinicians and never contain PHI of a record
the caller may not see.
"""

from __future__ import annotations

from graphql import GraphQLError

from services.common.errors import ErrorCode, Refused
from services.common.log import get_logger

_log = get_logger(__name__)

MASKED_MESSAGE = "Internal server error; quote the X-Request-Id response header."


def is_client_error(error: GraphQLError) -> bool:
    """True for errors the client caused: the refusals, and GraphQL syntax, validation and
    argument-coercion errors.

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


def log_server_errors(errors: list[GraphQLError], operation: str | None) -> None:
    """Give client errors their code; log server faults by path and exception, with no
    request content (str(error) quotes the query source, and so any PHI typed into it)."""
    for error in errors:
        if is_client_error(error):
            ensure_code(error)
            continue
        _log.error(
            "graphql_resolver_failed",
            path=error.path,
            operation=operation,
            exc_info=error.original_error,
        )


def masked(error: GraphQLError) -> GraphQLError:
    """A server fault as the client sees it: where it happened, not what it was."""
    return GraphQLError(
        MASKED_MESSAGE,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
    )


def reported(errors: list[GraphQLError], operation: str | None = None) -> list[GraphQLError]:
    """What a client is told of errors, as the schema's own pipeline tells it
    (services.api.graphql.schema: process_errors, then MaskErrors), for the pushes the
    API sends without it (services.api.graphql.live.Pushed)."""
    log_server_errors(errors, operation)
    return [e if is_client_error(e) else masked(e) for e in errors]
