"""The API's graphql-transport-ws handler: strawberry's, letting a live subscription be taken
over (services.api.graphql.live.Handoff), and reading a parked socket's messages as they
arrive (services.api.websocket.PARK) instead of in a receive loop of its own.

strawberry runs each operation in a task of its own, holding its document's executor, an
instance of every schema extension and a chain of async generators until the operation
ends: about 20 KB for a subscription that, on a wall screen, pushes now and then for
hours. A subscription taken over ends that task once it is live, and is then pushed by the
hub; its id stays in use, and `complete` (the client's or its own) ends it as before.

On a parked socket the handler returns once the socket is accepted, and so does the ASGI
app, middleware and all. Messages are then handled in order by a task that runs only
while some wait (at most `_INBOX` of them: the socket stops reading past that), in the
context the socket was accepted in (its request id in every log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from typing import Any

from starlette.websockets import WebSocketState
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

from services.api.graphql import live
from services.api.graphql.context import Context
from services.api.websocket import PARK
from services.common.log import get_logger

_log = get_logger(__name__)

# Messages a parked socket holds before it stops reading until they are handled.
_INBOX = 8
# How long an operation may hold its turn among those starting at once.
_STARTING_SECONDS = 1.0
# What of a parked socket's ASGI scope nothing reads once it is accepted.
_HANDSHAKE_ONLY = (
    "asgi",
    "http_version",
    "raw_path",
    "root_path",
    "query_string",
    "server",
    "subprotocols",
    "state",
    "extensions",
)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The operations that may be, or have been, taken over, by id.
        self.handoffs: dict[str, live.Handoff] = {}
        # A parked socket's messages waiting to be handled, and who handles them.
        self._inbox: list[dict[str, Any]] = []
        self._handling: asyncio.Task[None] | None = None
        self._resume: Any = None
        self._context: contextvars.Context | None = None
        self._ended = False
        self._init_timer: asyncio.TimerHandle | None = None

    def on_request_accepted(self) -> None:
        # A timer, not strawberry's task asleep for the whole wait: a crowd of sockets
        # connecting at once each holds a timer entry until its connection_init.
        wait = self.connection_init_wait_timeout.total_seconds()
        self._init_timer = asyncio.get_running_loop().call_later(wait, self._init_overdue)

    def _init_overdue(self) -> None:
        self._init_timer = None
        if not self.connection_init_received:
            closing = asyncio.ensure_future(self._close_uninitialised())
            self.connection_init_timeout_task = closing  # shutdown awaits it

    async def _close_uninitialised(self) -> None:
        if self.connection_init_received:
            return
        self.connection_timed_out = True
        with contextlib.suppress(Exception):  # the socket may be gone meanwhile
            await self.websocket.close(code=4408, reason="Connection initialisation timeout")

    async def handle(self) -> None:
        socket = getattr(self.websocket, "ws", None)
        scope = getattr(socket, "scope", None) or {}
        park = scope.get("extensions", {}).get(PARK)
        if park is None:
            await super().handle()
            return
        self.on_request_accepted()
        self._context = contextvars.copy_context()
        self._resume = park(self._feed)
        # What the handshake said is in the context now (the caller, purpose, client):
        # the socket need not hold it for its life (about 2 KB). The scope keeps what the
        # request log reads when the app returns (type, path); the headers list is
        # emptied in place, as the connection's cached Headers share it.
        headers = scope.get("headers")
        if isinstance(headers, list):
            headers.clear()
        for key in _HANDSHAKE_ONLY:
            scope.pop(key, None)

    def _feed(self, message: dict[str, Any]) -> bool:
        """A parked socket's receive event: handled in order; False when enough wait."""
        if self._ended:
            return True
        self._inbox.append(message)
        if self._handling is None:
            loop = asyncio.get_running_loop()
            self._handling = loop.create_task(self._handle_inbox(), context=self._context)
        return len(self._inbox) < _INBOX

    async def _handle_inbox(self) -> None:
        try:
            while self._inbox and not self._ended:
                message = self._inbox.pop(0)
                if len(self._inbox) == _INBOX - 1:
                    self._resume()  # room again: read on
                try:
                    go_on = await self._handle_event(message)
                except Exception:
                    # A fault of ours, as uvicorn treats an app that raises: logged (no
                    # message content), the socket closed (1011), its operations ended.
                    _log.exception("websocket_message_failed")
                    with contextlib.suppress(Exception):
                        await self.websocket.close(code=1011, reason="Internal server error")
                    go_on = False
                if not go_on:
                    self._ended = True
                    self._inbox.clear()
                    await self.shutdown()
        finally:
            self._handling = None

    async def _handle_event(self, message: dict[str, Any]) -> bool:
        """One receive event, as strawberry's receive loop handles it; False when the
        socket is done (disconnected, or closed for a message that is not JSON text)."""
        if message["type"] != "websocket.receive":
            return False  # websocket.disconnect
        text = message.get("text")
        if text is None:
            await self.handle_invalid_message("WebSocket message type must be text")
            return False
        try:
            decoded = self.view.decode_json(text)
        except json.JSONDecodeError:
            await self.handle_invalid_message("WebSocket message must be valid JSON")
            return False
        if not isinstance(decoded, dict):
            await self.handle_invalid_message("Failed to parse message")
            return False
        await self.handle_message(decoded)  # type: ignore[arg-type]
        # A message that made the handler close the socket (4400, 4409, 4429...) is the
        # last one handled, as strawberry's receive loop ends there.
        socket = getattr(self.websocket, "ws", None)
        return getattr(socket, "application_state", None) is not WebSocketState.DISCONNECTED

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # Operations starting at once are bounded (the view's `starting`): a crowd of
        # sockets subscribing together (wall screens after a restart) waits its turn here,
        # holding a task each, not a half-run operation each (its document's executor,
        # extensions, generators: tens of KB).
        starting: asyncio.Semaphore | None = getattr(self.view, "starting", None)
        if starting is not None:
            await starting.acquire()
        started = False

        def went_live() -> None:
            nonlocal started
            if not started and starting is not None:
                started = True
                starting.release()

        handoff = live.Handoff(operation.id, self, went_live)
        # An operation slow to start (a long query, a resume replaying much) gives its
        # turn up after a while: a few of them cannot hold every other socket back.
        loop = asyncio.get_running_loop()
        give_up_turn = loop.call_later(_STARTING_SECONDS, handoff.started)
        self.handoffs[operation.id] = handoff
        live.HANDOFF.set(handoff)  # this task's own context: this operation only
        try:
            await super().run_operation(operation)
        finally:
            give_up_turn.cancel()
            handoff.started()  # live or ended: either way no longer starting
            if handoff.pushed is None:
                self.handoffs.pop(operation.id, None)
            else:
                # Live without this task: what it held is let go (its id stays in use).
                operation.task = None
                operation.query, operation.variables = "", None

    async def send_message(self, message: Message) -> None:
        if message["type"] == "complete" and self._taken(message["id"]):
            return  # the operation's task ends, the subscription does not
        await super().send_message(message)

    def forget_id(self, id: str) -> None:
        if not self._taken(id):
            super().forget_id(id)

    async def shutdown(self) -> None:
        self._stop_init_timer()
        await super().shutdown()
        live.stop_expiry(self.context)

    async def handle_connection_init(self, message: Any) -> None:
        if not self.connection_timed_out:
            self._stop_init_timer()
        await super().handle_connection_init(message)

    def _stop_init_timer(self) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None

    async def cleanup_operation(self, operation_id: str) -> None:
        handoff = self.handoffs.pop(operation_id, None)
        if handoff is not None and handoff.pushed is not None:
            handoff.pushed.end()  # its id is free again, and it has no task to cancel
            return
        await super().cleanup_operation(operation_id)

    def _taken(self, operation_id: str) -> bool:
        handoff = self.handoffs.get(operation_id)
        return handoff is not None and handoff.pushed is not None

    async def push(self, message: dict[str, Any]) -> None:
        """A message of a subscription taken over (live.Channel)."""
        await super().send_message(message)  # type: ignore[arg-type]

    def operation_ended(self, operation_id: str) -> None:
        """A subscription taken over ended on its own: its id is free again."""
        self.handoffs.pop(operation_id, None)
        self.operations.pop(operation_id, None)
