"""What every subscription shares: joining the hub's stream of a team's board updates, being
cut off (and told why) when too far behind, and re-checking membership on roster changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from starlette.websockets import WebSocket

from schemas.audit import AccessAction
from schemas.board import BoardUpdate
from services.api.fanout import OVERFLOW_CLOSE_CODE, OVERFLOW_REASON, Hub, Overflowed
from services.api.graphql.access import Access, authorize
from services.api.graphql.context import Context
from services.common.policy import Action

PUSH = AccessAction.SUBSCRIBE_PUSH
_CLOSE_GRACE_SECONDS = 30.0
# Closes in flight (the event loop keeps only weak references to tasks).
_closing: set[asyncio.Future[None]] = set()


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
    ctx: Context, team_id: str, resource: str, access: Access, huddle_id: str | None = None
) -> AsyncGenerator[tuple[BoardUpdate, Access], None]:
    """The team's updates for one subscription, each with the caller's access as of it,
    until its queue overflows; a roster change re-checks that the caller is still a
    member (FORBIDDEN ends the subscription)."""
    with _subscribe(ctx, team_id, huddle_id) as sub:
        while True:
            try:
                update = await sub.next()
            except Overflowed:
                if isinstance(ctx.response, WebSocket):
                    # The socket is closing; its end cancels this operation. Returning
                    # would make the server send "complete" on a closed socket.
                    await asyncio.sleep(_CLOSE_GRACE_SECONDS)
                return
            if update.kind == "roster":
                ctx.teams.pop(team_id, None)  # the roster changed: read it again
                access = await authorize(
                    ctx, team_id=team_id, action=Action.READ, resource=resource
                )
            else:
                yield update, access
