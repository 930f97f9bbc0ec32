"""Monitoring plans and measurable goals in the FHIR export: CarePlan.activity with the
LOINC measure and its interval, Goal.target with a UCUM quantity or range, the measure's
sensitivity as security labels, and GENETIC-tagged monitoring left out where GINA bars it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir.resources.R4B import bundle as fhir_bundle
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.goal import Goal as FhirGoal

from schemas.common import Comparator, Discipline, Purpose, Sensitivity
from services.fhir import codes
from services.fhir.mapping import PatientRecord
from services.plans.domain.careplan import GoalTarget, Monitoring
from tests.unit.test_fhir_mapping import coded_elements, export, resources, story

GLUCOSE = Monitoring(
    id="m-1",
    measure_code="2339-0",
    every_days=7,
    unit="mg/dL",
    low=70,
    high=180,
    critical_low=None,
    critical_high=300,
    responsible_discipline=Discipline.NURSE,
    sensitivity=(),
)
PHQ9 = Monitoring(
    id="m-2",
    measure_code="44261-6",
    every_days=28,
    unit="{score}",
    low=None,
    high=9,
    critical_low=None,
    critical_high=None,
    responsible_discipline=Discipline.MENTAL_HEALTH,
    sensitivity=(Sensitivity.MENTAL_HEALTH,),
)


def monitored(
    *monitoring: Monitoring, targets: tuple[GoalTarget | None, ...] = ()
) -> PatientRecord:
    record = story()
    [plan] = record.plans
    goals = tuple(
        replace(g, measurable=targets[i] if i < len(targets) else None)
        for i, g in enumerate(plan.goals)
    )
    plan = replace(plan, interventions=(), goals=goals, monitoring=monitoring)
    return replace(record, plans=[plan], tasks=[], consents=[], accesses=[])


def labels(resource: Any) -> set[str]:
    meta = resource.meta
    return {c.code for c in meta.security} if meta and meta.security else set()


def test_a_monitoring_plan_is_an_activity_with_its_loinc_measure_and_interval() -> None:
    exported = export(monitored(GLUCOSE, replace(PHQ9, active=False, stopped_reason="done")))
    fhir_bundle.Bundle.model_validate_json(exported.bundle.model_dump_json())

    [plan] = resources(exported, FhirCarePlan)
    glucose, phq9 = (a.detail for a in plan.activity)
    assert [(c.system, c.code) for c in glucose.code.coding] == [(codes.LOINC, "2339-0")]
    assert (glucose.scheduledTiming.repeat.period, glucose.scheduledTiming.repeat.periodUnit) == (
        7,
        "d",
    )
    assert (
        glucose.description == "Thresholds: low 70 mg/dL, high 180 mg/dL, critical high 300 mg/dL"
    )
    assert glucose.status == "in-progress"
    assert (phq9.status, phq9.statusReason.text) == ("stopped", "done")
    assert labels(plan) == {"BH"}
    bad = [(n, v) for n, v, allowed in coded_elements(exported.bundle) if v not in allowed]
    assert not bad


def test_a_measurable_goal_has_a_loinc_measure_and_a_ucum_quantity_or_range() -> None:
    below = GoalTarget("4548-4", Comparator.LT, 7, None, "%")
    between = GoalTarget("2339-0", Comparator.BETWEEN, 4, 10, "mmol/L")
    phq = GoalTarget("44261-6", Comparator.LE, 4, None, "{score}")
    exported = export(monitored(targets=(below, between, phq)))
    fhir_bundle.Bundle.model_validate_json(exported.bundle.model_dump_json())

    first, second, third, *_ = resources(exported, FhirGoal)
    target = first.target[0]
    assert [(c.system, c.code) for c in target.measure.coding] == [(codes.LOINC, "4548-4")]
    quantity = target.detailQuantity
    assert (quantity.value, quantity.comparator, quantity.system, quantity.code) == (
        7,
        "<",
        codes.UCUM,
        "%",
    )
    span = second.target[0].detailRange
    assert (span.low.value, span.high.value, span.low.code) == (4, 10, "mmol/L")
    # The goal's free-text target stays, as a second target.
    assert second.target[1].detailString == "< 7%"
    assert labels(first) == set() and labels(third) == {"BH"}
    assert exported.sensitivity == {Sensitivity.MENTAL_HEALTH}


def test_genetic_tagged_monitoring_is_left_out_for_employment() -> None:
    genetic = replace(GLUCOSE, id="m-3", sensitivity=(Sensitivity.GENETIC,))
    exported = export(monitored(GLUCOSE, genetic), Purpose.EMPLOYMENT)

    [plan] = resources(exported, FhirCarePlan)
    assert len(plan.activity) == 1
    assert exported.left_out == {"care plan activity": 1}
    assert "GDIS" not in exported.bundle.model_dump_json()
