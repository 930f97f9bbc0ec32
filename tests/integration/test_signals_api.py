"""Care signals through the GraphQL API on a real PostgreSQL and broker: a monitoring plan's
status and latest reading, a measurable goal's progress, a reading out of range, the
sensitivity a monitoring plan lends its readings, the agenda's signal lists, and a goal
push decided per viewer. The worker does not run here: the read models are filled by
applying the store's events the way it does (and the signal drain sends what they owe)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from schemas.audit import AccessAction, AccessOutcome
from services.api import bootstrap
from services.api.graphql.access import authorize
from services.api.graphql.context import Context
from services.api.graphql.goal_progress import goal_change
from services.audit.sink import KafkaAuditSink
from services.common.aggregates import Caller, Repository, Scope
from services.common.event_store import EventStore
from services.common.policy import Action
from services.common.projection import Positioned, apply_batch
from services.settings import Settings
from services.tasks import monitoring_store
from services.tasks.domain import TASK, EscalateTask
from services.tasks.monitoring_store import SignalsProjection
from services.tasks.signal_side import drain
from services.tasks.signals import GoalProgress
from services.tasks.store import BoardProjection
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import SECRET, token
from tests.integration.test_monitoring_api import (
    ADD_MONITORING,
    SET_GOAL_TARGET,
    recorded,
    refused,
)

LEAD = token("lead-1", "Dr Lead")
NURSE = token("n-1", "Ned Nurse")
DIETITIAN = token("dt-1", "Dee Dietitian")
GLUCOSE, HBA1C, PHQ9, WEIGHT = "2339-0", "4548-4", "44261-6", "29463-7"

READING = "id value unit redacted outOfRange sensitivity"
PLAN = f"""query($id: ID!) {{ carePlan(id: $id) {{ id
  goals {{ id progress latest {{ {READING} }} }}
  monitoring {{ id unit redacted status latest {{ {READING} }} }} }} }}"""
RECORD = f"""mutation($patientId: ID!, $measureCode: String!, $value: Float!, $unit: String!,
  $at: DateTime!) {{
  recordObservation(patientId: $patientId, measureCode: $measureCode, value: $value,
    unit: $unit, at: $at, source: PATIENT_REPORTED) {{ {READING} }} }}"""
OBSERVATIONS = f"""query($patientId: ID!) {{
  observations(patientId: $patientId) {{ items {{ {READING} }} }} }}"""
AGENDA = """query($teamId: ID!) { huddleAgenda(teamId: $teamId) {
  signals { id source title urgent escalated signalCount discipline redacted }
  goalsAtRisk { id progress measurable { redacted } }
  readingsOverdue { id status measure { code } } } }"""


def ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


async def clinic(api: httpx.AsyncClient, due_in_days: int | None = None) -> dict[str, str]:
    """A team (lead-1, a nurse, a dietitian), a patient, and an ACTIVE plan with one goal."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Diabetes clinic"}, token=LEAD))["createTeam"]
    for user, name, discipline in [("n-1", "Ned Nurse", "NURSE"), ("dt-1", "Dee", "DIETITIAN")]:
        variables = {"teamId": team["id"], "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=LEAD)
    enrollment = {"teamId": team["id"], "mrn": "S-1", "name": "Sam Example"}
    patient = (await gql(api, op.ENROLL, enrollment | {"birthDate": "1958-04-02"}, token=LEAD))[
        "enrollPatient"
    ]["id"]
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "T2D"}, token=LEAD))[
        "createCarePlan"
    ]["id"]
    goal = {"planId": plan, "description": "HbA1c down"}
    if due_in_days is not None:
        goal["dueDate"] = (datetime.now(UTC).date() + timedelta(days=due_in_days)).isoformat()
    added = await gql(api, op.ADD_GOAL, goal, token=LEAD)
    await gql(api, op.SET_PLAN_STATUS, {"planId": plan, "status": "ACTIVE"}, token=LEAD)
    return {
        "team": team["id"],
        "plan": plan,
        "patient": patient,
        "goal": added["addGoal"]["goals"][0]["id"],
    }


def monitor(plan: str, measure: str = GLUCOSE, **overrides: Any) -> dict[str, Any]:
    return {
        "planId": plan,
        "measureCode": measure,
        "everyDays": 7,
        "unit": "mg/dL",
        "low": 70,
        "high": 180,
        "criticalHigh": 300,
        "discipline": "NURSE",
    } | overrides


async def record(
    api: httpx.AsyncClient, patient: str, measure: str, value: float, unit: str, **kw: Any
) -> dict[str, Any]:
    variables = {"patientId": patient, "measureCode": measure, "value": value, "unit": unit}
    variables["at"] = kw.pop("at", ago(2))
    result: dict[str, Any] = (await gql(api, RECORD, variables, **kw))["recordObservation"]
    return result


async def project(pool: asyncpg.Pool[Any]) -> None:
    """What the worker does with the store's events: the signals read model, the signals it
    owes sent through the write side, and the board (and the signals model again, for the
    SignalRaised events the drain wrote)."""
    store = EventStore(pool)
    items = [Positioned(r.position, r.envelope) for r in await store.read_all(0)]
    await apply_batch(pool, SignalsProjection(), items)
    await drain(pool, Repository(store))
    items = [Positioned(r.position, r.envelope) for r in await store.read_all(0)]
    await apply_batch(pool, SignalsProjection(), items)
    await apply_batch(pool, BoardProjection(), items)


async def plan_as(api: httpx.AsyncClient, plan: str, who: str) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(api, PLAN, {"id": plan}, token=who))["carePlan"]
    return result


async def test_a_monitoring_plan_shows_its_status_and_latest_reading_and_a_goal_its_progress(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api)
    plan, patient = ids["plan"], ids["patient"]
    await gql(api, ADD_MONITORING, monitor(plan), token=LEAD)
    in_mmol = monitor(plan, unit="mmol/L", low=3.9, high=10, criticalHigh=None)
    await gql(api, ADD_MONITORING, in_mmol, token=LEAD)
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": HBA1C, "unit": "%"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 7}, token=LEAD)

    high = await record(api, patient, GLUCOSE, 250, "mg/dL", token=NURSE)
    await record(api, patient, HBA1C, 8.0, "%", at=ago(48), token=NURSE)
    hba1c = await record(api, patient, HBA1C, 7.5, "%", at=ago(24), token=NURSE)

    # The readings are judged against the plans at once (the aggregates, no projection).
    assert (high["outOfRange"], hba1c["outOfRange"]) == (True, False)
    before = await plan_as(api, plan, NURSE)
    assert [m["status"] for m in before["monitoring"]] == ["NO_DATA", "NO_DATA"]
    assert [m["latest"] for m in before["monitoring"]] == [None, None]
    assert before["goals"][0]["progress"] == "NO_DATA"

    await project(pool)
    seen = await plan_as(api, plan, NURSE)

    assert [m["status"] for m in seen["monitoring"]] == ["OUT_OF_RANGE", "OUT_OF_RANGE"]
    assert [m["latest"] for m in seen["monitoring"]] == [high, high]
    (goal,) = seen["goals"]
    # Closer to the target than the reading before it, with no due date: on track.
    assert goal["progress"] == "ON_TRACK"
    assert goal["latest"] == hba1c

    critical = await record(api, patient, GLUCOSE, 19.5, "mmol/L", token=NURSE)
    await record(api, patient, HBA1C, 6.8, "%", token=NURSE)
    await project(pool)
    seen = await plan_as(api, plan, NURSE)
    assert [m["status"] for m in seen["monitoring"]] == ["CRITICAL", "OUT_OF_RANGE"]
    assert seen["monitoring"][0]["latest"]["id"] == critical["id"]
    assert seen["goals"][0]["progress"] == "ACHIEVED"


async def test_a_monitoring_plans_sensitivity_applies_to_its_readings(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api)
    plan, patient = ids["plan"], ids["patient"]
    tagged = monitor(plan, sensitivity=["SUBSTANCE_USE"])
    await gql(api, ADD_MONITORING, tagged, token=LEAD)
    head = await EventStore(pool).head()

    # Nobody records a reading they could only see redacted under the plan's tags.
    with pytest.raises(GraphQLErrors) as refused:
        await record(api, patient, GLUCOSE, 250, "mg/dL", token=DIETITIAN)
    assert refused.value.code == "FORBIDDEN"
    assert await EventStore(pool).head() == head

    consent = {
        "patientId": patient,
        "categories": ["SUBSTANCE_USE"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "SUD-CF-1",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    written = await record(api, patient, GLUCOSE, 250, "mg/dL", token=NURSE)
    assert written["value"] == 250.0 and written["outOfRange"] is True
    assert written["sensitivity"] == ["SUBSTANCE_USE"] and written["redacted"] is False

    (listed,) = (await gql(api, OBSERVATIONS, {"patientId": patient}, token=DIETITIAN))[
        "observations"
    ]["items"]
    hidden = {
        "id": written["id"],
        "value": None,
        "unit": "mg/dL",
        "redacted": True,
        "outOfRange": False,  # would tell of the value
        "sensitivity": ["SUBSTANCE_USE"],
    }
    assert listed == hidden

    await project(pool)
    (monitoring,) = (await plan_as(api, plan, DIETITIAN))["monitoring"]
    assert monitoring["redacted"] is True and monitoring["latest"] == hidden
    assert monitoring["status"] == "OUT_OF_RANGE"  # the team must know; the values stay hidden
    (full,) = (await plan_as(api, plan, NURSE))["monitoring"]
    assert full["latest"] == written


async def test_the_agenda_lists_signal_tasks_goals_at_risk_and_readings_overdue(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api, due_in_days=5)
    plan, patient = ids["plan"], ids["patient"]
    await gql(api, ADD_MONITORING, monitor(plan), token=LEAD)
    daily_weight = monitor(plan, WEIGHT, everyDays=1, unit="kg", low=None, high=120)
    daily_weight |= {"criticalHigh": None}
    weight = (await gql(api, ADD_MONITORING, daily_weight, token=LEAD))["addMonitoring"]
    weight_id = weight["monitoring"][1]["id"]
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": HBA1C, "unit": "%"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 7}, token=LEAD)
    await record(api, patient, GLUCOSE, 350, "mg/dL", token=NURSE)
    await record(api, patient, HBA1C, 8.1, "%", token=NURSE)
    await project(pool)
    # The weight plan (and the plan's activity) began three days ago: no reading since.
    await pool.execute(
        "UPDATE signal_watches SET started_at = started_at - interval '3 days' "
        "WHERE monitoring_id = $1",
        weight_id,
    )
    await pool.execute(
        "UPDATE signal_plans SET active_since = active_since - interval '3 days' "
        "WHERE plan_id = $1",
        plan,
    )
    # Left in TODO past the set time (here: at once), the urgent task goes to the leads.
    async with pool.acquire() as conn:
        (urgent,) = await monitoring_store.signal_tasks(conn, ids["team"])
    handler = bootstrap.build(settings, pool).handler
    escalate = EscalateTask(task_id=urgent.id, lead_ids=("lead-1",), after_seconds=0.001)
    caller = Caller(actor_id="carecoord-signals", correlation_id="c-escalate")
    await handler.execute(
        TASK, urgent.id, escalate, caller=caller, scope=Scope(ids["team"], patient)
    )
    await project(pool)
    before = len(await recorded(settings))

    agenda = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=NURSE))["huddleAgenda"]

    (task,) = agenda["signals"]
    assert (task["source"], task["urgent"], task["escalated"]) == ("SIGNAL", True, True)
    assert task["signalCount"] == 1 and task["discipline"] == "NURSE"
    assert "350" in task["title"]
    assert agenda["goalsAtRisk"] == [
        {"id": ids["goal"], "progress": "AT_RISK", "measurable": {"redacted": False}}
    ]
    assert agenda["readingsOverdue"] == [
        {"id": weight_id, "status": "READING_OVERDUE", "measure": {"code": WEIGHT}}
    ]
    reads = [
        r
        for r in (await recorded(settings))[before:]
        if r.resource_type == "HuddleAgenda" and r.action is AccessAction.READ
    ]
    assert {r.patient_id for r in reads} == {patient}


async def test_a_phq9_goal_at_risk_is_left_off_the_agenda_of_a_dietitian_without_consent(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api, due_in_days=5)
    target = {"planId": ids["plan"], "goalId": ids["goal"], "measureCode": PHQ9}
    await gql(
        api,
        SET_GOAL_TARGET,
        {**target, "comparator": "LT", "value": 5, "unit": "{score}"},
        token=LEAD,
    )
    consent = {
        "patientId": ids["patient"],
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "HIM-CF-3",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    await record(api, ids["patient"], PHQ9, 14, "{score}", token=NURSE)
    await project(pool)

    nurse = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=NURSE))["huddleAgenda"]
    dietitian = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=DIETITIAN))["huddleAgenda"]
    plan = await plan_as(api, ids["plan"], DIETITIAN)

    assert [g["id"] for g in nurse["goalsAtRisk"]] == [ids["goal"]]
    assert dietitian["goalsAtRisk"] == []
    assert plan["goals"][0]["progress"] is None
    assert plan["goals"][0]["latest"]["redacted"] is True


async def _subscriber(pool: asyncpg.Pool[Any], settings: Settings, who: str) -> Context:
    settings = settings.model_copy(update={"jwt_secret": SecretStr(SECRET)})
    services = bootstrap.build(settings, pool, audit=KafkaAuditSink(settings))
    ctx = Context(services=services, request_id="r-goal-push", correlation_id="c-goal-push")
    await ctx.authenticate(f"Bearer {who}")
    return ctx


async def test_a_goal_push_carries_its_progress_only_to_those_who_may_see_its_target(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api, due_in_days=5)
    plan, patient = ids["plan"], ids["patient"]
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": HBA1C, "unit": "%"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 7}, token=LEAD)
    added = await gql(api, op.ADD_GOAL, {"planId": plan, "description": "Mood"}, token=LEAD)
    mood = added["addGoal"]["goals"][1]["id"]
    mood_target = {"planId": plan, "goalId": mood, "measureCode": PHQ9, "unit": "{score}"}
    await gql(api, SET_GOAL_TARGET, {**mood_target, "comparator": "LT", "value": 5}, token=LEAD)
    consent = {
        "patientId": patient,
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["DIETITIAN"],
        "evidence": "HIM-CF-4",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    await record(api, patient, HBA1C, 8.4, "%", token=NURSE)
    await record(api, patient, PHQ9, 3, "{score}", token=DIETITIAN)
    await project(pool)
    before = len(await recorded(settings))

    nurse = await _subscriber(pool, settings, NURSE)
    access = await authorize(nurse, team_id=ids["team"], action=Action.READ, resource="board")
    hba1c = await goal_change(nurse, access, plan, ids["goal"])
    phq9 = await goal_change(nurse, access, plan, mood)
    await nurse.audit.close()

    assert hba1c is not None and hba1c.progress is GoalProgress.AT_RISK
    assert (hba1c.plan_id, hba1c.goal_id, hba1c.patient_id) == (plan, ids["goal"], patient)
    assert phq9 is not None and phq9.progress is None  # the PHQ-9 target is withheld
    pushes = [
        r
        for r in (await recorded(settings))[before:]
        if r.action is AccessAction.SUBSCRIBE_PUSH and r.resource_type == "Goal"
    ]
    assert {(r.resource_id, r.patient_id) for r in pushes} == {
        (ids["goal"], patient),
        (mood, patient),
    }


async def test_nobody_ends_a_monitoring_plan_they_see_redacted_by_completing_its_care_plan(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    plan, patient = ids["plan"], ids["patient"]
    phq9 = monitor(plan, PHQ9, everyDays=28, unit="{score}", low=None, high=9, criticalHigh=20)
    added = await gql(api, ADD_MONITORING, phq9 | {"discipline": "MENTAL_HEALTH"}, token=LEAD)
    monitoring_id = added["addMonitoring"]["monitoring"][0]["id"]
    consent = {
        "patientId": patient,
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "HIM-CF-5",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    await record(api, patient, PHQ9, 24, "{score}", token=NURSE)
    await project(pool)
    head = await EventStore(pool).head()

    # Completing or revoking the plan would stop the PHQ-9 watch and cancel its urgent task.
    for status in ("COMPLETED", "REVOKED"):
        change = {"planId": plan, "status": status}
        forbidden = await refused(api, op.SET_PLAN_STATUS, change, token=DIETITIAN)
        assert forbidden.code == "FORBIDDEN"
        assert PHQ9 not in forbidden.errors[0]["message"]
    assert await EventStore(pool).head() == head
    async with pool.acquire() as conn:
        (task,) = await monitoring_store.signal_tasks(conn, ids["team"])
    assert task.urgent
    refusals = [
        (r.resource_type, r.resource_id)
        for r in await recorded(settings)
        if r.actor_id == "dt-1" and r.outcome is AccessOutcome.DENY
    ]
    assert refusals == [("MonitoringPlan", monitoring_id)] * 2

    # Whom the patient's consent covers may.
    await gql(api, op.SET_PLAN_STATUS, {"planId": plan, "status": "COMPLETED"}, token=NURSE)
    await project(pool)
    async with pool.acquire() as conn:
        assert await monitoring_store.signal_tasks(conn, ids["team"]) == []


async def test_a_goals_progress_is_withheld_where_its_readings_are_redacted_by_a_monitoring_plan(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api, due_in_days=5)
    plan, patient = ids["plan"], ids["patient"]
    # Glucose is untagged; the monitoring plan lends SUBSTANCE_USE to every glucose reading.
    await gql(api, ADD_MONITORING, monitor(plan, sensitivity=["SUBSTANCE_USE"]), token=LEAD)
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": GLUCOSE, "unit": "mg/dL"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 180}, token=LEAD)
    consent = {
        "patientId": patient,
        "categories": ["SUBSTANCE_USE"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "SUD-CF-2",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    await record(api, patient, GLUCOSE, 250, "mg/dL", token=NURSE)
    await project(pool)

    nurse = (await plan_as(api, plan, NURSE))["goals"][0]
    seen = (await plan_as(api, plan, DIETITIAN))["goals"][0]
    nurse_agenda = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=NURSE))["huddleAgenda"]
    agenda = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=DIETITIAN))["huddleAgenda"]
    dietitian = await _subscriber(pool, settings, DIETITIAN)
    access = await authorize(dietitian, team_id=ids["team"], action=Action.READ, resource="board")
    pushed = await goal_change(dietitian, access, plan, ids["goal"])
    await dietitian.audit.close()

    assert nurse["progress"] == "AT_RISK" and nurse["latest"]["value"] == 250.0
    assert [g["id"] for g in nurse_agenda["goalsAtRisk"]] == [ids["goal"]]
    # The reading is redacted for the dietitian, so what it says of the goal is too.
    assert seen["latest"]["redacted"] is True
    assert seen["progress"] is None
    assert agenda["goalsAtRisk"] == []
    assert pushed is not None and pushed.progress is None


async def test_a_signal_task_is_tagged_as_the_reading_it_quotes_is(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api)
    plan, patient = ids["plan"], ids["patient"]
    # Two glucose monitoring plans: one lends SUBSTANCE_USE to every glucose reading.
    tagged = monitor(plan, high=300, criticalHigh=None, sensitivity=["SUBSTANCE_USE"])
    await gql(api, ADD_MONITORING, tagged, token=LEAD)
    await gql(api, ADD_MONITORING, monitor(plan), token=LEAD)
    consent = {
        "patientId": patient,
        "categories": ["SUBSTANCE_USE"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "SUD-CF-3",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    await record(api, patient, GLUCOSE, 251, "mg/dL", token=NURSE)
    await project(pool)

    (reading,) = (await gql(api, OBSERVATIONS, {"patientId": patient}, token=DIETITIAN))[
        "observations"
    ]["items"]
    agenda = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=DIETITIAN))["huddleAgenda"]
    nurse = (await gql(api, AGENDA, {"teamId": ids["team"]}, token=NURSE))["huddleAgenda"]

    assert reading["redacted"] is True
    # The untagged plan's task quotes the reading: it is withheld as the reading is.
    (task,) = agenda["signals"]
    assert task["redacted"] is True and "251" not in task["title"]
    (full,) = nurse["signals"]
    assert "251" in full["title"]


async def test_a_goal_push_judges_each_push_on_the_monitoring_plans_as_they_stand_then(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api, due_in_days=5)
    plan, patient = ids["plan"], ids["patient"]
    target = {"planId": plan, "goalId": ids["goal"], "measureCode": GLUCOSE, "unit": "mg/dL"}
    await gql(api, SET_GOAL_TARGET, {**target, "comparator": "LT", "value": 180}, token=LEAD)
    await record(api, patient, GLUCOSE, 250, "mg/dL", token=NURSE)
    await project(pool)
    dietitian = await _subscriber(pool, settings, DIETITIAN)
    access = await authorize(dietitian, team_id=ids["team"], action=Action.READ, resource="board")
    first = await goal_change(dietitian, access, plan, ids["goal"])

    # A monitoring plan now lends SUBSTANCE_USE to the glucose readings: the next push of
    # the same subscription withholds the progress.
    await gql(api, ADD_MONITORING, monitor(plan, sensitivity=["SUBSTANCE_USE"]), token=LEAD)
    later = await goal_change(dietitian, access, plan, ids["goal"])
    await dietitian.audit.close()

    assert first is not None and first.progress is GoalProgress.AT_RISK
    assert later is not None and later.progress is None


async def test_nobody_settles_a_goal_whose_target_they_see_redacted(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api, due_in_days=5)
    target = {"planId": ids["plan"], "goalId": ids["goal"], "measureCode": PHQ9}
    phq9 = {**target, "comparator": "LT", "value": 5, "unit": "{score}"}
    await gql(api, SET_GOAL_TARGET, phq9, token=LEAD)
    head = await EventStore(pool).head()

    # Achieved or cancelled, it would leave goalsAtRisk and say how far the readings came.
    for status in ("ACHIEVED", "CANCELLED"):
        change = {"planId": ids["plan"], "goalId": ids["goal"], "status": status}
        forbidden = await refused(api, op.SET_GOAL_STATUS, change, token=DIETITIAN)
        assert forbidden.code == "FORBIDDEN"
    assert await EventStore(pool).head() == head
    refusals = [
        (r.resource_type, r.resource_id)
        for r in await recorded(settings)
        if r.actor_id == "dt-1" and r.outcome is AccessOutcome.DENY
    ]
    assert refusals == [("GoalTarget", ids["goal"])] * 2
    consent = {
        "patientId": ids["patient"],
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["NURSE"],
        "evidence": "HIM-CF-6",
    }
    await gql(api, op.GRANT, consent, token=LEAD)
    change = {"planId": ids["plan"], "goalId": ids["goal"], "status": "ACHIEVED"}
    settled = (await gql(api, op.SET_GOAL_STATUS, change, token=NURSE))["setGoalStatus"]
    assert settled["goals"][0]["status"] == "ACHIEVED"
