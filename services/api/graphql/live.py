"""What every subscription shares: joining the hub's stream of a team's board updates, being
cut off (and told why) when too far behind, and re-checking membership on roster changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from schemas.audit import AccessAction
from schemas.board import BoardUpdate
from services.api.fanout import OVERFLOW_CLOSE_CODE, OVERFLOW_REASON, Hub, Overflowed, wants
from services.api.graphql import freshness
from services.api.graphql.access import Access, authorize
from services.api.graphql.context import Context
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
# An expiry watch wakes at least this often, so one left by a socket that closed early
# goes away soon after it.
_EXPIRY_POLL_SECONDS = 15.0


def _open(socket: WebSocket) -> bool:
    return (
        socket.client_state is not WebSocketState.DISCONNECTED
        and socket.application_state is not WebSocketState.DISCONNECTED
    )


async def _close_at(socket: WebSocket, expires_at: datetime) -> None:
    while _open(socket):
        left = (expires_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            # The socket may close under us meanwhile: nothing is left to do then.
            with contextlib.suppress(RuntimeError, OSError):
                await socket.close(code=TOKEN_EXPIRED_CLOSE_CODE, reason=TOKEN_EXPIRED_REASON)
            return
        await asyncio.sleep(min(left, _EXPIRY_POLL_SECONDS))


def close_at_expiry(ctx: Context) -> None:
    """Close the context's WebSocket (4401) when its caller's token expires. Operations
    and pushes check the expiry themselves too (Context.require_actor), so nothing is
    served on an expired token even before the socket closes."""
    socket, actor = ctx.response, ctx.actor
    if not isinstance(socket, WebSocket) or actor is None or actor.expires_at is None:
        return
    watch = asyncio.ensure_future(_close_at(socket, actor.expires_at))
    _closing.add(watch)
    watch.add_done_callback(_closing.discard)


def _hub(ctx: Context) -> Hub:
    if ctx.hub is None:
        # Only an API started without a broker has no hub; that is a deployment fault.
        raise RuntimeError("live updates need care.board-updates (CARECOORD_KAFKA_BOOTSTRAP)")
    return ctx.hub


def _subscribe(ctx: Context, team_id: str, huddle_id: str | None = None) -> Any:
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

    return _hub(ctx).subscribe(team_id, huddle_id=huddle_id, on_overflow=cut_off)


async def updates(
    ctx: Context,
    team_id: str,
    resource: str,
    access: Access,
    huddle_id: str | None = None,
    *,
    after: int | None = None,
) -> AsyncGenerator[tuple[BoardUpdate, Access], None]:
    """The team's updates for one subscription, each with the caller's access as of it,
    until its queue overflows; a roster change re-checks that the caller is still a
    member (FORBIDDEN ends the subscription).

    With `after`, first the changes logged after that position (those the client missed),
    then the live ones past them: the subscription joins the hub before the log is read,
    so a change lands in one or the other, and one in both is given once."""
    with _subscribe(ctx, team_id, huddle_id) as sub:
        replayed = after
        if after is not None:
            for update in await missed(ctx, team_id, after, huddle_id):
                ctx.require_actor()
                replayed = update.position
                yield update, access
        while True:
            try:
                update = await sub.next()
            except Overflowed:
                if isinstance(ctx.response, WebSocket):
                    # The socket is closing; its end cancels this operation. Returning
                    # would make the server send "complete" on a closed socket.
                    await asyncio.sleep(_CLOSE_GRACE_SECONDS)
                return
            # A token that expired since the last push serves nothing more: UNAUTHENTICATED
            # ends the subscription before anything is read for this update.
            ctx.require_actor()
            if update.kind == "roster":
                ctx.teams.pop(team_id, None)  # the roster changed: read it again
                access = await authorize(
                    ctx, team_id=team_id, action=Action.READ, resource=resource
                )
            elif (
                replayed is not None and update.position is not None and update.position <= replayed
            ):
                continue  # given from the log already
            else:
                yield update, access


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
