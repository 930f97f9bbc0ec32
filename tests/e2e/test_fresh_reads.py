"""Read-your-writes and resumable subscriptions on the running stack: a mutation's answer
carries the position it committed at, a read given it as `atLeast` holds the change, and a
board subscriber that was away resumes `after` the last position it received, missing
nothing and receiving nothing twice. The subscriptions here go through gql, a third-party
graphql-transport-ws client, as a front end's would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from services.tasks import store
from tests import operations as op
from tests.e2e.conftest import Stack
from tests.graphql import GraphQLErrors, gql

# Past everywhere on Earth, so overdue whatever the time zone.
LONG_AGO = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
CARD = "id title status redacted patientId"
BOARD_AT = f"""query($teamId: ID!, $atLeast: Position) {{
  board(teamId: $teamId, atLeast: $atLeast) {{ position columns {{ status tasks {{ {CARD} }} }} }}
}}"""
AGENDA_AT = f"""query($teamId: ID!, $atLeast: Position) {{
  huddleAgenda(teamId: $teamId, atLeast: $atLeast) {{ position overdueTasks {{ {CARD} }} }} }}"""
PATIENTS_AT = """query($teamId: ID!, $atLeast: Position) {
  team(id: $teamId) { patients(atLeast: $atLeast) { items { id } } } }"""
BOARD_AFTER = f"""subscription($teamId: ID!, $after: Position) {{
  boardChanged(teamId: $teamId, after: $after) {{ change position task {{ {CARD} }} }} }}"""


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


async def _committed(
    api: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str
) -> tuple[dict[str, Any], str]:
    """A mutation's data and the position its answer says it committed at."""
    response = await api.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"], body["extensions"]["position"]


def _cards(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for column in board["columns"] for t in column["tasks"]}


@asynccontextmanager
async def _subscriber(stack: Stack, token: str) -> AsyncIterator[AsyncClientSession]:
    """A gql session over graphql-transport-ws, signed in as the board page signs in."""
    transport = WebsocketsTransport(
        url=stack.base_url.replace("http://", "ws://") + "/graphql",
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        ping_interval=None,
    )
    async with Client(transport=transport) as session:
        yield session


async def _take(changes: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The next `count` boardChanged events (each within moments)."""
    return [(await asyncio.wait_for(anext(changes), 20))["boardChanged"] for _ in range(count)]


async def _pushed_for(
    changes: AsyncIterator[dict[str, Any]], act: Callable[[], Awaitable[Any]]
) -> tuple[dict[str, Any], Any]:
    """The next change the subscription gives once `act` (run when the subscription is
    in place, or at least asked for: a change before it is replayed) made one."""
    pending = asyncio.ensure_future(_take(changes, 1))
    await asyncio.sleep(0.5)
    done = await act()
    [change] = await pending
    return change, done


def _board_changes(
    session: AsyncClientSession, team: str, after: str | None
) -> AsyncIterator[dict[str, Any]]:
    request = GraphQLRequest(BOARD_AFTER, variable_values={"teamId": team, "after": after})
    return session.subscribe(request)


async def test_a_read_given_a_mutations_position_holds_the_change_every_time(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-ryw", "Dr Fresh")
    created, at = await _committed(api, op.CREATE_TEAM, {"name": "Fresh reads"}, lead)
    team = created["createTeam"]["id"]
    enrolled, at = await _committed(
        api,
        op.ENROLL,
        {"teamId": team, "mrn": "RYW-1", "name": "Ria Example", "birthDate": "1970-01-02"},
        lead,
    )
    patient = enrolled["enrollPatient"]["id"]
    listed = (await gql(api, PATIENTS_AT, {"teamId": team, "atLeast": at}, token=lead))["team"]

    # Ten tasks, each read back at once with the position its answer gave: the board holds
    # every one, however far the projector is behind the answer.
    missing = []
    positions = []
    for i in range(10):
        variables = {"teamId": team, "title": f"Task {i}", "patientId": patient}
        task, at = await _committed(api, op.CREATE_TASK, variables, lead)
        positions.append(int(at))
        board = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=lead))["board"]
        if task["createTask"]["id"] not in _cards(board):
            missing.append(i)
        assert int(board["position"]) >= int(at)
    late, at = await _committed(
        api, op.CREATE_TASK, {"teamId": team, "title": "Late", "dueDate": LONG_AGO}, lead
    )
    agenda = (await gql(api, AGENDA_AT, {"teamId": team, "atLeast": at}, token=lead))[
        "huddleAgenda"
    ]

    assert [p["id"] for p in listed["patients"]["items"]] == [patient]
    assert missing == []
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert [t["id"] for t in agenda["overdueTasks"]] == [late["createTask"]["id"]]
    assert int(agenda["position"]) >= int(at)


@pytest.mark.parametrize(
    ("at_least", "problem"),
    [("soon", "decimal digits"), ("-3", "decimal digits"), ("9" * 18, "past the last position")],
    ids=["word", "negative", "beyond-the-store"],
)
async def test_a_position_that_is_no_position_is_refused(
    stack: Stack, api: httpx.AsyncClient, at_least: str, problem: str
) -> None:
    lead = stack.token("lead-bad-pos", "Dr Bad")
    team = (await gql(api, op.CREATE_TEAM, {"name": "Bad positions"}, token=lead))["createTeam"]
    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, BOARD_AT, {"teamId": team["id"], "atLeast": at_least}, token=lead)
    assert refused.value.code == "BAD_USER_INPUT"
    assert problem in str(refused.value)


async def test_a_subscriber_that_was_away_resumes_after_its_last_position_missing_nothing(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-resume", "Dr Resume")
    created, at = await _committed(api, op.CREATE_TEAM, {"name": "Wall screen"}, lead)
    team = created["createTeam"]["id"]
    board = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=lead))["board"]

    async with _subscriber(stack, lead) as session:
        changes = _board_changes(session, team, board["position"])
        seen_a, (a, _) = await _pushed_for(
            changes, lambda: _committed(api, op.CREATE_TASK, {"teamId": team, "title": "A"}, lead)
        )
    a_id = a["createTask"]["id"]

    # Away: one task created, another moved.
    b, at_b = await _committed(api, op.CREATE_TASK, {"teamId": team, "title": "B"}, lead)
    _, at_moved = await _committed(
        api, op.MOVE_TASK, {"taskId": a_id, "status": "IN_PROGRESS"}, lead
    )
    await gql(api, BOARD_AT, {"teamId": team, "atLeast": at_moved}, token=lead)

    async with _subscriber(stack, lead) as session:
        changes = _board_changes(session, team, seen_a["position"])
        missed = await _take(changes, 2)
        c, at_c = await _committed(api, op.CREATE_TASK, {"teamId": team, "title": "C"}, lead)
        [live] = await _take(changes, 1)

    got = [(e["task"]["id"], e["change"], e["position"]) for e in [*missed, live]]
    assert (seen_a["task"]["id"], seen_a["change"]) == (a_id, "CREATED")
    assert got == [
        (b["createTask"]["id"], "CREATED", at_b),
        (a_id, "MOVED", at_moved),
        (c["createTask"]["id"], "CREATED", at_c),
    ]


async def test_resuming_from_before_the_changes_kept_is_refused_with_refetch(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-gone", "Dr Gone")
    created, at = await _committed(api, op.CREATE_TEAM, {"name": "Old screen"}, lead)
    team = created["createTeam"]["id"]
    first = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=lead))["board"]
    _, at = await _committed(api, op.CREATE_TASK, {"teamId": team, "title": "Later"}, lead)
    await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=lead)
    # The retention passes (as the worker prunes it, with the clock moved on a day).
    conn = await asyncpg.connect(stack.database_url)
    try:
        await store.prune_changes(conn, datetime.now(UTC) + timedelta(days=1))
    finally:
        await conn.close()

    async with _subscriber(stack, lead) as session:
        with pytest.raises(TransportQueryError) as refused:
            await _take(_board_changes(session, team, first["position"]), 1)
        # From the board's position now, it goes on live.
        board = (await gql(api, BOARD_AT, {"teamId": team}, token=lead))["board"]
        changes = _board_changes(session, team, board["position"])
        now, (task, _) = await _pushed_for(
            changes,
            lambda: _committed(api, op.CREATE_TASK, {"teamId": team, "title": "Now"}, lead),
        )

    [error] = refused.value.errors or []
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["refetch"] is True
    assert now["task"]["id"] == task["createTask"]["id"]


async def test_a_consent_granted_or_revoked_pushes_the_cards_decided_again(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-cp", "Dr Consent")
    dietitian = stack.token("dt-cp", "Dee Dietitian")
    team = (await gql(api, op.CREATE_TEAM, {"name": "Consent pushes"}, token=lead))["createTeam"][
        "id"
    ]
    for user, name, discipline in (
        ("dt-cp", "Dee Dietitian", "DIETITIAN"),
        ("ph-cp", "Pat Pharm", "PHARMACIST"),
    ):
        variables = {"teamId": team, "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=lead)
    patient = (
        await gql(
            api,
            op.ENROLL,
            {"teamId": team, "mrn": "CP-1", "name": "Cy Example", "birthDate": "1959-05-06"},
            token=lead,
        )
    )["enrollPatient"]["id"]
    plan = (
        await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "Warfarin"}, token=lead)
    )["createCarePlan"]["id"]
    _, at = await _committed(api, op.ADD_INTERVENTION, op.genetic_result(plan), lead)
    board = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=dietitian))["board"]
    [card] = _cards(board).values()

    grant = {
        "patientId": patient,
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["DIETITIAN"],
        "evidence": "form-cp",
    }
    async with _subscriber(stack, dietitian) as session:
        changes = _board_changes(session, team, board["position"])
        sent = time.monotonic() + 0.5  # when _pushed_for grants it
        shown, (granted, at_granted) = await _pushed_for(
            changes, lambda: _committed(api, op.GRANT, grant, lead)
        )
        shown_after = time.monotonic() - sent
        pending = asyncio.ensure_future(_take(changes, 1))
        variables = {"id": granted["grantConsent"]["id"], "evidence": "withdrawal-cp"}
        _, at_revoked = await _committed(api, op.REVOKE_CONSENT, variables, lead)
        [hidden] = await pending

    print(f"consent grant -> re-decided card pushed in {shown_after * 1000:.0f} ms")
    assert (card["redacted"], card["title"]) == (True, "[restricted]")
    assert (shown["change"], shown["task"]["id"], shown["task"]["redacted"]) == (
        "UPDATED",
        card["id"],
        False,
    )
    assert shown["task"]["title"] == op.GENETIC_RESULT
    assert shown["position"] == at_granted
    assert (hidden["change"], hidden["task"]["redacted"], hidden["position"]) == (
        "UPDATED",
        True,
        at_revoked,
    )
