"""Readings in the FHIR export: one Observation per reading (LOINC code, UCUM valueQuantity
as given, category, times, source), its interpretation H/L/HH/LL/N against the monitoring
plans that ran when it was recorded (thresholds converted to the canonical unit), its labels,
and a measurable goal's dueDate and achievementStatus from the readings. Dates are relative
to the export's `now` (tests.unit.test_fhir_mapping.NOW), never to the calendar."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from fhir.resources.R4B import bundle as fhir_bundle
from fhir.resources.R4B.goal import Goal as FhirGoal
from fhir.resources.R4B.observation import Observation as FhirObservation

from schemas.careplan import MonitoringAdded, MonitoringStopped
from schemas.common import Comparator, Discipline, GoalStatus, Purpose, Sensitivity
from schemas.envelope import Envelope
from schemas.observation import ObservationSource
from services.fhir import codes
from services.fhir import observations as readings
from services.fhir.mapping import PatientRecord, build_bundle
from services.fhir.observations import Span, span_key
from services.plans.domain import measures
from services.plans.domain.careplan import GoalTarget
from services.plans.domain.observation import Observation
from tests.fhir import references_in
from tests.unit.test_fhir_mapping import NOW, as_json, coded_elements, export, resources
from tests.unit.test_fhir_monitoring import GLUCOSE, PHQ9, labels, monitored

GLUCOSE_CODE, HBA1C_CODE, PHQ9_CODE, STEPS_CODE = "2339-0", "4548-4", "44261-6", "41950-7"
# The same limits as GLUCOSE (70-180 mg/dL, critical at 300), given in mmol/L.
GLUCOSE_MMOL = replace(
    GLUCOSE,
    id="m-mmol",
    unit="mmol/L",
    low=3.9,
    high=10.0,
    critical_low=2.8,
    critical_high=16.7,
)


def reading(
    patient_id: str,
    code: str,
    value: float,
    unit: str,
    *,
    hours_ago: float = 1,
    source: ObservationSource = ObservationSource.CLINIC,
    note: str | None = None,
) -> Observation:
    """A reading as the Observation aggregate folds it: canonical value by the catalogue."""
    m = measures.measure(code)
    at = NOW - timedelta(hours=hours_ago)
    return Observation(
        id=f"obs-{uuid.uuid4().hex[:8]}",
        patient_id=patient_id,
        team_id="team-1",
        measure_code=code,
        value=value,
        unit=unit,
        canonical_value=measures.canonical(m, value, unit),
        canonical_unit=m.unit,
        at=at,
        source=source,
        recorded_by="n-1",
        recorded_at=at + timedelta(minutes=5),
        note=note,
        sensitivity=m.sensitivity,
    )


def with_readings(record: PatientRecord, *taken: Observation, **spans: Span) -> PatientRecord:
    plan_id = record.plans[0].id if record.plans else "plan"
    return replace(
        record,
        observations=list(taken),
        monitoring_spans={span_key(plan_id, m): s for m, s in spans.items()},
    )


def one_observation(record: PatientRecord, purpose: Purpose = Purpose.TREATMENT) -> FhirObservation:
    [found] = resources(export(record, purpose), FhirObservation)
    return found


def interpretation_of(found: FhirObservation) -> str | None:
    if not found.interpretation:
        return None
    [concept] = found.interpretation
    [coding] = concept.coding
    assert coding.system == codes.INTERPRETATION
    return str(coding.code)


# --- the Observation resource -------------------------------------------------------


def test_a_reading_is_a_final_observation_with_loinc_code_ucum_quantity_times_and_category() -> (
    None
):
    record = monitored(GLUCOSE)
    patient_id = record.patient.id
    taken = reading(patient_id, GLUCOSE_CODE, 7.2, "mmol/L", hours_ago=30, note="after lunch")
    exported = export(with_readings(record, taken))
    document = as_json(exported)

    fhir_bundle.Bundle.model_validate_json(exported.bundle.model_dump_json())
    [found] = resources(exported, FhirObservation)
    assert found.status == "final"
    assert [(c.system, c.code, c.display) for c in found.code.coding] == [
        (codes.LOINC, GLUCOSE_CODE, measures.measure(GLUCOSE_CODE).name)
    ]
    [category] = found.category
    assert [(c.system, c.code) for c in category.coding] == [
        (codes.OBSERVATION_CATEGORY, "laboratory")
    ]
    assert found.subject.reference == exported.bundle.entry[0].fullUrl
    assert (found.effectiveDateTime, found.issued) == (taken.at, taken.recorded_at)
    # The value in the unit it was given in, not the canonical one.
    q = found.valueQuantity
    assert (float(q.value), q.unit, q.system, q.code) == (7.2, "mmol/L", codes.UCUM, "mmol/L")
    assert [n.text for n in found.note] == ["after lunch"]
    assert found.performer is None  # measured in the clinic: no patient performer
    [source] = found.extension
    assert (source.url, source.valueCoding.code) == (codes.SOURCE_EXTENSION, "CLINIC")
    assert {(i.system, i.value) for i in found.identifier} == {(codes.sid("observation"), taken.id)}
    assert exported.counts["Observation"] == 1
    assert set(references_in(document)) <= {e["fullUrl"] for e in document["entry"]}
    bad = [(n, v) for n, v, allowed in coded_elements(exported.bundle) if v not in allowed]
    assert not bad
    assert "Observation.status" in {n for n, _, _ in coded_elements(exported.bundle)}


@pytest.mark.parametrize(
    ("code", "value", "unit", "category"),
    [
        ("8480-6", 128, "mm[Hg]", "vital-signs"),
        ("29463-7", 180, "[lb_av]", "vital-signs"),
        (HBA1C_CODE, 7.4, "%", "laboratory"),
        (PHQ9_CODE, 12, "{score}", "survey"),
        (STEPS_CODE, 6400, "/d", "activity"),
    ],
)
def test_each_measure_takes_its_observation_category(
    code: str, value: float, unit: str, category: str
) -> None:
    record = monitored()
    found = one_observation(with_readings(record, reading(record.patient.id, code, value, unit)))
    assert found.category[0].coding[0].code == category
    assert (float(found.valueQuantity.value), found.valueQuantity.code) == (value, unit)


def test_a_patient_reported_reading_names_the_patient_as_performer() -> None:
    record = monitored()
    taken = reading(
        record.patient.id, GLUCOSE_CODE, 140, "mg/dL", source=ObservationSource.PATIENT_REPORTED
    )
    exported = export(with_readings(record, taken))
    [found] = resources(exported, FhirObservation)

    [performer] = found.performer
    assert performer.reference == exported.bundle.entry[0].fullUrl
    assert found.extension[0].valueCoding.code == "PATIENT_REPORTED"


def test_only_the_patients_own_readings_go_out() -> None:
    record = monitored()
    other = reading("another-patient", GLUCOSE_CODE, 140, "mg/dL")
    exported = export(with_readings(record, other))
    assert resources(exported, FhirObservation) == []


# --- interpretation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(320, "HH"), (300, "HH"), (200, "H"), (180, "N"), (120, "N"), (70, "N"), (60, "L")],
)
def test_a_reading_is_interpreted_against_its_monitoring_plans_thresholds(
    value: float, expected: str
) -> None:
    record = monitored(GLUCOSE)
    found = one_observation(
        with_readings(record, reading(record.patient.id, GLUCOSE_CODE, value, "mg/dL"))
    )
    assert interpretation_of(found) == expected


def test_a_critically_low_reading_is_ll() -> None:
    limits = replace(GLUCOSE, critical_low=54)
    record = monitored(limits)
    found = one_observation(
        with_readings(record, reading(record.patient.id, GLUCOSE_CODE, 50, "mg/dL"))
    )
    assert interpretation_of(found) == "LL"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        # 200 mg/dL = 11.1 mmol/L, above high 10 mmol/L (but under 180 mg/dL it would not be).
        (200, "mg/dL", "H"),
        (175, "mg/dL", "N"),  # 9.7 mmol/L
        (310, "mg/dL", "HH"),  # 17.2 mmol/L, critical 16.7
        (65, "mg/dL", "L"),  # 3.6 mmol/L, low 3.9
        (45, "mg/dL", "LL"),  # 2.5 mmol/L, critical low 2.8
        (11.5, "mmol/L", "H"),
    ],
)
def test_thresholds_given_in_mmol_per_l_judge_a_reading_given_in_mg_per_dl(
    value: float, unit: str, expected: str
) -> None:
    record = monitored(GLUCOSE_MMOL)
    found = one_observation(
        with_readings(record, reading(record.patient.id, GLUCOSE_CODE, value, unit))
    )
    assert interpretation_of(found) == expected
    assert found.valueQuantity.code == unit


def test_without_a_monitoring_plan_of_the_measure_a_reading_has_no_interpretation() -> None:
    record = monitored(PHQ9)  # a plan of another measure
    found = one_observation(
        with_readings(record, reading(record.patient.id, GLUCOSE_CODE, 400, "mg/dL"))
    )
    assert found.interpretation is None


def test_plans_that_disagree_give_the_most_severe_interpretation() -> None:
    strict = replace(GLUCOSE, id="m-strict", high=130, critical_high=None)
    lenient = replace(GLUCOSE, id="m-lenient", high=250, critical_high=None)
    record = monitored(lenient, strict)
    found = one_observation(
        with_readings(record, reading(record.patient.id, GLUCOSE_CODE, 200, "mg/dL"))
    )
    assert interpretation_of(found) == "H"
    critical = monitored(lenient, GLUCOSE, strict)
    found = one_observation(
        with_readings(critical, reading(critical.patient.id, GLUCOSE_CODE, 305, "mg/dL"))
    )
    assert interpretation_of(found) == "HH"


def test_only_a_monitoring_plan_running_when_the_reading_was_recorded_judges_it() -> None:
    record = monitored(replace(GLUCOSE, active=False, stopped_reason="done"))
    before = reading(record.patient.id, GLUCOSE_CODE, 200, "mg/dL", hours_ago=72)
    during = reading(record.patient.id, GLUCOSE_CODE, 200, "mg/dL", hours_ago=36)
    after = reading(record.patient.id, GLUCOSE_CODE, 200, "mg/dL", hours_ago=12)
    # Taken before the plan began, typed in while it ran (a patient's diary).
    diary = replace(before, id="obs-diary", recorded_at=NOW - timedelta(hours=30))
    ran = Span(NOW - timedelta(hours=48), NOW - timedelta(hours=24))
    exported = export(with_readings(record, before, during, after, diary, **{GLUCOSE.id: ran}))

    found = {
        o.identifier[0].value: interpretation_of(o) for o in resources(exported, FhirObservation)
    }
    assert found == {before.id: None, during.id: "H", after.id: None, diary.id: "H"}


def test_the_spans_of_monitoring_plans_come_from_their_events_times() -> None:
    added, stopped = NOW - timedelta(days=9), NOW - timedelta(days=2)

    def envelope(n: int, event: MonitoringAdded | MonitoringStopped, at: datetime) -> Envelope:
        return Envelope(
            event_id=uuid.uuid4(),
            type=event.event_type,
            schema_version=event.schema_version,
            stream_id="careplan-p-1",
            stream_version=n,
            team_id="team-1",
            patient_id="pat-1",
            actor_id="lead-1",
            occurred_at=at,
            correlation_id="c",
            payload=event,
        )

    def add(monitoring_id: str) -> MonitoringAdded:
        return MonitoringAdded(
            plan_id="p-1",
            monitoring_id=monitoring_id,
            measure_code=GLUCOSE_CODE,
            every_days=7,
            unit="mg/dL",
            high=180,
            responsible_discipline=Discipline.NURSE,
        )

    spans = readings.monitoring_spans(
        [
            envelope(1, add("m-1"), added),
            envelope(2, add("m-2"), added + timedelta(days=1)),
            envelope(3, MonitoringStopped(plan_id="p-1", monitoring_id="m-1", reason="x"), stopped),
        ]
    )
    assert spans == {
        "p-1/m-1": Span(added, stopped),
        "p-1/m-2": Span(added + timedelta(days=1), None),
    }
    assert spans["p-1/m-1"].covers(added) and not spans["p-1/m-1"].covers(stopped)


# --- labels and GINA ----------------------------------------------------------------


def test_a_reading_carries_its_measures_and_its_monitoring_plans_sensitivity() -> None:
    substance = replace(GLUCOSE, sensitivity=(Sensitivity.SUBSTANCE_USE,))
    record = monitored(substance)
    pid = record.patient.id
    exported = export(
        with_readings(
            record,
            reading(pid, PHQ9_CODE, 14, "{score}"),
            reading(pid, GLUCOSE_CODE, 120, "mg/dL"),
            reading(pid, "8480-6", 120, "mm[Hg]"),
        )
    )
    phq, glucose, pressure = resources(exported, FhirObservation)
    assert labels(phq) == {"BH"}
    assert labels(glucose) == {"ETH"}
    assert labels(pressure) == set()
    assert {Sensitivity.MENTAL_HEALTH, Sensitivity.SUBSTANCE_USE} <= exported.sensitivity


def test_readings_of_a_genetic_tagged_monitoring_plan_are_left_out_where_gina_bars_it() -> None:
    genetic = replace(GLUCOSE, id="m-gen", sensitivity=(Sensitivity.GENETIC,))
    record = monitored(genetic)
    pid = record.patient.id
    record = with_readings(
        record, reading(pid, GLUCOSE_CODE, 200, "mg/dL"), reading(pid, "8480-6", 120, "mm[Hg]")
    )

    for_treatment = export(record)
    assert [labels(o) for o in resources(for_treatment, FhirObservation)] == [{"GDIS"}, set()]
    for_employment = export(record, Purpose.EMPLOYMENT)
    [kept] = resources(for_employment, FhirObservation)
    assert kept.code.coding[0].code == "8480-6"
    assert for_employment.left_out == {"care plan activity": 1, "observation": 1}
    assert "GDIS" not in for_employment.bundle.model_dump_json()


# --- measurable goals: dueDate and achievementStatus --------------------------------


def goal_record(
    target: GoalTarget, status: GoalStatus = GoalStatus.IN_PROGRESS, due_in: int | None = 60
) -> PatientRecord:
    record = monitored(targets=(target,))
    [plan] = record.plans
    due = NOW.date() + timedelta(days=due_in) if due_in is not None else None
    first = replace(plan.goals[0], status=status, due_date=due)
    plan = replace(plan, goals=(first,))
    return replace(record, plans=[plan])


def the_goal(record: PatientRecord) -> FhirGoal:
    [goal] = resources(export(record), FhirGoal)
    return goal


def achievement(goal: FhirGoal) -> str | None:
    if goal.achievementStatus is None:
        return None
    [coding] = goal.achievementStatus.coding
    assert coding.system == codes.GOAL_ACHIEVEMENT
    return str(coding.code)


HBA1C_BELOW_7 = GoalTarget(HBA1C_CODE, Comparator.LT, 7, None, "%")


@pytest.mark.parametrize(
    ("values", "due_in", "expected"),
    [
        ((8.1, 6.8), 60, "achieved"),  # the latest meets the target
        ((8.4, 7.9), 60, "in-progress"),  # coming closer, time to go
        ((7.6, 8.2), 60, "worsening"),  # trending away
        ((7.9,), 10, "worsening"),  # missed with the due date near
        ((), 60, None),  # NO_DATA: no element
    ],
)
def test_a_measurable_goals_achievement_comes_from_its_readings(
    values: tuple[float, ...], due_in: int, expected: str | None
) -> None:
    record = goal_record(HBA1C_BELOW_7, due_in=due_in)
    pid = record.patient.id
    taken = [
        reading(pid, HBA1C_CODE, v, "%", hours_ago=24 * 30 * (len(values) - i))
        for i, v in enumerate(values)
    ]
    goal = the_goal(with_readings(record, *taken))
    assert achievement(goal) == expected
    [target] = goal.target
    assert target.dueDate == NOW.date() + timedelta(days=due_in)
    assert target.detailQuantity.value == 7


def test_a_goal_target_in_mmol_per_l_is_judged_on_readings_in_mg_per_dl() -> None:
    # Fasting glucose between 4.4 and 7.2 mmol/L (79-130 mg/dL).
    between = GoalTarget(GLUCOSE_CODE, Comparator.BETWEEN, 4.4, 7.2, "mmol/L")
    record = goal_record(between)
    pid = record.patient.id
    assert (
        achievement(the_goal(with_readings(record, reading(pid, GLUCOSE_CODE, 110, "mg/dL"))))
        == "achieved"
    )
    assert (
        achievement(the_goal(with_readings(record, reading(pid, GLUCOSE_CODE, 140, "mg/dL"))))
        == "in-progress"
    )


def test_a_goal_without_a_due_date_has_no_due_date_and_what_the_team_recorded_stands() -> None:
    pid_record = goal_record(HBA1C_BELOW_7, due_in=None)
    pid = pid_record.patient.id
    met = reading(pid, HBA1C_CODE, 6.5, "%")
    goal = the_goal(with_readings(pid_record, met))
    assert goal.target[0].dueDate is None and achievement(goal) == "achieved"

    recorded = goal_record(HBA1C_BELOW_7, GoalStatus.NOT_ACHIEVED)
    assert achievement(the_goal(with_readings(recorded, met))) == "not-achieved"
    cancelled = goal_record(HBA1C_BELOW_7, GoalStatus.CANCELLED)
    assert achievement(the_goal(with_readings(cancelled, met))) is None


def test_a_goals_achievement_counts_only_readings_that_go_out_and_carries_their_labels() -> None:
    genetic = replace(
        GLUCOSE,
        id="m-gen",
        measure_code=HBA1C_CODE,
        unit="%",
        low=None,
        high=8,
        critical_high=None,
        sensitivity=(Sensitivity.GENETIC,),
    )
    record = goal_record(HBA1C_BELOW_7)
    record = replace(record, plans=[replace(record.plans[0], monitoring=(genetic,))])
    record = with_readings(record, reading(record.patient.id, HBA1C_CODE, 6.5, "%"))

    treated = the_goal(record)
    assert (achievement(treated), labels(treated)) == ("achieved", {"GDIS"})
    [employment] = resources(export(record, Purpose.EMPLOYMENT), FhirGoal)
    assert (achievement(employment), labels(employment)) == (None, set())


def test_the_bundle_with_readings_and_goals_validates_and_every_reference_resolves() -> None:
    record = goal_record(HBA1C_BELOW_7)
    record = replace(record, plans=[replace(record.plans[0], monitoring=(GLUCOSE, PHQ9))])
    pid = record.patient.id
    record = with_readings(
        record,
        reading(pid, HBA1C_CODE, 6.9, "%"),
        reading(pid, GLUCOSE_CODE, 260, "mg/dL", source=ObservationSource.PATIENT_REPORTED),
        reading(pid, PHQ9_CODE, 5, "{score}", source=ObservationSource.DEVICE),
    )
    exported = export(record)
    text = exported.bundle.model_dump_json()
    parsed = fhir_bundle.Bundle.model_validate_json(text)
    document = json.loads(text)

    assert [e.resource.get_resource_type() for e in parsed.entry or [] if e.resource].count(
        "Observation"
    ) == 3
    assert set(references_in(document)) <= {e["fullUrl"] for e in document["entry"]}
    assert not [(n, v) for n, v, allowed in coded_elements(exported.bundle) if v not in allowed]


def test_today_for_goal_progress_is_the_exports_day() -> None:
    # Due in 20 days, no closer than before: on track today, at risk a week later.
    record = goal_record(HBA1C_BELOW_7, due_in=20)
    pid = record.patient.id
    record = with_readings(record, reading(pid, HBA1C_CODE, 7.5, "%"))
    assert achievement(the_goal(record)) == "in-progress"
    later = NOW + timedelta(days=7)
    [goal] = resources(
        build_bundle(record, purpose=Purpose.TREATMENT, now=later, bundle_id="b"), FhirGoal
    )
    assert achievement(goal) == "worsening"
