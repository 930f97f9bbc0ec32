"""The huddle agenda: what a team should talk about at its next huddle (`huddleAgenda`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import strawberry

from schemas.audit import AccessAction
from schemas.common import Sensitivity
from services.api.graphql.access import authorize, view
from services.api.graphql.board import Task, cards
from services.api.graphql.care_plans import CarePlan
from services.api.graphql.context import Info
from services.common import dates
from services.common.domain import touched
from services.common.policy import Action
from services.plans.domain.careplan import CARE_PLAN
from services.tasks import store

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


async def huddle_agenda(info: Info, team_id: strawberry.ID) -> HuddleAgenda:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="team")
    now = ctx.now()
    async with ctx.database.acquire() as conn:
        agenda = await store.agenda(
            conn,
            team_id,
            overdue_before=dates.earliest_today(now),
            review_by=dates.latest_today(now) + timedelta(days=REVIEW_HORIZON_DAYS),
        )
    plans = await ctx.repository.load_many(CARE_PLAN, agenda.plan_ids)
    items: list[tuple[str | None, Iterable[Sensitivity]]] = [
        (t.patient_id, t.sensitivity) for t in (*agenda.overdue, *agenda.blocked)
    ]
    items += [(p, s) for plan in plans if plan.state for p, s in plan.state.patients().items()]
    shown = await view(ctx, access, AccessAction.READ, "HuddleAgenda", team_id, touched(items))
    return HuddleAgenda(
        team_id=team_id,
        overdue_tasks=cards(agenda.overdue, shown, now=now),
        blocked_tasks=cards(agenda.blocked, shown, now=now),
        plans_due_for_review=[CarePlan.from_state(p, shown) for p in plans],
        since=agenda.since,
    )


@strawberry.type
class AgendaQuery:
    huddle_agenda: HuddleAgenda = strawberry.field(
        resolver=huddle_agenda,
        description="Overdue and blocked tasks, plans due for review within 7 days, and when "
        "the last huddle closed.",
    )
