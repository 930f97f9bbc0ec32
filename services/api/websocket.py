"""The API's WebSocket protocol: uvicorn's (websockets' sansio implementation), lighter by
what every held socket would otherwise keep for its life.

- uvicorn keeps the upgrade request and its response (their header lists) on the
  protocol, and websockets' parser keeps the request in its frame, though neither is read
  again once the socket is accepted: about 4 KB. What the app reads of the request
  (headers, client address, path) is in the ASGI scope, built from it beforehand.
- Its receive side is an asyncio.Queue: four deques of 64 slots each (about 2.3 KB) for
  what is, on a subscriber's socket, one message now and then; its `writable` is an
  asyncio.Event, a deque of its own.
- A socket can be parked (`PARK`, an ASGI scope extension): what arrives then goes to a
  callback as it arrives, and the ASGI app may return with the socket still open. The
  app's coroutine chain (every middleware's frame, the router, the GraphQL view, the
  WebSocket handler's receive loop: about 7 KB) is then not held while the socket is
  idle, which a wall screen's socket is for hours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from services.api.queues import SmallFlag, SmallQueue

# The scope extension a parkable socket offers: call it with a callback that takes each
# ASGI receive event (a message, the disconnect) and says whether it wants more now; it
# returns the callable that resumes reading once the callback wants more again.
PARK = "carecoord.park"

Feed = Callable[[dict[str, Any]], bool]


class _Inbox(SmallQueue[dict[str, Any]]):
    """The receive queue; once parked, each event goes straight to the callback."""

    __slots__ = ("feed", "wants_more")

    def __init__(self) -> None:
        super().__init__()
        self.feed: Feed | None = None
        self.wants_more = True

    def put_nowait(self, item: dict[str, Any]) -> None:
        if self.feed is not None:
            self.wants_more = self.feed(item)
            return
        super().put_nowait(item)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]  # the methods uvicorn uses
        self.writable = SmallFlag()  # type: ignore[assignment]  # the methods uvicorn uses

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)  # answered, and the ASGI scope built from it
        event.headers.clear()  # the parser's frame holds the request for the socket's life
        scope = self.__dict__.get("scope")
        if scope is not None:
            scope["extensions"][PARK] = self.park

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.__dict__.pop("request", None)
            self.__dict__.pop("response", None)

    @property
    def holds_handshake(self) -> bool:
        """True while the upgrade request or its response is still held."""
        return "request" in self.__dict__ or "response" in self.__dict__

    @property
    def parked(self) -> bool:
        return self._inbox.feed is not None

    @property
    def _inbox(self) -> _Inbox:
        inbox = self.queue
        assert isinstance(inbox, _Inbox)
        return inbox

    def park(self, feed: Feed) -> Callable[[], None]:
        """From now on each receive event goes to `feed` as it arrives (those waiting
        first), and the app may return: the socket stays open until closed by either side.
        Reading pauses while `feed` says it holds enough, until the returned callable is
        called."""
        inbox = self._inbox
        while not inbox.empty():
            inbox.wants_more = feed(inbox.get_nowait())
        inbox.feed = feed
        self._resume_if_wanted()
        return self._resume

    def send_receive_event_to_app(self) -> None:
        super().send_receive_event_to_app()  # uvicorn pauses reading until the app receives
        self._resume_if_wanted()

    def _resume_if_wanted(self) -> None:
        inbox = self._inbox
        if inbox.feed is not None and inbox.wants_more:
            self._resume()

    def _resume(self) -> None:
        self._inbox.wants_more = True
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    async def run_asgi(self) -> None:
        # uvicorn's, except that a parked socket stays open when the app returns.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None and not self.parked:
            self.transport.close()
