"""How the API reports errors: a client's mistake keeps its `extensions.code`; anything else
is the server's fault and is masked (services.api.graphql.schema).

Resolvers raise the refusals of services.common.errors; GraphQL copies their code from the
exception's `extensions`. Messages are for clinicians and never contain PHI of a record
the caller may not see.
"""

from __future__ import annotations

from graphql import GraphQLError

from services.common.errors import ErrorCode, Refused


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
