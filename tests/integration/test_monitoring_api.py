"""Monitoring plans and measurable goals through the GraphQL API on a real PostgreSQL and
broker: round trips, bad input that writes nothing, the consent policy on a PHQ-9 plan,
and the access records of each change."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Sensitivity
from services.common.event_store import EventStore
from services.settings import Settings
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import token
from tests.integration.kafka_helpers import access_records_sent

LEAD = token("lead-1", "Dr Lead")
NURSE = token("n-1", "Ned Nurse")
DIETITIAN = token("dt-1", "Dee Dietitian")
GLUCOSE, HBA1C, PHQ9 = "2339-0", "4548-4", "44261-6"

FIELDS = """id version
  goals { id measurable { measure { code name units } comparator value high unit redacted } }
  monitoring { id measure { code name units } everyDays low high criticalLow criticalHigh unit
               responsibleDiscipline sensitivity active redacted stoppedReason }"""
ADD_MONITORING = f"""mutation($planId: ID!, $measureCode: String!, $everyDays: Int!,
  $unit: String!, $low: Float, $high: Float, $criticalLow: Float, $criticalHigh: Float,
  $discipline: Discipline!, $sensitivity: [Sensitivity!], $expectedVersion: Int) {{
  addMonitoring(planId: $planId, measureCode: $measureCode, everyDays: $everyDays, unit: $unit,
    low: $low, high: $high, criticalLow: $criticalLow, criticalHigh: $criticalHigh,
    responsibleDiscipline: $discipline, sensitivity: $sensitivity,
    expectedVersion: $expectedVersion) {{ {FIELDS} }} }}"""
STOP_MONITORING = f"""mutation($planId: ID!, $monitoringId: ID!, $reason: String!,
  $expectedVersion: Int) {{
  stopMonitoring(planId: $planId, monitoringId: $monitoringId, reason: $reason,
    expectedVersion: $expectedVersion) {{ {FIELDS} }} }}"""
SET_GOAL_TARGET = f"""mutation($planId: ID!, $goalId: ID!, $measureCode: String!,
  $comparator: Comparator!, $value: Float!, $high: Float, $unit: String!,
  $expectedVersion: Int) {{
  setGoalTarget(planId: $planId, goalId: $goalId, measureCode: $measureCode,
    comparator: $comparator, value: $value, high: $high, unit: $unit,
    expectedVersion: $expectedVersion) {{ {FIELDS} }} }}"""
PLAN = f"query($id: ID!) {{ carePlan(id: $id) {{ {FIELDS} }} }}"

GLUCOSE_WEEKLY = {
    "measureCode": GLUCOSE,
    "everyDays": 7,
    "unit": "mg/dL",
    "low": 70,
    "high": 180,
    "criticalHigh": 300,
    "discipline": "NURSE",
}


async def refused(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], **kw: Any
) -> GraphQLErrors:
    with pytest.raises(GraphQLErrors) as info:
        await gql(client, query, variables, **kw)
    return info.value


async def recorded(settings: Settings) -> list[AccessRecorded]:
    """Every access record the API sent to care.audit so far."""
    return await access_records_sent(settings)


async def clinic(api: httpx.AsyncClient) -> dict[str, str]:
    """A team (lead-1, a nurse, a dietitian), a patient, and a DRAFT plan with one goal."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Diabetes clinic"}, token=LEAD))["createTeam"]
    for user, name, discipline in [("n-1", "Ned Nurse", "NURSE"), ("dt-1", "Dee", "DIETITIAN")]:
        variables = {"teamId": team["id"], "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=LEAD)
    enrollment = {"teamId": team["id"], "mrn": "D-1", "name": "Dana Example"}
    patient = (await gql(api, op.ENROLL, enrollment | {"birthDate": "1961-09-12"}, token=LEAD))[
        "enrollPatient"
    ]["id"]
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "T2D"}, token=LEAD))[
        "createCarePlan"
    ]["id"]
    goal = await gql(api, op.ADD_GOAL, {"planId": plan, "description": "HbA1c down"}, token=LEAD)
    return {"plan": plan, "patient": patient, "goal": goal["addGoal"]["goals"][0]["id"]}


async def test_monitoring_and_a_goal_target_read_back_as_written(api: httpx.AsyncClient) -> None:
    ids = await clinic(api)
    plan = ids["plan"]

    added = (await gql(api, ADD_MONITORING, {"planId": plan, **GLUCOSE_WEEKLY}, token=LEAD))[
        "addMonitoring"
    ]
    monitoring_id = added["monitoring"][0]["id"]
    in_mmol = {**GLUCOSE_WEEKLY, "unit": "mmol/L", "low": 3.9, "high": 10, "criticalHigh": None}
    await gql(api, ADD_MONITORING, {"planId": plan, **in_mmol, "expectedVersion": 3}, token=LEAD)
    stop = {"planId": plan, "monitoringId": monitoring_id, "reason": " Switched to CGM "}
    await gql(api, STOP_MONITORING, stop, token=NURSE)
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": HBA1C}
    await gql(
        api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 7, "unit": "%"}, token=LEAD
    )

    seen = (await gql(api, PLAN, {"id": plan}, token=NURSE))["carePlan"]

    glucose = {
        "code": GLUCOSE,
        "name": "Glucose [Mass/volume] in Blood",
        "units": ["mg/dL", "mmol/L"],
    }
    assert seen["version"] == 6
    assert seen["monitoring"] == [
        {
            "id": monitoring_id,
            "measure": glucose,
            "everyDays": 7,
            "low": 70.0,
            "high": 180.0,
            "criticalLow": None,
            "criticalHigh": 300.0,
            "unit": "mg/dL",
            "responsibleDiscipline": "NURSE",
            "sensitivity": [],
            "active": False,
            "redacted": False,
            "stoppedReason": "Switched to CGM",
        },
        {
            "id": seen["monitoring"][1]["id"],
            "measure": glucose,
            "everyDays": 7,
            "low": 3.9,
            "high": 10.0,
            "criticalLow": None,
            "criticalHigh": None,
            "unit": "mmol/L",
            "responsibleDiscipline": "NURSE",
            "sensitivity": [],
            "active": True,
            "redacted": False,
            "stoppedReason": None,
        },
    ]
    assert seen["goals"][0]["measurable"] == {
        "measure": {
            "code": HBA1C,
            "name": "Hemoglobin A1c/Hemoglobin.total in Blood",
            "units": ["%"],
        },
        "comparator": "LT",
        "value": 7.0,
        "high": None,
        "unit": "%",
        "redacted": False,
    }
    again = await refused(api, STOP_MONITORING, {**stop, "reason": "again"}, token=LEAD)
    stale = await refused(
        api, ADD_MONITORING, {"planId": plan, **GLUCOSE_WEEKLY, "expectedVersion": 2}, token=LEAD
    )
    assert (again.code, stale.code) == ("CONFLICT", "CONFLICT")


BAD_MONITORING = [
    ("unknown measure", {"measureCode": "0000-0"}, "measureCode is not a measure"),
    ("unit the measure does not take", {"unit": "kg"}, "unit must be one of mg/dL, mmol/L"),
    ("impossible threshold", {"criticalHigh": 5000}, "criticalHigh is not possible"),
    ("unordered thresholds", {"low": 200}, "low must not be above high"),
    ("critical inside the range", {"criticalHigh": 150}, "high must be below criticalHigh"),
    ("every 0 days", {"everyDays": 0}, "everyDays must be from 1 to 92"),
    ("no threshold", {"low": None, "high": None, "criticalHigh": None}, "give at least one"),
]


@pytest.mark.parametrize(
    ("what", "change", "words"), BAD_MONITORING, ids=[c[0] for c in BAD_MONITORING]
)
async def test_bad_monitoring_is_bad_user_input_and_writes_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], what: str, change: dict[str, Any], words: str
) -> None:
    ids = await clinic(api)
    head = await EventStore(pool).head()

    variables = {"planId": ids["plan"], **GLUCOSE_WEEKLY, **change}
    error = await refused(api, ADD_MONITORING, variables, token=LEAD)

    assert error.code == "BAD_USER_INPUT", what
    assert words in error.errors[0]["message"], what
    assert await EventStore(pool).head() == head


BAD_TARGETS = [
    ("unknown measure", {"measureCode": "x"}, "BAD_USER_INPUT"),
    ("unit the measure does not take", {"unit": "mg/dL"}, "BAD_USER_INPUT"),
    ("impossible value", {"value": 40}, "BAD_USER_INPUT"),
    ("BETWEEN without high", {"comparator": "BETWEEN"}, "BAD_USER_INPUT"),
    ("high without BETWEEN", {"high": 8}, "BAD_USER_INPUT"),
    ("unknown goal", {"goalId": "g-none"}, "NOT_FOUND"),
]


@pytest.mark.parametrize(("what", "change", "code"), BAD_TARGETS, ids=[c[0] for c in BAD_TARGETS])
async def test_a_bad_goal_target_is_refused_and_writes_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], what: str, change: dict[str, Any], code: str
) -> None:
    ids = await clinic(api)
    head = await EventStore(pool).head()
    variables = {
        "planId": ids["plan"],
        "goalId": ids["goal"],
        "measureCode": HBA1C,
        "comparator": "LT",
        "value": 7,
        "unit": "%",
        **change,
    }

    error = await refused(api, SET_GOAL_TARGET, variables, token=LEAD)

    assert error.code == code, what
    assert await EventStore(pool).head() == head


async def test_a_phq9_plan_is_redacted_for_a_dietitian_without_consent_and_theirs_to_leave(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    phq9 = {
        "planId": ids["plan"],
        "measureCode": PHQ9,
        "everyDays": 28,
        "unit": "{score}",
        "high": 9,
        "criticalHigh": 20,
        "discipline": "MENTAL_HEALTH",
    }
    written = (await gql(api, ADD_MONITORING, phq9, token=LEAD))["addMonitoring"]
    monitoring_id = written["monitoring"][0]["id"]
    target = {"planId": ids["plan"], "goalId": ids["goal"], "measureCode": PHQ9}
    await gql(
        api,
        SET_GOAL_TARGET,
        {**target, "comparator": "LT", "value": 5, "unit": "{score}"},
        token=LEAD,
    )
    head = await EventStore(pool).head()

    seen = (await gql(api, PLAN, {"id": ids["plan"]}, token=DIETITIAN))["carePlan"]
    stop = {"planId": ids["plan"], "monitoringId": monitoring_id, "reason": "not needed"}
    forbidden = await refused(api, STOP_MONITORING, stop, token=DIETITIAN)
    retarget = {**target, "measureCode": HBA1C, "comparator": "LT", "value": 7, "unit": "%"}
    overwrite = await refused(api, SET_GOAL_TARGET, retarget, token=DIETITIAN)

    restricted = {"code": "[restricted]", "name": "[restricted]", "units": []}
    assert seen["monitoring"] == [
        {
            "id": monitoring_id,
            "measure": restricted,
            "everyDays": 28,
            "low": None,
            "high": None,
            "criticalLow": None,
            "criticalHigh": None,
            "unit": "[restricted]",
            "responsibleDiscipline": "MENTAL_HEALTH",
            "sensitivity": ["MENTAL_HEALTH"],
            "active": True,
            "redacted": True,
            "stoppedReason": None,
        }
    ]
    assert seen["goals"][0]["measurable"] == {
        "measure": restricted,
        "comparator": "LT",
        "value": None,
        "high": None,
        "unit": "[restricted]",
        "redacted": True,
    }
    assert forbidden.code == overwrite.code == "FORBIDDEN"
    assert "only see redacted" in forbidden.errors[0]["message"]
    assert PHQ9 not in forbidden.errors[0]["message"]
    assert await EventStore(pool).head() == head

    # A consent covering the dietitian for mental health shows the plan in full.
    consent = {
        "patientId": ids["patient"],
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["DIETITIAN"],
        "evidence": "HIM-CF-2",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    full = (await gql(api, PLAN, {"id": ids["plan"]}, token=DIETITIAN))["carePlan"]
    assert full["monitoring"][0]["measure"]["code"] == PHQ9
    assert full["monitoring"][0]["high"] == 9.0
    assert full["goals"][0]["measurable"]["value"] == 5.0

    records = await recorded(settings)
    refusal = [r for r in records if r.actor_id == "dt-1" and r.outcome is AccessOutcome.DENY]
    assert [(r.resource_type, r.resource_id) for r in refusal] == [
        ("MonitoringPlan", monitoring_id),
        ("GoalTarget", ids["goal"]),
    ]


async def test_each_change_is_an_access_record_with_the_plans_sensitivity(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    ids = await clinic(api)
    plan = ids["plan"]
    before = len(await recorded(settings))
    phq9 = {
        "planId": plan,
        "measureCode": PHQ9,
        "everyDays": 28,
        "unit": "{score}",
        "high": 9,
        "discipline": "MENTAL_HEALTH",
    }

    await gql(api, ADD_MONITORING, phq9, token=LEAD)
    glucose = {"planId": plan, **GLUCOSE_WEEKLY}
    written = (await gql(api, ADD_MONITORING, glucose, token=LEAD))["addMonitoring"]
    stop = {"planId": plan, "monitoringId": written["monitoring"][1]["id"], "reason": "done"}
    await gql(api, STOP_MONITORING, stop, token=LEAD)
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": HBA1C, "unit": "%"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LE", "value": 7}, token=LEAD)

    changes = [
        r
        for r in (await recorded(settings))[before:]
        if r.resource_id == plan and r.action is AccessAction.UPDATE
    ]
    assert len(changes) == 4
    for r in changes:
        assert (r.actor_id, r.resource_type, r.patient_id) == ("lead-1", "CarePlan", ids["patient"])
        assert r.outcome is AccessOutcome.PERMIT_REDACTED  # no consent covers the lead
        assert r.sensitivity == (Sensitivity.MENTAL_HEALTH,)
