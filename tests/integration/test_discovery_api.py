"""Discovery through the GraphQL API on a real PostgreSQL and broker: with only their user id
a clinician finds their teams (`me.teams`), a team's patients (paged, searched), a patient's
plans and a team's huddles (paged, by status), and filters the board; every patient listed
is on the access record, and nothing is listed to whom the team is closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome
from services.settings import Settings
from services.tasks import rebuild
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import token
from tests.integration.kafka_helpers import access_records_sent

LEAD = token("lead-1", "Dr Lead")
NURSE = token("rn-1", "Nia Nurse")
OUTSIDER = token("er-1", "Dr Elsewhere")

ME = """query { me { userId disciplines lead
  teams { team { id name members { userId teams { lead } } } disciplines lead } } }"""
PATIENTS = """query($teamId: ID!, $first: Int, $after: String, $search: String) {
  team(id: $teamId) { patients(first: $first, after: $after, search: $search) {
    items { id mrn name } nextCursor } } }"""
PLANS_OF_PATIENT = """query($id: ID!) { patient(id: $id) { id carePlans { id title } } }"""
HUDDLES = """query($teamId: ID!, $status: HuddleStatus, $first: Int, $after: String) {
  team(id: $teamId) { huddles(status: $status, first: $first, after: $after) {
    items { id status state } nextCursor } } }"""
BOARD = """query($teamId: ID!, $assigneeId: ID, $patientId: ID, $discipline: Discipline) {
  board(teamId: $teamId, assigneeId: $assigneeId, patientId: $patientId,
    discipline: $discipline) {
    columns { status tasks { id title source assignee { userId name }
      patient { id name } } } } }"""


async def access_records(settings: Settings) -> list[AccessRecorded]:
    return await access_records_sent(settings)


async def refused(
    api: httpx.AsyncClient, query: str, variables: dict[str, Any], who: str
) -> GraphQLErrors:
    with pytest.raises(GraphQLErrors) as info:
        await gql(api, query, variables, token=who)
    return info.value


async def new_team(api: httpx.AsyncClient, name: str = "Diabetes") -> str:
    team = (await gql(api, op.CREATE_TEAM, {"name": name}, token=LEAD))["createTeam"]["id"]
    await gql(
        api,
        op.ASSIGN_ROLE,
        {"teamId": team, "userId": "rn-1", "name": "Nia Nurse", "discipline": "NURSE"},
        token=LEAD,
    )
    return str(team)


async def enroll(api: httpx.AsyncClient, team: str, mrn: str, name: str) -> str:
    enrollment = {"teamId": team, "mrn": mrn, "name": name, "birthDate": "1961-03-09"}
    patient = await gql(api, op.ENROLL, enrollment, token=LEAD)
    return str(patient["enrollPatient"]["id"])


async def patients(api: httpx.AsyncClient, who: str, **variables: Any) -> dict[str, Any]:
    result = await gql(api, PATIENTS, variables, token=who)
    return dict(result["team"]["patients"])


async def test_me_lists_each_team_of_the_caller_with_their_disciplines_and_lead_role_there(
    api: httpx.AsyncClient,
) -> None:
    first = await new_team(api, "Diabetes")
    second = await new_team(api, "Heart failure")
    await gql(api, op.REMOVE_MEMBER, {"teamId": second, "userId": "rn-1"}, token=LEAD)
    await gql(api, op.CREATE_TEAM, {"name": "Not the nurse's"}, token=OUTSIDER)

    lead = (await gql(api, ME, {}, token=LEAD))["me"]
    nurse = (await gql(api, ME, {}, token=NURSE))["me"]

    assert [(m["team"]["id"], m["team"]["name"], m["lead"]) for m in lead["teams"]] == [
        (first, "Diabetes", True),
        (second, "Heart failure", True),
    ]
    assert (lead["lead"], lead["disciplines"]) == (True, [])
    # Removed from the second team: the roster as it stands decides.
    assert [(m["team"]["id"], m["disciplines"], m["lead"]) for m in nurse["teams"]] == [
        (first, ["NURSE"], False)
    ]
    assert (nurse["lead"], nurse["disciplines"]) == (False, ["NURSE"])
    # A roster's members do not list their teams to others.
    members = nurse["teams"][0]["team"]["members"]
    assert [m["teams"] for m in members] == [None, None]


async def test_a_teams_patients_page_in_enrollment_order_and_one_enrolled_meanwhile_comes_last(
    api: httpx.AsyncClient,
) -> None:
    team = await new_team(api)
    enrolled = [await enroll(api, team, f"D-{i}", f"Dana Example{i}") for i in range(5)]

    page = await patients(api, NURSE, teamId=team, first=2)
    seen = [p["id"] for p in page["items"]]
    late = await enroll(api, team, "D-9", "Lee Late")  # arrives while the reader pages
    while page["nextCursor"] is not None:
        page = await patients(api, NURSE, teamId=team, first=2, after=page["nextCursor"])
        seen += [p["id"] for p in page["items"]]

    assert seen == [*enrolled, late]
    assert page["nextCursor"] is None
    everyone = await patients(api, NURSE, teamId=team)  # the default page holds all six
    assert ([p["id"] for p in everyone["items"]], everyone["nextCursor"]) == (seen, None)


async def test_bad_page_sizes_and_cursors_are_bad_user_input(api: httpx.AsyncClient) -> None:
    team = await new_team(api)
    await enroll(api, team, "D-1", "Dana Example")
    huddles = (await gql(api, HUDDLES, {"teamId": team, "first": 1}, token=NURSE))["team"]

    too_many = await refused(api, PATIENTS, {"teamId": team, "first": 101}, NURSE)
    forged = await refused(api, PATIENTS, {"teamId": team, "after": "not-a-cursor"}, NURSE)
    empty = await refused(api, PATIENTS, {"teamId": team, "search": "   "}, NURSE)
    wrong_list = await refused(
        api, HUDDLES, {"teamId": team, "after": _cursor_of_patients(team)}, NURSE
    )

    assert huddles["huddles"] == {"items": [], "nextCursor": None}
    assert {e.code for e in (too_many, forged, empty, wrong_list)} == {"BAD_USER_INPUT"}


def _cursor_of_patients(team: str) -> str:
    from services.api.graphql import paging

    return paging.encode("patients", 1)


async def test_search_finds_a_patient_by_mrn_prefix_or_a_name_word_prefix_without_case(
    api: httpx.AsyncClient,
) -> None:
    team = await new_team(api)
    dana = await enroll(api, team, "AB-1001", "Dana Example")
    lee = await enroll(api, team, "AB-2002", "Lee Smithson")
    await enroll(api, team, "CD-1001", "Kim Other")
    other_team = await new_team(api, "Elsewhere")
    await enroll(api, other_team, "AB-1003", "Dana Elsewhere")

    def ids(page: dict[str, Any]) -> list[str]:
        return [p["id"] for p in page["items"]]

    assert ids(await patients(api, NURSE, teamId=team, search="ab-1")) == [dana]
    assert ids(await patients(api, NURSE, teamId=team, search="AB")) == [dana, lee]
    assert ids(await patients(api, NURSE, teamId=team, search="smith")) == [lee]
    assert ids(await patients(api, NURSE, teamId=team, search="DANA")) == [dana]
    assert ids(await patients(api, NURSE, teamId=team, search="ample")) == []
    assert ids(await patients(api, NURSE, teamId=team, search="%")) == []
    paged = await patients(api, NURSE, teamId=team, search="ab", first=1)
    rest = await patients(api, NURSE, teamId=team, search="ab", after=paged["nextCursor"])
    assert (ids(paged), ids(rest), rest["nextCursor"]) == ([dana], [lee], None)


async def test_an_outsider_finds_no_patient_by_mrn_and_each_patient_listed_is_an_audited_read(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    team = await new_team(api)
    dana = await enroll(api, team, "AB-1001", "Dana Example")
    lee = await enroll(api, team, "AB-2002", "Lee Smithson")

    outsider = await refused(api, PATIENTS, {"teamId": team, "search": "AB-1001"}, OUTSIDER)
    await patients(api, NURSE, teamId=team)

    assert outsider.code == "FORBIDDEN"
    assert "AB-1001" not in str(outsider) and "Dana" not in str(outsider)
    records = await access_records(settings)
    reads = {
        (r.patient_id, r.resource_type, r.outcome)
        for r in records
        if r.actor_id == "rn-1" and r.action is AccessAction.READ
    }
    assert reads == {
        (dana, "Patient", AccessOutcome.PERMIT),
        (lee, "Patient", AccessOutcome.PERMIT),
    }
    denied = [r for r in records if r.actor_id == "er-1"]
    assert [(r.outcome, r.patient_id) for r in denied] == [(AccessOutcome.DENY, None)]


async def test_a_patient_lists_their_care_plans(api: httpx.AsyncClient) -> None:
    team = await new_team(api)
    patient = await enroll(api, team, "D-1", "Dana Example")
    plans = [
        (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": t}, token=LEAD))[
            "createCarePlan"
        ]["id"]
        for t in ("T2D", "Hypertension")
    ]

    found = (await gql(api, PLANS_OF_PATIENT, {"id": patient}, token=NURSE))["patient"]
    refusal = await refused(api, PLANS_OF_PATIENT, {"id": patient}, OUTSIDER)

    assert [(p["id"], p["title"]) for p in found["carePlans"]] == list(
        zip(plans, ["T2D", "Hypertension"], strict=True)
    )
    assert refusal.code == "FORBIDDEN"


async def test_a_teams_huddles_page_in_scheduling_order_and_filter_by_their_status_now(
    api: httpx.AsyncClient,
) -> None:
    team = await new_team(api)
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ids = [
        (await gql(api, op.SCHEDULE, {"teamId": team, "at": at}, token=LEAD))["scheduleHuddle"][
            "id"
        ]
        for _ in range(3)
    ]
    await gql(api, op.OPEN_HUDDLE, {"id": ids[0]}, token=LEAD)
    await gql(api, op.CLOSE_HUDDLE, {"id": ids[0]}, token=LEAD)
    await gql(api, op.OPEN_HUDDLE, {"id": ids[1]}, token=LEAD)

    def listed(**variables: Any) -> Any:
        return gql(api, HUDDLES, {"teamId": team, **variables}, token=NURSE)

    first = (await listed(first=2))["team"]["huddles"]
    rest = (await listed(first=2, after=first["nextCursor"]))["team"]["huddles"]
    by_status = {
        status: [h["id"] for h in (await listed(status=status))["team"]["huddles"]["items"]]
        for status in ("SCHEDULED", "OPEN", "CLOSED")
    }

    assert [(h["id"], h["state"], h["status"]) for h in first["items"] + rest["items"]] == [
        (ids[0], "CLOSED", "CLOSED"),
        (ids[1], "OPEN", "OPEN"),
        (ids[2], "SCHEDULED", "SCHEDULED"),
    ]
    assert rest["nextCursor"] is None
    assert by_status == {"SCHEDULED": [ids[2]], "OPEN": [ids[1]], "CLOSED": [ids[0]]}
    outsider = await refused(api, HUDDLES, {"teamId": team}, OUTSIDER)
    assert outsider.code == "FORBIDDEN"


async def test_the_board_filters_by_assignee_patient_and_discipline_and_names_them(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    team = await new_team(api)
    dana = await enroll(api, team, "D-1", "Dana Example")
    lee = await enroll(api, team, "D-2", "Lee Smithson")
    made = {}
    for title, patient, assignee, discipline in [
        ("Call Dana", dana, "rn-1", "NURSE"),
        ("Review Lee", lee, "lead-1", "PHYSICIAN"),
        ("Order gloves", None, None, None),
    ]:
        variables = {
            "teamId": team,
            "title": title,
            "patientId": patient,
            "assigneeId": assignee,
            "discipline": discipline,
        }
        made[title] = (await gql(api, op.CREATE_TASK, variables, token=LEAD))["createTask"]
    await rebuild.rebuild(pool)  # the board as the projector would have it

    async def cards(**filters: Any) -> list[dict[str, Any]]:
        board = (await gql(api, BOARD, {"teamId": team, **filters}, token=NURSE))["board"]
        return [t for column in board["columns"] for t in column["tasks"]]

    everything = await cards()
    assert {t["title"]: (t["source"], t["assignee"], t["patient"]) for t in everything} == {
        "Call Dana": (
            "MANUAL",
            {"userId": "rn-1", "name": "Nia Nurse"},
            {"id": dana, "name": "Dana Example"},
        ),
        "Review Lee": (
            "MANUAL",
            {"userId": "lead-1", "name": "Dr Lead"},
            {"id": lee, "name": "Lee Smithson"},
        ),
        "Order gloves": ("MANUAL", None, None),
    }
    assert [t["title"] for t in await cards(assigneeId="rn-1")] == ["Call Dana"]
    assert [t["title"] for t in await cards(patientId=lee)] == ["Review Lee"]
    assert [t["title"] for t in await cards(discipline="PHYSICIAN")] == ["Review Lee"]
    assert await cards(assigneeId="rn-1", patientId=lee) == []
    # Only the cards shown are on the record: a filtered board read names only its patient.
    reads = [
        r
        for r in await access_records(settings)
        if r.actor_id == "rn-1" and r.resource_type == "Board"
    ]
    assert {r.patient_id for r in reads} == {dana, lee}
    assert sum(1 for r in reads if r.patient_id == lee) == 3  # all, by patient, by discipline
