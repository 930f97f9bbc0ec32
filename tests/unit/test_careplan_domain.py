"""The CarePlan aggregate: status and goal state machines, edits, reviews and the fold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import product

import pytest

from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    CarePlanReviewed,
    GoalAdded,
    GoalStatusChanged,
    InterventionAdded,
    InterventionDiscontinued,
    PlanStatusChanged,
)
from schemas.common import (
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Sensitivity,
    Tier,
)
from schemas.team import TeamCreated
from services.common.commands import Command, build
from services.common.domain import Meta
from services.common.errors import InvalidInput, Missing, Refused, StateConflict
from services.plans.domain.careplan import (
    CARE_PLAN,
    GOAL_MOVES,
    PLAN_MOVES,
    AddGoal,
    AddIntervention,
    CarePlan,
    CreateCarePlan,
    DiscontinueIntervention,
    Goal,
    Intervention,
    ReviewCarePlan,
    SetGoalStatus,
    SetPlanStatus,
    decide,
    evolve,
)
from services.plans.domain.team import CreateTeam

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
META = Meta("u-1", NOW, "t-1")

CREATED = CarePlanCreated(plan_id="cp-1", patient_id="p-1", team_id="t-1", title="Diabetes")
GOAL = GoalAdded(plan_id="cp-1", goal_id="g-1", description="HbA1c < 7.5%", target="7.5%")
INTERVENTION = InterventionAdded(
    plan_id="cp-1",
    intervention_id="i-1",
    kind=InterventionKind.MEDICATION,
    tier=Tier.FIRST_LINE,
    title="Metformin",
    responsible_discipline=Discipline.PHYSICIAN,
)

P, G = PlanStatus, GoalStatus
# The rules as documented, written out independently of PLAN_MOVES and GOAL_MOVES.
ALLOWED_PLAN = {
    (P.DRAFT, P.ACTIVE),
    (P.DRAFT, P.REVOKED),
    (P.ACTIVE, P.ON_HOLD),
    (P.ACTIVE, P.COMPLETED),
    (P.ACTIVE, P.REVOKED),
    (P.ON_HOLD, P.ACTIVE),
    (P.ON_HOLD, P.COMPLETED),
    (P.ON_HOLD, P.REVOKED),
}
ALLOWED_GOAL = {
    (G.PROPOSED, G.IN_PROGRESS),
    (G.PROPOSED, G.ACHIEVED),
    (G.PROPOSED, G.NOT_ACHIEVED),
    (G.PROPOSED, G.CANCELLED),
    (G.IN_PROGRESS, G.ACHIEVED),
    (G.IN_PROGRESS, G.NOT_ACHIEVED),
    (G.IN_PROGRESS, G.CANCELLED),
    (G.NOT_ACHIEVED, G.IN_PROGRESS),
    (G.NOT_ACHIEVED, G.CANCELLED),
}
PLAN_PAIRS = list(product(PlanStatus, PlanStatus))
GOAL_PAIRS = list(product(GoalStatus, GoalStatus))


def _fold(*events: Event) -> CarePlan:
    plan: CarePlan | None = None
    for event in events:
        plan = evolve(plan, event, META)
    assert plan is not None
    return plan


# How a fresh (DRAFT) plan reaches each status along PLAN_MOVES.
PLAN_PATHS: dict[PlanStatus, tuple[PlanStatus, ...]] = {
    PlanStatus.DRAFT: (),
    PlanStatus.ACTIVE: (PlanStatus.ACTIVE,),
    PlanStatus.ON_HOLD: (PlanStatus.ACTIVE, PlanStatus.ON_HOLD),
    PlanStatus.COMPLETED: (PlanStatus.ACTIVE, PlanStatus.COMPLETED),
    PlanStatus.REVOKED: (PlanStatus.REVOKED,),
}


def _plan(status: PlanStatus = PlanStatus.DRAFT, goal: GoalStatus | None = None) -> CarePlan:
    """A plan with goal g-1 (in status `goal`) and intervention i-1, in status `status`."""
    events: list[Event] = [CREATED, GOAL, INTERVENTION]
    if goal is not None and goal is not GoalStatus.PROPOSED:
        events.append(GoalStatusChanged(plan_id="cp-1", goal_id="g-1", status=goal))
    previous = PlanStatus.DRAFT
    for step in PLAN_PATHS[status]:
        events.append(PlanStatusChanged(plan_id="cp-1", status=step, previous=previous))
        previous = step
    plan = _fold(*events)
    assert plan.status is status
    return plan


def _add_goal(goal_id: str = "g-2", due: date | None = None) -> AddGoal:
    return build(AddGoal, plan_id="cp-1", goal_id=goal_id, description="Walk", due_date=due)


def _add_intervention(intervention_id: str = "i-2", due: date | None = None) -> AddIntervention:
    return build(
        AddIntervention,
        plan_id="cp-1",
        intervention_id=intervention_id,
        kind="THERAPY",
        tier="SECOND_LINE",
        title="CBT",
        detail="  weekly  ",
        responsible_discipline="MENTAL_HEALTH",
        sensitivity=("MENTAL_HEALTH", "MENTAL_HEALTH"),
        due_date=due,
    )


def _review(next_review: date = TODAY + timedelta(days=90)) -> ReviewCarePlan:
    return build(ReviewCarePlan, plan_id="cp-1", summary="Stable", next_review_date=next_review)


EDITS: dict[str, Command] = {
    "add-goal": _add_goal(),
    "set-goal-status": build(SetGoalStatus, plan_id="cp-1", goal_id="g-1", status="IN_PROGRESS"),
    "add-intervention": _add_intervention(),
    "discontinue": build(
        DiscontinueIntervention, plan_id="cp-1", intervention_id="i-1", reason="x"
    ),
    "review": _review(),
}


def _refusal(error: type[Refused], command: object, plan: CarePlan | None) -> Refused:
    with pytest.raises(error) as caught:
        decide(command, plan, NOW)
    return caught.value


def test_creating_a_plan_records_care_plan_created_and_starts_in_draft() -> None:
    command = build(
        CreateCarePlan, plan_id="cp-1", patient_id="p-1", team_id="t-1", title="Diabetes"
    )
    assert decide(command, None, NOW) == [CREATED]
    assert _fold(CREATED) == CarePlan(id="cp-1", patient_id="p-1", team_id="t-1", title="Diabetes")
    assert _fold(CREATED).status is PlanStatus.DRAFT


def test_creating_a_plan_that_exists_is_a_conflict() -> None:
    command = build(CreateCarePlan, plan_id="cp-1", patient_id="p-1", team_id="t-1", title="D")
    assert _refusal(StateConflict, command, _plan()).extensions == {"code": "CONFLICT"}


@pytest.mark.parametrize(
    "command", [*EDITS.values(), build(SetPlanStatus, plan_id="x", status="ACTIVE")]
)
def test_changing_a_plan_that_does_not_exist_is_a_conflict(command: Command) -> None:
    _refusal(StateConflict, command, None)


def test_plan_moves_are_exactly_the_documented_ones() -> None:
    assert {(a, b) for a, moves in PLAN_MOVES.items() for b in moves} == ALLOWED_PLAN
    assert set(PLAN_MOVES) == set(PlanStatus)


@pytest.mark.parametrize(("before", "after"), PLAN_PAIRS, ids=[f"{a}->{b}" for a, b in PLAN_PAIRS])
def test_a_plan_status_change_is_recorded_only_along_plan_moves(
    before: PlanStatus, after: PlanStatus
) -> None:
    command = build(SetPlanStatus, plan_id="cp-1", status=after)
    if (before, after) in ALLOWED_PLAN:
        events = decide(command, _plan(before), NOW)
        assert events == [PlanStatusChanged(plan_id="cp-1", status=after, previous=before)]
        assert evolve(_plan(before), events[0], META).status is after
    else:
        error = _refusal(StateConflict, command, _plan(before))
        assert error.extensions == {"code": "CONFLICT"}
        assert f"is {before.value}; it cannot become {after.value}" in str(error)


@pytest.mark.parametrize("closed", [PlanStatus.COMPLETED, PlanStatus.REVOKED])
def test_a_completed_or_revoked_plan_cannot_be_reactivated(closed: PlanStatus) -> None:
    command = build(SetPlanStatus, plan_id="cp-1", status="ACTIVE")
    assert str(_refusal(StateConflict, command, _plan(closed))).endswith("(that status is final).")


def test_a_refused_plan_move_lists_the_allowed_ones() -> None:
    error = _refusal(StateConflict, build(SetPlanStatus, plan_id="cp-1", status="ON_HOLD"), _plan())
    assert str(error).endswith("(it can become ACTIVE, REVOKED).")


@pytest.mark.parametrize("closed", [PlanStatus.COMPLETED, PlanStatus.REVOKED])
@pytest.mark.parametrize("name", list(EDITS))
def test_a_closed_plan_cannot_be_edited(closed: PlanStatus, name: str) -> None:
    error = _refusal(StateConflict, EDITS[name], _plan(closed))
    assert str(error) == f"Care plan cp-1 is {closed.value}; it can no longer be changed."


@pytest.mark.parametrize("status", [PlanStatus.DRAFT, PlanStatus.ACTIVE, PlanStatus.ON_HOLD])
@pytest.mark.parametrize("name", list(EDITS))
def test_an_open_plan_can_be_edited(status: PlanStatus, name: str) -> None:
    assert len(decide(EDITS[name], _plan(status), NOW)) == 1


def test_adding_a_goal_records_goal_added_with_its_fields() -> None:
    command = build(
        AddGoal, plan_id="cp-1", goal_id="g-2", description=" Walk ", target=" ", due_date=TODAY
    )
    assert decide(command, _plan(), NOW) == [
        GoalAdded(plan_id="cp-1", goal_id="g-2", description="Walk", target=None, due_date=TODAY)
    ]


def test_adding_a_goal_with_an_id_already_on_the_plan_is_a_conflict() -> None:
    _refusal(StateConflict, _add_goal("g-1"), _plan())


@pytest.mark.parametrize("make", [_add_goal, _add_intervention], ids=["goal", "intervention"])
@pytest.mark.parametrize(
    ("due", "ok"),
    [
        (TODAY, True),
        (TODAY + timedelta(days=1), True),
        (date(2036, 11, 22), True),
        (TODAY - timedelta(days=1), False),
        (date(2037, 1, 1), False),
    ],
    ids=str,
)
def test_due_dates_must_be_from_today_to_ten_years_ahead(
    make: Callable[[str, date], Command], due: date, ok: bool
) -> None:
    command = make("new-id", due)
    if ok:
        assert decide(command, _plan(), NOW)
    else:
        error = _refusal(InvalidInput, command, _plan())
        assert error.extensions == {"code": "BAD_USER_INPUT"}


def test_goal_moves_are_exactly_the_documented_ones() -> None:
    assert {(a, b) for a, moves in GOAL_MOVES.items() for b in moves} == ALLOWED_GOAL
    assert set(GOAL_MOVES) == set(GoalStatus)


@pytest.mark.parametrize(("before", "after"), GOAL_PAIRS, ids=[f"{a}->{b}" for a, b in GOAL_PAIRS])
def test_a_goal_status_change_is_recorded_only_along_goal_moves(
    before: GoalStatus, after: GoalStatus
) -> None:
    plan = _plan(PlanStatus.ACTIVE, goal=before)
    assert plan.goal("g-1") is not None
    command = build(SetGoalStatus, plan_id="cp-1", goal_id="g-1", status=after)
    if (before, after) in ALLOWED_GOAL:
        events = decide(command, plan, NOW)
        assert events == [GoalStatusChanged(plan_id="cp-1", goal_id="g-1", status=after)]
        goal = evolve(plan, events[0], META).goal("g-1")
        assert goal is not None
        assert goal.status is after
    else:
        error = _refusal(StateConflict, command, plan)
        assert error.extensions == {"code": "CONFLICT"}
        assert f"Goal g-1 is {before.value}; it cannot become {after.value}" in str(error)


def test_setting_the_status_of_an_unknown_goal_is_missing() -> None:
    command = build(SetGoalStatus, plan_id="cp-1", goal_id="g-9", status="ACHIEVED")
    error = _refusal(Missing, command, _plan())
    assert error.extensions == {"code": "NOT_FOUND"}
    assert "g-9" in str(error)


def test_adding_an_intervention_records_its_fields_trimmed_and_tags_distinct() -> None:
    assert decide(_add_intervention(due=TODAY), _plan(), NOW) == [
        InterventionAdded(
            plan_id="cp-1",
            intervention_id="i-2",
            kind=InterventionKind.THERAPY,
            tier=Tier.SECOND_LINE,
            title="CBT",
            detail="weekly",
            responsible_discipline=Discipline.MENTAL_HEALTH,
            sensitivity=(Sensitivity.MENTAL_HEALTH,),
            due_date=TODAY,
        )
    ]


def test_adding_an_intervention_with_an_id_already_on_the_plan_is_a_conflict() -> None:
    _refusal(StateConflict, _add_intervention("i-1"), _plan())


def test_discontinuing_an_intervention_records_the_reason() -> None:
    command = build(DiscontinueIntervention, plan_id="cp-1", intervention_id="i-1", reason=" GI ")
    events = decide(command, _plan(), NOW)
    assert events == [InterventionDiscontinued(plan_id="cp-1", intervention_id="i-1", reason="GI")]
    intervention = evolve(_plan(), events[0], META).intervention("i-1")
    assert intervention is not None
    assert (intervention.active, intervention.discontinued_reason) == (False, "GI")


def test_discontinuing_an_intervention_twice_is_a_conflict() -> None:
    command = build(DiscontinueIntervention, plan_id="cp-1", intervention_id="i-1", reason="x")
    plan = evolve(_plan(), decide(command, _plan(), NOW)[0], META)
    error = _refusal(StateConflict, command, plan)
    assert "already discontinued" in str(error)


def test_discontinuing_an_unknown_intervention_is_missing() -> None:
    command = build(DiscontinueIntervention, plan_id="cp-1", intervention_id="i-9", reason="x")
    error = _refusal(Missing, command, _plan())
    assert error.extensions == {"code": "NOT_FOUND"}


def test_reviewing_a_plan_records_the_summary_and_next_review_date() -> None:
    nxt = TODAY + timedelta(days=90)
    events = decide(_review(nxt), _plan(), NOW)
    assert events == [CarePlanReviewed(plan_id="cp-1", summary="Stable", next_review_date=nxt)]
    plan = evolve(_plan(), events[0], META)
    assert (plan.next_review_date, plan.last_review_summary) == (nxt, "Stable")


@pytest.mark.parametrize(
    ("nxt", "ok"),
    [
        (TODAY - timedelta(days=1), False),
        (TODAY, False),
        (TODAY + timedelta(days=1), True),
        (TODAY + timedelta(days=366), True),
        (TODAY + timedelta(days=367), False),
    ],
    ids=str,
)
def test_the_next_review_is_after_today_and_within_366_days(nxt: date, ok: bool) -> None:
    if ok:
        assert decide(_review(nxt), _plan(), NOW)
    else:
        _refusal(InvalidInput, _review(nxt), _plan())


def test_a_care_plan_cannot_handle_a_foreign_command() -> None:
    foreign = build(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A")
    with pytest.raises(InvalidInput, match="CreateTeam"):
        decide(foreign, _plan(), NOW)


def test_folding_goals_and_interventions_keeps_their_order_and_fields() -> None:
    second = GoalAdded(plan_id="cp-1", goal_id="g-2", description="Walk", due_date=TODAY)
    plan = _fold(CREATED, GOAL, INTERVENTION, second)
    assert plan.goals == (
        Goal("g-1", "HbA1c < 7.5%", "7.5%", None, GoalStatus.PROPOSED),
        Goal("g-2", "Walk", None, TODAY, GoalStatus.PROPOSED),
    )
    assert plan.interventions == (
        Intervention(
            id="i-1",
            kind=InterventionKind.MEDICATION,
            tier=Tier.FIRST_LINE,
            title="Metformin",
            detail=None,
            responsible_discipline=Discipline.PHYSICIAN,
            sensitivity=(),
            due_date=None,
        ),
    )
    assert plan.goal("nope") is None
    assert plan.intervention("nope") is None


def test_a_goal_status_change_touches_only_that_goal() -> None:
    second = GoalAdded(plan_id="cp-1", goal_id="g-2", description="Walk")
    plan = _fold(
        CREATED, GOAL, second, GoalStatusChanged(plan_id="cp-1", goal_id="g-2", status="ACHIEVED")
    )
    assert [g.status for g in plan.goals] == [GoalStatus.PROPOSED, GoalStatus.ACHIEVED]


def test_a_plan_event_before_care_plan_created_is_an_error() -> None:
    with pytest.raises(ValueError, match="before CarePlanCreated"):
        evolve(None, GOAL, META)


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = TeamCreated(team_id="t", name="n", lead_user_id="u", lead_name="A")
    with pytest.raises(ValueError, match="TeamCreated"):
        evolve(_plan(), foreign, META)


def test_the_care_plan_aggregate_type_names_its_stream() -> None:
    assert CARE_PLAN.stream_id("cp-1") == "careplan-cp-1"
    assert (CARE_PLAN.name, CARE_PLAN.decide, CARE_PLAN.evolve) == ("care plan", decide, evolve)
