"""The board tasks a care-plan change starts or closes, written with the change itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.base import Event
from schemas.careplan import (
    CarePlanReviewed,
    InterventionAdded,
    InterventionDiscontinued,
    PlanStatusChanged,
)
from schemas.common import PlanStatus, TaskStatus
from services.plans.domain.careplan import CarePlan
from services.plans.handlers import FollowUp, Loaded, Repository
from services.tasks import domain
from services.tasks.domain import TASK


async def board_tasks(
    repository: Repository, events: Sequence[Event], before: Loaded[Any]
) -> list[FollowUp]:
    """An intervention added starts its task; one discontinued cancels it; a review marks
    the previous review task done and starts the next one, due on the next review date;
    a plan completed or revoked cancels its open tasks."""
    plan = before.state
    assert isinstance(plan, CarePlan)
    reviews = plan.reviews
    follow_ups: list[FollowUp] = []
    for event in events:
        match event:
            case InterventionAdded():
                task = domain.from_intervention(
                    event, team_id=plan.team_id, patient_id=plan.patient_id
                )
                follow_ups.append(FollowUp(TASK.stream_id(task.task_id), [task]))
            case InterventionDiscontinued():
                task_id = domain.intervention_task_id(event.intervention_id)
                follow_ups += await _close(
                    repository, task_id, TaskStatus.CANCELLED, "Intervention discontinued."
                )
            case PlanStatusChanged(status=PlanStatus.COMPLETED | PlanStatus.REVOKED):
                follow_ups += await _close_plan_tasks(repository, plan, event.status)
            case CarePlanReviewed():
                if reviews:
                    task_id = domain.review_task_id(plan.id, reviews)
                    follow_ups += await _close(
                        repository, task_id, TaskStatus.DONE, "Care plan reviewed."
                    )
                reviews += 1
                task = domain.from_review(
                    event,
                    plan_title=plan.title,
                    team_id=plan.team_id,
                    patient_id=plan.patient_id,
                    number=reviews,
                )
                follow_ups.append(FollowUp(TASK.stream_id(task.task_id), [task]))
    return follow_ups


async def _close(
    repository: Repository, task_id: str, status: TaskStatus, reason: str
) -> list[FollowUp]:
    task = await repository.load(TASK, task_id)
    moved = domain.close(task.state, status, reason)
    if moved is None:
        return []
    return [FollowUp(TASK.stream_id(task_id), [moved], expected_version=task.version)]


async def _close_plan_tasks(
    repository: Repository, plan: CarePlan, status: PlanStatus
) -> list[FollowUp]:
    """Cancel the open tasks of a plan that needs no more work: its interventions' and
    its pending review's."""
    ids = [domain.intervention_task_id(i.id) for i in plan.interventions if i.active]
    if plan.reviews:
        ids.append(domain.review_task_id(plan.id, plan.reviews))
    reason = f"Care plan {status.value.lower()}."
    follow_ups = []
    for task in await repository.load_many(TASK, ids):
        moved = domain.close(task.state, TaskStatus.CANCELLED, reason)
        if moved is not None:
            follow_ups.append(
                FollowUp(TASK.stream_id(moved.task_id), [moved], expected_version=task.version)
            )
    return follow_ups
