"""Observations through the GraphQL API on a real PostgreSQL and broker: readings recorded
in either unit of a measure and read back with the canonical value, bad readings refused
with nothing written, the team's data closed to outsiders, a PHQ-9 (MENTAL_HEALTH) shown
redacted to a discipline the patient's consent does not cover, stable pages, and the
access record of every read and write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Sensitivity
from schemas.observation import ObservationRecorded
from services.api.graphql import observations
from services.common.event_store import EventStore
from services.settings import Settings
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import token
from tests.integration.kafka_helpers import access_records_sent

LEAD = token("lead-1", "Dr Lead")
NURSE = token("rn-1", "Nia Nurse")
THERAPIST = token("mh-1", "Max Mind")
DIETITIAN = token("dt-1", "Dee Dietitian")
OUTSIDER = token("er-1", "Dr Elsewhere")
GLUCOSE, PHQ9 = "2339-0", "44261-6"

FIELDS = """id patientId measure { code name units } value unit canonicalValue at source
recordedBy recordedAt note sensitivity redacted"""
RECORD = f"""mutation($patientId: ID!, $measureCode: String!, $value: Float!, $unit: String!,
  $at: DateTime!, $source: ObservationSource!, $note: String) {{
  recordObservation(patientId: $patientId, measureCode: $measureCode, value: $value,
    unit: $unit, at: $at, source: $source, note: $note) {{ {FIELDS} }} }}"""
OBSERVATIONS = f"""query($patientId: ID!, $measureCode: String, $from: DateTime, $to: DateTime,
  $first: Int, $after: String) {{
  observations(patientId: $patientId, measureCode: $measureCode, from: $from, to: $to,
    first: $first, after: $after) {{ items {{ {FIELDS} }} nextCursor }} }}"""


def ago(hours: float) -> str:
    # Relative to the clock the server checks against: no calendar day is assumed.
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


async def clinic(api: httpx.AsyncClient) -> dict[str, str]:
    """A team (a lead, a nurse, a mental-health clinician, a dietitian) and a patient whose
    consent lets the mental-health clinician see MENTAL_HEALTH items."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Diabetes"}, token=LEAD))["createTeam"]["id"]
    for user, name, discipline in [
        ("rn-1", "Nia Nurse", "NURSE"),
        ("mh-1", "Max Mind", "MENTAL_HEALTH"),
        ("dt-1", "Dee Dietitian", "DIETITIAN"),
    ]:
        variables = {"teamId": team, "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=LEAD)
    enrollment = {"teamId": team, "mrn": "D-1", "name": "Dana Example", "birthDate": "1961-03-09"}
    patient = (await gql(api, op.ENROLL, enrollment, token=LEAD))["enrollPatient"]["id"]
    await grant(api, patient, ["MENTAL_HEALTH"], "HIM-CF-1")
    return {"team": team, "patient": patient}


async def grant(api: httpx.AsyncClient, patient: str, disciplines: list[str], form: str) -> None:
    consent = {
        "patientId": patient,
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["TREATMENT"],
        "disciplines": disciplines,
        "evidence": form,
    }
    await gql(api, op.GRANT, consent, token=LEAD)


def reading(patient: str, **overrides: Any) -> dict[str, Any]:
    fields = {
        "patientId": patient,
        "measureCode": GLUCOSE,
        "value": 7.0,
        "unit": "mmol/L",
        "at": ago(2),
        "source": "PATIENT_REPORTED",
    }
    return fields | overrides


async def record(api: httpx.AsyncClient, variables: dict[str, Any], who: str) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(api, RECORD, variables, token=who))["recordObservation"]
    return result


async def page(api: httpx.AsyncClient, who: str, **variables: Any) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(api, OBSERVATIONS, variables, token=who))["observations"]
    return result


async def refused(
    api: httpx.AsyncClient, query: str, variables: dict[str, Any], who: str
) -> GraphQLErrors:
    with pytest.raises(GraphQLErrors) as info:
        await gql(api, query, variables, token=who)
    return info.value


async def access_records(settings: Settings) -> list[AccessRecorded]:
    return await access_records_sent(settings)


async def test_a_reading_in_either_unit_reads_back_with_its_canonical_value(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    patient = ids["patient"]
    taken = ago(3)
    molar = await record(api, reading(patient, at=taken, note="  before breakfast "), NURSE)
    mass = await record(api, reading(patient, value=250.0, unit="mg/dL", source="DEVICE"), NURSE)

    assert molar["value"] == 7.0 and molar["unit"] == "mmol/L"
    assert molar["canonicalValue"] == pytest.approx(126.1, abs=0.05)
    assert molar["measure"]["code"] == GLUCOSE and molar["recordedBy"] == "rn-1"
    assert molar["note"] == "before breakfast" and molar["redacted"] is False
    assert datetime.fromisoformat(molar["at"]) == datetime.fromisoformat(taken)
    assert (mass["value"], mass["canonicalValue"], mass["source"]) == (250.0, 250.0, "DEVICE")

    found = await page(api, DIETITIAN, patientId=patient)
    assert [o["id"] for o in found["items"]] == [molar["id"], mass["id"]]
    assert found["items"][0] == molar and found["nextCursor"] is None

    # In the log: one stream per reading, the envelope naming the patient and the team.
    stream = await EventStore(pool).read_stream(f"observation-{molar['id']}")
    (envelope,) = stream
    assert envelope.patient_id == patient and envelope.team_id == ids["team"]
    assert envelope.actor_id == "rn-1"
    assert isinstance(envelope.payload, ObservationRecorded)
    assert envelope.payload.canonical_unit == "mg/dL"
    assert envelope.payload.canonical_value == pytest.approx(126.1, abs=0.05)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"measureCode": "9999-9"}, "known: 2339-0"),
        ({"unit": "g/L"}, "mg/dL, mmol/L"),
        ({"value": 5000.0, "unit": "mg/dL"}, "more than 0 to 3,000 mg/dL"),
        ({"measureCode": PHQ9, "value": 28.0, "unit": "{score}"}, "from 0 to 27"),
        ({"at": "2026-01-01T09:00:00"}, "UTC offset"),
        ({"note": "x" * 4_001}, "note must be at most 4000 characters"),
    ],
)
async def test_a_bad_reading_is_bad_user_input_naming_what_is_allowed_and_writes_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], overrides: dict[str, Any], names: str
) -> None:
    ids = await clinic(api)
    head = await EventStore(pool).head()
    error = await refused(api, RECORD, reading(ids["patient"], **overrides), LEAD)
    assert error.code == "BAD_USER_INPUT"
    assert names in error.errors[0]["message"]
    assert await EventStore(pool).head() == head


async def test_a_reading_in_the_future_is_refused(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api)
    head = await EventStore(pool).head()
    error = await refused(api, RECORD, reading(ids["patient"], at=ago(-1)), NURSE)
    assert error.code == "BAD_USER_INPUT" and "in the future" in error.errors[0]["message"]
    assert await EventStore(pool).head() == head


async def test_an_outsider_can_neither_record_nor_read_and_is_on_the_record(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    await record(api, reading(ids["patient"]), NURSE)
    head = await EventStore(pool).head()

    wrote = await refused(api, RECORD, reading(ids["patient"]), OUTSIDER)
    read = await refused(api, OBSERVATIONS, {"patientId": ids["patient"]}, OUTSIDER)

    assert (wrote.code, read.code) == ("FORBIDDEN", "FORBIDDEN")
    assert await EventStore(pool).head() == head
    denied = [r for r in await access_records(settings) if r.actor_id == "er-1"]
    assert {(r.action, r.outcome, r.patient_id) for r in denied} == {
        (AccessAction.UPDATE, AccessOutcome.DENY, ids["patient"]),
        (AccessAction.READ, AccessOutcome.DENY, ids["patient"]),
    }


async def test_a_phq9_is_redacted_for_a_dietitian_without_consent_and_shown_with_it(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    patient = ids["patient"]
    phq9 = reading(patient, measureCode=PHQ9, value=14.0, unit="{score}", note="low mood")
    written = await record(api, phq9, THERAPIST)
    glucose = await record(api, reading(patient), NURSE)
    assert written["sensitivity"] == ["MENTAL_HEALTH"] and written["value"] == 14.0

    hidden = (await page(api, DIETITIAN, patientId=patient))["items"]
    assert [o["id"] for o in hidden] == [written["id"], glucose["id"]]
    assert hidden[0]["redacted"] is True
    assert (hidden[0]["value"], hidden[0]["canonicalValue"]) == (None, None)
    assert hidden[0]["note"] == "[restricted]"
    assert hidden[0]["measure"]["code"] == PHQ9
    assert hidden[1]["redacted"] is False and hidden[1]["value"] == 7.0

    # Nobody records a reading they could only see redacted; nothing is written.
    head = await EventStore(pool).head()
    error = await refused(api, RECORD, phq9, DIETITIAN)
    assert error.code == "FORBIDDEN" and "only see redacted" in error.errors[0]["message"]
    assert "MENTAL_HEALTH" not in error.errors[0]["message"]
    assert await EventStore(pool).head() == head

    await grant(api, patient, ["DIETITIAN"], "HIM-CF-2")
    shown = (await page(api, DIETITIAN, patientId=patient, measureCode=PHQ9))["items"]
    assert [(o["id"], o["value"], o["note"], o["redacted"]) for o in shown] == [
        (written["id"], 14.0, "low mood", False)
    ]

    reads = [
        r
        for r in await access_records(settings)
        if r.actor_id == "dt-1"
        and r.resource_type == "Observation"
        and r.action is AccessAction.READ
    ]
    assert {(r.outcome, r.patient_id) for r in reads} == {
        (AccessOutcome.PERMIT, patient),
        (AccessOutcome.PERMIT_REDACTED, patient),
    }
    redacted = [r for r in reads if r.outcome is AccessOutcome.PERMIT_REDACTED]
    assert [r.sensitivity for r in redacted] == [(Sensitivity.MENTAL_HEALTH,)]
    created = [
        r
        for r in await access_records(settings)
        if r.action is AccessAction.CREATE and r.resource_type == "Observation"
    ]
    assert {(r.actor_id, r.resource_id, r.outcome) for r in created} == {
        ("mh-1", written["id"], AccessOutcome.PERMIT),
        ("rn-1", glucose["id"], AccessOutcome.PERMIT),
    }
    refusal = [r for r in await access_records(settings) if r.outcome is AccessOutcome.DENY]
    assert [(r.actor_id, r.sensitivity) for r in refusal] == [
        ("dt-1", (Sensitivity.MENTAL_HEALTH,))
    ]


async def test_pages_are_stable_and_filters_apply(api: httpx.AsyncClient) -> None:
    ids = await clinic(api)
    patient = ids["patient"]
    written = [
        await record(api, reading(patient, value=float(5 + n), at=ago(10 - n)), NURSE)
        for n in range(5)
    ]
    await record(api, reading(patient, measureCode=PHQ9, value=3.0, unit="{score}"), THERAPIST)

    first = await page(api, NURSE, patientId=patient, measureCode=GLUCOSE, first=2)
    assert [o["id"] for o in first["items"]] == [w["id"] for w in written[:2]]
    # A reading recorded meanwhile goes to the end; the pages already read do not move.
    late = await record(api, reading(patient, value=9.5, at=ago(20)), NURSE)
    cursor = first["nextCursor"]
    second = await page(api, NURSE, patientId=patient, measureCode=GLUCOSE, first=2, after=cursor)
    third = await page(
        api, NURSE, patientId=patient, measureCode=GLUCOSE, first=2, after=second["nextCursor"]
    )
    assert [o["id"] for o in second["items"]] == [w["id"] for w in written[2:4]]
    assert [o["id"] for o in third["items"]] == [written[4]["id"], late["id"]]
    assert third["nextCursor"] is None
    again = await page(api, NURSE, patientId=patient, measureCode=GLUCOSE, first=2, after=cursor)
    assert again == second

    window = await page(api, NURSE, patientId=patient, **{"from": ago(8.5), "to": ago(6.5)})
    assert [o["id"] for o in window["items"]] == [w["id"] for w in written[2:4]]

    for bad in [{"first": 0}, {"first": 1001}, {"after": "not-a-cursor"}, {"measureCode": "x"}]:
        error = await refused(api, OBSERVATIONS, {"patientId": patient} | bad, NURSE)
        assert error.code == "BAD_USER_INPUT", bad


async def test_break_glass_opens_one_patients_readings_and_is_on_the_record(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    ids = await clinic(api)
    patient = ids["patient"]
    glucose = await record(api, reading(patient), NURSE)
    headers = {"X-Break-Glass": "Unresponsive in the emergency department"}

    found = await gql(api, OBSERVATIONS, {"patientId": patient}, token=OUTSIDER, headers=headers)

    items = found["observations"]["items"]
    assert [(o["id"], o["value"]) for o in items] == [(glucose["id"], 7.0)]
    opened = [r for r in await access_records(settings) if r.actor_id == "er-1"]
    assert {(r.action, r.resource_type, r.outcome, r.patient_id) for r in opened} == {
        (AccessAction.READ, "Observation", AccessOutcome.BREAK_GLASS, patient)
    }


async def test_a_filtered_page_stops_at_its_scan_bound_and_resumes_where_it_stopped(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await clinic(api)
    patient = ids["patient"]
    for _ in range(3):
        await record(api, reading(patient), NURSE)
    phq9 = await record(
        api, reading(patient, measureCode=PHQ9, value=5.0, unit="{score}"), THERAPIST
    )
    monkeypatch.setattr(observations, "SCAN_BATCH", 2)
    monkeypatch.setattr(observations, "SCAN_BATCHES", 1)

    first = await page(api, THERAPIST, patientId=patient, measureCode=PHQ9, first=1)
    assert first["items"] == [] and first["nextCursor"] is not None
    rest = await page(
        api, THERAPIST, patientId=patient, measureCode=PHQ9, first=1, after=first["nextCursor"]
    )
    assert [o["id"] for o in rest["items"]] == [phq9["id"]]
