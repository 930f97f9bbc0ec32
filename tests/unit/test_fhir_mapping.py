"""The FHIR export's mapping, on plain domain values: the Bundle validates as R4B, its
references resolve, its codes come from FHIR's value sets, sensitive items are labelled,
and genetic information stays out of an export for underwriting or employment."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from fhir.resources.R4B import bundle as fhir_bundle
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.consent import Consent as FhirConsent
from fhir.resources.R4B.goal import Goal as FhirGoal
from fhir.resources.R4B.task import Task as FhirTask
from pydantic import BaseModel

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import (
    AccessOutcome,
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    TaskStatus,
    Tier,
)
from services.fhir import codes
from services.fhir.audit_events import Access
from services.fhir.export import access_records, bundle_text
from services.fhir.mapping import Exported, PatientRecord, build_bundle
from services.plans.domain.careplan import CarePlan, Goal, Intervention
from services.plans.domain.consent import Consent
from services.plans.domain.patient import Patient
from services.plans.domain.team import Member, Team
from services.tasks.domain import Task
from tests.fhir import references_in

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)
DUE = date(2027, 1, 15)
PATIENT_NAME = "Ana Example"
MRN = "MRN-0042"
SECRET_TEXTS = (PATIENT_NAME, MRN, "BRCA1 cascade testing", "Metformin")


def ident(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def intervention(
    title: str, *tags: Sensitivity, kind: InterventionKind = InterventionKind.MEDICATION
) -> Intervention:
    return Intervention(
        id=ident("int"),
        kind=kind,
        tier=Tier.FIRST_LINE,
        title=title,
        detail="500 mg with the evening meal",
        responsible_discipline=Discipline.PHARMACIST,
        sensitivity=tags,
        due_date=DUE,
    )


def access(patient_id: str, seq: int, *tags: Sensitivity, **changes: Any) -> Access:
    fields: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "at": NOW - timedelta(minutes=seq),
        "actor_id": "ph-1",
        "actor_name": "Pat Pharm",
        "actor_disciplines": (Discipline.PHARMACIST,),
        "patient_id": patient_id,
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "resource_id": "plan-1",
        "purpose": Purpose.TREATMENT,
        "outcome": AccessOutcome.PERMIT,
        "reason": "ph-1 is a team member (PHARMACIST)",
        "sensitivity": tags,
        "client_addr": "10.0.0.7",
    }
    return Access(label=f"0:{seq}", record=AccessRecorded(**(fields | changes)))


def story() -> PatientRecord:
    """A patient with a plan (a GENETIC, a MENTAL_HEALTH and a discontinued plain
    intervention), goals in every status, tasks, two consents and some accesses."""
    team_id, patient_id, plan_id = ident("team"), ident("pat"), ident("plan")
    members = {
        "lead-1": Member("lead-1", "Dr Lead", frozenset({Discipline.PHYSICIAN}), lead=True),
        "ph-1": Member("ph-1", "Pat Pharm", frozenset({Discipline.PHARMACIST})),
        "gc-1": Member(
            "gc-1", "Gil Counselor", frozenset({Discipline.GENETIC_COUNSELOR, Discipline.NURSE})
        ),
    }
    team = Team(id=team_id, name="Cardiometabolic", members=MappingProxyType(members))
    patient = Patient(patient_id, team_id, MRN, PATIENT_NAME, date(1968, 4, 2))
    genetic = intervention("BRCA1 cascade testing", Sensitivity.GENETIC)
    therapy = intervention(
        "CBT for insomnia", Sensitivity.MENTAL_HEALTH, kind=InterventionKind.THERAPY
    )
    stopped = replace(
        intervention("Metformin"), active=False, discontinued_reason="eGFR fell below 30"
    )
    goals = tuple(
        Goal(ident("goal"), f"Goal {s.value}", "< 7%" if i % 2 else None, DUE, s)
        for i, s in enumerate(GoalStatus)
    )
    plan = CarePlan(
        id=plan_id,
        patient_id=patient_id,
        team_id=team_id,
        title="T2D and family risk",
        status=PlanStatus.ACTIVE,
        goals=goals,
        interventions=(genetic, therapy, stopped),
        next_review_date=DUE,
        last_review_summary="On track",
        reviews=1,
    )

    def task(title: str, *tags: Sensitivity, **kw: Any) -> Task:
        return Task(
            id=str(uuid.uuid4()),
            team_id=team_id,
            title=title,
            source="manual",
            updated_at=NOW,
            created_at=NOW - timedelta(days=1),
            patient_id=patient_id,
            sensitivity=tags,
            **kw,
        )

    tasks = [
        task("Order BRCA1 panel", Sensitivity.GENETIC, plan_id=plan_id, due_date=DUE),
        task(
            "Call the pharmacy",
            status=TaskStatus.BLOCKED,
            blocked_reason="waiting for the prior authorization",
            assignee_id="ph-1",
            discipline=Discipline.PHARMACIST,
        ),
        task("Review care plan", plan_id=plan_id, status=TaskStatus.DONE),
        replace(task("Someone else's task"), patient_id="another-patient"),
    ]
    consents = [
        Consent(
            id=ident("consent"),
            patient_id=patient_id,
            team_id=team_id,
            categories=(Sensitivity.GENETIC,),
            purposes=(Purpose.TREATMENT, Purpose.CARE_COORDINATION),
            disciplines=(Discipline.PHARMACIST, Discipline.GENETIC_COUNSELOR),
            valid_until=NOW + timedelta(days=365),
            granted_at=NOW - timedelta(days=2),
            granted_by="lead-1",
            evidence="form-2031",
        ),
        Consent(
            id=ident("consent"),
            patient_id=patient_id,
            team_id=team_id,
            categories=(Sensitivity.MENTAL_HEALTH,),
            purposes=(Purpose.RESEARCH, Purpose.EMPLOYMENT),
            disciplines=(Discipline.MENTAL_HEALTH,),
            valid_until=NOW + timedelta(days=30),
            granted_at=NOW - timedelta(days=3),
            granted_by="lead-1",
            revoked_at=NOW - timedelta(days=1),
        ),
    ]
    accesses = [
        access(patient_id, 1),
        access(patient_id, 2, Sensitivity.GENETIC, outcome=AccessOutcome.BREAK_GLASS),
        access(patient_id, 3, outcome=AccessOutcome.DENY, action=AccessAction.UPDATE),
        access("another-patient", 4),
    ]
    return PatientRecord(patient, team, [plan], consents, tasks, accesses)


def export(record: PatientRecord, purpose: Purpose = Purpose.TREATMENT) -> Exported:
    return build_bundle(record, purpose=purpose, now=NOW, bundle_id=str(uuid.uuid4()))


def as_json(exported: Exported) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(exported.bundle.model_dump_json())
    return parsed


def resources(exported: Exported, kind: type[Any]) -> list[Any]:
    return [e.resource for e in exported.bundle.entry or [] if isinstance(e.resource, kind)]


# R4B value sets the models list only in part ("draft | requested | ... | +").
FULL_VALUE_SETS = {
    "Task.status": [
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    ],
}


# R4B required bindings the models do not list at all.
UNLISTED_VALUE_SETS = {
    "AuditEvent.action": ["C", "R", "U", "D", "E"],
    "AuditEvent.outcome": ["0", "4", "8", "12"],
    "AuditEventAgentNetwork.type": ["1", "2", "3", "4", "5"],
}


def coded_elements(model: BaseModel) -> Iterator[tuple[str, Any, list[str]]]:
    """Every element with a required value set in the R4B models: (name, value, allowed)."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "enum_values" in extra and value is not None:
            allowed = extra["enum_values"]
            assert isinstance(allowed, list)
            element = f"{type(model).__name__}.{name}"
            # The models cut long lists short with '+': the spec's full list stands in.
            full = FULL_VALUE_SETS.get(element) if "+" in allowed else None
            yield element, value, full or [str(a) for a in allowed]
        element = f"{type(model).__name__}.{name}"
        if element in UNLISTED_VALUE_SETS and value is not None:
            yield element, value, UNLISTED_VALUE_SETS[element]
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, BaseModel):
                yield from coded_elements(inner)


# --- the Bundle as a whole ----------------------------------------------------------


def test_a_patients_record_maps_to_a_bundle_the_r4b_model_accepts_with_each_entry_its_type() -> (
    None
):
    exported = export(story())

    text = exported.bundle.model_dump_json()
    parsed = fhir_bundle.Bundle.model_validate_json(text)

    assert parsed.type == "collection"
    kinds = [e.resource.get_resource_type() for e in parsed.entry or [] if e.resource]
    assert kinds[:3] == ["Patient", "CareTeam", "CarePlan"]
    assert exported.counts == {
        "AuditEvent": 3,
        "CarePlan": 1,
        "CareTeam": 1,
        "Consent": 2,
        "Goal": len(GoalStatus),
        "Patient": 1,
        "Task": 3,
    }
    for entry in json.loads(text)["entry"]:
        model = fhir_bundle.BundleEntry.model_validate(entry).resource
        assert model is not None
        assert model.get_resource_type() == entry["resource"]["resourceType"]
        assert type(model).__name__ == entry["resource"]["resourceType"]


def test_every_reference_resolves_to_an_entry_and_every_full_url_is_a_unique_urn_uuid() -> None:
    document = as_json(export(story()))

    urls = [e["fullUrl"] for e in document["entry"]]
    references = references_in(document)

    assert len(urls) == len(set(urls))
    assert all(u.startswith("urn:uuid:") and uuid.UUID(u[9:]) for u in urls)
    assert references, "the bundle has no references at all"
    assert set(references) <= set(urls), set(references) - set(urls)


def test_every_coded_element_holds_a_code_of_its_r4b_value_set() -> None:
    exported = export(story())

    checked = list(coded_elements(exported.bundle))

    bad = [(name, value) for name, value, allowed in checked if value not in allowed]
    assert not bad
    names = {name for name, _, _ in checked}
    assert {"CarePlan.status", "Goal.lifecycleStatus", "Task.status", "Consent.status"} <= names
    assert {
        "CarePlanActivityDetail.kind",
        "CarePlanActivityDetail.status",
        "CareTeam.status",
    } <= names
    assert {"AuditEvent.action", "AuditEvent.outcome", "AuditEventAgentNetwork.type"} <= names


def test_ids_that_are_not_valid_fhir_ids_are_derived_and_the_carecoord_id_is_kept() -> None:
    record = story()
    odd = replace(record.patient, id="patient_with/odd chars")
    exported = export(replace(record, patient=odd, plans=[], tasks=[], consents=[], accesses=[]))

    [patient] = [
        e.resource
        for e in exported.bundle.entry or []
        if e.resource and e.resource.get_resource_type() == "Patient"
    ]
    assert patient.id != odd.id and uuid.UUID(patient.id)
    assert {(i.system, i.value) for i in patient.identifier} == {
        (codes.mrn_system(odd.team_id), MRN),
        (codes.sid("patient"), odd.id),
    }
    fhir_bundle.Bundle.model_validate_json(exported.bundle.model_dump_json())


# --- the status and code maps -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (PlanStatus.DRAFT, "draft"),
        (PlanStatus.ACTIVE, "active"),
        (PlanStatus.ON_HOLD, "on-hold"),
        (PlanStatus.COMPLETED, "completed"),
        (PlanStatus.REVOKED, "revoked"),
    ],
)
def test_a_plans_status_maps_to_the_care_plan_status(status: PlanStatus, expected: str) -> None:
    record = story()
    plan = replace(record.plans[0], status=status)
    [mapped] = resources(export(replace(record, plans=[plan])), FhirCarePlan)
    assert (mapped.status, mapped.intent) == (expected, "plan")


def test_goal_statuses_map_to_lifecycle_and_achievement() -> None:
    exported = export(story())
    goals = {g.description.text: g for g in resources(exported, FhirGoal)}

    def state(status: GoalStatus) -> tuple[str, str | None]:
        g = goals[f"Goal {status.value}"]
        achieved = g.achievementStatus.coding[0].code if g.achievementStatus else None
        return g.lifecycleStatus, achieved

    assert state(GoalStatus.PROPOSED) == ("proposed", None)
    assert state(GoalStatus.IN_PROGRESS) == ("active", None)
    assert state(GoalStatus.ACHIEVED) == ("completed", "achieved")
    assert state(GoalStatus.NOT_ACHIEVED) == ("completed", "not-achieved")
    assert state(GoalStatus.CANCELLED) == ("cancelled", None)
    with_target = goals[f"Goal {GoalStatus.IN_PROGRESS.value}"].target[0]
    assert (with_target.detailString, with_target.dueDate) == ("< 7%", DUE)
    assert with_target.measure is not None  # gol-1: a detail needs a measure


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (TaskStatus.TODO, "ready"),
        (TaskStatus.IN_PROGRESS, "in-progress"),
        (TaskStatus.BLOCKED, "on-hold"),
        (TaskStatus.DONE, "completed"),
        (TaskStatus.CANCELLED, "cancelled"),
    ],
)
def test_a_tasks_status_maps_to_the_fhir_task_status(status: TaskStatus, expected: str) -> None:
    record = story()
    one = replace(record.tasks[1], status=status)
    [mapped] = resources(export(replace(record, tasks=[one])), FhirTask)
    assert (mapped.status, mapped.intent) == (expected, "order")
    assert mapped.owner.display == "Pat Pharm"
    assert mapped.for_fhir.reference == export(record).bundle.entry[0].fullUrl


def test_activities_carry_kind_status_tier_and_discipline() -> None:
    [plan] = resources(export(story()), FhirCarePlan)
    details = {a.detail.code.text: a.detail for a in plan.activity}

    stopped = details["Metformin"]
    assert (stopped.kind, stopped.status) == ("MedicationRequest", "stopped")
    assert stopped.statusReason.text == "eGFR fell below 30"
    assert (details["CBT for insomnia"].kind, details["CBT for insomnia"].status) == (
        "ServiceRequest",
        "in-progress",
    )
    extensions = {e.url: e for e in stopped.extension}
    assert extensions[codes.TIER_EXTENSION].valueCoding.code == "FIRST_LINE"
    discipline = extensions[codes.DISCIPLINE_EXTENSION].valueCodeableConcept
    assert {(c.system, c.code) for c in discipline.coding} == {
        (codes.DISCIPLINE_SYSTEM, "PHARMACIST"),
        (codes.SNOMED, "46255001"),
    }
    assert {e.url: e.valueDate for e in plan.extension} == {codes.NEXT_REVIEW_EXTENSION: DUE}


def test_purposes_take_act_reason_codes_and_those_without_one_keep_carecoords() -> None:
    def codings(p: Purpose) -> set[tuple[str, str]]:
        return {(c.system, c.code) for c in codes.purpose(p).coding}

    assert codings(Purpose.TREATMENT) == {(codes.ACT_REASON, "TREAT")}
    assert codings(Purpose.CARE_COORDINATION) == {(codes.ACT_REASON, "CAREMGT")}
    assert codings(Purpose.OPERATIONS) == {(codes.ACT_REASON, "HOPERAT")}
    assert codings(Purpose.PAYMENT) == {(codes.ACT_REASON, "HPAYMT")}
    assert codings(Purpose.RESEARCH) == {(codes.ACT_REASON, "HRESCH")}
    assert codings(Purpose.UNDERWRITING) == {(codes.PURPOSE_SYSTEM, "UNDERWRITING")}
    assert codings(Purpose.EMPLOYMENT) == {(codes.PURPOSE_SYSTEM, "EMPLOYMENT")}
    assert codes.purpose(Purpose.EMPLOYMENT).text == "EMPLOYMENT"


def test_consents_map_scope_category_status_purposes_labels_actors_and_period() -> None:
    record = story()
    active, revoked = resources(export(record), FhirConsent)

    assert (active.status, revoked.status) == ("active", "inactive")
    assert active.scope.coding[0].code == "patient-privacy"
    assert (active.category[0].coding[0].system, active.category[0].coding[0].code) == (
        codes.LOINC,
        "59284-0",
    )
    assert [(p.system, p.code) for p in active.provision.purpose] == [
        (codes.ACT_REASON, "TREAT"),
        (codes.ACT_REASON, "CAREMGT"),
    ]
    assert [c.code for c in active.provision.securityLabel] == ["GDIS"]
    assert active.provision.type == "permit"
    assert active.provision.period.end == record.consents[0].valid_until
    assert revoked.provision.period.end == record.consents[1].revoked_at
    # The signed form it was documented on; a consent from before evidence was asked has none.
    form = active.sourceReference.identifier
    assert (form.system, form.value) == (codes.sid("consent-form"), "form-2031")
    assert revoked.sourceReference is None
    assert [a.role.coding[0].code for a in active.provision.actor] == [
        "PHARMACIST",
        "GENETIC_COUNSELOR",
    ]


def test_audit_events_are_the_patients_own_with_outcome_action_and_purpose_mapped() -> None:
    record = story()
    exported = export(record)
    events = {e.id: e for e in resources(exported, AuditEvent)}

    assert set(events) == {"0-1", "0-2", "0-3"}  # not 0-4, another patient's
    assert (events["0-1"].action, events["0-1"].outcome) == ("R", "0")
    assert (events["0-3"].action, events["0-3"].outcome) == ("U", "4")
    glass = events["0-2"]
    assert [c.code for c in glass.purposeOfEvent[0].coding] == ["TREAT", "ETREAT"]
    assert glass.type.code == "110110"
    assert glass.agent[0].requestor is True
    assert glass.agent[0].who.identifier.value == "ph-1"
    # The Patient is in this Bundle: referenced there, and named by its carecoord id too.
    patient = glass.entity[0].what
    assert patient.reference == (exported.bundle.entry or [])[0].fullUrl
    assert (patient.identifier.system, patient.identifier.value) == (
        codes.sid("patient"),
        record.patient.id,
    )


# --- sensitivity: labels, and GINA --------------------------------------------------


def test_resources_with_sensitive_content_carry_their_security_labels() -> None:
    exported = export(story())

    def labels(resource: Any) -> set[str]:
        meta = resource.meta
        return {c.code for c in meta.security} if meta and meta.security else set()

    [plan] = resources(exported, FhirCarePlan)
    tasks = {t.description: labels(t) for t in resources(exported, FhirTask)}
    events = {e.id: e for e in resources(exported, AuditEvent)}
    assert labels(plan) == {"GDIS", "BH"}
    assert all(c.system == codes.ACT_CODE for c in plan.meta.security)
    assert tasks == {
        "Order BRCA1 panel": {"GDIS"},
        "Call the pharmacy": set(),
        "Review care plan": set(),
    }
    assert labels(events["0-2"]) == {"GDIS"}
    assert [c.code for c in events["0-2"].entity[1].securityLabel] == ["GDIS"]
    assert labels(events["0-1"]) == set()
    for untagged in ("Patient", "CareTeam", "Goal"):
        for e in exported.bundle.entry or []:
            if e.resource and e.resource.get_resource_type() == untagged:
                assert labels(e.resource) == set(), untagged
    assert labels(exported.bundle) == {"GDIS", "BH"}
    assert exported.sensitivity == {Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH}
    assert exported.left_out == {}


@pytest.mark.parametrize("purpose", [Purpose.EMPLOYMENT, Purpose.UNDERWRITING])
def test_genetic_items_are_left_out_entirely_for_employment_and_underwriting(
    purpose: Purpose,
) -> None:
    exported = export(story(), purpose)
    text = exported.bundle.model_dump_json()

    fhir_bundle.Bundle.model_validate_json(text)
    assert "GDIS" not in text
    assert "BRCA1" not in text
    assert exported.left_out == {
        "care plan activity": 1,
        "task": 1,
        "consent": 1,
        "audit event": 1,
    }
    assert exported.withheld == {Sensitivity.GENETIC}
    assert exported.sensitivity == {Sensitivity.MENTAL_HEALTH}
    [plan] = resources(exported, FhirCarePlan)
    assert sorted(a.detail.code.text for a in plan.activity) == ["CBT for insomnia", "Metformin"]
    assert [c.provision.securityLabel[0].code for c in resources(exported, FhirConsent)] == ["BH"]
    assert {e.id for e in resources(exported, AuditEvent)} == {"0-1", "0-3"}


@pytest.mark.parametrize(
    "purpose", [p for p in Purpose if p not in (Purpose.EMPLOYMENT, Purpose.UNDERWRITING)]
)
def test_other_purposes_export_genetic_items_with_their_labels(purpose: Purpose) -> None:
    exported = export(story(), purpose)
    assert exported.left_out == {}
    assert exported.withheld == frozenset()
    assert "GDIS" in exported.bundle.model_dump_json()


def test_the_exports_access_record_names_the_bundle_and_counts_without_phi() -> None:
    record = story()
    exported = export(record, Purpose.EMPLOYMENT)

    [access_record] = access_records(exported, record.patient.id, who="cli:ops", at=NOW)

    assert access_record.patient_id == record.patient.id
    assert access_record.action is AccessAction.EXPORT
    assert (access_record.resource_type, access_record.resource_id) == (
        "Bundle",
        exported.bundle.id,
    )
    assert access_record.purpose is Purpose.EMPLOYMENT
    assert access_record.outcome is AccessOutcome.PERMIT_REDACTED
    assert access_record.sensitivity == (Sensitivity.MENTAL_HEALTH,)
    assert (access_record.actor_id, access_record.actor_roles) == ("cli:ops", ("operator",))
    assert "1 Patient" in access_record.reason and "GENETIC left out" in access_record.reason
    for secret in SECRET_TEXTS:
        assert secret not in access_record.reason
    treatment = export(record)
    [plain] = access_records(treatment, record.patient.id, who="cli:ops", at=NOW)
    assert plain.outcome is AccessOutcome.PERMIT


def test_the_written_bundle_escapes_hidden_characters_stored_before_they_were_refused() -> None:
    record = story()
    name = "Zeb\u202eecnarF\x1b[2J"  # as a record stored before names were checked may hold
    legacy = replace(record, patient=replace(record.patient, name=name))

    text = bundle_text(export(legacy))

    assert text.endswith("\n") and "\u202e" not in text and "\x1b" not in text
    parsed = json.loads(text)
    [patient] = [
        e["resource"] for e in parsed["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert patient["name"][0]["text"] == name
