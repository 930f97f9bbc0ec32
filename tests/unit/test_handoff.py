"""A live boardChanged subscription taken over from strawberry's per-operation task: once
live it holds no task, pushes what its document selects as before, keeps its id in use,
and ends on the client's `complete` or on an error (`next` with it, then `complete`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from pydantic import SecretStr
from starlette.websockets import WebSocketState

from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import TaskStatus
from services.api.bootstrap import Services
from services.api.fanout import Hub
from services.api.graphql import live
from services.api.graphql.context import Context
from services.api.graphql.schema import build_schema
from services.api.transport_ws import TransportWSHandler
from services.api.websocket import PARK
from services.audit.keys import ReaderKeyring
from services.common.auth import Authenticator
from services.common.memory_store import InMemoryEventStore
from services.settings import Settings
from services.tasks.write_side import build_handler
from tests.unit.test_access_gate import LEAD, NOW, CaughtRecords, clock
from tests.write_side import create_team

BOARD_CHANGED = """subscription($teamId: ID!) {
  boardChanged(teamId: $teamId) { change position task { id title status } } }"""


class _Socket:
    """strawberry's WebSocket adapter, played by queues."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None

    async def iter_json(self) -> AsyncIterator[object]:
        while (message := await self.inbox.get()) is not None:
            yield message

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.sent.put(json.loads(json.dumps(message)))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        await self.inbox.put(None)

    async def receive(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), 5)


class _View:
    decode_json = staticmethod(json.loads)

    async def on_ws_connect(self, context: Context) -> None:
        return None


@dataclasses.dataclass
class _Session:
    hub: Hub
    ctx: Context
    socket: _Socket
    handler: TransportWSHandler
    team_id: str

    async def subscribe(
        self, operation_id: str, query: str = BOARD_CHANGED, **more: object
    ) -> None:
        variables = {"teamId": self.team_id, **more}
        payload = {"query": query, "variables": variables}
        await self.socket.inbox.put({"id": operation_id, "type": "subscribe", "payload": payload})
        for _ in range(100):
            operation = self.handler.operations.get(operation_id)
            if operation is not None and operation.task is None:  # taken over, its task let go
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the subscription's own task is still running once live")

    def change(self, seq: int, title: str) -> None:
        card = TaskCard(
            task_id=f"task-{seq}",
            team_id=self.team_id,
            title=title,
            source="manual",
            status=TaskStatus.TODO,
            created_at=NOW,
            updated_at=NOW,
        )
        update = BoardUpdate(
            seq=seq,
            team_id=self.team_id,
            kind="task",
            change=BoardChange.CREATED,
            task=card,
            position=100 + seq,
        )
        self.hub.dispatch(update)


class _ParkedSocket(_Socket):
    """The same, on a socket that parks (services.api.websocket.PARK): what the client
    sends is fed to the handler as the protocol would, with no receive loop."""

    def __init__(self) -> None:
        super().__init__()
        self.feed: Any = None
        self.ws = SimpleNamespace(
            scope={"extensions": {PARK: self._park}},
            application_state=WebSocketState.CONNECTED,
        )
        self.pump: asyncio.Task[None] | None = None

    def _park(self, feed: Any) -> Any:
        self.feed = feed
        self.pump = asyncio.ensure_future(self._pump())
        return lambda: None

    async def _pump(self) -> None:
        while (message := await self.inbox.get()) is not None:
            text = message.pop("raw", None) or json.dumps(message)
            self.feed({"type": "websocket.receive", "text": text})
        self.feed({"type": "websocket.disconnect", "code": 1000})

    async def close(self, code: int, reason: str) -> None:
        self.ws.application_state = WebSocketState.DISCONNECTED
        await super().close(code, reason)

    async def iter_json(self) -> AsyncIterator[object]:
        raise AssertionError("a parked socket has no receive loop")
        yield  # pragma: no cover


def _handler(
    socket: _Socket,
    *,
    view: Any = None,
    context: Any = None,
    init_wait: timedelta = timedelta(minutes=1),
) -> TransportWSHandler:
    """The handler on a socket played by queues; a context with no caller unless given."""
    return TransportWSHandler(
        view=view or _View(),
        websocket=socket,
        context=context or SimpleNamespace(expiry=None, connection_params=None),
        root_value=None,
        schema=build_schema(),
        connection_init_wait_timeout=init_wait,
    )


@pytest.fixture(params=["receive loop", "parked"])
async def session(request: pytest.FixtureRequest) -> AsyncIterator[_Session]:
    store = InMemoryEventStore(clock=clock)
    handler = build_handler(store, clock=clock)
    settings = Settings(jwt_secret=SecretStr("unit-test-secret-that-is-long-enough-too"))
    hub = Hub(settings)
    services = Services(
        settings=settings,
        pool=None,  # type: ignore[arg-type]  # a board push reads no read model
        store=store,
        handler=handler,
        authenticator=Authenticator(secret=None),
        keyring=ReaderKeyring(settings),
        audit=CaughtRecords(),
        clock=clock,
        hub=hub,
    )
    team_id = await create_team(handler)
    ctx = Context(services=services, request_id="req-1", correlation_id="req-1", actor=LEAD)
    socket = _Socket() if request.param == "receive loop" else _ParkedSocket()
    ws = _handler(socket, context=ctx)
    running = asyncio.create_task(ws.handle())
    await socket.inbox.put({"type": "connection_init", "payload": {}})
    assert (await socket.receive())["type"] == "connection_ack"
    yield _Session(hub, ctx, socket, ws, team_id)
    await socket.inbox.put(None)
    await asyncio.wait_for(running, 5)
    for _ in range(100):  # the socket's end ends every subscription on it
        if hub.subscribers == 0 and not ws.operations:
            break
        await asyncio.sleep(0.02)
    assert hub.subscribers == 0
    assert ctx.expiry is None


async def test_a_live_subscription_holds_no_task_and_pushes_what_its_document_selects(
    session: _Session,
) -> None:
    await session.subscribe("1")  # its task has ended: it is live without one

    session.change(1, "Check INR")
    pushed = await session.socket.receive()

    assert pushed == {
        "id": "1",
        "type": "next",
        "payload": {
            "data": {
                "boardChanged": {
                    "change": "CREATED",
                    "position": "101",
                    "task": {"id": "task-1", "title": "Check INR", "status": "TODO"},
                }
            }
        },
    }
    assert session.hub.subscribers == 1
    assert session.socket.sent.empty()  # no `complete` when the operation's task ended


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The root values pushed subscriptions execute their documents on, one per execution."""
    executed: list[object] = []
    build = live._Plan.executor

    def counted(plan: live._Plan, root: object) -> Any:
        executed.append(root)
        return build(plan, root)

    monkeypatch.setattr(live._Plan, "executor", counted)
    return executed


async def test_subscribers_with_the_same_document_and_card_share_one_execution(
    session: _Session, executions: list[object]
) -> None:
    await session.subscribe("1")
    await session.subscribe("2")

    session.change(1, "Check INR")
    first, second = await session.socket.receive(), await session.socket.receive()

    assert {first["id"], second["id"]} == {"1", "2"}
    assert first["payload"] == second["payload"]
    assert first["payload"]["data"]["boardChanged"]["task"]["title"] == "Check INR"
    assert len(executions) == 1
    assert live.EXECUTED.updates <= 1  # let go with the update (none held past it)


async def test_the_same_document_with_other_variables_is_executed_on_its_own(
    session: _Session, executions: list[object]
) -> None:
    titled = """subscription($teamId: ID!, $titled: Boolean!) {
      boardChanged(teamId: $teamId) { task { id title @include(if: $titled) } } }"""
    await session.subscribe("1", titled, titled=True)
    await session.subscribe("2", titled, titled=False)

    session.change(1, "Check INR")
    pushed = {m["id"]: m["payload"] for m in [await session.socket.receive() for _ in "12"]}

    assert pushed["1"] == {
        "data": {"boardChanged": {"task": {"id": "task-1", "title": "Check INR"}}}
    }
    assert pushed["2"] == {"data": {"boardChanged": {"task": {"id": "task-1"}}}}
    assert len(executions) == 2


def test_a_payload_is_shared_only_for_the_same_update_document_and_root_value() -> None:
    executed = live._Executed()
    update = BoardUpdate(seq=1, team_id="team-1", kind="roster")
    full, redacted = {"title": "Check INR"}, {"title": "[restricted]"}
    executed.put(update, ("document",), full, {"data": "full"})

    assert executed.get(update, ("document",), dict(full)) == {"data": "full"}
    assert executed.get(update, ("document",), redacted) is None  # decided otherwise
    assert executed.get(update, ("another",), full) is None
    assert executed.get(update.model_copy(), ("document",), full) is None  # another update
    del update
    assert executed.updates == 0  # let go with its update


async def test_a_different_document_is_executed_on_its_own(
    session: _Session, executions: list[object]
) -> None:
    await session.subscribe("1")
    await session.subscribe(
        "2", "subscription($teamId: ID!) { boardChanged(teamId: $teamId) { task { id } } }"
    )

    session.change(1, "Check INR")
    pushed = {m["id"]: m["payload"] for m in [await session.socket.receive() for _ in "12"]}

    assert pushed["2"] == {"data": {"boardChanged": {"task": {"id": "task-1"}}}}
    assert pushed["1"]["data"]["boardChanged"]["task"]["title"] == "Check INR"
    assert len(executions) == 2


@strawberry.type
class Card:
    id: strawberry.ID

    @strawberry.field
    def mine(self, info: strawberry.Info) -> bool:  # answers per caller
        return bool(info.context)


@strawberry.type
class Shared:
    id: strawberry.ID

    @strawberry.field
    @live.same_for_every_viewer
    def twice(self) -> str:
        return self.id * 2


@strawberry.type
class _Query:
    ok: bool = True


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def cards(self) -> AsyncIterator[Card]:
        yield Card(id=strawberry.ID("1"))

    @strawberry.subscription
    async def shared(self) -> AsyncIterator[Shared]:
        yield Shared(id=strawberry.ID("1"))


def test_pushes_are_shared_only_for_types_whose_every_resolver_is_the_same_for_every_viewer() -> (
    None
):
    schema = strawberry.Schema(query=_Query, subscription=_Subscription)._schema
    board = build_schema()._schema

    assert not live._viewer_free(schema.type_map["Card"])  # type: ignore[arg-type]
    assert live._viewer_free(schema.type_map["Shared"])  # type: ignore[arg-type]
    assert live._viewer_free(board.type_map["BoardEvent"])  # type: ignore[arg-type]
    assert not live._viewer_free(board.type_map["Huddle"])  # type: ignore[arg-type]


async def test_its_id_stays_in_use_until_the_client_completes_it(session: _Session) -> None:
    await session.subscribe("1")
    await session.socket.inbox.put(
        {"id": "1", "type": "subscribe", "payload": {"query": "{ me { userId } }"}}
    )
    await asyncio.sleep(0.1)
    assert session.socket.closed is not None
    assert session.socket.closed[0] == 4409  # "Subscriber for 1 already exists"


async def test_the_clients_complete_ends_it_and_nothing_more_is_pushed(session: _Session) -> None:
    await session.subscribe("1")
    await session.socket.inbox.put({"id": "1", "type": "complete"})
    for _ in range(50):
        if session.hub.subscribers == 0:
            break
        await asyncio.sleep(0.02)

    session.change(1, "Check INR")
    await asyncio.sleep(0.1)

    assert session.hub.subscribers == 0
    assert "1" not in session.handler.operations
    assert session.socket.sent.empty()


async def test_an_error_ends_it_with_next_then_complete_and_frees_its_id(session: _Session) -> None:
    await session.subscribe("1")
    assert session.ctx.actor is not None
    session.ctx.actor = dataclasses.replace(
        session.ctx.actor, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )

    session.change(1, "Check INR")
    error = await session.socket.receive()
    complete = await session.socket.receive()

    assert error["type"] == "next"
    assert error["payload"]["data"] is None
    assert error["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert complete == {"id": "1", "type": "complete"}
    assert session.hub.subscribers == 0
    assert "1" not in session.handler.operations


async def test_a_parked_socket_closes_with_4400_on_a_message_that_is_not_json() -> None:
    socket = _ParkedSocket()
    ws = _handler(socket, view=SimpleNamespace(decode_json=json.loads))
    await ws.handle()  # returns at once: the socket is parked
    await socket.inbox.put({"raw": "{not json"})
    for _ in range(100):
        if socket.closed is not None:
            break
        await asyncio.sleep(0.02)

    assert socket.closed == (4400, "WebSocket message must be valid JSON")


@pytest.mark.parametrize("socket", [_Socket, _ParkedSocket], ids=["receive loop", "parked"])
async def test_a_socket_without_connection_init_in_time_is_closed_with_4408(
    socket: type[_Socket],
) -> None:
    client = socket()
    ws = _handler(client, init_wait=timedelta(seconds=0.2))
    running = asyncio.create_task(ws.handle())
    for _ in range(100):
        if client.closed is not None:
            break
        await asyncio.sleep(0.02)
    await client.inbox.put(None)
    await asyncio.wait_for(running, 5)

    assert client.closed == (4408, "Connection initialisation timeout")


async def test_operations_start_a_few_at_once_and_a_slow_one_gives_its_turn_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
        BaseGraphQLTransportWSHandler,
    )

    from services.api import transport_ws

    started: dict[str, float] = {}
    release = asyncio.Event()

    async def run(self: Any, operation: Any) -> None:  # the operation, slow or not
        started[operation.id] = asyncio.get_running_loop().time()
        if operation.id == "slow":
            await release.wait()

    monkeypatch.setattr(BaseGraphQLTransportWSHandler, "run_operation", run)
    monkeypatch.setattr(transport_ws, "_STARTING_SECONDS", 0.3)
    client = _ParkedSocket()
    view = _View()
    view.starting = asyncio.Semaphore(1)  # type: ignore[attr-defined]
    ws = _handler(client, view=view)
    await ws.handle()
    await client.inbox.put({"type": "connection_init", "payload": {}})
    assert (await client.receive())["type"] == "connection_ack"
    me = {"query": "{ me { userId } }"}
    await client.inbox.put({"id": "slow", "type": "subscribe", "payload": me})
    await client.inbox.put({"id": "next", "type": "subscribe", "payload": me})
    await asyncio.sleep(0.15)
    waited = "next" not in started  # its turn comes when the slow one's is up
    for _ in range(100):
        if "next" in started:
            break
        await asyncio.sleep(0.02)
    release.set()
    await client.inbox.put(None)

    assert waited
    assert started["next"] - started["slow"] >= 0.25


async def test_a_parked_socket_handles_nothing_after_a_message_that_closed_it() -> None:
    socket = _ParkedSocket()
    ws = _handler(socket)
    await ws.handle()
    await socket.inbox.put({"type": "connection_init", "payload": {}})
    assert (await socket.receive())["type"] == "connection_ack"
    await socket.inbox.put({"type": "nonsense"})
    await socket.inbox.put({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
    await asyncio.sleep(0.2)

    assert socket.closed == (4400, "Unknown message type: nonsense")
    assert socket.sent.empty()  # the subscribe after it was never run
    assert "1" not in ws.operations
