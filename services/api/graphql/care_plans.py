"""Care plans: the CarePlan, Goal, Intervention and MonitoringPlan types, `carePlan`,
`carePlans`, and the plan changes (goals and their measurable targets, tiered interventions,
monitoring plans, status, reviews). Each change returns the plan as it
left it; the board tasks it causes are written with it (services.tasks.follow_ups)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import strawberry

from schemas.audit import AccessAction
from schemas.careplan import CarePlanCreated
from services.api.graphql import care_signals, guard, observations
from services.api.graphql.access import RESTRICTED, View, may_change, view, withheld
from services.api.graphql.context import Context, Info
from services.api.graphql.guard import present
from services.api.graphql.measures import Measure
from services.api.graphql.observations import Observation
from services.api.graphql.scalars import (
    Comparator,
    Discipline,
    GoalProgress,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Sensitivity,
    SignalStatus,
    Tier,
)
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.domain import touched
from services.common.policy import Action
from services.plans.domain import careplan, measures
from services.plans.domain.careplan import CARE_PLAN
from services.plans.domain.patient import PATIENT
from services.tasks import monitoring

_VERSION_NOTE = " Send expectedVersion to refuse the change if the plan moved on (CONFLICT)."


# What a redacted monitoring plan or goal target shows of its measure: a PHQ-9's code
# alone tells of the patient's mental health.
def _measure(code: str, hide: bool) -> Measure:
    if hide:
        return Measure(code=RESTRICTED, name=RESTRICTED, units=[])
    return Measure.from_domain(measures.measure(code))


@strawberry.type(
    description="What makes a goal measurable: readings of a measure compared with value "
    "(value to high for BETWEEN), in the unit the clinician gave. Withheld "
    f"({RESTRICTED} measure and unit, no values) where the measure's sensitivity is "
    "redacted for the viewer."
)
class GoalTarget:
    measure: Measure
    comparator: Comparator
    value: float | None
    high: float | None
    unit: str
    redacted: bool

    @classmethod
    def seen(cls, target: careplan.GoalTarget, patient_id: str, view: View) -> GoalTarget | None:
        decision = view.item(patient_id, target.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            measure=_measure(target.measure_code, hide),
            comparator=target.comparator,
            value=None if hide else target.value,
            high=None if hide else target.high,
            unit=RESTRICTED if hide else target.unit,
            redacted=hide,
        )


async def _goal_progress(root: Goal, info: Info) -> GoalProgress | None:
    target = root.state.measurable
    if target is None or root.measurable is None or root.measurable.redacted:
        return None  # not measurable, or its target (and so how far it came) is withheld
    ctx = info.context
    tags = await care_signals.progress_tags(ctx, root.plan, target)
    await root.view.include(ctx, {root.plan.patient_id: tags})
    decision = root.view.item(root.plan.patient_id, tags)
    if not decision.permitted or decision.redacted:
        return None  # the readings it is judged on are withheld
    found = await care_signals.plan_signals(ctx, root.plan.id)
    latest = found.latest.get((root.plan.patient_id, target.measure_code))
    state = care_signals.goal_state(root.state, root.plan)
    return monitoring.goal_progress(state, latest, care_signals.today(ctx))


async def _goal_latest(root: Goal, info: Info) -> Observation | None:
    target = root.state.measurable
    if target is None or root.measurable is None:
        return None
    return await _latest_reading(info.context, root.plan, target.measure_code, root.view)


async def _latest_reading(
    ctx: Context, plan: careplan.CarePlan, measure_code: str, view: View
) -> Observation | None:
    """The patient's latest reading of the measure (by when it was taken) as the signals
    read model knows it, read from its stream and shown through `view`."""
    found = await care_signals.plan_signals(ctx, plan.id)
    latest = found.latest.get((plan.patient_id, measure_code))
    if latest is None:
        return None
    item = await care_signals.observation(ctx, latest.observation_id)
    return None if item is None else await observations.reading_shown(ctx, item, view)


@strawberry.type(description="A SMART goal of a care plan.")
class Goal:
    id: strawberry.ID
    description: str
    target: str | None
    due_date: date | None
    status: GoalStatus
    measurable: GoalTarget | None = strawberry.field(
        description="The measure and target that make the goal measurable, once set."
    )
    state: strawberry.Private[careplan.Goal]
    plan: strawberry.Private[careplan.CarePlan]
    view: strawberry.Private[View]
    progress: GoalProgress | None = strawberry.field(
        resolver=_goal_progress,
        description="How far a measurable goal has come on its measure's latest readings "
        "(ACHIEVED: the latest meets the target; AT_RISK: it misses and is farther than the "
        "one before, or the due date is under 14 days away or past; ON_TRACK: it misses but "
        "no farther; NO_DATA: no reading yet), judged on today's UTC day. Null when the goal "
        "has no target or its target (or the readings it is judged on) is withheld from you.",
    )
    latest: Observation | None = strawberry.field(
        resolver=_goal_latest,
        description="The patient's latest reading of the target's measure; null without a "
        "target (or none yet).",
    )

    @classmethod
    def from_state(cls, goal: careplan.Goal, plan: careplan.CarePlan, view: View) -> Goal:
        target = goal.measurable
        return cls(
            id=strawberry.ID(goal.id),
            description=goal.description,
            target=goal.target,
            due_date=goal.due_date,
            status=goal.status,
            measurable=None if target is None else GoalTarget.seen(target, plan.patient_id, view),
            state=goal,
            plan=plan,
            view=view,
        )


async def _monitoring_status(root: MonitoringPlan, info: Info) -> SignalStatus:
    ctx = info.context
    found = await care_signals.plan_signals(ctx, root.plan.id)
    watch = found.watches.get(root.state.id)
    if watch is None:  # not in the read model yet
        return SignalStatus.NO_DATA
    latest = found.latest.get((watch.patient_id, watch.measure_code))
    plan = found.plans.get(watch.plan_id)
    return monitoring.watch_status(watch, latest, plan, ctx.now(), care_signals.grace(ctx))


async def _monitoring_latest(root: MonitoringPlan, info: Info) -> Observation | None:
    return await _latest_reading(info.context, root.plan, root.state.measure_code, root.view)


@strawberry.type(
    description="A monitoring plan of a care plan: a measure read every everyDays days, "
    "its thresholds in the unit the clinician gave, and the discipline that answers."
)
class MonitoringPlan:
    id: strawberry.ID
    measure: Measure
    every_days: int
    low: float | None
    high: float | None
    critical_low: float | None
    critical_high: float | None
    unit: str
    responsible_discipline: Discipline
    sensitivity: list[Sensitivity]
    active: bool
    redacted: bool = strawberry.field(
        description=f"True when the measure, unit and thresholds are withheld ({RESTRICTED}) "
        "by the consent policy."
    )
    stopped_reason: str | None
    state: strawberry.Private[careplan.Monitoring]
    plan: strawberry.Private[careplan.CarePlan]
    view: strawberry.Private[View]
    status: SignalStatus = strawberry.field(
        resolver=_monitoring_status,
        description="Where it stands now: READING_OVERDUE when active on an ACTIVE plan and "
        "no reading came for everyDays plus the grace period, else the latest reading's "
        "place against the thresholds (IN_RANGE, OUT_OF_RANGE, CRITICAL), NO_DATA with none. "
        "Shown even when the plan is redacted (the measure and values stay withheld).",
    )
    latest: Observation | None = strawberry.field(
        resolver=_monitoring_latest,
        description="The patient's latest reading of the measure, shown or redacted as "
        "`observations` shows it; null with none.",
    )

    @classmethod
    def seen(
        cls, item: careplan.Monitoring, plan: careplan.CarePlan, view: View
    ) -> MonitoringPlan | None:
        """The monitoring plan as the viewer may see it; None when the policy refuses it."""
        decision = view.item(plan.patient_id, item.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted

        def value(threshold: float | None) -> float | None:
            return None if hide else threshold

        return cls(
            id=strawberry.ID(item.id),
            measure=_measure(item.measure_code, hide),
            every_days=item.every_days,
            low=value(item.low),
            high=value(item.high),
            critical_low=value(item.critical_low),
            critical_high=value(item.critical_high),
            unit=RESTRICTED if hide else item.unit,
            responsible_discipline=item.responsible_discipline,
            sensitivity=list(item.sensitivity),
            active=item.active,
            redacted=hide,
            stopped_reason=withheld(item.stopped_reason, hide),
            state=item,
            plan=plan,
            view=view,
        )


@strawberry.type(description="A tiered intervention of a care plan.")
class Intervention:
    id: strawberry.ID
    kind: InterventionKind
    tier: Tier
    title: str
    detail: str | None
    responsible_discipline: Discipline
    sensitivity: list[Sensitivity]
    active: bool
    redacted: bool = strawberry.field(
        description="True when title and detail are withheld by the consent policy."
    )
    due_date: date | None
    discontinued_reason: str | None

    @classmethod
    def seen(cls, item: careplan.Intervention, patient_id: str, view: View) -> Intervention | None:
        """The intervention as the viewer may see it; None when the policy refuses it."""
        decision = view.item(patient_id, item.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            id=strawberry.ID(item.id),
            kind=item.kind,
            tier=item.tier,
            title=RESTRICTED if hide else item.title,
            detail=withheld(item.detail, hide),
            responsible_discipline=item.responsible_discipline,
            sensitivity=list(item.sensitivity),
            active=item.active,
            redacted=hide,
            due_date=item.due_date,
            discontinued_reason=withheld(item.discontinued_reason, hide),
        )


@strawberry.type(description="A patient's personalized care plan.")
class CarePlan:
    id: strawberry.ID
    patient_id: strawberry.ID
    team_id: strawberry.ID
    title: str
    status: PlanStatus
    goals: list[Goal]
    interventions: list[Intervention]
    monitoring: list[MonitoringPlan]
    next_review_date: date | None
    last_review_summary: str | None
    version: int = strawberry.field(
        description="Send it back as expectedVersion to refuse edits made since you read it."
    )

    @classmethod
    def from_state(cls, loaded: Loaded[careplan.CarePlan], view: View) -> CarePlan:
        """The plan as the viewer may see it: each intervention, monitoring plan and goal
        target decided on its own."""
        state = present(loaded)
        patient = state.patient_id
        seen = (Intervention.seen(i, patient, view) for i in state.interventions)
        monitored = (MonitoringPlan.seen(m, state, view) for m in state.monitoring)
        return cls(
            id=strawberry.ID(state.id),
            patient_id=strawberry.ID(state.patient_id),
            team_id=strawberry.ID(state.team_id),
            title=state.title,
            status=state.status,
            goals=[Goal.from_state(g, state, view) for g in state.goals],
            interventions=[i for i in seen if i is not None],
            monitoring=[m for m in monitored if m is not None],
            next_review_date=state.next_review_date,
            last_review_summary=state.last_review_summary,
            version=loaded.version,
        )


# --- queries -------------------------------------------------------------------------


async def resolve_care_plan(info: Info, id: strawberry.ID) -> CarePlan | None:
    loaded, shown = await guard.read(info.context, CARE_PLAN, id, one_patient=True)
    return CarePlan.from_state(loaded, shown)


async def resolve_care_plans(info: Info, patient_id: strawberry.ID) -> list[CarePlan]:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    ids = await ctx.repository.ids_for_patient(CARE_PLAN, patient_id, CarePlanCreated)
    plans = await ctx.repository.load_many(CARE_PLAN, ids)
    # The answer tells about the patient even when it is empty (no plans).
    held = [(patient_id, s) for p in plans if p.state for s in p.state.patients().values()]
    patients = touched([(patient_id, ()), *held])
    shown = await view(ctx, access, AccessAction.READ, "CarePlan", None, patients)
    return [CarePlan.from_state(p, shown) for p in plans]


# --- mutations -----------------------------------------------------------------------


async def create_care_plan(info: Info, patient_id: strawberry.ID, title: str) -> CarePlan:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    plan_id = new_id()
    command = build(
        careplan.CreateCarePlan,
        plan_id=plan_id,
        patient_id=patient_id,
        team_id=enrolled.state.team_id,
        title=title,
    )
    loaded = await ctx.handler.execute(
        CARE_PLAN,
        plan_id,
        command,
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    shown = await guard.changed(ctx, access, CARE_PLAN, plan_id, loaded, created=True)
    return CarePlan.from_state(loaded, shown)


class Item(Protocol):
    """A tagged item of the plan that a change would touch: an intervention, a monitoring
    plan, a goal's target (as `Tagged`)."""

    @property
    def id(self) -> str: ...

    @property
    def sensitivity(self) -> tuple[Sensitivity, ...]: ...


@dataclass(frozen=True)
class Tagged:
    id: str
    sensitivity: tuple[Sensitivity, ...]


Touching = Callable[[careplan.CarePlan], Sequence[Item]]


def _nothing(plan: careplan.CarePlan) -> Sequence[Item]:
    return ()


async def _change_plan(
    ctx: Context,
    plan_id: str,
    expected_version: int | None,
    command_type: type[careplan.PlanCommand],
    touching: Touching = _nothing,
    refusal: str | None = None,
    resource: str = "intervention",
    monitoring: Touching = _nothing,
    **fields: object,
) -> CarePlan:
    """Apply a change to the plan; FORBIDDEN (recorded) when it would change an
    item (`touching` says which, `resource` names its kind; `monitoring`, the monitoring
    plans it would end) the caller may only see redacted."""
    plan, access = await guard.load(ctx, CARE_PLAN, plan_id, Action.WRITE, one_patient=True)
    assert plan.state is not None
    command = build(command_type, plan_id=plan_id, **fields)
    for kind, items in ((resource, touching), ("monitoring plan", monitoring)):
        await may_change(
            ctx,
            access,
            resource=kind,
            patient_id=plan.state.patient_id,
            items=[(i.id, i.sensitivity) for i in items(plan.state)],
            refusal=refusal,
        )
    loaded = await ctx.handler.execute(
        CARE_PLAN,
        plan_id,
        command,
        caller=ctx.caller(),
        scope=Scope(plan.state.team_id, plan.state.patient_id),
        expected_version=expected_version,
        known=plan,
    )
    return CarePlan.from_state(loaded, await guard.changed(ctx, access, CARE_PLAN, plan_id, loaded))


async def add_goal(
    info: Info,
    plan_id: strawberry.ID,
    description: str,
    target: str | None = None,
    due_date: date | None = None,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.AddGoal,
        goal_id=new_id(),
        description=description,
        target=target,
        due_date=due_date,
    )


async def set_goal_status(
    info: Info,
    plan_id: strawberry.ID,
    goal_id: strawberry.ID,
    status: GoalStatus,
    expected_version: int | None = None,
) -> CarePlan:
    def settled(plan: careplan.CarePlan) -> Sequence[Item]:
        # A goal whose target the caller may only see redacted (PHQ-9) is not theirs to
        # settle: its status says how far the readings came, and ends its progress.
        goal = plan.goal(goal_id)
        target = goal.measurable if goal is not None else None
        return [Tagged(goal_id, target.sensitivity)] if target is not None else []

    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.SetGoalStatus,
        settled,
        resource="goal target",
        goal_id=goal_id,
        status=status,
    )


async def add_intervention(
    info: Info,
    plan_id: strawberry.ID,
    kind: InterventionKind,
    tier: Tier,
    title: str,
    responsible_discipline: Discipline,
    detail: str | None = None,
    sensitivity: Sequence[Sensitivity] | None = (),
    due_date: date | None = None,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.AddIntervention,
        intervention_id=new_id(),
        kind=kind,
        tier=tier,
        title=title,
        detail=detail,
        responsible_discipline=responsible_discipline,
        sensitivity=tuple(sensitivity or ()),
        due_date=due_date,
    )


async def discontinue_intervention(
    info: Info,
    plan_id: strawberry.ID,
    intervention_id: strawberry.ID,
    reason: str,
    expected_version: int | None = None,
) -> CarePlan:
    def stopped(plan: careplan.CarePlan) -> Sequence[Item]:
        item = plan.intervention(intervention_id)
        return [item] if item is not None else []

    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.DiscontinueIntervention,
        stopped,
        intervention_id=intervention_id,
        reason=reason,
    )


async def add_monitoring(
    info: Info,
    plan_id: strawberry.ID,
    measure_code: str,
    every_days: int,
    unit: str,
    responsible_discipline: Discipline,
    low: float | None = None,
    high: float | None = None,
    critical_low: float | None = None,
    critical_high: float | None = None,
    sensitivity: Sequence[Sensitivity] | None = (),
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.AddMonitoring,
        monitoring_id=new_id(),
        measure_code=measure_code,
        every_days=every_days,
        unit=unit,
        low=low,
        high=high,
        critical_low=critical_low,
        critical_high=critical_high,
        responsible_discipline=responsible_discipline,
        sensitivity=tuple(sensitivity or ()),
    )


async def stop_monitoring(
    info: Info,
    plan_id: strawberry.ID,
    monitoring_id: strawberry.ID,
    reason: str,
    expected_version: int | None = None,
) -> CarePlan:
    def stopped(plan: careplan.CarePlan) -> Sequence[Item]:
        item = plan.monitoring_plan(monitoring_id)
        return [item] if item is not None else []

    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.StopMonitoring,
        stopped,
        resource="monitoring plan",
        monitoring_id=monitoring_id,
        reason=reason,
    )


async def set_goal_target(
    info: Info,
    plan_id: strawberry.ID,
    goal_id: strawberry.ID,
    measure_code: str,
    comparator: Comparator,
    value: float,
    unit: str,
    high: float | None = None,
    expected_version: int | None = None,
) -> CarePlan:
    def replaced(plan: careplan.CarePlan) -> Sequence[Item]:
        # A target the caller may only see redacted (PHQ-9) is not theirs to replace.
        goal = plan.goal(goal_id)
        target = goal.measurable if goal is not None else None
        return [Tagged(goal_id, target.sensitivity)] if target is not None else []

    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.SetGoalTarget,
        replaced,
        resource="goal target",
        goal_id=goal_id,
        measure_code=measure_code,
        comparator=comparator,
        value=value,
        high=high,
        unit=unit,
    )


# Completing or revoking a plan cancels its active interventions' tasks.
_ENDING = frozenset({PlanStatus.COMPLETED, PlanStatus.REVOKED})
_ENDS_UNSEEN = (
    "Completing or revoking this care plan would cancel an intervention or stop a monitoring "
    f"plan you may only see redacted ({RESTRICTED}), so you cannot do it. A teammate whom "
    "the patient's consent covers can."
)


async def set_plan_status(
    info: Info, plan_id: strawberry.ID, status: PlanStatus, expected_version: int | None = None
) -> CarePlan:
    def ended(plan: careplan.CarePlan) -> Sequence[Item]:
        return [i for i in plan.interventions if i.active] if status in _ENDING else []

    def unwatched(plan: careplan.CarePlan) -> Sequence[Item]:
        # Ending the plan ends its monitoring plans' signals and cancels their open tasks.
        return [m for m in plan.monitoring if m.active] if status in _ENDING else []

    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.SetPlanStatus,
        ended,
        _ENDS_UNSEEN,
        monitoring=unwatched,
        status=status,
    )


async def review_care_plan(
    info: Info,
    plan_id: strawberry.ID,
    summary: str,
    next_review_date: date,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.ReviewCarePlan,
        summary=summary,
        next_review_date=next_review_date,
    )


@strawberry.type
class CarePlansQuery:
    care_plan: CarePlan | None = strawberry.field(resolver=resolve_care_plan)
    care_plans: list[CarePlan] = strawberry.field(
        resolver=resolve_care_plans, description="The patient's care plans, oldest first."
    )


@strawberry.type
class CarePlansMutation:
    create_care_plan: CarePlan = strawberry.mutation(
        resolver=create_care_plan, description="Start a DRAFT care plan for a patient."
    )
    add_goal: CarePlan = strawberry.mutation(
        resolver=add_goal, description="Add a goal." + _VERSION_NOTE
    )
    set_goal_status: CarePlan = strawberry.mutation(
        resolver=set_goal_status, description="Move a goal on." + _VERSION_NOTE
    )
    add_intervention: CarePlan = strawberry.mutation(
        resolver=add_intervention,
        description="Add an intervention (tier, responsible discipline, sensitivity tags)."
        + _VERSION_NOTE,
    )
    discontinue_intervention: CarePlan = strawberry.mutation(
        resolver=discontinue_intervention,
        description="Stop an intervention, with the reason." + _VERSION_NOTE,
    )
    add_monitoring: CarePlan = strawberry.mutation(
        resolver=add_monitoring,
        description="Monitor a measure of the catalogue every everyDays days (1 to 92), with "
        "thresholds in a unit the measure takes (at least one; criticalLow < low <= high < "
        "criticalHigh), the discipline that answers, and sensitivity tags (the measure's own "
        "are added)." + _VERSION_NOTE,
    )
    stop_monitoring: CarePlan = strawberry.mutation(
        resolver=stop_monitoring,
        description="Stop a monitoring plan, with the reason." + _VERSION_NOTE,
    )
    set_goal_target: CarePlan = strawberry.mutation(
        resolver=set_goal_target,
        description="Make a goal measurable: a measure, a comparator and a value in a unit the "
        "measure takes (BETWEEN: value to high). Replaces an earlier target." + _VERSION_NOTE,
    )
    set_plan_status: CarePlan = strawberry.mutation(
        resolver=set_plan_status,
        description="DRAFT -> ACTIVE -> ON_HOLD/COMPLETED/REVOKED; COMPLETED and REVOKED are "
        "final." + _VERSION_NOTE,
    )
    review_care_plan: CarePlan = strawberry.mutation(
        resolver=review_care_plan,
        description="Record a review and the next review date." + _VERSION_NOTE,
    )
