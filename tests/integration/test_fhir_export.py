"""`carecoord export fhir` on a real PostgreSQL and broker: a patient seeded through the API
comes out as a valid R4B Bundle whose references resolve, the export's own access record
reaches care.audit, genetic items stay out for EMPLOYMENT, readings go out as interpreted
Observations and a measurable goal with its achievement, and nothing is written for an
unknown patient, a bad --out or an audit log that cannot take the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from schemas.audit import AccessRecorded
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.audit import keys as audit_keys
from services.audit import store
from services.audit.keys import AuditKeys
from services.fhir.export import export_patient
from services.settings import Settings
from services.tasks.rebuild import rebuild
from tests import operations as op
from tests.fhir import references_in
from tests.graphql import gql
from tests.integration.api import token
from tests.integration.kafka_helpers import (
    access_records_sent,
    exports_recorded,
    refuse_outbox,
)
from tests.integration.test_monitoring_api import ADD_MONITORING, PLAN, SET_GOAL_TARGET
from tests.integration.test_observations_api import RECORD
from tests.integration.workers import environment

NOW = datetime.now(UTC)
PATIENT_NAME = "Zebulon Quixote-Marsh"
MRN = "MRN-FHIR-5521"
GENETIC_TITLE = "BRCA1 cascade testing"


LEAD = token("lead-1", "Dr Lead")
PHARMACIST = token("ph-1", "Pat Pharm")


def day(days: int) -> str:
    return (NOW + timedelta(days=days)).date().isoformat()


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    # The development key file in the test's data folder, which the command reads too.
    return audit_keys.load(settings, create=True)


async def seed(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> tuple[dict[str, str], list[AccessRecorded]]:
    """A team, a patient with a plan (goals, a GENETIC and a plain intervention, a review),
    a consent and a manual task; another patient; the board projected and every access
    record the API sent appended to the audit log, as the writer would."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Cardiometabolic"}, token=LEAD))["createTeam"]

    async def assign(
        user: str, name: str, discipline: str, *, lead: bool = False, by: str = LEAD
    ) -> None:
        variables = {"teamId": team["id"], "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables | {"lead": lead}, token=by)

    async def enroll(mrn: str, name: str) -> str:
        variables = {"teamId": team["id"], "mrn": mrn, "name": name, "birthDate": "1968-04-02"}
        return str((await gql(api, op.ENROLL, variables, token=LEAD))["enrollPatient"]["id"])

    await assign("ph-1", "Pat Pharm", "PHARMACIST")
    await assign("gc-1", "Gil Counselor", "GENETIC_COUNSELOR", lead=True)
    patient = await enroll(MRN, PATIENT_NAME)
    other = await enroll("MRN-OTHER-1", "Other Person")
    # Documented by the lead before taking a discipline the consent names, which a co-lead
    # then gives them: nobody widens their own access alone.
    await gql(
        api,
        op.GRANT,
        {
            "patientId": patient,
            "categories": ["GENETIC"],
            "purposes": ["TREATMENT"],
            "disciplines": ["PHYSICIAN", "PHARMACIST", "GENETIC_COUNSELOR"],
            "evidence": "form-1",
        },
        token=LEAD,
    )
    await assign("lead-1", "Dr Lead", "PHYSICIAN", by=token("gc-1", "Gil Counselor"))
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "T2D"}, token=LEAD))[
        "createCarePlan"
    ]["id"]
    for description, target in (("HbA1c below 7%", "< 7%"), ("Walk daily", None)):
        await gql(
            api,
            op.ADD_GOAL,
            {"planId": plan, "description": description, "target": target, "dueDate": day(90)},
            token=LEAD,
        )
    for title, kind, discipline, tags in (
        (GENETIC_TITLE, "REFERRAL", "GENETIC_COUNSELOR", ["GENETIC"]),
        ("Metformin", "MEDICATION", "PHARMACIST", []),
    ):
        await gql(
            api,
            op.ADD_INTERVENTION,
            {
                "planId": plan,
                "kind": kind,
                "tier": "FIRST_LINE",
                "title": title,
                "discipline": discipline,
                "sensitivity": tags,
                "dueDate": day(30),
            },
            token=LEAD,
        )
    await gql(api, op.SET_PLAN_STATUS, {"planId": plan, "status": "ACTIVE"}, token=LEAD)
    await gql(api, op.REVIEW, {"planId": plan, "summary": "On track", "next": day(42)}, token=LEAD)
    task = (
        await gql(
            api,
            op.CREATE_TASK,
            {
                "teamId": team["id"],
                "title": "Call the pharmacy",
                "patientId": patient,
                "assigneeId": "ph-1",
                "dueDate": day(7),
            },
            token=LEAD,
        )
    )["createTask"]["id"]
    await gql(
        api,
        op.MOVE_TASK,
        {"taskId": task, "status": "BLOCKED", "reason": "prior authorization"},
        token=PHARMACIST,
    )
    await gql(api, op.CARE_PLANS, {"patientId": patient}, token=PHARMACIST)
    await gql(api, op.PATIENT, {"id": other}, token=PHARMACIST)

    await rebuild(pool)
    sent = await access_records_sent(settings)
    async with pool.acquire() as conn:
        await store.append(
            conn,
            0,
            sent,
            keys,
            role=settings.audit_db_role,
            checkpoint_every=1000,
            now=datetime.now(UTC),
        )
    return {"team": team["id"], "patient": patient, "other": other, "plan": plan}, sent


def run_export(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "export", "fhir", *args],
        env={**environment(settings), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_seeded_patient_exports_as_a_valid_bundle_whose_references_resolve_and_is_recorded(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    ids, logged = await seed(api, pool, settings, keys)
    out = tmp_path / "export" / "bundle.json"
    out.parent.mkdir()

    done = run_export(settings, "--patient", ids["patient"], "--out", str(out), "--actor", "ops-1")

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"resources to {out}" in done.stderr
    assert out.stat().st_mode & 0o077 == 0  # PHI: readable by its owner only
    text = out.read_text(encoding="utf-8")
    bundle = Bundle.model_validate_json(text)
    document = json.loads(text)
    kinds = [e["resource"]["resourceType"] for e in document["entry"]]
    for entry in bundle.entry or []:
        assert entry.resource is not None
        assert type(entry.resource).__name__ == entry.resource.get_resource_type()
    assert {k: kinds.count(k) for k in set(kinds)} | {"AuditEvent": 0} == {
        "Patient": 1,
        "CareTeam": 1,
        "CarePlan": 1,
        "Goal": 2,
        # the two interventions' tasks, the review's and the manual one
        "Task": 4,
        "Consent": 1,
        "AuditEvent": 0,
    }
    urls = {e["fullUrl"] for e in document["entry"]}
    references = references_in(document)
    assert references and set(references) <= urls

    [patient] = [
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert (patient["id"], patient["name"][0]["text"], patient["birthDate"]) == (
        ids["patient"],
        PATIENT_NAME,
        "1968-04-02",
    )
    assert MRN in [i["value"] for i in patient["identifier"]]
    [plan] = [
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "CarePlan"
    ]
    assert plan["status"] == "active"
    assert {c["code"] for c in plan["meta"]["security"]} == {"GDIS"}
    assert GENETIC_TITLE in text
    blocked = [
        e["resource"]
        for e in document["entry"]
        if e["resource"]["resourceType"] == "Task" and e["resource"]["status"] == "on-hold"
    ]
    assert [t["statusReason"]["text"] for t in blocked] == ["prior authorization"]
    assert blocked[0]["owner"]["display"] == "Pat Pharm"

    # Only the patient's own entries, and all of them, in the log when the export ran.
    events = [
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "AuditEvent"
    ]
    own = {r.record_id for r in logged if r.patient_id == ids["patient"]}
    assert any(r.patient_id == ids["other"] for r in logged)
    assert len(events) == len(own) > 0
    assert {
        d["valueString"]
        for e in events
        for entity in e["entity"]
        for d in entity.get("detail", [])
        if d["type"] == "record-id"
    } == own

    [recorded] = await exports_recorded(settings)
    assert recorded.patient_id == ids["patient"]
    assert (recorded.resource_type, recorded.resource_id) == ("Bundle", bundle.id)
    assert (recorded.actor_id, recorded.purpose) == ("ops-1", Purpose.TREATMENT)
    assert recorded.outcome is AccessOutcome.PERMIT
    assert recorded.sensitivity == (Sensitivity.GENETIC,)
    for secret in (PATIENT_NAME, MRN, GENETIC_TITLE):
        assert secret not in recorded.reason


async def test_an_employment_export_to_stdout_leaves_genetic_items_out_and_says_so(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    ids, _ = await seed(api, pool, settings, keys)

    done = run_export(settings, "--patient", ids["patient"], "--purpose", "employment")

    assert done.returncode == 0, done.stderr
    bundle = Bundle.model_validate_json(done.stdout)
    assert "GENETIC items are left out of an export for EMPLOYMENT (GINA)" in done.stderr
    assert "GDIS" not in done.stdout and GENETIC_TITLE not in done.stdout
    kinds = [e.resource.get_resource_type() for e in bundle.entry or [] if e.resource]
    assert "Consent" not in kinds  # the only consent covers genetic information
    assert kinds.count("Task") == 3  # the genetic intervention's task stays out
    [recorded] = await exports_recorded(settings)
    assert recorded.purpose is Purpose.EMPLOYMENT
    assert recorded.outcome is AccessOutcome.PERMIT_REDACTED
    assert "GENETIC left out for EMPLOYMENT" in recorded.reason


async def test_export_patient_returns_the_bundle_for_callers_in_process(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    ids, _ = await seed(api, pool, settings, keys)

    exported = await export_patient(settings, ids["patient"], actor="e2e")

    Bundle.model_validate_json(exported.bundle.model_dump_json())
    assert exported.counts["Patient"] == 1
    [recorded] = await exports_recorded(settings)
    assert (recorded.actor_id, recorded.resource_id) == ("e2e", exported.bundle.id)


def hours_ago(hours: float) -> str:
    # Relative to the clock the server checks a reading's time against.
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


async def test_readings_go_out_as_interpreted_observations_and_a_goal_with_its_achievement(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    ids, _ = await seed(api, pool, settings, keys)
    plan, patient = ids["plan"], ids["patient"]
    # Thresholds in mmol/L (70-180 mg/dL, critical at 300), readings in mg/dL.
    glucose = {
        "measureCode": "2339-0",
        "everyDays": 7,
        "unit": "mmol/L",
        "low": 3.9,
        "high": 10,
        "criticalHigh": 16.7,
        "discipline": "PHARMACIST",
    }
    await gql(api, ADD_MONITORING, {"planId": plan, **glucose}, token=LEAD)
    goals = (await gql(api, PLAN, {"id": plan}, token=LEAD))["carePlan"]["goals"]
    hba1c_goal = goals[0]["id"]
    target = {"planId": plan, "goalId": hba1c_goal, "measureCode": "4548-4", "comparator": "LT"}
    await gql(api, SET_GOAL_TARGET, {**target, "value": 7, "unit": "%"}, token=LEAD)
    taken = {}
    for name, code, value, unit, hours, source in (
        ("critical", "2339-0", 320, "mg/dL", 30, "PATIENT_REPORTED"),
        ("high", "2339-0", 190, "mg/dL", 26, "PATIENT_REPORTED"),
        ("normal", "2339-0", 120, "mg/dL", 20, "DEVICE"),
        ("a1c-before", "4548-4", 7.8, "%", 24 * 40, "CLINIC"),
        ("a1c-latest", "4548-4", 6.8, "%", 2, "CLINIC"),
    ):
        variables = {
            "patientId": patient,
            "measureCode": code,
            "value": value,
            "unit": unit,
            "at": hours_ago(hours),
            "source": source,
        }
        taken[name] = (await gql(api, RECORD, variables, token=LEAD))["recordObservation"]["id"]

    exported = await export_patient(settings, patient, actor="e2e")

    text = exported.bundle.model_dump_json()
    Bundle.model_validate_json(text)
    document = json.loads(text)
    assert set(references_in(document)) <= {e["fullUrl"] for e in document["entry"]}
    assert exported.counts["Observation"] == 5
    observations = {
        r["identifier"][0]["value"]: r
        for e in document["entry"]
        if (r := e["resource"])["resourceType"] == "Observation"
    }

    def interpretation(name: str) -> str | None:
        found = observations[taken[name]].get("interpretation")
        return found[0]["coding"][0]["code"] if found else None

    assert {n: interpretation(n) for n in taken} == {
        "critical": "HH",
        "high": "H",
        "normal": "N",
        # No monitoring plan of HbA1c: no interpretation.
        "a1c-before": None,
        "a1c-latest": None,
    }
    critical = observations[taken["critical"]]
    assert critical["status"] == "final"
    assert critical["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "2339-0",
        "display": "Glucose [Mass/volume] in Blood",
    }
    assert critical["valueQuantity"] == {
        "value": 320,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    assert critical["category"][0]["coding"][0]["code"] == "laboratory"
    assert critical["subject"]["reference"] == critical["performer"][0]["reference"]
    assert "issued" in critical and "effectiveDateTime" in critical

    [goal] = [
        r
        for e in document["entry"]
        if (r := e["resource"])["resourceType"] == "Goal"
        and r["identifier"][0]["value"] == hba1c_goal
    ]
    assert goal["achievementStatus"]["coding"][0]["code"] == "achieved"
    measurable = goal["target"][0]
    assert measurable["measure"]["coding"][0]["code"] == "4548-4"
    assert measurable["detailQuantity"]["value"] == 7
    assert measurable["dueDate"] == day(90)
    [recorded] = await exports_recorded(settings)
    assert "5 Observation" in recorded.reason


async def test_an_unknown_patient_is_refused_with_exit_2_and_nothing_written(
    settings: Settings, keys: AuditKeys, tmp_path: Path
) -> None:
    out = tmp_path / "bundle.json"

    done = run_export(settings, "--patient", "no-such-patient", "--out", str(out))

    assert done.returncode == 2
    assert "no patient has the id 'no-such-patient'" in done.stderr
    assert not out.exists()
    assert await exports_recorded(settings) == []


async def test_nothing_is_written_when_the_export_cannot_be_recorded(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    ids, _ = await seed(api, pool, settings, keys)
    out = tmp_path / "bundle.json"
    # The database reads the record but refuses its access record (a full disk, say).
    await refuse_outbox(admin_pool)

    done = run_export(settings, "--patient", ids["patient"], "--out", str(out))

    assert done.returncode == 2
    assert "could not be recorded in the audit log" in done.stderr
    assert "nothing was exported" in done.stderr
    assert not out.exists()
    assert PATIENT_NAME not in done.stdout + done.stderr


def test_a_missing_folder_or_an_existing_file_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "bundle.json"
    existing.write_text("keep me")
    # No database or broker configured: the refusal comes before either is needed.
    bare = {**os.environ, "CARECOORD_DATABASE_URL": "", "CARECOORD_KAFKA_BOOTSTRAP": ""}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "export", "fhir", "--patient", "p-1", *args],
            env=bare,
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = run("--out", str(tmp_path / "nowhere" / "bundle.json"))
    clobber = run("--out", str(existing))

    assert missing.returncode == 2
    assert "does not exist; create it first" in missing.stderr
    assert clobber.returncode == 2
    assert "already exists; pass --force" in clobber.stderr
    assert existing.read_text() == "keep me"
