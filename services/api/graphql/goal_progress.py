"""Live goal progress: `goalProgressChanged`, each measurable goal of a team whose progress
a reading moved, as the signal processor noticed it (BoardUpdate kind "goal" on
care.board-updates), with its progress read again at push time.

A push is an audited read of the goal's patient, decided for the subscriber against the
consents as they stand then: a goal whose target, or the readings it is judged on (tagged
by the patient's monitoring plans of its measure), is withheld from them is pushed with no
progress (it is the progress that tells of the readings).

It is a subscription of its own rather than a field of `boardChanged`, whose `task` the
API contract makes non-null.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from services.api.graphql import care_signals
from services.api.graphql.access import Access, authorize, flush, pushed, view
from services.api.graphql.context import Context, Info
from services.api.graphql.live import PUSH, updates
from services.api.graphql.scalars import GoalProgress
from services.common.policy import Action
from services.plans.domain.careplan import CARE_PLAN
from services.tasks import monitoring, monitoring_store


@strawberry.type(description="A measurable goal whose progress a reading moved.")
class GoalChange:
    team_id: strawberry.ID
    plan_id: strawberry.ID
    goal_id: strawberry.ID
    patient_id: strawberry.ID
    progress: GoalProgress | None = strawberry.field(
        description="Its progress as of the push (as Goal.progress); null when the goal's "
        "target (or the readings it is judged on) is withheld from you."
    )


async def goal_change(
    ctx: Context, access: Access, plan_id: str, goal_id: str
) -> GoalChange | None:
    """The goal's change as this subscriber may see it (None: nothing to push), recorded."""
    # A subscription is one long operation: each push reads the monitoring plans afresh.
    ctx.loaders.clear()
    plan = (await ctx.repository.load(CARE_PLAN, plan_id)).state
    goal = plan.goal(goal_id) if plan is not None else None
    if plan is None or plan.team_id != access.team.id or goal is None:
        return None
    target = goal.measurable
    if target is None:
        return None
    patient = plan.patient_id
    tags = await care_signals.progress_tags(ctx, plan, target)
    shown = await view(ctx, access, PUSH, "Goal", goal_id, {patient: tags}, live=True)
    decision = shown.item(patient, tags)
    progress = None
    if decision.permitted and not decision.redacted:
        async with ctx.database.acquire() as conn:
            found = await monitoring_store.of_plans(conn, [plan_id])
        latest = found.latest.get((patient, target.measure_code))
        state = care_signals.goal_state(goal, plan)
        progress = monitoring.goal_progress(state, latest, care_signals.today(ctx))
    await pushed(ctx, shown)
    if not decision.permitted:
        return None
    return GoalChange(
        team_id=strawberry.ID(plan.team_id),
        plan_id=strawberry.ID(plan_id),
        goal_id=strawberry.ID(goal_id),
        patient_id=strawberry.ID(patient),
        progress=progress,
    )


async def goal_progress_changed(
    info: Info, team_id: strawberry.ID
) -> AsyncGenerator[GoalChange, None]:
    ctx = info.context
    try:
        access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="board")
        async for update, current in updates(ctx, team_id, "board", access):
            if update.kind != "goal" or update.plan_id is None or update.goal_id is None:
                continue
            change = await goal_change(ctx, current, update.plan_id, update.goal_id)
            if change is not None:
                yield change
    finally:
        await flush(ctx)  # a refusal, at the start or after a roster change


@strawberry.type
class GoalProgressSubscription:
    goal_progress_changed: AsyncGenerator[GoalChange, None] = strawberry.subscription(
        resolver=goal_progress_changed,
        description="Each measurable goal of the team whose progress a reading moved, with "
        "its progress now (members only).",
    )
