"""Care signals on the running stack, over HTTP and WebSocket: a critical reading's urgent
task arriving live and escalated to the leads after the set time (the e2e stack runs with
a short setting), and a MENTAL_HEALTH reading and its signal redacted for a dietitian whom
no consent covers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests import operations as op
from tests.e2e.conftest import ESCALATE_AFTER_SECONDS, Stack
from tests.graphql import gql
from tests.ws import Socket, connect

GLUCOSE, PHQ9 = "2339-0", "44261-6"
SIGNAL_TASK = "id title discipline status sensitivity redacted signalCount urgent escalated"
BOARD_CHANGED = f"""subscription($teamId: ID!) {{
  boardChanged(teamId: $teamId) {{ change task {{ source {SIGNAL_TASK} }} }} }}"""
ADD_MONITORING = """mutation($planId: ID!, $measureCode: String!, $unit: String!, $high: Float,
  $criticalHigh: Float, $discipline: Discipline!) {
  addMonitoring(planId: $planId, measureCode: $measureCode, everyDays: 7, unit: $unit,
    high: $high, criticalHigh: $criticalHigh, responsibleDiscipline: $discipline) {
    monitoring { id } } }"""
RECORD = """mutation($patientId: ID!, $measureCode: String!, $value: Float!, $unit: String!,
  $at: DateTime!) {
  recordObservation(patientId: $patientId, measureCode: $measureCode, value: $value,
    unit: $unit, at: $at, source: PATIENT_REPORTED) { id } }"""
OBSERVATIONS = """query($patientId: ID!) {
  observations(patientId: $patientId, measureCode: "44261-6") {
    items { value sensitivity redacted outOfRange } } }"""
AGENDA = f"""query($teamId: ID!) {{ huddleAgenda(teamId: $teamId) {{
  signals {{ {SIGNAL_TASK} }} }} }}"""
BOARD = f"""query($teamId: ID!) {{ board(teamId: $teamId) {{
  columns {{ tasks {{ source {SIGNAL_TASK} }} }} }} }}"""


def just_now() -> str:
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


async def clinic(client: httpx.AsyncClient, stack: Stack) -> dict[str, Any]:
    """A team (a lead, a nurse, a mental-health clinician, a dietitian), a patient whose
    consent covers the mental-health clinician for MENTAL_HEALTH, and an ACTIVE plan."""
    tokens = {
        "lead": stack.token("sig-lead", "Dr. Lead"),
        "nurse": stack.token("sig-nurse", "Nia Nurse"),
        "mh": stack.token("sig-mh", "Max Mind"),
        "dietitian": stack.token("sig-dt", "Dee Dietitian"),
    }
    lead = tokens["lead"]
    team = (await gql(client, op.CREATE_TEAM, {"name": "Signals"}, token=lead))["createTeam"]["id"]
    for user, name, discipline in [
        ("sig-lead", "Dr. Lead", "PHYSICIAN"),
        ("sig-nurse", "Nia Nurse", "NURSE"),
        ("sig-mh", "Max Mind", "MENTAL_HEALTH"),
        ("sig-dt", "Dee Dietitian", "DIETITIAN"),
    ]:
        variables = {"teamId": team, "userId": user, "name": name, "discipline": discipline}
        await gql(client, op.ASSIGN_ROLE, variables, token=lead)
    enrollment = {"teamId": team, "mrn": "S-1", "name": "Sam Example", "birthDate": "1966-05-01"}
    patient = (await gql(client, op.ENROLL, enrollment, token=lead))["enrollPatient"]["id"]
    consent = {
        "patientId": patient,
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": ["MENTAL_HEALTH"],
        "evidence": "HIM-CF-9",
    }
    await gql(client, op.GRANT, consent, token=lead)
    variables = {"patientId": patient, "title": "Diabetes and mood"}
    plan = (await gql(client, op.CREATE_PLAN, variables, token=lead))["createCarePlan"]["id"]
    await gql(client, op.SET_PLAN_STATUS, {"planId": plan, "status": "ACTIVE"}, token=lead)
    return {"team": team, "patient": patient, "plan": plan, **tokens}


async def next_change(socket: Socket, op_id: str, seconds: float = 20) -> dict[str, Any]:
    message = await socket.receive(seconds)
    assert message["type"] == "next" and message["id"] == op_id, message
    assert "errors" not in message["payload"], message
    return dict(message["payload"]["data"]["boardChanged"])


async def test_a_critical_reading_arrives_as_an_urgent_task_then_escalates_to_the_leads(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        c = await clinic(client, stack)
        monitoring = {
            "planId": c["plan"],
            "measureCode": GLUCOSE,
            "unit": "mg/dL",
            "high": 180,
            "criticalHigh": 300,
            "discipline": "NURSE",
        }
        await gql(client, ADD_MONITORING, monitoring, token=c["lead"])
        async with connect(stack.base_url, c["lead"]) as socket:
            op_id = await socket.subscribe(BOARD_CHANGED, {"teamId": c["team"]})
            # Live once a probe task's CREATED comes through.
            probe = {"teamId": c["team"], "title": "probe"}
            await gql(client, op.CREATE_TASK, probe, token=c["lead"])
            while (await next_change(socket, op_id))["task"]["source"] != "MANUAL":
                pass
            reading = {
                "patientId": c["patient"],
                "measureCode": GLUCOSE,
                "value": 18.5,  # mmol/L: 333 mg/dL, over the critical 300
                "unit": "mmol/L",
                "at": just_now(),
            }
            sent = time.monotonic()
            await gql(client, RECORD, reading, token=c["nurse"])
            created = await next_change(socket, op_id)
            task = created["task"]
            assert (created["change"], task["source"], task["discipline"]) == (
                "CREATED",
                "SIGNAL",
                "NURSE",
            )
            changes = [created]
            while not changes[-1]["task"]["escalated"]:
                changes.append(await next_change(socket, op_id, ESCALATE_AFTER_SECONDS + 20))
            escalated_after = time.monotonic() - sent
        last = changes[-1]["task"]
        assert last["id"] == task["id"] and last["urgent"] and last["signalCount"] == 1
        assert "333 mg/dL" in last["title"] and "300 mg/dL" in last["title"], last["title"]
        assert escalated_after >= ESCALATE_AFTER_SECONDS
        assert not any(ch["task"]["escalated"] for ch in changes[:-1])
        assert [ch["task"]["id"] for ch in changes] == [task["id"]] * len(changes)

        agenda = (await gql(client, AGENDA, {"teamId": c["team"]}, token=c["lead"]))["huddleAgenda"]
        assert [(t["id"], t["urgent"], t["escalated"]) for t in agenda["signals"]] == [
            (task["id"], True, True)
        ]


async def test_a_dietitian_without_consent_sees_a_phq9_reading_and_its_signal_redacted(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        c = await clinic(client, stack)
        monitoring = {
            "planId": c["plan"],
            "measureCode": PHQ9,
            "unit": "{score}",
            "high": 9,
            "criticalHigh": None,
            "discipline": "MENTAL_HEALTH",
        }
        await gql(client, ADD_MONITORING, monitoring, token=c["mh"])
        reading = {
            "patientId": c["patient"],
            "measureCode": PHQ9,
            "value": 16,
            "unit": "{score}",
            "at": just_now(),
        }
        await gql(client, RECORD, reading, token=c["mh"])

        async def signal_task(token: str) -> dict[str, Any] | None:
            board = (await gql(client, BOARD, {"teamId": c["team"]}, token=token))["board"]
            found = [t for col in board["columns"] for t in col["tasks"] if t["source"] == "SIGNAL"]
            return found[0] if found else None

        deadline = time.monotonic() + 20
        while (seen := await signal_task(c["mh"])) is None:
            assert time.monotonic() < deadline, "no signal task on the board"
            await asyncio.sleep(0.1)

        hidden = await signal_task(c["dietitian"])
        assert hidden is not None and seen["id"] == hidden["id"]
        assert (seen["redacted"], seen["sensitivity"]) == (False, ["MENTAL_HEALTH"])
        assert "PHQ-9 16" in seen["title"]
        assert (hidden["redacted"], hidden["title"]) == (True, "[restricted]")

        full = (await gql(client, OBSERVATIONS, {"patientId": c["patient"]}, token=c["mh"]))[
            "observations"
        ]["items"]
        withheld = (
            await gql(client, OBSERVATIONS, {"patientId": c["patient"]}, token=c["dietitian"])
        )["observations"]["items"]
        assert full == [
            {"value": 16, "sensitivity": ["MENTAL_HEALTH"], "redacted": False, "outOfRange": True}
        ]
        assert withheld == [
            {"value": None, "sensitivity": ["MENTAL_HEALTH"], "redacted": True, "outOfRange": False}
        ]
