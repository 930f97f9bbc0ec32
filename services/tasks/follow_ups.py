"""The board tasks commands start or close, written with the change itself: an intervention
starts its task, a review its next review task, an action item the task that carries it.

Registered once (FOLLOW_UPS) and built into the write side every caller uses
(services.tasks.write_side), so an intervention or action item never exists without its
task, whoever sent the command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.base import Event
from schemas.careplan import (
    CarePlanReviewed,
    InterventionAdded,
    InterventionDiscontinued,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.common import PlanStatus, TaskStatus
from schemas.huddle import ActionItemRaised
from services.common.aggregates import NEW, FollowUp, FollowUpRegistry, Loaded, Repository, Scope
from services.plans.domain.careplan import CARE_PLAN, CarePlan
from services.plans.domain.huddle import HUDDLE
from services.tasks import domain, signal_aggregate
from services.tasks.domain import TASK
from services.tasks.signal_aggregate import SIGNAL


async def plan_tasks(
    repository: Repository, events: Sequence[Event], before: Loaded[Any], scope: Scope
) -> list[FollowUp]:
    """An intervention added starts its task; one discontinued cancels it; a review marks
    the previous review task done and starts the next one, due on the next review date;
    a plan completed or revoked cancels its open tasks; a monitoring plan stopped (or one
    of a plan completed or revoked) signals no more, and its open signal task is cancelled."""
    plan = before.state
    if plan is None:
        # Creating a plan starts nothing on the board; every other command acts on one.
        return []
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
                live = [m.id for m in plan.monitoring if m.active]
                reason = f"Care plan {event.status.value.lower()}."
                follow_ups += await _stop_signals(repository, plan, live, reason)
            case MonitoringStopped():
                follow_ups += await _stop_signals(
                    repository, plan, [event.monitoring_id], "Monitoring stopped."
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


async def _stop_signals(
    repository: Repository, plan: CarePlan, monitoring_ids: Sequence[str], reason: str
) -> list[FollowUp]:
    """End these monitoring plans' signals and cancel their open signal tasks. Written on
    the Signal stream at the version read, so a signal raised meanwhile makes one of the
    two writes read again: no task opens for a plan that ended."""
    follow_ups = []
    for monitoring_id in monitoring_ids:
        signal = await repository.load(SIGNAL, monitoring_id)
        task: Loaded[domain.Task] = NEW
        if signal.state is not None and signal.state.task_id:
            task = await repository.load(TASK, signal.state.task_id)
        events, cancelled = signal_aggregate.stop(
            signal.state,
            task.state,
            monitoring_id=monitoring_id,
            plan_id=plan.id,
            patient_id=plan.patient_id,
            reason=reason,
        )
        if events:
            follow_ups.append(
                FollowUp(SIGNAL.stream_id(monitoring_id), events, expected_version=signal.version)
            )
        if cancelled is not None:
            follow_ups.append(
                FollowUp(
                    TASK.stream_id(cancelled.task_id), [cancelled], expected_version=task.version
                )
            )
    return follow_ups


async def action_item_tasks(
    repository: Repository, events: Sequence[Event], before: Loaded[Any], scope: Scope
) -> list[FollowUp]:
    """Each action item raised starts the task that carries it on the board."""
    return [
        FollowUp(TASK.stream_id(e.task_id), [domain.from_action_item(e, team_id=scope.team_id)])
        for e in events
        if isinstance(e, ActionItemRaised)
    ]


FOLLOW_UPS = FollowUpRegistry.of((CARE_PLAN, plan_tasks), (HUDDLE, action_item_tasks))
