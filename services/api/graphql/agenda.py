"""The huddle agenda: what a team should talk about at its next huddle (`huddleAgenda`):
overdue and blocked tasks, plans due for review, and the care signals (open signal
tasks, measurable goals at risk, monitoring plans whose reading is overdue)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import date, datetime, timedelta

import strawberry

from schemas.audit import AccessAction
from schemas.common import Sensitivity
from services.api.graphql import care_signals, freshness
from services.api.graphql.access import View, authorize, view
from services.api.graphql.board import Task, cards
from services.api.graphql.care_plans import CarePlan, Goal, MonitoringPlan
from services.api.graphql.context import Context, Info
from services.api.graphql.scalars import Position
from services.common import dates
from services.common.aggregates import Loaded
from services.common.domain import touched
from services.common.policy import Action
from services.plans.domain import careplan
from services.plans.domain.careplan import CARE_PLAN
from services.tasks import monitoring, monitoring_store, store
from services.tasks.monitoring import GoalState, Signals, Watch
from services.tasks.signals import GoalProgress

# Plans whose next review falls within this many days are on the agenda.
REVIEW_HORIZON_DAYS = 7


@strawberry.type(description="What a team's next huddle should cover.")
class HuddleAgenda:
    team_id: strawberry.ID
    overdue_tasks: list[Task] = strawberry.field(description="Open tasks past their due date.")
    blocked_tasks: list[Task]
    plans_due_for_review: list[CarePlan] = strawberry.field(
        description="Open care plans whose next review is due within 7 days, or overdue."
    )
    since: datetime | None = strawberry.field(
        description="When the team's last huddle closed (null before the first)."
    )
    signals: list[Task] = strawberry.field(
        description="Open signal tasks (readings out of range, overdue readings): urgent "
        "first, then the oldest."
    )
    goals_at_risk: list[Goal] = strawberry.field(
        description="Open measurable goals whose progress is AT_RISK now (those whose target, "
        "or the readings it is judged on, is withheld from you are left out: being listed "
        "would tell their progress)."
    )
    readings_overdue: list[MonitoringPlan] = strawberry.field(
        description="Monitoring plans, active on an active care plan, whose reading is "
        "overdue now (everyDays plus the grace period without one), longest silent first."
    )
    position: Position = strawberry.field(
        description="The event-store position the agenda reflects: every event of the team "
        "up to it, none after."
    )


# The read models the agenda is read from.
_MODELS = (freshness.BOARD, freshness.SIGNALS)


async def huddle_agenda(
    info: Info, team_id: strawberry.ID, at_least: Position | None = None
) -> HuddleAgenda:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="team")
    await freshness.caught_up(ctx, team_id, at_least, _MODELS)
    now = ctx.now()
    async with (
        ctx.database.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        position = await freshness.position_of(conn, team_id, _MODELS)
        agenda = await store.agenda(
            conn,
            team_id,
            overdue_before=dates.earliest_today(now),
            review_by=dates.latest_today(now) + timedelta(days=REVIEW_HORIZON_DAYS),
        )
        signal_tasks = await monitoring_store.signal_tasks(conn, team_id)
        team = await monitoring_store.of_team(conn, team_id)
    day = care_signals.today(ctx)
    at_risk = [
        g
        for g in team.goals.values()
        if g.open
        and g.measure_code is not None
        and monitoring.goal_progress(g, team.latest.get((g.patient_id, g.measure_code)), day)
        is GoalProgress.AT_RISK
    ]
    silent = _silent(team, now, care_signals.grace(ctx))
    wanted = [*agenda.plan_ids, *(g.plan_id for g in at_risk), *(w.plan_id for w, _ in silent)]
    plans = {
        p.state.id: p
        for p in await ctx.repository.load_many(CARE_PLAN, list(dict.fromkeys(wanted)))
        if p.state is not None
    }
    items: list[tuple[str | None, Iterable[Sensitivity]]] = [
        (t.patient_id, t.sensitivity) for t in (*agenda.overdue, *agenda.blocked, *signal_tasks)
    ]
    items += [(p, s) for plan in plans.values() for p, s in _patients(plan)]
    shown = await view(ctx, access, AccessAction.READ, "HuddleAgenda", team_id, touched(items))
    return HuddleAgenda(
        team_id=team_id,
        overdue_tasks=cards(agenda.overdue, shown, now=now),
        blocked_tasks=cards(agenda.blocked, shown, now=now),
        plans_due_for_review=[
            CarePlan.from_state(plans[i], shown) for i in agenda.plan_ids if i in plans
        ],
        since=agenda.since,
        signals=cards(signal_tasks, shown, now=now),
        goals_at_risk=await _goals(ctx, at_risk, plans, team, shown, day),
        readings_overdue=_monitoring(silent, plans, shown),
        position=Position(position),
    )


def _patients(plan: Loaded[careplan.CarePlan]) -> Iterable[tuple[str, frozenset[Sensitivity]]]:
    return plan.state.patients().items() if plan.state is not None else ()


def _silent(team: Signals, now: datetime, grace: timedelta) -> list[tuple[Watch, datetime]]:
    """The team's live monitoring plans overdue for a reading now, longest silent first."""
    found = []
    for w in team.watches.values():
        latest = team.latest.get((w.patient_id, w.measure_code))
        # Silent this long is what makes watch_status READING_OVERDUE.
        since = monitoring.silent_since(w, latest, team.plans.get(w.plan_id), now, grace)
        if since is not None:
            found.append((w, since))
    return sorted(found, key=lambda f: (f[1], f[0].monitoring_id))


async def _goals(
    ctx: Context,
    at_risk: list[GoalState],
    plans: dict[str, Loaded[careplan.CarePlan]],
    team: Signals,
    shown: View,
    day: date,
) -> list[Goal]:
    out = []
    # The patients' monitoring plans (the tags they lend the readings) in one batch.
    await asyncio.gather(
        *(care_signals.patient_monitors(ctx, p) for p in {g.patient_id for g in at_risk})
    )
    for g in sorted(at_risk, key=lambda g: (g.due_date or day.max, g.goal_id)):
        plan = plans.get(g.plan_id)
        goal = plan.state.goal(g.goal_id) if plan and plan.state else None
        if plan is None or plan.state is None or goal is None or goal.measurable is None:
            continue
        # Judged again on the plan's own target, which the read model may not have yet.
        latest = team.latest.get((plan.state.patient_id, goal.measurable.measure_code))
        state = care_signals.goal_state(goal, plan.state)
        if monitoring.goal_progress(state, latest, day) is not GoalProgress.AT_RISK:
            continue
        seen = Goal.from_state(goal, plan.state, shown)
        if seen.measurable is None or seen.measurable.redacted:
            continue
        # Listed here tells its progress: left out where its readings are withheld too.
        tags = await care_signals.progress_tags(ctx, plan.state, goal.measurable)
        await shown.include(ctx, {plan.state.patient_id: tags})
        decision = shown.item(plan.state.patient_id, tags)
        if decision.permitted and not decision.redacted:
            out.append(seen)
    return out


def _monitoring(
    silent: list[tuple[Watch, datetime]],
    plans: dict[str, Loaded[careplan.CarePlan]],
    shown: View,
) -> list[MonitoringPlan]:
    out = []
    for watch, _ in silent:
        plan = plans.get(watch.plan_id)
        item = plan.state.monitoring_plan(watch.monitoring_id) if plan and plan.state else None
        if plan is None or plan.state is None or item is None:
            continue
        seen = MonitoringPlan.seen(item, plan.state, shown)
        if seen is not None:
            out.append(seen)
    return out


@strawberry.type
class AgendaQuery:
    huddle_agenda: HuddleAgenda = strawberry.field(
        resolver=huddle_agenda,
        description="Overdue and blocked tasks, plans due for review within 7 days, when the "
        "last huddle closed, and the care signals: open signal tasks, goals at risk and "
        "readings overdue.",
    )
