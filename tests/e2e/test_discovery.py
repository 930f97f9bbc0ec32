"""Discovery on the running stack, as a front end starts with only its user's token: its
teams (`me.teams`), a team's patients (searched, paged), a patient's plans, a team's
huddles by status, and the board filtered, with each card's assignee and patient named."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests import operations as op
from tests.e2e.conftest import Stack
from tests.graphql import gql

ME = "query Me { me { userId name teams { team { id name } disciplines lead } } }"
PATIENTS = """query($teamId: ID!, $first: Int, $after: String, $search: String) {
  team(id: $teamId) { patients(first: $first, after: $after, search: $search) {
    items { id name carePlans { id title status } } nextCursor } } }"""
HUDDLES = """query($teamId: ID!, $status: HuddleStatus) {
  team(id: $teamId) { huddles(status: $status) { items { id state status } nextCursor } } }"""
BOARD = """query($teamId: ID!, $assigneeId: ID, $patientId: ID, $discipline: Discipline) {
  board(teamId: $teamId, assigneeId: $assigneeId, patientId: $patientId,
    discipline: $discipline) {
    columns { status tasks { id title source assignee { userId name } patient { id name } } }
  } }"""


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


def _cards(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for column in board["columns"] for t in column["tasks"]]


async def test_a_front_end_with_only_a_token_finds_its_teams_patients_plans_huddles_and_tasks(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-find", "Dr Finder")
    nurse = stack.token("rn-find", "Nia Finder")
    team = (await gql(api, op.CREATE_TEAM, {"name": "Discovery clinic"}, token=lead))["createTeam"][
        "id"
    ]
    role = {"teamId": team, "userId": "rn-find", "name": "Nia Finder", "discipline": "NURSE"}
    await gql(api, op.ASSIGN_ROLE, role, token=lead)
    patients = []
    for i, name in enumerate(("Ana Tasker", "Ben Quiet", "Cy Planner")):
        enrollment = {"teamId": team, "mrn": f"F-{i}", "name": name, "birthDate": "1970-05-06"}
        patients.append((await gql(api, op.ENROLL, enrollment, token=lead))["enrollPatient"]["id"])
    ana, ben, cy = patients
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": cy, "title": "Diabetes"}, token=lead))[
        "createCarePlan"
    ]["id"]
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    huddle = (await gql(api, op.SCHEDULE, {"teamId": team, "at": at}, token=lead))[
        "scheduleHuddle"
    ]["id"]
    task = {"teamId": team, "title": "Call back", "patientId": ana, "assigneeId": "rn-find"}
    mine = (await gql(api, op.CREATE_TASK, task, token=lead))["createTask"]["id"]
    await gql(api, op.CREATE_TASK, {"teamId": team, "title": "Order strips"}, token=lead)

    # The nurse knows only her token.
    me = (await gql(api, ME, {}, token=nurse))["me"]
    [membership] = me["teams"]
    found = membership["team"]["id"]
    first = (await gql(api, PATIENTS, {"teamId": found, "first": 2}, token=nurse))["team"]
    rest = (
        await gql(
            api, PATIENTS, {"teamId": found, "after": first["patients"]["nextCursor"]}, token=nurse
        )
    )["team"]
    searched = (await gql(api, PATIENTS, {"teamId": found, "search": "quiet"}, token=nurse))["team"]
    scheduled = (await gql(api, HUDDLES, {"teamId": found, "status": "SCHEDULED"}, token=nurse))[
        "team"
    ]
    open_ones = (await gql(api, HUDDLES, {"teamId": found, "status": "OPEN"}, token=nurse))["team"]

    async def assigned() -> list[dict[str, Any]]:
        filters = {"teamId": found, "assigneeId": me["userId"]}
        return _cards((await gql(api, BOARD, filters, token=nurse))["board"])

    cards: list[dict[str, Any]] = []
    for _ in range(400):  # the board follows the store within moments
        if cards := await assigned():
            break
        await asyncio.sleep(0.05)

    assert (membership["team"]["name"], membership["disciplines"], membership["lead"]) == (
        "Discovery clinic",
        ["NURSE"],
        False,
    )
    listed = [*first["patients"]["items"], *rest["patients"]["items"]]
    assert [p["id"] for p in listed] == [ana, ben, cy]
    assert rest["patients"]["nextCursor"] is None
    assert [p["carePlans"] for p in listed][2] == [
        {"id": plan, "title": "Diabetes", "status": "DRAFT"}
    ]
    assert [p["name"] for p in searched["patients"]["items"]] == ["Ben Quiet"]
    assert [(h["id"], h["state"], h["status"]) for h in scheduled["huddles"]["items"]] == [
        (huddle, "SCHEDULED", "SCHEDULED")
    ]
    assert open_ones["huddles"]["items"] == []
    assert [(c["id"], c["source"], c["assignee"], c["patient"]) for c in cards] == [
        (
            mine,
            "MANUAL",
            {"userId": "rn-find", "name": "Nia Finder"},
            {"id": ana, "name": "Ana Tasker"},
        )
    ]
