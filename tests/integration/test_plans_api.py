"""The plans service through its GraphQL API on a real PostgreSQL: rules, access and errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.common.event_store import EventStore
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import token

TODAY = datetime.now(UTC).date()


LEAD = token("lead-1", "Dr Lead")
PHARMACIST = token("ph-1", "Pat Pharm")
OUTSIDER = token("out-1", "Dr Elsewhere")


async def refused(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], **kw: Any
) -> GraphQLErrors:
    with pytest.raises(GraphQLErrors) as info:
        await gql(client, query, variables, **kw)
    return info.value


async def team_with_pharmacist(api: httpx.AsyncClient) -> str:
    team = (await gql(api, op.CREATE_TEAM, {"name": "Cardiometabolic"}, token=LEAD))["createTeam"]
    await gql(
        api,
        op.ASSIGN_ROLE,
        {"teamId": team["id"], "userId": "ph-1", "name": "Pat Pharm", "discipline": "PHARMACIST"},
        token=LEAD,
    )
    return str(team["id"])


async def enrolled(api: httpx.AsyncClient, team_id: str, mrn: str = "MRN-001") -> str:
    patient = await gql(
        api,
        op.ENROLL,
        {"teamId": team_id, "mrn": mrn, "name": "Ana Example", "birthDate": "1968-04-02"},
        token=LEAD,
    )
    return str(patient["enrollPatient"]["id"])


async def new_plan(api: httpx.AsyncClient) -> dict[str, Any]:
    patient_id = await enrolled(api, await team_with_pharmacist(api))
    plan = await gql(api, op.CREATE_PLAN, {"patientId": patient_id, "title": "T2D"}, token=LEAD)
    return dict(plan["createCarePlan"])


async def test_a_lead_builds_a_roster_in_which_a_member_may_hold_several_disciplines(
    api: httpx.AsyncClient,
) -> None:
    team_id = await team_with_pharmacist(api)
    for user, name, discipline in [
        ("np-1", "Nia Practitioner", "NURSE_PRACTITIONER"),
        ("gc-1", "Gil Counselor", "GENETIC_COUNSELOR"),
        ("gc-1", "Gil Counselor", "HEALTH_COACH"),
    ]:
        variables = {"teamId": team_id, "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=LEAD)

    team = (await gql(api, op.TEAM, {"id": team_id}, token=PHARMACIST))["team"]

    assert team["version"] == 5
    assert team["members"] == [
        {"userId": "lead-1", "name": "Dr Lead", "disciplines": [], "lead": True},
        {"userId": "ph-1", "name": "Pat Pharm", "disciplines": ["PHARMACIST"], "lead": False},
        {
            "userId": "np-1",
            "name": "Nia Practitioner",
            "disciplines": ["NURSE_PRACTITIONER"],
            "lead": False,
        },
        {
            "userId": "gc-1",
            "name": "Gil Counselor",
            "disciplines": ["GENETIC_COUNSELOR", "HEALTH_COACH"],
            "lead": False,
        },
    ]


async def test_only_a_lead_changes_the_roster(api: httpx.AsyncClient) -> None:
    team_id = await team_with_pharmacist(api)
    add_nurse = {"teamId": team_id, "userId": "n-1", "name": "Ned Nurse", "discipline": "NURSE"}

    by_member = await refused(api, op.ASSIGN_ROLE, add_nurse, token=PHARMACIST)
    by_outsider = await refused(api, op.ASSIGN_ROLE, add_nurse, token=OUTSIDER)
    promoted = await gql(api, op.ASSIGN_ROLE, {**add_nurse, "lead": True}, token=LEAD)
    by_new_lead = await gql(
        api,
        op.REVOKE_ROLE,
        {"teamId": team_id, "userId": "ph-1", "discipline": "PHARMACIST"},
        token=token("n-1"),
    )

    assert by_member.code == "FORBIDDEN"
    assert "Only a lead" in by_member.errors[0]["message"]
    assert by_outsider.code == "FORBIDDEN"
    assert "Only a lead" not in by_outsider.errors[0]["message"]
    assert promoted["assignRole"]["members"][-1]["lead"] is True
    # The pharmacist's only discipline is gone, and with it their place on the team.
    assert [m["userId"] for m in by_new_lead["revokeRole"]["members"]] == ["lead-1", "n-1"]
    assert (await refused(api, op.TEAM, {"id": team_id}, token=PHARMACIST)).code == "FORBIDDEN"


async def test_another_teams_records_and_unknown_ids_are_refused_in_the_same_words(
    api: httpx.AsyncClient,
) -> None:
    plan = await new_plan(api)
    patient_id = plan["patientId"]
    cases = [
        (op.TEAM, {"id": plan["teamId"]}, {"id": "no-such-team"}),
        (op.PATIENT, {"id": patient_id}, {"id": "no-such-patient"}),
        (op.CARE_PLAN, {"id": plan["id"]}, {"id": "no-such-plan"}),
        (op.CARE_PLANS, {"patientId": patient_id}, {"patientId": "no-such-patient"}),
        (op.CONSENTS, {"patientId": patient_id}, {"patientId": "no-such-patient"}),
        (
            op.ADD_GOAL,
            {"planId": plan["id"], "description": "x"},
            {"planId": "nope", "description": "x"},
        ),
        (
            op.CREATE_PLAN,
            {"patientId": patient_id, "title": "x"},
            {"patientId": "nope", "title": "x"},
        ),
    ]
    for query, existing, unknown in cases:
        theirs = await refused(api, query, existing, token=OUTSIDER)
        missing = await refused(api, query, unknown, token=OUTSIDER)
        assert theirs.code == missing.code == "FORBIDDEN", query
        assert theirs.errors[0]["message"] == missing.errors[0]["message"], query
        assert "Ana" not in theirs.errors[0]["message"]


async def test_no_token_or_a_wrongly_signed_one_is_unauthenticated(api: httpx.AsyncClient) -> None:
    plan = await new_plan(api)
    forged = token("lead-1", "Dr Lead", secret="another-secret-that-is-long-enough-too")

    for kwargs in ({}, {"token": forged}, {"token": "not-a-jwt"}):
        read = await refused(api, op.CARE_PLAN, {"id": plan["id"]}, **kwargs)
        write = await refused(api, op.CREATE_TEAM, {"name": "x"}, **kwargs)
        assert read.code == write.code == "UNAUTHENTICATED"


async def test_an_mrn_is_unique_on_its_team_whatever_its_case_and_spacing(
    api: httpx.AsyncClient,
) -> None:
    team_id = await team_with_pharmacist(api)
    other_team = await team_with_pharmacist(api)
    await enrolled(api, team_id, "mrn-77")

    again = await refused(
        api,
        op.ENROLL,
        {"teamId": team_id, "mrn": " Mrn-77 ", "name": "Bo Other", "birthDate": "1990-01-01"},
        token=LEAD,
    )
    elsewhere = await enrolled(api, other_team, "mrn-77")

    assert again.code == "CONFLICT"
    assert "mrn-77" not in again.errors[0]["message"].lower()
    assert elsewhere


def _far(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


BAD_INPUT = [
    ("empty team name", op.CREATE_TEAM, {"name": "   "}),
    ("over-long team name", op.CREATE_TEAM, {"name": "x" * 201}),
    ("birth date in the future", op.ENROLL, {"mrn": "M-9", "name": "A B", "birthDate": _far(2)}),
    ("impossible birth date", op.ENROLL, {"mrn": "M-9", "name": "A B", "birthDate": "1980-02-30"}),
    ("bad discipline", op.ASSIGN_ROLE, {"userId": "u", "name": "U", "discipline": "SURGEON"}),
    ("empty goal", op.ADD_GOAL, {"description": ""}),
    ("goal due two days ago", op.ADD_GOAL, {"description": "x", "dueDate": _far(-2)}),
    ("goal due in eleven years", op.ADD_GOAL, {"description": "x", "dueDate": _far(11 * 366)}),
    (
        "bad tier",
        op.ADD_INTERVENTION,
        {"kind": "MEDICATION", "tier": "FOURTH", "title": "t", "discipline": "PHYSICIAN"},
    ),
    (
        "over-long detail",
        op.ADD_INTERVENTION,
        {
            "kind": "MEDICATION",
            "tier": "RESCUE",
            "title": "t",
            "detail": "d" * 4001,
            "discipline": "PHYSICIAN",
        },
    ),
    ("review yesterday", op.REVIEW, {"summary": "ok", "next": _far(-1)}),
    ("review in two years", op.REVIEW, {"summary": "ok", "next": _far(730)}),
    ("huddle without offset", op.SCHEDULE, {"at": f"{_far(7)}T09:00:00"}),
    ("huddle last week", op.SCHEDULE, {"at": f"{_far(-7)}T09:00:00Z"}),
    (
        "consent covering nothing",
        op.GRANT,
        {
            "categories": [],
            "purposes": ["TREATMENT"],
            "disciplines": ["PHARMACIST"],
            "evidence": "form-1",
        },
    ),
    (
        "consent without evidence",
        op.GRANT,
        {"categories": ["GENETIC"], "purposes": ["TREATMENT"], "disciplines": ["PHARMACIST"]},
    ),
    (
        "consent with blank evidence",
        op.GRANT,
        {
            "categories": ["GENETIC"],
            "purposes": ["TREATMENT"],
            "disciplines": ["PHARMACIST"],
            "evidence": "  ",
        },
    ),
    (
        "consent ended yesterday",
        op.GRANT,
        {
            "categories": ["GENETIC"],
            "purposes": ["TREATMENT"],
            "disciplines": ["PHARMACIST"],
            "validUntil": f"{_far(-1)}T00:00:00Z",
            "evidence": "form-1",
        },
    ),
]


@pytest.mark.parametrize(("what", "query", "variables"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_input_is_refused_with_bad_user_input_and_writes_nothing(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    what: str,
    query: str,
    variables: dict[str, Any],
) -> None:
    plan = await new_plan(api)
    ids = {"teamId": plan["teamId"], "planId": plan["id"], "patientId": plan["patientId"]}
    head = await EventStore(pool).head()

    error = await refused(api, query, {**ids, **variables}, token=LEAD)

    assert error.code == "BAD_USER_INPUT", what
    assert await EventStore(pool).head() == head


async def test_a_plan_moves_only_along_its_lifecycle_and_is_frozen_once_completed(
    api: httpx.AsyncClient,
) -> None:
    plan = await new_plan(api)
    plan_id = plan["id"]

    async def status(to: str) -> dict[str, Any]:
        return dict(
            (await gql(api, op.SET_PLAN_STATUS, {"planId": plan_id, "status": to}, token=LEAD))[
                "setPlanStatus"
            ]
        )

    skip = await refused(
        api, op.SET_PLAN_STATUS, {"planId": plan_id, "status": "ON_HOLD"}, token=LEAD
    )
    assert (await status("ACTIVE"))["status"] == "ACTIVE"
    assert (await status("ON_HOLD"))["status"] == "ON_HOLD"
    assert (await status("ACTIVE"))["status"] == "ACTIVE"
    done = await status("COMPLETED")
    reopen = await refused(
        api, op.SET_PLAN_STATUS, {"planId": plan_id, "status": "ACTIVE"}, token=LEAD
    )
    edit = await refused(api, op.ADD_GOAL, {"planId": plan_id, "description": "x"}, token=LEAD)

    assert skip.code == reopen.code == edit.code == "CONFLICT"
    assert "DRAFT" in skip.errors[0]["message"]
    assert done["version"] == 5
    assert (await gql(api, op.CARE_PLAN, {"id": plan_id}, token=PHARMACIST))["carePlan"] == done


async def test_goals_and_interventions_read_back_as_written(api: httpx.AsyncClient) -> None:
    plan = await new_plan(api)
    plan_id = plan["id"]
    due = _far(90)
    # The intervention is tagged GENETIC: the patient consents to both readers seeing it.
    # A co-lead documents it: a consent never covers the member who documented it.
    consent = {
        "patientId": plan["patientId"],
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["PHYSICIAN", "PHARMACIST"],
        "evidence": "form-1",
    }
    co_lead = {"teamId": plan["teamId"], "userId": "cc-1", "name": "Cam Coordinator"}
    await gql(
        api, op.ASSIGN_ROLE, co_lead | {"discipline": "CARE_COORDINATOR", "lead": True}, token=LEAD
    )
    # The team has a patient: a lead's own discipline is given by another lead.
    lead_role = {"teamId": plan["teamId"], "userId": "lead-1", "name": "Dr Lead"}
    coordinator = token("cc-1", "Cam Coordinator")
    await gql(api, op.ASSIGN_ROLE, lead_role | {"discipline": "PHYSICIAN"}, token=coordinator)
    await gql(api, op.GRANT, consent, token=coordinator)

    await gql(
        api,
        op.ADD_GOAL,
        {
            "planId": plan_id,
            "description": "HbA1c below 7%",
            "target": "< 7%",
            "dueDate": due,
            "expectedVersion": 1,
        },
        token=LEAD,
    )
    added = (
        await gql(
            api,
            op.ADD_INTERVENTION,
            {
                "planId": plan_id,
                "kind": "MEDICATION",
                "tier": "FIRST_LINE",
                "title": "Metformin",
                "detail": "500 mg with the evening meal",
                "discipline": "PHYSICIAN",
                "sensitivity": ["GENETIC", "GENETIC"],
                "dueDate": due,
            },
            token=PHARMACIST,
        )
    )["addIntervention"]
    goal_id = added["goals"][0]["id"]
    intervention_id = added["interventions"][0]["id"]
    await gql(
        api,
        op.SET_GOAL_STATUS,
        {"planId": plan_id, "goalId": goal_id, "status": "IN_PROGRESS"},
        token=LEAD,
    )
    unknown_goal = await refused(
        api,
        op.SET_GOAL_STATUS,
        {"planId": plan_id, "goalId": "g-x", "status": "ACHIEVED"},
        token=LEAD,
    )
    stopped = (
        await gql(
            api,
            op.DISCONTINUE,
            {"planId": plan_id, "interventionId": intervention_id, "reason": "eGFR fell"},
            token=LEAD,
        )
    )["discontinueIntervention"]
    twice = await refused(
        api,
        op.DISCONTINUE,
        {"planId": plan_id, "interventionId": intervention_id, "reason": "again"},
        token=LEAD,
    )
    reviewed = (
        await gql(
            api, op.REVIEW, {"planId": plan_id, "summary": "On track", "next": _far(42)}, token=LEAD
        )
    )["reviewCarePlan"]

    read = (await gql(api, op.CARE_PLANS, {"patientId": plan["patientId"]}, token=PHARMACIST))[
        "carePlans"
    ]
    assert unknown_goal.code == "NOT_FOUND"
    assert twice.code == "CONFLICT"
    assert stopped["interventions"][0]["active"] is False
    assert read == [reviewed]
    assert reviewed["version"] == 6
    assert reviewed["nextReviewDate"] == _far(42)
    assert reviewed["goals"] == [
        {
            "id": goal_id,
            "description": "HbA1c below 7%",
            "target": "< 7%",
            "dueDate": due,
            "status": "IN_PROGRESS",
        }
    ]
    assert reviewed["lastReviewSummary"] == "On track"
    assert reviewed["interventions"][0]["discontinuedReason"] == "eGFR fell"
    assert reviewed["interventions"][0] | {"active": True, "discontinuedReason": None} == {
        "id": intervention_id,
        "kind": "MEDICATION",
        "tier": "FIRST_LINE",
        "title": "Metformin",
        "detail": "500 mg with the evening meal",
        "responsibleDiscipline": "PHYSICIAN",
        "sensitivity": ["GENETIC"],
        "active": True,
        "discontinuedReason": None,
        "redacted": False,
    }


async def test_concurrent_edits_without_an_expected_version_all_land(
    api: httpx.AsyncClient,
) -> None:
    plan = await new_plan(api)

    await asyncio.gather(
        *(
            gql(api, op.ADD_GOAL, {"planId": plan["id"], "description": f"goal {n}"}, token=LEAD)
            for n in range(10)
        )
    )

    read = (await gql(api, op.CARE_PLAN, {"id": plan["id"]}, token=LEAD))["carePlan"]
    assert sorted(g["description"] for g in read["goals"]) == [f"goal {n}" for n in range(10)]
    assert read["version"] == 11


async def test_an_action_item_and_its_task_are_recorded_together(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    plan = await new_plan(api)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    huddle = (await gql(api, op.SCHEDULE, {"teamId": plan["teamId"], "at": at}, token=LEAD))[
        "scheduleHuddle"
    ]

    raised = (
        await gql(
            api,
            op.ACTION_ITEM,
            {
                "id": huddle["id"],
                "title": "Check adherence",
                "patientId": plan["patientId"],
                "discipline": "PHARMACIST",
                "assigneeId": "ph-1",
                "dueDate": _far(7),
            },
            token=LEAD,
        )
    )["raiseActionItem"]

    [task] = raised["actionItems"]
    events = await EventStore(pool).read_stream(f"task-{task['id']}")
    [cause] = [
        e
        for e in await EventStore(pool).read_stream(f"huddle-{huddle['id']}")
        if e.type == "ActionItemRaised"
    ]
    assert [e.type for e in events] == ["TaskCreated"]
    assert events[0].causation_id == str(cause.event_id)
    assert events[0].team_id == plan["teamId"] and events[0].patient_id == plan["patientId"]
    assert task | {"updatedAt": None} == {
        "id": task["id"],
        "teamId": plan["teamId"],
        "patientId": plan["patientId"],
        "title": "Check adherence",
        "status": "TODO",
        "assigneeId": "ph-1",
        "discipline": "PHARMACIST",
        "dueDate": _far(7),
        "overdue": False,
        "sensitivity": [],
        "redacted": False,
        "updatedAt": None,
    }


async def test_a_huddle_refuses_strangers_and_takes_nothing_once_closed(
    api: httpx.AsyncClient,
) -> None:
    plan = await new_plan(api)
    stranger = await new_plan(api)  # a patient of another team
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    huddle_id = (await gql(api, op.SCHEDULE, {"teamId": plan["teamId"], "at": at}, token=LEAD))[
        "scheduleHuddle"
    ]["id"]

    close_early = await refused(api, op.CLOSE_HUDDLE, {"id": huddle_id}, token=LEAD)
    await gql(api, op.OPEN_HUDDLE, {"id": huddle_id}, token=LEAD)
    other_patient = await refused(
        api, op.NOTE, {"id": huddle_id, "text": "x", "patientId": stranger["patientId"]}, token=LEAD
    )
    not_member = await refused(
        api, op.ACTION_ITEM, {"id": huddle_id, "title": "x", "assigneeId": "out-1"}, token=LEAD
    )
    noted = (
        await gql(
            api,
            op.NOTE,
            {
                "id": huddle_id,
                "text": "BP trending up",
                "patientId": plan["patientId"],
                "sensitivity": ["MENTAL_HEALTH"],
            },
            token=PHARMACIST,
        )
    )["recordHuddleNote"]
    closed = (await gql(api, op.CLOSE_HUDDLE, {"id": huddle_id}, token=LEAD))["closeHuddle"]
    late = await refused(api, op.NOTE, {"id": huddle_id, "text": "late"}, token=LEAD)
    outsider = await refused(api, op.HUDDLE, {"id": huddle_id}, token=OUTSIDER)

    assert close_early.code == late.code == "CONFLICT"
    assert other_patient.code == "NOT_FOUND"
    assert not_member.code == "BAD_USER_INPUT"
    assert outsider.code == "FORBIDDEN"
    assert closed["status"] == "CLOSED"
    [note] = closed["notes"]
    assert note == noted["notes"][0]
    # No consent of the patient covers MENTAL_HEALTH: even its author sees it redacted.
    assert (note["authorId"], note["patientId"], note["text"], note["redacted"]) == (
        "ph-1",
        plan["patientId"],
        "[restricted]",
        True,
    )


async def test_consent_is_documented_on_evidence_listed_and_revoked_once(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    plan = await new_plan(api)
    until = (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0)
    granted = (
        await gql(
            api,
            op.GRANT,
            {
                "patientId": plan["patientId"],
                "categories": ["GENETIC"],
                "purposes": ["TREATMENT", "CARE_COORDINATION"],
                "disciplines": ["PHARMACIST", "GENETIC_COUNSELOR"],
                "validUntil": until.isoformat(),
                "evidence": "HIM-CF-1",
            },
            token=LEAD,
        )
    )["grantConsent"]
    head = await EventStore(pool).head()
    unsigned = await refused(api, op.REVOKE_CONSENT, {"id": granted["id"]}, token=LEAD)
    written = await EventStore(pool).head()

    withdrawal = {"id": granted["id"], "evidence": "HIM-WD-1"}
    revoked = (await gql(api, op.REVOKE_CONSENT, withdrawal, token=LEAD))["revokeConsent"]
    again = await refused(api, op.REVOKE_CONSENT, withdrawal, token=LEAD)
    outsider = await refused(api, op.REVOKE_CONSENT, withdrawal, token=OUTSIDER)
    listed = (await gql(api, op.CONSENTS, {"patientId": plan["patientId"]}, token=LEAD))["consents"]

    assert granted["active"] is True
    assert (granted["grantedBy"], granted["evidence"]) == ("lead-1", "HIM-CF-1")
    assert datetime.fromisoformat(granted["validUntil"]) == until
    assert unsigned.code == "BAD_USER_INPUT" and written == head
    assert "evidence" in unsigned.errors[0]["message"]
    assert revoked == granted | {
        "active": False,
        "revokedBy": "lead-1",
        "revocationEvidence": "HIM-WD-1",
    }
    assert listed == [revoked]
    assert again.code == "CONFLICT"
    assert outsider.code == "FORBIDDEN"


async def test_every_client_error_carries_a_code(api: httpx.AsyncClient) -> None:
    for query in ("{ nope }", "query {", "{ carePlan { id } }"):
        error = await refused(api, query, {}, token=LEAD)
        assert error.code == "BAD_USER_INPUT", query


async def test_a_lead_removes_members_and_leads_but_never_the_last_lead(
    api: httpx.AsyncClient,
) -> None:
    team_id = await team_with_pharmacist(api)
    co_lead = {"teamId": team_id, "userId": "co-1", "name": "Dr Co", "discipline": "PHYSICIAN"}
    await gql(api, op.ASSIGN_ROLE, {**co_lead, "lead": True}, token=LEAD)

    removed = await gql(api, op.REMOVE_MEMBER, {"teamId": team_id, "userId": "ph-1"}, token=LEAD)
    left = await gql(
        api, op.REMOVE_MEMBER, {"teamId": team_id, "userId": "lead-1"}, token=token("co-1")
    )
    last = await refused(
        api, op.REMOVE_MEMBER, {"teamId": team_id, "userId": "co-1"}, token=token("co-1")
    )
    gone = await refused(api, op.TEAM, {"id": team_id}, token=LEAD)

    assert [m["userId"] for m in removed["removeMember"]["members"]] == ["lead-1", "co-1"]
    assert [m["userId"] for m in left["removeMember"]["members"]] == ["co-1"]
    assert last.code == "CONFLICT"
    assert gone.code == "FORBIDDEN"  # a departed lead keeps no access


async def test_nul_characters_are_bad_input_and_name_nothing(api: httpx.AsyncClient) -> None:
    plan = await new_plan(api)

    in_text = await refused(api, op.CREATE_TEAM, {"name": "Ward\u0000 4"}, token=LEAD)
    in_id = await refused(api, op.CARE_PLAN, {"id": plan["id"] + "\u0000"}, token=LEAD)
    in_list = await gql(api, op.CARE_PLANS, {"patientId": plan["patientId"]}, token=LEAD)

    assert in_text.code == "BAD_USER_INPUT"
    assert "NUL" in in_text.errors[0]["message"]
    assert in_id.code == "BAD_USER_INPUT"  # refused before it is looked up
    assert len(in_list["carePlans"]) == 1


async def test_a_title_with_a_right_to_left_override_is_bad_input_naming_the_argument(
    api: httpx.AsyncClient,
) -> None:
    patient_id = await enrolled(api, await team_with_pharmacist(api))
    title = "Warfarin \u202eexe.evil"

    error = await refused(
        api, op.CREATE_PLAN, {"patientId": patient_id, "title": title}, token=LEAD
    )
    plans = await gql(api, op.CARE_PLANS, {"patientId": patient_id}, token=LEAD)

    assert error.code == "BAD_USER_INPUT"
    message = error.errors[0]["message"]
    assert message.startswith(
        "title must not contain a bidirectional-control character (U+202E), found at character 10"
    )
    assert "Warfarin" not in message and "evil" not in message
    assert plans["carePlans"] == []  # nothing was stored


async def test_a_decomposed_name_is_stored_composed(api: httpx.AsyncClient) -> None:
    team = await gql(api, op.CREATE_TEAM, {"name": "Cardiologi\u0301a"}, token=LEAD)
    assert team["createTeam"]["name"] == "Cardiolog\u00eda"


async def test_a_member_id_with_a_cyrillic_letter_or_reading_as_another_members_is_refused(
    api: httpx.AsyncClient,
) -> None:
    team_id = await team_with_pharmacist(api)
    member = {"teamId": team_id, "name": "Pat Pharm", "discipline": "NURSE"}

    cyrillic = await refused(api, op.ASSIGN_ROLE, {**member, "userId": "p\u04bb-1"}, token=LEAD)
    look_alike = await refused(api, op.ASSIGN_ROLE, {**member, "userId": "PH-l"}, token=LEAD)
    roster = await gql(api, op.TEAM, {"id": team_id}, token=LEAD)

    assert cyrillic.code == "BAD_USER_INPUT"
    assert cyrillic.errors[0]["message"].startswith("userId must be 1 to 128 ASCII letters")
    assert look_alike.code == "CONFLICT"
    assert "reads the same as the id of member ph-1" in look_alike.errors[0]["message"]
    assert [m["userId"] for m in roster["team"]["members"]] == ["lead-1", "ph-1"]


async def test_a_hidden_character_in_any_argument_is_bad_input_before_anything_is_looked_up(
    api: httpx.AsyncClient,
) -> None:
    plan = await new_plan(api)

    as_variable = await refused(api, op.CARE_PLAN, {"id": plan["id"] + "\u202e"}, token=LEAD)
    as_literal = await refused(
        api, f'{{ carePlan(id: "{plan["id"]}\u200b") {{ id }} }}', {}, token=LEAD
    )
    in_a_filter = await refused(
        api, op.AUDIT_TRAIL, {"filter": {"patientId": "p-1\x1b[2J"}}, token=LEAD
    )

    for error, argument, what in (
        (as_variable, "id", "a bidirectional-control character (U+202E)"),
        (as_literal, "id", "a zero-width character (U+200B)"),
        (in_a_filter, "filter.patientId", "a control character (U+001B)"),
    ):
        assert error.code == "BAD_USER_INPUT"
        assert error.errors[0]["message"].startswith(f"{argument} must not contain {what}")
        assert plan["id"] not in error.errors[0]["message"]


async def test_line_breaks_and_tabs_still_pass_in_a_review_summary(api: httpx.AsyncClient) -> None:
    plan = await new_plan(api)
    summary = "On track.\n\tNext: recheck HbA1c"

    await gql(api, op.SET_PLAN_STATUS, {"planId": plan["id"], "status": "ACTIVE"}, token=LEAD)
    next_review = (TODAY + timedelta(days=42)).isoformat()
    variables = {"planId": plan["id"], "summary": summary, "next": next_review}
    await gql(api, op.REVIEW, variables, token=LEAD)
    stored = await gql(api, op.CARE_PLAN, {"id": plan["id"]}, token=LEAD)

    assert stored["carePlan"]["lastReviewSummary"] == summary
