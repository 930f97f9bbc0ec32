"""The board tasks a care-plan change starts or closes, written with the change itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.base import Event
from schemas.careplan import CarePlanReviewed, InterventionAdded, InterventionDiscontinued
from schemas.common import TaskStatus
from services.plans.domain.careplan import CarePlan
from services.plans.handlers import FollowUp, Loaded, Repository
from services.tasks import domain
from services.tasks.domain import TASK


async def board_tasks(
    repository: Repository, events: Sequence[Event], before: Loaded[Any]
) -> list[FollowUp]:
    """An intervention added starts its task; one discontinued cancels it; a review marks
    the previous review task done and starts the next one, due on the next review date."""
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
