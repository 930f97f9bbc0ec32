"""The API's graphql-transport-ws handler: strawberry's, letting a live subscription be taken
over (services.api.graphql.live.Handoff).

strawberry runs each operation in a task of its own, holding its document's executor, an
instance of every schema extension and a chain of async generators until the operation
ends: about 20 KB for a subscription that, on a wall screen, pushes now and then for
hours. A subscription taken over ends that task once it is live, and is then pushed by the
hub; its id stays in use, and `complete` (the client's or its own) ends it as before.
"""

from __future__ import annotations

from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

from services.api.graphql import live
from services.api.graphql.context import Context


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The operations that may be, or have been, taken over, by id.
        self.handoffs: dict[str, live.Handoff] = {}

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        handoff = live.Handoff(operation.id, self._push, self._ended)
        self.handoffs[operation.id] = handoff
        live.HANDOFF.set(handoff)  # this task's own context: this operation only
        try:
            await super().run_operation(operation)
        finally:
            if handoff.pushed is None:
                self.handoffs.pop(operation.id, None)

    async def send_message(self, message: Message) -> None:
        if message["type"] == "complete" and self._taken(message["id"]):
            return  # the operation's task ends, the subscription does not
        await super().send_message(message)

    def forget_id(self, id: str) -> None:
        if not self._taken(id):
            super().forget_id(id)

    async def shutdown(self) -> None:
        await super().shutdown()
        live.stop_expiry(self.context)

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        # strawberry keeps its finished wait for connection_init for the socket's life.
        self.connection_init_timeout_task = None

    async def cleanup_operation(self, operation_id: str) -> None:
        handoff = self.handoffs.pop(operation_id, None)
        if handoff is not None and handoff.pushed is not None:
            handoff.pushed.end()
        await super().cleanup_operation(operation_id)

    def _taken(self, operation_id: str) -> bool:
        handoff = self.handoffs.get(operation_id)
        return handoff is not None and handoff.pushed is not None

    async def _push(self, message: dict[str, Any]) -> None:
        await super().send_message(message)  # type: ignore[arg-type]

    def _ended(self, operation_id: str) -> None:
        """A subscription taken over ended on its own: its id is free again."""
        self.handoffs.pop(operation_id, None)
        self.operations.pop(operation_id, None)
