"""The GraphQL schema the API serves: the root types composed from one module per concept,
and the extensions every operation runs through (limits on the document and a byte-bounded
cache of parsed documents, fresh rosters, access records, masked server errors, the
position a mutation committed at).

To add a field: write its type and resolver in the concept's module and put it on that
module's Query/Mutation/Subscription class; a new concept's classes are listed here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, MaskErrors, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext

from services.api.graphql import access, live
from services.api.graphql.agenda import AgendaQuery
from services.api.graphql.arguments import RefuseHiddenCharacters
from services.api.graphql.audit import AuditMutation, AuditQuery
from services.api.graphql.audit_proofs import AuditProofsQuery
from services.api.graphql.board import BoardMutation, BoardQuery, BoardSubscription
from services.api.graphql.care_plans import CarePlansMutation, CarePlansQuery
from services.api.graphql.consents import ConsentsMutation, ConsentsQuery
from services.api.graphql.context import Context
from services.api.graphql.errors import MASKED_MESSAGE, is_client_error, log_server_errors
from services.api.graphql.goal_progress import GoalProgressSubscription
from services.api.graphql.huddles import HuddlesMutation, HuddlesQuery, HuddlesSubscription
from services.api.graphql.limits import BoundedDocuments, DocumentCache, Limits
from services.api.graphql.measures import MeasuresQuery
from services.api.graphql.observations import ObservationsMutation, ObservationsQuery
from services.api.graphql.patients import PatientsMutation, PatientsQuery
from services.api.graphql.scalars import POSITION_SCALAR, Position
from services.api.graphql.teams import Member, TeamsMutation, TeamsQuery, resolve_me
from services.common.aggregates import track_commits
from services.common.log import get_logger
from services.settings import Settings

_log = get_logger(__name__)

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]


# Root fields appear in the schema in the order of these bases, then the class's own.
@strawberry.type
class Query(
    TeamsQuery,
    PatientsQuery,
    CarePlansQuery,
    HuddlesQuery,
    ConsentsQuery,
    BoardQuery,
    AgendaQuery,
    AuditQuery,
    AuditProofsQuery,
    MeasuresQuery,
    ObservationsQuery,
):
    # resolver= keeps the field typed under mypy --strict; the decorator-with-arguments
    # form of strawberry.field is untyped.
    me: Member = strawberry.field(resolver=resolve_me, description="The caller, as a team member.")


@strawberry.type
class Mutation(
    TeamsMutation,
    PatientsMutation,
    CarePlansMutation,
    HuddlesMutation,
    ConsentsMutation,
    BoardMutation,
    AuditMutation,
    ObservationsMutation,
):
    pass


@strawberry.type
class Subscription(BoardSubscription, HuddlesSubscription, GoalProgressSubscription):
    pass


class CarecoordSchema(strawberry.Schema):
    """A strawberry Schema whose error logging never writes query text or variables, and
    whose client errors all carry an `extensions.code`."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # strawberry's default logs str(error), which quotes the query source and so any
        # PHI typed into it as a literal. Client errors are the client's business; server
        # faults are logged by path and exception, with no request content.
        log_server_errors(errors, execution_context.operation_name if execution_context else None)


class _FreshRosters(SchemaExtension):
    """Each operation reads rosters anew: a WebSocket's context outlives its operations, and
    a member removed (or added) since the last one must be refused (or let in) at once.
    The loaders of read models start afresh too: one operation's batch, never another's
    stale answer."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.teams.clear()
            context.loaders.clear()
        yield
        # The operation's executor goes now, not at a full collection (live.let_go).
        if (executor := live.RUNNING.get()) is not None:
            live.let_go(executor)
            live.RUNNING.set(None)


class _RecordAccesses(SchemaExtension):
    """Hands each operation's access records to the audit log before its result leaves.

    The records go out when execution ends, before strawberry builds the response (over
    HTTP and over a WebSocket alike). If the log cannot take them, the operation answers
    SERVICE_UNAVAILABLE with no data: an error raised there replaces the whole result.
    Subscriptions record each push as it is sent (services.api.graphql.access.pushed) and
    their own refusals when they end (services.api.graphql.access.flush).
    """

    def on_operation(self) -> Iterator[None]:
        access.begin_operation()
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            # Every record names the purpose: a bad one is refused before anything is read
            # (or refused), so no access goes unrecorded for want of it.
            context.purpose_of_use()
        yield
        if isinstance(context, Context):
            await access.flush(context)


class _CommittedAt(SchemaExtension):
    """A mutation's answer says where its changes committed: `extensions.position`, the
    highest event-store position its commands wrote (absent when they changed nothing).
    A client passes it as `atLeast` to read its own writes."""

    def on_operation(self) -> Iterator[None]:
        self._commits = track_commits()
        yield

    def get_results(self) -> dict[str, Any]:
        position = self._commits.position
        return {"position": str(position)} if position else {}


class _Executor(StrawberryGraphQLCoreExecutionContext):
    """strawberry's executor, left where the operation's resolvers find it (live.RUNNING):
    a subscription taken over (services.api.graphql.live.Handoff) executes its document
    on each push without the operation's own task, and every operation's is let go when
    the operation ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        live.RUNNING.set(self)


def _mask_server_errors() -> SchemaExtension:
    # An unexpected exception's message may hold internals (or data); clients get the
    # request id in the X-Request-Id header to quote instead.
    return MaskErrors(
        should_mask_error=lambda error: not is_client_error(error),
        error_message=MASKED_MESSAGE,
    )


def build_schema(
    *,
    limits: Limits | None = None,
    introspection: bool = False,
    extensions: Iterable[ExtensionFactory] = (),
) -> strawberry.Schema:
    """The schema, with the document limits (by default those of the default settings) and
    their cache, error masking, introspection only when asked for, and any extra
    extensions (e.g. metrics)."""
    # The defaults, not the environment: tooling (the SDL export) builds one at import.
    limits = limits or Limits.from_settings(Settings.model_construct())
    # One cache per schema (so per app): its budget is the app's, not shared by every app.
    cache = DocumentCache(limits.cache_bytes)
    closed: list[ExtensionFactory] = [] if introspection else [DisableIntrospection]
    return CarecoordSchema(
        config=StrawberryConfig(scalar_map={Position: POSITION_SCALAR}),
        execution_context_class=_Executor,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            # First: a document past a limit is refused before any other extension works on it.
            partial(BoundedDocuments, limits=limits, cache=cache),
            *closed,
            _FreshRosters,
            RefuseHiddenCharacters,
            _mask_server_errors,
            _RecordAccesses,
            _CommittedAt,
            *extensions,
        ],
    )


# For tooling: `strawberry export-schema services.api.graphql.schema:schema`.
schema = build_schema()
