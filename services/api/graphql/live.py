"""What every subscription shares: joining the hub's stream of a team's board updates, being
cut off (and told why) when too far behind, and re-checking membership on roster changes."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from inspect import isawaitable
from typing import Any, Protocol, TypeVar

from graphql import (
    ExecutionResult,
    GraphQLEnumType,
    GraphQLError,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    get_named_type,
)
from graphql.execution import Executor
from starlette.websockets import WebSocket, WebSocketState

from schemas.audit import AccessAction
from schemas.board import BoardUpdate
from services.api.fanout import (
    OVERFLOW_CLOSE_CODE,
    OVERFLOW_REASON,
    Hub,
    Overflowed,
    Subscription,
    wants,
)
from services.api.graphql import freshness
from services.api.graphql.access import Access, authorize, begin_operation, flush
from services.api.graphql.context import Context
from services.api.graphql.errors import reported
from services.common.errors import StateConflict
from services.common.policy import Action
from services.tasks import store

PUSH = AccessAction.SUBSCRIBE_PUSH
# A subscription resuming further back than this many changes reads the board instead:
# replaying more would hold too much for one subscriber (and a crowd of them reconnecting
# after a restart would hold it many times over).
REPLAY_LIMIT = 1000
# ... or than this many bytes of changes (a consent change carries each tagged card of its
# patient, so a thousand of them can be far more than a board).
REPLAY_BYTES = 4 * 1024 * 1024
_CLOSE_GRACE_SECONDS = 30.0
# Closes in flight (the event loop keeps only weak references to tasks).
_closing: set[asyncio.Future[None]] = set()

# graphql-transport-ws close codes for sign-in (README "Security"): 4403 refuses a
# connection_init whose token is missing or refused (strawberry's ConnectionRejectionError);
# 4401 closes a socket whose token has expired. A client signs in again and reconnects.
TOKEN_REFUSED_CLOSE_CODE = 4403
TOKEN_EXPIRED_CLOSE_CODE = 4401
TOKEN_EXPIRED_REASON = "token expired: sign in again"  # noqa: S105 - a close reason, no secret


def _open(socket: WebSocket) -> bool:
    return (
        socket.client_state is not WebSocketState.DISCONNECTED
        and socket.application_state is not WebSocketState.DISCONNECTED
    )


def _expired(ref: weakref.ref[WebSocket]) -> None:
    socket = ref()
    if socket is None or not _open(socket):
        return
    closing = asyncio.ensure_future(_close_expired(socket))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


async def _close_expired(socket: WebSocket) -> None:
    # The socket may close under us meanwhile: nothing is left to do then.
    with contextlib.suppress(RuntimeError, OSError):
        await socket.close(code=TOKEN_EXPIRED_CLOSE_CODE, reason=TOKEN_EXPIRED_REASON)


def close_at_expiry(ctx: Context) -> None:
    """Close the context's WebSocket (4401) when its caller's token expires. Operations
    and pushes check the expiry themselves too (Context.require_actor), so nothing is
    served on an expired token even before the socket closes. A timer, not a task: a
    socket held for hours costs a timer entry, and the timer is cancelled when the
    socket's handler ends (`stop_expiry`)."""
    socket, actor = ctx.response, ctx.actor
    if not isinstance(socket, WebSocket) or actor is None or actor.expires_at is None:
        return
    left = (actor.expires_at - datetime.now(UTC)).total_seconds()
    stop_expiry(ctx)
    ctx.expiry = asyncio.get_running_loop().call_later(
        max(left, 0.0), _expired, weakref.ref(socket)
    )


def stop_expiry(ctx: Context) -> None:
    if ctx.expiry is not None:
        ctx.expiry.cancel()
        ctx.expiry = None


def _hub(ctx: Context) -> Hub:
    if ctx.hub is None:
        # Only an API started without a broker has no hub; that is a deployment fault.
        raise RuntimeError("live updates need care.board-updates (CARECOORD_KAFKA_BOOTSTRAP)")
    return ctx.hub


def _join(ctx: Context, team_id: str, huddle_id: str | None = None) -> Subscription:
    def cut_off() -> None:
        # A WebSocket whose queue overflowed is closed, saying why; the client reconnects
        # and refetches. (Over HTTP the subscription just ends.)
        socket = ctx.response
        if isinstance(socket, WebSocket):
            closing = asyncio.ensure_future(
                socket.close(code=OVERFLOW_CLOSE_CODE, reason=OVERFLOW_REASON)
            )
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    return _hub(ctx).join(team_id, huddle_id=huddle_id, on_overflow=cut_off)


# What a subscription pushes for one update, given the caller's access as of it: the root
# values its document is executed on (none: nothing to push).
Step = Callable[[BoardUpdate, Access], Awaitable[Sequence[object]]]


@dataclass(slots=True)
class _Gate:
    """What every update passes before a subscription makes anything of it: the caller's
    token still valid, membership re-checked on a roster change, and a change given
    from the log already skipped."""

    ctx: Context
    team_id: str
    resource: str
    access: Access
    replayed: int | None

    async def accept(self, update: BoardUpdate) -> bool:
        # A token that expired since the last push serves nothing more: UNAUTHENTICATED
        # ends the subscription before anything is read for this update.
        self.ctx.require_actor()
        if update.kind == "roster":
            self.ctx.teams.pop(self.team_id, None)  # the roster changed: read it again
            self.access = await authorize(
                self.ctx, team_id=self.team_id, action=Action.READ, resource=self.resource
            )
            return False
        replayed = self.replayed
        return replayed is None or update.position is None or update.position > replayed


async def updates(
    ctx: Context,
    team_id: str,
    resource: str,
    access: Access,
    huddle_id: str | None = None,
    *,
    after: int | None = None,
    step: Step | None = None,
) -> AsyncGenerator[tuple[BoardUpdate, Access], None]:
    """The team's updates for one subscription, each with the caller's access as of it,
    until its queue overflows; a roster change re-checks that the caller is still a
    member (FORBIDDEN ends the subscription).

    With `after`, first the changes logged after that position (those the client missed),
    then the live ones past them: the subscription joins the hub before the log is read,
    so a change lands in one or the other, and one in both is given once.

    With `step`, a subscription on a WebSocket of this API is handed over once it is live
    (services.api.graphql.live.Handoff): the generator ends, and from then on each update
    runs `step` and is pushed by the hub's own task, so an idle subscriber holds no task,
    generator or per-operation state of its own."""
    sub = _join(ctx, team_id, huddle_id)
    handed = False
    try:
        gate = _Gate(ctx, team_id, resource, access, after)
        if after is not None:
            for update in await missed(ctx, team_id, after, huddle_id):
                ctx.require_actor()
                gate.replayed = update.position
                yield update, gate.access
        handoff = HANDOFF.get()
        if handoff is not None:
            handoff.live()
            if step is not None and handoff.take(ctx, sub, gate, step):
                handed = True
                return
        while True:
            try:
                update = await sub.next()
            except Overflowed:
                if isinstance(ctx.response, WebSocket):
                    # The socket is closing; its end cancels this operation. Returning
                    # would make the server send "complete" on a closed socket.
                    await asyncio.sleep(_CLOSE_GRACE_SECONDS)
                return
            if await gate.accept(update):
                yield update, gate.access
    finally:
        if not handed:
            _hub(ctx).leave(sub)


# The subscription operation running in this task, where it can be handed over (set by
# the API's graphql-transport-ws handler).
HANDOFF: ContextVar[Handoff | None] = ContextVar("carecoord_handoff", default=None)
# The graphql-core executor of the operation running in this task (set by the schema's
# executor class as it is built): a subscription taken over executes its document with
# its parts, and every operation's is let go when the operation ends.
RUNNING: ContextVar[Executor[Any] | None] = ContextVar("carecoord_running", default=None)


class Channel(Protocol):
    """Where a subscription taken over sends its messages (the socket's handler)."""

    async def push(self, message: dict[str, Any]) -> None:
        """Send a graphql-transport-ws message to the client."""

    def operation_ended(self, operation_id: str) -> None:
        """The subscription ended: its id is free again."""


def _nothing() -> None:
    return None


class Handoff:
    """One graphql-transport-ws subscription, as its handler lets it be taken over: once
    live, its updates are pumped by the hub (`Pushed`) and the operation's task, with
    strawberry's per-operation state, ends without completing the operation."""

    __slots__ = ("channel", "live", "operation_id", "pushed")

    def __init__(
        self, operation_id: str, channel: Channel, live: Callable[[], None] = _nothing
    ) -> None:
        self.operation_id = operation_id
        self.channel = channel
        self.live = live  # the subscription has started: it waits for updates now
        self.pushed: Pushed | None = None

    def started(self) -> None:
        """The operation's task is over (live or ended): nothing more to tell."""
        live, self.live = self.live, _nothing
        live()

    def take(self, ctx: Context, sub: Subscription, gate: _Gate, step: Step) -> bool:
        executor = RUNNING.get()
        if executor is None or executor.context_value is not ctx:
            return False  # not this operation's executor: keep it in its own task
        self.pushed = Pushed(self, ctx, sub, gate, step, _Plan.of(executor))
        ctx.teams.clear()  # the gate holds the roster; a roster change reads it again
        sub.hand_to(self.pushed.pump)
        return True


def let_go(executor: Executor[Any]) -> None:
    """Break the cycle graphql-core's executor makes with itself (its `async_helpers` are
    its own bound methods), so it goes when its execution is done rather than at the next
    full collection, which an API holding thousands of sockets runs rarely."""
    executor.__dict__.pop("async_helpers", None)


_SAME_FOR_EVERY_VIEWER = "__carecoord_same_for_every_viewer__"


_F = TypeVar("_F", bound=Callable[..., Any])


def same_for_every_viewer(resolver: _F) -> _F:
    """Mark a field resolver of a pushed type whose answer depends on its root value only,
    never on who is asking (the caller, their access, their context's state): a push may
    then execute a document once for every subscriber given an equal root value."""
    setattr(resolver, _SAME_FOR_EVERY_VIEWER, True)
    return resolver


def _viewer_free(type_: GraphQLNamedType) -> bool:
    """Whether every field of every object type reachable from `type_` answers the same
    whoever asks: plain attributes and resolvers marked `same_for_every_viewer`, with no
    field extensions or permission classes of strawberry's in the way."""
    seen: set[str] = set()
    todo = [type_]
    while todo:
        named = todo.pop()
        if named.name in seen:
            continue
        seen.add(named.name)
        if isinstance(named, GraphQLScalarType | GraphQLEnumType):
            continue
        if not isinstance(named, GraphQLObjectType):
            return False  # interfaces and unions: none is pushed today, so none is judged
        for field in named.fields.values():
            definition = field.extensions.get("strawberry-definition")
            if definition is None or definition.extensions or definition.permission_classes:
                return False
            resolver = definition.base_resolver
            if resolver is not None and not getattr(
                resolver.wrapped_func, _SAME_FOR_EVERY_VIEWER, False
            ):
                return False
            todo.append(get_named_type(field.type))
    return True


# Per schema: the subscription fields judged by `_viewer_free`.
_VIEWER_FREE: weakref.WeakKeyDictionary[GraphQLSchema, dict[str, bool]] = (
    weakref.WeakKeyDictionary()
)


def _shared_key(executor: Executor[Any]) -> tuple[Any, ...] | None:
    """What makes two subscriptions' pushes of an equal root value execute alike: the
    same document text, operation and variables, on a subscription field whose answer
    depends on the root value only (`_viewer_free`). None: executed per subscriber."""
    operation = executor.operation
    if operation.loc is None or len(operation.selection_set.selections) != 1:
        return None
    selected = operation.selection_set.selections[0]
    subscription = executor.schema.subscription_type
    name = getattr(selected, "name", None)
    if subscription is None or name is None or name.value not in subscription.fields:
        return None
    judged = _VIEWER_FREE.setdefault(executor.schema, {})
    free = judged.get(name.value)
    if free is None:
        field_type = get_named_type(subscription.fields[name.value].type)
        free = judged[name.value] = _viewer_free(field_type)
    if not free:
        return None
    # Parts the plan holds anyway: the key adds a tuple, no copies. (Variables compare by
    # value; a value without equality of its own compares by identity: not shared.)
    document = operation.loc.source.body
    named = operation.name.value if operation.name else None
    variables = executor.variable_values
    coerced = getattr(variables, "coerced", variables)  # graphql-core 3.3: VariableValues
    return (executor.schema, document, named, coerced)


class _Executed:
    """The payloads of an update's pushes, kept while the update is: a subscriber whose
    document and root value equal another's takes the payload executed for that one
    instead of executing its document again (a team's ten wall screens and phones, one
    change: one execution). Gone with the update, when every subscriber has pushed it."""

    __slots__ = ("_by_update",)

    # Different documents or cards (a consent re-deciding a patient's cards) for one update.
    VARIANTS = 64

    def __init__(self) -> None:
        self._by_update: dict[int, tuple[weakref.ref[BoardUpdate], list[_Variant]]] = {}

    @property
    def updates(self) -> int:
        return len(self._by_update)

    def get(self, update: BoardUpdate, key: tuple[Any, ...], root: object) -> Any:
        entry = self._by_update.get(id(update))
        if entry is None or entry[0]() is not update:
            return None
        for variant in entry[1]:
            if variant.key == key and variant.root == root:
                return variant.payload
        return None

    def put(self, update: BoardUpdate, key: tuple[Any, ...], root: object, payload: Any) -> None:
        update_id = id(update)
        entry = self._by_update.get(update_id)
        if entry is None or entry[0]() is not update:
            by_update = self._by_update

            def gone(ref: weakref.ref[BoardUpdate]) -> None:
                found = by_update.get(update_id)
                if found is not None and found[0] is ref:
                    del by_update[update_id]

            entry = (weakref.ref(update, gone), [])
            by_update[update_id] = entry
        if len(entry[1]) < self.VARIANTS:
            entry[1].append(_Variant(key, root, payload))


@dataclass(frozen=True, slots=True)
class _Variant:
    key: tuple[Any, ...]
    root: object
    payload: Any


EXECUTED = _Executed()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What executing a subscription's document on a push takes: the operation's executor
    less its per-execution state (sets, caches, lists: about 2 KB a subscriber), built
    afresh for each push; and what its pushes share with other subscribers' (`shared`:
    None when they share nothing)."""

    cls: type[Executor[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    shared: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, executor: Executor[Any]) -> _Plan:
        e = executor
        args: tuple[Any, ...] = (e.schema, e.fragment_definitions, e.fragments, None)
        args += (e.context_value, e.operation, e.variable_values)
        args += (e.field_resolver, e.type_resolver, e.subscribe_field_resolver)
        kwargs = {
            "enable_early_execution": e.enable_early_execution,
            "middleware_manager": e.middleware_manager,
            "is_awaitable": e.is_awaitable,
            "is_async_iterable": e.is_async_iterable,
            "hide_suggestions": e.hide_suggestions,
            "hooks": e.hooks,
        }
        if hasattr(e, "operation_extensions"):  # strawberry's executor
            kwargs["operation_extensions"] = e.operation_extensions
        return cls(type(e), args, kwargs, _shared_key(e))

    def executor(self, root: object) -> Executor[Any]:
        args = self.args
        built: Executor[Any] = self.cls(*args[:3], root, *args[4:], **self.kwargs)  # type: ignore[call-arg]
        return built


class Pushed:
    """A subscription taken over: each update passes the gate, `step` makes the root
    values, and the operation's document is executed on each and sent as `next`. An
    error ends it as strawberry would: `next` with the error, then `complete`."""

    __slots__ = ("ctx", "gate", "handoff", "plan", "step", "sub")

    def __init__(
        self,
        handoff: Handoff,
        ctx: Context,
        sub: Subscription,
        gate: _Gate,
        step: Step,
        plan: _Plan,
    ) -> None:
        self.handoff, self.ctx, self.sub, self.gate = handoff, ctx, sub, gate
        self.step, self.plan = step, plan

    async def pump(self, update: BoardUpdate) -> None:
        begin_operation()  # refusals and reads made here are recorded as the push's
        try:
            if await self.gate.accept(update):
                for root in await self.step(update, self.gate.access):
                    await self._send("next", await self._pushed(update, root))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = (
                exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
            )
            if self.handoff.pushed is not self:
                return  # ended meanwhile (the client completed it, or the socket closed)
            self.end()
            await self._send("next", self._payload(ExecutionResult(None, [error])))
            await self._send("complete", None)
        finally:
            with contextlib.suppress(Exception):
                await flush(self.ctx)  # a refusal after a roster change

    async def _pushed(self, update: BoardUpdate, root: object) -> dict[str, Any]:
        """The `next` payload of one root value: executed, or taken from a subscriber
        whose document and root value are equal (an answer with errors is not shared)."""
        key = self.plan.shared
        if key is not None and (payload := EXECUTED.get(update, key, root)) is not None:
            return payload  # type: ignore[no-any-return]
        result = await self._execute(root)
        payload = self._payload(result)
        if key is not None and not result.errors:
            EXECUTED.put(update, key, root, payload)
        return payload

    async def _execute(self, root: object) -> ExecutionResult:
        executor = self.plan.executor(root)
        try:
            result = executor.execute_operation(False)
            if isawaitable(result):
                result = await result
        finally:
            let_go(executor)
        assert isinstance(result, ExecutionResult)
        return result

    def _payload(self, result: ExecutionResult) -> dict[str, Any]:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in reported(list(result.errors))]
        return payload

    async def _send(self, kind: str, payload: dict[str, Any] | None) -> None:
        message: dict[str, Any] = {"id": self.handoff.operation_id, "type": kind}
        if payload is not None:
            message["payload"] = payload
        with contextlib.suppress(RuntimeError, OSError):  # a socket that closed meanwhile
            await self.handoff.channel.push(message)

    def end(self) -> None:
        """Nothing more is pushed; the hub lets go of the subscription."""
        handoff = self.handoff
        if handoff.pushed is self:
            handoff.pushed = None
            handoff.channel.operation_ended(handoff.operation_id)
        _hub(self.ctx).leave(self.sub)


async def missed(
    ctx: Context, team_id: str, after: int, huddle_id: str | None
) -> list[BoardUpdate]:
    """The changes logged for the team after `after` that the subscription wants. CONFLICT
    (with `extensions.refetch`) when the log no longer holds them all: the client reads
    the board again and subscribes after its position."""
    if after > await ctx.repository.store.head():
        raise freshness.ahead("after", after)
    async with ctx.database.acquire() as conn:
        changes = await store.changes_after(
            conn, team_id, after, limit=REPLAY_LIMIT, max_bytes=REPLAY_BYTES
        )
    if after < changes.horizon:
        raise StateConflict(
            f"The changes after position {after} are no longer kept (they are kept from "
            f"{changes.horizon} on): read the board again and subscribe after its position.",
            extensions={"refetch": True, "horizon": str(changes.horizon)},
        )
    if changes.more:
        raise StateConflict(
            f"More changes were made after position {after} than a resume replays (at most "
            f"{REPLAY_LIMIT}, {REPLAY_BYTES // 1024 // 1024} MiB): read the board again and "
            "subscribe after its position.",
            extensions={"refetch": True},
        )
    return [u for u in changes.updates if wants(huddle_id, u)]
