"""Monitoring plans and measurable goals on the CarePlan aggregate: every rule with plain
values, the fold, and thresholds that mean the same whichever unit they are given in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    GoalAdded,
    GoalTargetSet,
    MonitoringAdded,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.common import Comparator, Discipline, PlanStatus, Sensitivity
from services.common.commands import Command, build
from services.common.domain import Meta
from services.common.errors import InvalidInput, Missing, Refused, StateConflict
from services.plans.domain import measures
from services.plans.domain.careplan import (
    AddMonitoring,
    CarePlan,
    GoalTarget,
    Monitoring,
    SetGoalTarget,
    StopMonitoring,
    decide,
    evolve,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
META = Meta("u-1", NOW, "t-1")
GLUCOSE, HBA1C, PHQ9, WEIGHT = "2339-0", "4548-4", "44261-6", "29463-7"

CREATED = CarePlanCreated(plan_id="cp-1", patient_id="p-1", team_id="t-1", title="Diabetes")
GOAL = GoalAdded(plan_id="cp-1", goal_id="g-1", description="HbA1c under 7")
GLUCOSE_PLAN = MonitoringAdded(
    plan_id="cp-1",
    monitoring_id="m-1",
    measure_code=GLUCOSE,
    every_days=7,
    unit="mg/dL",
    low=70,
    high=180,
    critical_high=300,
    responsible_discipline=Discipline.NURSE,
)


def _fold(*events: Event) -> CarePlan:
    plan: CarePlan | None = None
    for event in events:
        plan = evolve(plan, event, META)
    assert plan is not None
    return plan


def _plan(*more: Event) -> CarePlan:
    return _fold(CREATED, GOAL, GLUCOSE_PLAN, *more)


def _monitor(**fields: Any) -> AddMonitoring:
    base: dict[str, Any] = {
        "plan_id": "cp-1",
        "monitoring_id": "m-2",
        "measure_code": GLUCOSE,
        "every_days": 7,
        "unit": "mg/dL",
        "low": 70,
        "high": 180,
        "critical_high": 300,
        "responsible_discipline": "NURSE",
    }
    return build(AddMonitoring, **{**base, **fields})


def _target(**fields: Any) -> SetGoalTarget:
    base: dict[str, Any] = {
        "plan_id": "cp-1",
        "goal_id": "g-1",
        "measure_code": HBA1C,
        "comparator": "LT",
        "value": 7,
        "unit": "%",
    }
    return build(SetGoalTarget, **{**base, **fields})


def _refusal(error: type[Refused], command: object, plan: CarePlan) -> str:
    with pytest.raises(error) as caught:
        decide(command, plan, NOW)
    return str(caught.value)


# --- adding a monitoring plan -----------------------------------------------------------


def test_adding_monitoring_records_its_fields_in_the_unit_given() -> None:
    events = decide(_monitor(unit="mmol/L", low=3.9, high=10, critical_high=16.7), _plan(), NOW)
    assert events == [
        MonitoringAdded(
            plan_id="cp-1",
            monitoring_id="m-2",
            measure_code=GLUCOSE,
            every_days=7,
            unit="mmol/L",
            low=3.9,
            high=10,
            critical_high=16.7,
            responsible_discipline=Discipline.NURSE,
        )
    ]


def test_a_monitoring_plan_carries_the_given_tags_and_the_measures_own() -> None:
    command = _monitor(
        measure_code=PHQ9,
        unit="{score}",
        low=None,
        high=9,
        critical_high=20,
        responsible_discipline="MENTAL_HEALTH",
        sensitivity=("SUBSTANCE_USE", "MENTAL_HEALTH"),
    )
    (event,) = decide(command, _plan(), NOW)
    assert isinstance(event, MonitoringAdded)
    assert event.sensitivity == (Sensitivity.SUBSTANCE_USE, Sensitivity.MENTAL_HEALTH)
    untagged = _monitor(measure_code=PHQ9, unit="{score}", low=None, high=9, critical_high=20)
    (event,) = decide(untagged, _plan(), NOW)
    assert isinstance(event, MonitoringAdded)
    assert event.sensitivity == (Sensitivity.MENTAL_HEALTH,)


def test_monitoring_an_unknown_measure_names_the_known_ones() -> None:
    message = _refusal(InvalidInput, _monitor(measure_code="0000-0"), _plan())
    assert message.startswith("measureCode is not a measure of the catalogue; known: 2339-0")


def test_monitoring_in_a_unit_the_measure_does_not_take_names_the_ones_it_takes() -> None:
    message = _refusal(InvalidInput, _monitor(unit="kg"), _plan())
    assert message.startswith("unit must be one of mg/dL, mmol/L for Glucose")


@pytest.mark.parametrize(("every_days", "ok"), [(0, False), (1, True), (92, True), (93, False)])
def test_every_days_is_from_1_to_92(every_days: int, ok: bool) -> None:
    command = _monitor(every_days=every_days)
    if ok:
        assert len(decide(command, _plan(), NOW)) == 1
    else:
        assert _refusal(InvalidInput, command, _plan()) == "everyDays must be from 1 to 92"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"low": -0.75}, "low"),
        ({"high": 5001.5}, "high"),
        ({"critical_high": 3001.25}, "criticalHigh"),
        ({"critical_low": -1.5}, "criticalLow"),
    ],
)
def test_an_impossible_threshold_is_refused_naming_it_and_never_its_value(
    fields: dict[str, float], named: str
) -> None:
    message = _refusal(InvalidInput, _monitor(**fields), _plan())
    assert message.startswith(f"{named} is not possible for Glucose")
    assert str(abs(next(iter(fields.values())))) not in message


def test_a_fraction_of_a_whole_measure_is_refused_as_a_threshold() -> None:
    command = _monitor(measure_code=PHQ9, unit="{score}", low=None, high=9.5, critical_high=None)
    assert _refusal(InvalidInput, command, _plan()).startswith("high must be a whole number")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"low": 180, "high": 70}, "low must not be above high"),
        ({"high": 300, "critical_high": 300}, "high must be below criticalHigh"),
        ({"critical_low": 70}, "criticalLow must be below low"),
        ({"low": 70, "high": None, "critical_high": 60}, "low must be below criticalHigh"),
        (
            {"critical_low": 200, "low": None, "high": None, "critical_high": 100},
            "criticalLow must be below criticalHigh",
        ),
    ],
)
def test_thresholds_must_be_ordered(fields: dict[str, float | None], message: str) -> None:
    assert _refusal(InvalidInput, _monitor(**fields), _plan()) == message


def test_low_may_equal_high() -> None:
    assert len(decide(_monitor(low=100, high=100), _plan(), NOW)) == 1


def test_thresholds_are_compared_in_the_canonical_unit() -> None:
    # 10 mmol/L is 180 mg/dL: above a low of 5 mmol/L, below a critical 16.7.
    ok = _monitor(unit="mmol/L", low=5, high=10, critical_high=16.7)
    assert len(decide(ok, _plan(), NOW)) == 1
    # Weight in pounds: 200 lb is about 91 kg, not 200 kg; still ordered.
    lb = _monitor(measure_code=WEIGHT, unit="[lb_av]", low=150, high=200, critical_high=None)
    assert len(decide(lb, _plan(), NOW)) == 1


def test_a_monitoring_plan_needs_a_threshold() -> None:
    command = _monitor(low=None, high=None, critical_high=None)
    message = _refusal(InvalidInput, command, _plan())
    assert message == "give at least one of low, high, criticalLow, criticalHigh"


def test_a_single_critical_threshold_is_enough() -> None:
    command = _monitor(low=None, high=None, critical_high=300)
    assert len(decide(command, _plan(), NOW)) == 1


def test_adding_monitoring_with_an_id_already_on_the_plan_is_a_conflict() -> None:
    message = _refusal(StateConflict, _monitor(monitoring_id="m-1"), _plan())
    assert message == "Monitoring m-1 is already on this plan."


# --- stopping ---------------------------------------------------------------------------


def test_stopping_monitoring_records_the_reason_cleaned() -> None:
    command = build(StopMonitoring, plan_id="cp-1", monitoring_id="m-1", reason="  Cafe\u0301  ")
    assert decide(command, _plan(), NOW) == [
        MonitoringStopped(plan_id="cp-1", monitoring_id="m-1", reason="Caf\u00e9")
    ]


def test_a_reason_with_a_hidden_character_is_refused() -> None:
    with pytest.raises(InvalidInput, match="reason must not contain a bidirectional"):
        build(StopMonitoring, plan_id="cp-1", monitoring_id="m-1", reason="ok\u202e")


def test_stopping_unknown_monitoring_is_missing() -> None:
    command = build(StopMonitoring, plan_id="cp-1", monitoring_id="m-9", reason="done")
    assert _refusal(Missing, command, _plan()) == "Care plan cp-1 has no monitoring m-9."


def test_stopping_monitoring_twice_is_a_conflict() -> None:
    stopped = MonitoringStopped(plan_id="cp-1", monitoring_id="m-1", reason="done")
    command = build(StopMonitoring, plan_id="cp-1", monitoring_id="m-1", reason="again")
    assert _refusal(StateConflict, command, _plan(stopped)) == "Monitoring m-1 is already stopped."


# --- goal targets -----------------------------------------------------------------------


def test_setting_a_goal_target_records_it() -> None:
    assert decide(_target(), _plan(), NOW) == [
        GoalTargetSet(
            plan_id="cp-1",
            goal_id="g-1",
            measure_code=HBA1C,
            comparator=Comparator.LT,
            value=7,
            unit="%",
        )
    ]


def test_a_target_for_an_unknown_goal_is_missing() -> None:
    assert _refusal(Missing, _target(goal_id="g-9"), _plan()) == "Care plan cp-1 has no goal g-9."


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"measure_code": "x"}, "measureCode is not a measure of the catalogue"),
        ({"unit": "mg/dL"}, "unit must be one of %"),
        ({"value": 30}, "value is not possible for Hemoglobin A1c"),
        ({"high": 8}, "high is only for BETWEEN, not LT"),
        ({"comparator": "BETWEEN"}, "high is needed for BETWEEN"),
        ({"comparator": "BETWEEN", "high": 7}, "high must be above value for BETWEEN"),
        ({"comparator": "BETWEEN", "high": 26}, "high is not possible for Hemoglobin A1c"),
    ],
)
def test_a_goal_target_is_refused_unless_sound(fields: dict[str, Any], message: str) -> None:
    assert _refusal(InvalidInput, _target(**fields), _plan()).startswith(message)


def test_a_between_target_in_another_unit_is_compared_canonically() -> None:
    command = _target(measure_code=GLUCOSE, comparator="BETWEEN", value=4, high=10, unit="mmol/L")
    assert len(decide(command, _plan(), NOW)) == 1


# --- closed plans and the fold ----------------------------------------------------------

EDITS: dict[str, Command] = {
    "add-monitoring": _monitor(),
    "stop-monitoring": build(StopMonitoring, plan_id="cp-1", monitoring_id="m-1", reason="x"),
    "set-goal-target": _target(),
}


@pytest.mark.parametrize("closed", [PlanStatus.COMPLETED, PlanStatus.REVOKED])
@pytest.mark.parametrize("name", list(EDITS))
def test_a_closed_plan_refuses_monitoring_and_targets(closed: PlanStatus, name: str) -> None:
    status = PlanStatusChanged(plan_id="cp-1", status=closed, previous=PlanStatus.DRAFT)
    message = _refusal(StateConflict, EDITS[name], _plan(status))
    assert message == f"Care plan cp-1 is {closed.value}; it can no longer be changed."


def test_folding_monitoring_and_targets() -> None:
    phq = MonitoringAdded(
        plan_id="cp-1",
        monitoring_id="m-2",
        measure_code=PHQ9,
        every_days=30,
        unit="{score}",
        high=9,
        responsible_discipline=Discipline.MENTAL_HEALTH,
        sensitivity=(Sensitivity.MENTAL_HEALTH,),
    )
    target = GoalTargetSet(
        plan_id="cp-1",
        goal_id="g-1",
        measure_code=HBA1C,
        comparator=Comparator.LT,
        value=7,
        unit="%",
    )
    stopped = MonitoringStopped(plan_id="cp-1", monitoring_id="m-1", reason="done")
    plan = _plan(phq, target, stopped)
    assert plan.monitoring == (
        Monitoring(
            id="m-1",
            measure_code=GLUCOSE,
            every_days=7,
            unit="mg/dL",
            low=70,
            high=180,
            critical_low=None,
            critical_high=300,
            responsible_discipline=Discipline.NURSE,
            sensitivity=(),
            active=False,
            stopped_reason="done",
        ),
        Monitoring(
            id="m-2",
            measure_code=PHQ9,
            every_days=30,
            unit="{score}",
            low=None,
            high=9,
            critical_low=None,
            critical_high=None,
            responsible_discipline=Discipline.MENTAL_HEALTH,
            sensitivity=(Sensitivity.MENTAL_HEALTH,),
        ),
    )
    goal = plan.goal("g-1")
    assert goal is not None
    assert goal.measurable == GoalTarget(HBA1C, Comparator.LT, 7, None, "%")
    assert plan.patients() == {"p-1": frozenset({Sensitivity.MENTAL_HEALTH})}


def test_a_later_target_replaces_the_earlier_one() -> None:
    first = GoalTargetSet(
        plan_id="cp-1",
        goal_id="g-1",
        measure_code=HBA1C,
        comparator=Comparator.LT,
        value=8,
        unit="%",
    )
    second = first.model_copy(update={"value": 7.0, "comparator": Comparator.LE})
    goal = _plan(first, second).goal("g-1")
    assert goal is not None and goal.measurable == GoalTarget(HBA1C, Comparator.LE, 7, None, "%")


def test_a_phq9_goal_target_makes_the_plan_touch_mental_health() -> None:
    target = GoalTargetSet(
        plan_id="cp-1",
        goal_id="g-1",
        measure_code=PHQ9,
        comparator=Comparator.LT,
        value=5,
        unit="{score}",
    )
    assert _plan().patients() == {"p-1": frozenset()}
    assert _plan(target).patients() == {"p-1": frozenset({Sensitivity.MENTAL_HEALTH})}


# --- the same thresholds in another unit ------------------------------------------------

_MMOL = st.floats(min_value=0.1, max_value=160, allow_nan=False, allow_infinity=False)
_OPTIONAL = st.one_of(st.none(), _MMOL)


@given(critical_low=_OPTIONAL, low=_OPTIONAL, high=_OPTIONAL, critical_high=_OPTIONAL)
def test_threshold_order_means_the_same_in_mmol_and_mg(
    critical_low: float | None,
    low: float | None,
    high: float | None,
    critical_high: float | None,
) -> None:
    """Thresholds given in mmol/L are accepted or refused exactly as the same thresholds
    converted to mg/dL are: valid sets stay valid, refused ones stay refused."""
    glucose = measures.measure(GLUCOSE)
    given_mmol = {
        "critical_low": critical_low,
        "low": low,
        "high": high,
        "critical_high": critical_high,
    }
    given_mg = {
        name: None if v is None else measures.convert(glucose, v, "mmol/L", "mg/dL")
        for name, v in given_mmol.items()
    }

    def outcome(unit: str, thresholds: dict[str, float | None]) -> str:
        try:
            decide(_monitor(unit=unit, **thresholds), _plan(), NOW)
        except InvalidInput as refused:
            return str(refused)
        return "ok"

    assert outcome("mmol/L", given_mmol) == outcome("mg/dL", given_mg)
