"""The Task aggregate: folding board events, tasks from action items, and overdue."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from schemas.base import Event
from schemas.common import Discipline, Sensitivity, TaskStatus
from schemas.huddle import ActionItemRaised
from schemas.task import TaskAssigned, TaskCreated, TaskMoved
from schemas.team import TeamCreated
from services.common.domain import Meta
from services.tasks.domain import TASK, Task, decide, evolve, from_action_item

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
CREATED_AT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
META = Meta("u-1", CREATED_AT, "t-1")
LATER = Meta("u-2", NOW, "t-1")

CREATED = TaskCreated(
    task_id="task-1",
    team_id="t-1",
    title="Check INR",
    patient_id="p-1",
    plan_id="cp-1",
    intervention_id="i-1",
    discipline=Discipline.NURSE,
    due_date=TODAY,
    sensitivity=(Sensitivity.GENETIC,),
    source="intervention",
)


def _moved(status: TaskStatus, previous: TaskStatus, reason: str | None = None) -> TaskMoved:
    return TaskMoved(task_id="task-1", status=status, previous=previous, reason=reason)


def _task(*events: Event) -> Task:
    task = evolve(None, CREATED, META)
    for event in events:
        task = evolve(task, event, LATER)
    return task


def test_a_created_task_starts_in_todo_with_the_events_fields() -> None:
    assert _task() == Task(
        id="task-1",
        team_id="t-1",
        title="Check INR",
        source="intervention",
        updated_at=CREATED_AT,
        created_at=CREATED_AT,
        patient_id="p-1",
        plan_id="cp-1",
        intervention_id="i-1",
        huddle_id=None,
        discipline=Discipline.NURSE,
        assignee_id=None,
        due_date=TODAY,
        sensitivity=(Sensitivity.GENETIC,),
        status=TaskStatus.TODO,
        blocked_reason=None,
    )


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not TaskStatus.BLOCKED])
def test_a_move_sets_the_status_and_the_time(status: TaskStatus) -> None:
    task = _task(_moved(status, TaskStatus.TODO))
    assert task.status is status
    assert task.updated_at == NOW
    assert task.blocked_reason is None


def test_a_move_to_blocked_keeps_the_reason() -> None:
    task = _task(_moved(TaskStatus.BLOCKED, TaskStatus.TODO, "Waiting for lab"))
    assert (task.status, task.blocked_reason) == (TaskStatus.BLOCKED, "Waiting for lab")


def test_a_reason_given_with_a_move_elsewhere_is_dropped() -> None:
    task = _task(_moved(TaskStatus.IN_PROGRESS, TaskStatus.TODO, "stray"))
    assert task.blocked_reason is None


def test_moving_out_of_blocked_clears_the_reason() -> None:
    task = _task(
        _moved(TaskStatus.BLOCKED, TaskStatus.TODO, "Waiting for lab"),
        _moved(TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED),
    )
    assert (task.status, task.blocked_reason) == (TaskStatus.IN_PROGRESS, None)


def test_an_assignment_sets_the_assignee_and_the_time() -> None:
    task = _task(TaskAssigned(task_id="task-1", assignee_id="u-9"))
    assert (task.assignee_id, task.updated_at) == ("u-9", NOW)
    reassigned = evolve(
        task, TaskAssigned(task_id="task-1", assignee_id="u-3", previous_assignee_id="u-9"), META
    )
    assert (reassigned.assignee_id, reassigned.updated_at) == ("u-3", CREATED_AT)
    assert reassigned.status is TaskStatus.TODO


def test_a_task_event_before_task_created_is_an_error() -> None:
    with pytest.raises(ValueError, match="before TaskCreated"):
        evolve(None, _moved(TaskStatus.DONE, TaskStatus.TODO), META)


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = TeamCreated(team_id="t", name="n", lead_user_id="u", lead_name="A")
    with pytest.raises(ValueError, match="TeamCreated"):
        evolve(_task(), foreign, META)


def test_an_action_item_becomes_a_task_created_from_the_huddle() -> None:
    item = ActionItemRaised(
        huddle_id="h-1",
        task_id="task-7",
        title="Call GP",
        patient_id="p-1",
        discipline=Discipline.SOCIAL_WORKER,
        assignee_id="u-4",
        due_date=TODAY,
    )
    assert from_action_item(item, team_id="t-1") == TaskCreated(
        task_id="task-7",
        team_id="t-1",
        title="Call GP",
        patient_id="p-1",
        huddle_id="h-1",
        discipline=Discipline.SOCIAL_WORKER,
        assignee_id="u-4",
        due_date=TODAY,
        source="action_item",
    )


def test_a_bare_action_item_becomes_a_bare_task() -> None:
    item = ActionItemRaised(huddle_id="h-1", task_id="task-7", title="Call GP")
    created = from_action_item(item, team_id="t-2")
    task = evolve(None, created, META)
    assert (task.team_id, task.source, task.huddle_id) == ("t-2", "action_item", "h-1")
    assert (task.patient_id, task.plan_id, task.assignee_id, task.due_date) == (None,) * 4
    assert task.sensitivity == ()


@pytest.mark.parametrize(
    ("due", "status", "overdue"),
    [
        (None, TaskStatus.TODO, False),
        (TODAY, TaskStatus.TODO, False),
        (TODAY + timedelta(days=1), TaskStatus.TODO, False),
        (TODAY - timedelta(days=1), TaskStatus.TODO, True),
        (TODAY - timedelta(days=1), TaskStatus.IN_PROGRESS, True),
        (TODAY - timedelta(days=1), TaskStatus.BLOCKED, True),
        (TODAY - timedelta(days=1), TaskStatus.DONE, False),
        (TODAY - timedelta(days=1), TaskStatus.CANCELLED, False),
    ],
)
def test_a_task_is_overdue_only_past_its_due_date_and_not_finished(
    due: date | None, status: TaskStatus, overdue: bool
) -> None:
    task = Task("task-1", "t-1", "x", "manual", CREATED_AT, due_date=due, status=status)
    assert task.overdue(NOW) is overdue


def test_a_task_is_overdue_once_its_due_date_has_passed_everywhere_on_earth() -> None:
    task = Task("task-1", "t-1", "x", "manual", CREATED_AT, due_date=date(2026, 11, 22))
    # 11:59 UTC on the 23rd: still the 22nd at UTC-12, so not overdue yet.
    assert not task.overdue(datetime(2026, 11, 23, 11, 59, tzinfo=UTC))
    # 12:00 UTC on the 23rd is the 23rd everywhere: overdue, whatever offset `now` carries.
    assert task.overdue(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    assert task.overdue(datetime(2026, 11, 23, 7, 0, tzinfo=timezone(timedelta(hours=-5))))


def test_the_task_aggregate_type_names_its_stream_and_decides_its_commands() -> None:
    assert TASK.stream_id("task-1") == "task-task-1"
    assert (TASK.name, TASK.evolve, TASK.decide) == ("task", evolve, decide)
