"""The board on the running stack: tasks from plans, huddles and clinicians, the agenda,
and live updates over graphql-transport-ws."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from schemas import codec
from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import TaskStatus
from services.api.fanout import OVERFLOW_REASON
from services.common import kafka
from services.common.auth import mint_token
from services.common.dev_secrets import jwt_secret, pipeline_keys
from services.settings import Settings
from tests import operations as op
from tests.e2e.conftest import Stack
from tests.graphql import GraphQLErrors, gql
from tests.ws import Socket, StalledClient, connect

TODAY = datetime.now(UTC).date()


async def _team_with_plan(client: httpx.AsyncClient, lead: str) -> dict[str, Any]:
    team = (await gql(client, op.CREATE_TEAM, {"name": "Cardiometabolic"}, token=lead))[
        "createTeam"
    ]
    patient = (
        await gql(
            client,
            op.ENROLL,
            {"teamId": team["id"], "mrn": "B-1", "name": "Ana Example", "birthDate": "1968-03-04"},
            token=lead,
        )
    )["enrollPatient"]
    plan = (
        await gql(client, op.CREATE_PLAN, {"patientId": patient["id"], "title": "T2D"}, token=lead)
    )["createCarePlan"]
    return {"team": team["id"], "patient": patient["id"], "plan": plan["id"]}


async def _board(client: httpx.AsyncClient, team: str, token: str) -> dict[str, list[Any]]:
    board = (await gql(client, op.BOARD, {"teamId": team}, token=token))["board"]
    return {c["status"]: c["tasks"] for c in board["columns"]}


async def _eventually(check: Any, what: str, seconds: float = 20) -> Any:
    """Poll an async check until it returns something truthy (boards follow within moments)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _next_change(socket: Socket, op_id: str) -> dict[str, Any]:
    message = await socket.receive()
    assert message["type"] == "next" and message["id"] == op_id, message
    assert "errors" not in message["payload"], message
    return dict(message["payload"]["data"]["boardChanged"])


@asynccontextmanager
async def _watching(
    stack: Stack,
    client: httpx.AsyncClient,
    team: str,
    token: str,
) -> AsyncIterator[tuple[Socket, str]]:
    """A boardChanged subscription known to be live: a probe task's CREATED came through."""
    async with connect(stack.base_url, token) as socket:
        op_id = await socket.subscribe(op.BOARD_CHANGED, {"teamId": team})
        probe = (
            await gql(client, op.CREATE_TASK, {"teamId": team, "title": "probe"}, token=token)
        )["createTask"]
        while (await _next_change(socket, op_id))["task"]["id"] != probe["id"]:
            pass
        yield socket, op_id


async def test_an_intervention_puts_a_task_on_the_board_that_subscribers_see_created_and_moved(
    stack: Stack,
) -> None:
    lead = stack.token("lead-board", "Dr. Board")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        async with _watching(stack, client, ids["team"], lead) as (socket, op_id):
            due = (TODAY + timedelta(days=10)).isoformat()
            await gql(
                client,
                op.ADD_INTERVENTION,
                {
                    "planId": ids["plan"],
                    "kind": "MEDICATION",
                    "tier": "FIRST_LINE",
                    "title": "Start metformin 500 mg",
                    "discipline": "PHARMACIST",
                    "sensitivity": [],
                    "dueDate": due,
                },
                token=lead,
            )
            created = await _next_change(socket, op_id)
            task = created["task"]
            moved_task = (
                await gql(
                    client,
                    op.MOVE_TASK,
                    {"taskId": task["id"], "status": "IN_PROGRESS"},
                    token=lead,
                )
            )["moveTask"]
            moved = await _next_change(socket, op_id)

        async def on_board() -> list[Any]:
            return [t for t in (await _board(client, ids["team"], lead))["IN_PROGRESS"]]

        column = await _eventually(on_board, "the task in IN_PROGRESS on the board")

    assert created["change"] == "CREATED"
    assert (task["status"], task["title"], task["discipline"], task["dueDate"]) == (
        "TODO",
        "Start metformin 500 mg",
        "PHARMACIST",
        due,
    )
    assert (task["planId"], task["patientId"], task["source"]) == (
        ids["plan"],
        ids["patient"],
        "INTERVENTION",
    )
    assert moved["change"] == "MOVED"
    assert moved["task"]["id"] == task["id"]
    assert moved["task"]["status"] == moved_task["status"] == "IN_PROGRESS"
    assert [t["id"] for t in column] == [task["id"]]


async def test_discontinuing_an_intervention_cancels_its_task(stack: Stack) -> None:
    lead = stack.token("lead-stop", "Dr. Stop")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        plan = (
            await gql(
                client,
                op.ADD_INTERVENTION,
                {
                    "planId": ids["plan"],
                    "kind": "LIFESTYLE",
                    "tier": "FIRST_LINE",
                    "title": "Walk 30 minutes daily",
                    "discipline": "HEALTH_COACH",
                },
                token=lead,
            )
        )["addIntervention"]
        intervention = plan["interventions"][0]["id"]
        await gql(
            client,
            op.DISCONTINUE,
            {"planId": ids["plan"], "interventionId": intervention, "reason": "knee injury"},
            token=lead,
        )

        async def cancelled() -> list[Any]:
            return (await _board(client, ids["team"], lead))["CANCELLED"]

        column = await _eventually(cancelled, "the task to be CANCELLED")
        board = await _board(client, ids["team"], lead)

    assert [t["title"] for t in column] == ["Walk 30 minutes daily"]
    assert board["TODO"] == []


async def test_a_task_due_in_the_past_is_overdue_and_on_the_agenda_with_blocked_tasks_and_reviews(
    stack: Stack,
) -> None:
    lead = stack.token("lead-agenda", "Dr. Agenda")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        team = ids["team"]
        late = (
            await gql(
                client,
                op.CREATE_TASK,
                {
                    "teamId": team,
                    "title": "Call about lab results",
                    "patientId": ids["patient"],
                    "dueDate": (TODAY - timedelta(days=3)).isoformat(),
                },
                token=lead,
            )
        )["createTask"]
        stuck = (
            await gql(
                client, op.CREATE_TASK, {"teamId": team, "title": "Book eye exam"}, token=lead
            )
        )["createTask"]
        await gql(
            client,
            op.MOVE_TASK,
            {"taskId": stuck["id"], "status": "BLOCKED", "reason": "waiting for referral"},
            token=lead,
        )
        review_on = (TODAY + timedelta(days=5)).isoformat()
        await gql(
            client,
            op.REVIEW,
            {"planId": ids["plan"], "summary": "stable", "next": review_on},
            token=lead,
        )
        meeting = (
            await gql(
                client,
                op.SCHEDULE,
                {"teamId": team, "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
                token=lead,
            )
        )["scheduleHuddle"]
        await gql(client, op.OPEN_HUDDLE, {"id": meeting["id"]}, token=lead)
        await gql(client, op.CLOSE_HUDDLE, {"id": meeting["id"]}, token=lead)

        async def agenda() -> dict[str, Any] | None:
            found = (await gql(client, op.AGENDA, {"teamId": team}, token=lead))["huddleAgenda"]
            complete = found["blockedTasks"] and found["plansDueForReview"] and found["since"]
            return found if complete else None

        found = await _eventually(agenda, "the agenda to list blocked tasks, reviews and since")
        board = await _board(client, team, lead)

    assert late["overdue"] is True
    overdue = [t for t in found["overdueTasks"] if t["id"] == late["id"]]
    assert overdue and overdue[0]["overdue"] is True
    assert [t["id"] for t in found["blockedTasks"]] == [stuck["id"]]
    assert found["blockedTasks"][0]["blockedReason"] == "waiting for referral"
    assert [(p["id"], p["nextReviewDate"]) for p in found["plansDueForReview"]] == [
        (ids["plan"], review_on)
    ]
    assert found["since"] is not None
    review_tasks = [t for t in board["TODO"] if t["source"] == "REVIEW"]
    assert [(t["dueDate"], t["planId"]) for t in review_tasks] == [(review_on, ids["plan"])]
    # Columns in status order, tasks by due date (those without one last).
    assert list(board) == ["TODO", "IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED"]
    todo_due = [t["dueDate"] for t in board["TODO"]]
    assert todo_due == sorted(todo_due, key=lambda d: (d is None, d or ""))


# Thirty moves, each allowed from the one before, ending IN_PROGRESS.
_CYCLE = ["IN_PROGRESS", "BLOCKED", "TODO", "DONE", "TODO"]
MOVES = [*(_CYCLE * 6)[:-1], "IN_PROGRESS"]


async def test_thirty_rapid_moves_leave_the_board_and_the_subscriber_in_the_last_state(
    stack: Stack,
) -> None:
    assert len(MOVES) == 30
    lead = stack.token("lead-rapid", "Dr. Rapid")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        async with _watching(stack, client, ids["team"], lead) as (socket, op_id):
            task = (
                await gql(
                    client, op.CREATE_TASK, {"teamId": ids["team"], "title": "Rapid"}, token=lead
                )
            )["createTask"]
            for status in MOVES:
                reason = "waiting" if status == "BLOCKED" else None
                await gql(
                    client,
                    op.MOVE_TASK,
                    {"taskId": task["id"], "status": status, "reason": reason},
                    token=lead,
                )
            seen = [await _next_change(socket, op_id) for _ in range(31)]

        async def settled() -> bool:
            board = await _board(client, ids["team"], lead)
            return [t["id"] for t in board["IN_PROGRESS"]] == [task["id"]]

        await _eventually(settled, "the board to show the last move")
        board = await _board(client, ids["team"], lead)

    assert [(s["change"], s["task"]["status"]) for s in seen] == [("CREATED", "TODO")] + [
        ("MOVED", status) for status in MOVES
    ]
    others = [t["id"] for status, tasks in board.items() if status != "IN_PROGRESS" for t in tasks]
    assert task["id"] not in others


async def test_non_members_are_refused_the_board_the_agenda_and_the_subscription(
    stack: Stack,
) -> None:
    lead = stack.token("lead-closed", "Dr. Closed")
    outsider = stack.token("out-closed", "Dr. Elsewhere")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        for query in (op.BOARD, op.AGENDA):
            with pytest.raises(GraphQLErrors) as refused:
                await gql(client, query, {"teamId": ids["team"]}, token=outsider)
            assert refused.value.code == "FORBIDDEN"
        with pytest.raises(GraphQLErrors) as refused:
            await gql(client, op.CREATE_TASK, {"teamId": ids["team"], "title": "x"}, token=outsider)
        assert refused.value.code == "FORBIDDEN"
        async with connect(stack.base_url, outsider) as socket:
            op_id = await socket.subscribe(op.BOARD_CHANGED, {"teamId": ids["team"]})
            message = await socket.receive()

    assert message["id"] == op_id
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]


async def test_a_member_removed_while_subscribed_is_cut_off_with_forbidden(stack: Stack) -> None:
    lead = stack.token("lead-cut", "Dr. Cut")
    member = stack.token("rn-cut", "N. Member")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        roster = {"teamId": ids["team"], "userId": "rn-cut"}
        await gql(
            client,
            op.ASSIGN_ROLE,
            {**roster, "name": "N. Member", "discipline": "NURSE"},
            token=lead,
        )
        async with _watching(stack, client, ids["team"], member) as (socket, op_id):
            await gql(client, op.REMOVE_MEMBER, roster, token=lead)
            message = await socket.receive()

    assert message["id"] == op_id
    assert message["type"] == "next", message
    assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["FORBIDDEN"]


async def test_a_socket_whose_token_expires_gets_no_more_pushes_and_is_closed_with_4401(
    stack: Stack,
) -> None:
    lead = stack.token("lead-exp", "Dr. Expiry")
    secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
    assert secret is not None
    short_lived = mint_token(secret=secret, sub="lead-exp", name="Dr. Expiry", ttl_seconds=10)
    expired = time.monotonic() + 10  # mint_token counts from the whole second: no later
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        task = (
            await gql(client, op.CREATE_TASK, {"teamId": ids["team"], "title": "t"}, token=lead)
        )["createTask"]
        async with _watching(stack, client, ids["team"], short_lived) as (socket, _):
            await asyncio.sleep(max(0.0, expired - time.monotonic()) + 0.5)
            await gql(client, op.MOVE_TASK, {"taskId": task["id"], "status": "DONE"}, token=lead)

            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:  # anything before the close must be no push of the move
                    message = await socket.receive(seconds=20)
                    assert message["type"] != "next" or "errors" in message["payload"], message

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_forged_token_is_refused_at_connection_init_with_4403(stack: Stack) -> None:
    forged = mint_token(secret="a-forger-s-own-secret-of-enough-length", sub="x", name="X")

    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with connect(stack.base_url, forged):
            pass

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_huddle_subscribers_see_action_items_and_their_tasks_move(stack: Stack) -> None:
    lead = stack.token("lead-huddle", "Dr. Huddle")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        ids = await _team_with_plan(client, lead)
        meeting = (
            await gql(
                client,
                op.SCHEDULE,
                {"teamId": ids["team"], "at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()},
                token=lead,
            )
        )["scheduleHuddle"]
        async with connect(stack.base_url, lead) as socket:
            op_id = await socket.subscribe(op.HUDDLE_CHANGED, {"huddleId": meeting["id"]})
            await gql(client, op.OPEN_HUDDLE, {"id": meeting["id"]}, token=lead)
            # The worker may publish the scheduling itself after the subscription began:
            # that push shows the huddle as it then stood, SCHEDULED. The opening follows.
            opened = await socket.receive()
            while opened["payload"]["data"]["huddleChanged"]["status"] == "SCHEDULED":
                opened = await socket.receive()
            huddle = (
                await gql(
                    client,
                    op.ACTION_ITEM,
                    {
                        "id": meeting["id"],
                        "title": "Arrange transport",
                        "discipline": "SOCIAL_WORKER",
                    },
                    token=lead,
                )
            )["raiseActionItem"]
            task_id = huddle["actionItems"][0]["id"]
            await gql(client, op.MOVE_TASK, {"taskId": task_id, "status": "DONE"}, token=lead)
            seen = []
            while not seen or seen[-1]["actionItems"] != [{"id": task_id, "status": "DONE"}]:
                message = await socket.receive()
                assert message["type"] == "next" and message["id"] == op_id, message
                seen.append(message["payload"]["data"]["huddleChanged"])

    assert opened["payload"]["data"]["huddleChanged"]["status"] == "OPEN"
    assert seen[-1]["id"] == meeting["id"]


async def test_a_subscriber_too_slow_to_keep_up_is_disconnected_with_a_reason(stack: Stack) -> None:
    """Board updates flood in (published straight to care.board-updates, with large cards)
    while the client reads nothing: its queue overflows and the server closes the socket
    with code 1013 (try again later) and a reason, instead of buffering without end."""
    lead = stack.token("lead-slow", "Dr. Slow")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        team = (await gql(client, op.CREATE_TEAM, {"name": "Slow"}, token=lead))["createTeam"]["id"]
        stalled = await asyncio.to_thread(StalledClient, stack.base_url, lead)
        try:
            stalled.subscribe(op.BOARD_CHANGED, {"teamId": team})
            await gql(client, op.CREATE_TASK, {"teamId": team, "title": "probe"}, token=lead)
            probe = await asyncio.to_thread(stalled.next_message)
            assert probe["type"] == "next", probe
            await _flood(stack, team, count=1500)
            await asyncio.sleep(2)  # the server fills what the client does not read
            received = 0
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.to_thread(stalled.next_message)
                    received += 1
        finally:
            stalled.close()

    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, OVERFLOW_REASON)
    assert received < 1500  # the rest was dropped with the connection, not buffered
    assert "Traceback" not in stack.output(), stack.output()[-3000:]


def test_the_stack_signs_its_pipeline_with_a_dev_key_it_says_is_dev_only(stack: Stack) -> None:
    path = stack.data_dir / "dev-pipeline-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"DEV ONLY  pipeline key in the DEV key file {path}" in stack.output()


async def _flood(stack: Stack, team: str, *, count: int) -> None:
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic_prefix=stack.env.get("CARECOORD_TOPIC_PREFIX", ""),
        data_dir=stack.data_dir,
        _env_file=None,  # type: ignore[call-arg]
    )
    # Signed with the stack's key, as a worker publishes: the hub pushes nothing else.
    keys = pipeline_keys(settings)
    producer = kafka.make_producer(settings, max_request_size=4_000_000)
    await producer.start()
    try:
        base = int(time.time() * 1000) * 1000  # seqs no real update has used
        now = datetime.now(UTC)
        for n in range(count):
            card = TaskCard(
                task_id=f"flood-{n}",
                team_id=team,
                title="x" * 30_000,
                source="manual",
                status=TaskStatus.TODO,
                created_at=now,
                updated_at=now,
            )
            update = BoardUpdate(
                seq=base + n, team_id=team, kind="task", change=BoardChange.CREATED, task=card
            )
            key, value = team.encode(), codec.encode_board_update(update)
            await producer.send(
                settings.board_updates_topic,
                key=key,
                value=value,
                headers=keys.sign(settings.board_updates_topic, key, value),
            )
        await producer.flush()
    finally:
        await producer.stop()
