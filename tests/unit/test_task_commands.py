"""Task commands: decide on create, move and assign; the tasks other records start; and
the board tasks a care-plan change writes with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import product
from typing import Any

import pytest

from schemas.base import Event
from schemas.careplan import (
    CarePlanReviewed,
    GoalAdded,
    InterventionAdded,
    InterventionDiscontinued,
    PlanStatusChanged,
)
from schemas.common import (
    Discipline,
    InterventionKind,
    PlanStatus,
    Sensitivity,
    TaskStatus,
    Tier,
)
from schemas.huddle import ActionItemRaised
from schemas.task import TaskAssigned, TaskCreated, TaskMoved
from services.common import dates
from services.common.aggregates import FollowUp, Loaded, Repository, Scope
from services.common.commands import build
from services.common.domain import AggregateType
from services.common.errors import InvalidInput, StateConflict
from services.plans.domain.careplan import CarePlan, Intervention
from services.tasks.domain import (
    MAX_BACKDATE_DAYS,
    AssignTask,
    CreateTask,
    MoveTask,
    Task,
    close,
    decide,
    from_action_item,
    from_intervention,
    from_review,
    intervention_task_id,
    review_task_id,
)
from services.tasks.follow_ups import plan_tasks

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
EARLIEST_TODAY = date(2026, 11, 22)  # at 12:00 UTC it is the 22nd even at UTC-12
CREATED_AT = datetime(2026, 11, 20, 8, tzinfo=UTC)

S = TaskStatus
OPEN_STATUSES = (S.TODO, S.IN_PROGRESS, S.BLOCKED)
CLOSED_STATUSES = (S.DONE, S.CANCELLED)
# The documented moves, written out independently of the domain's OPEN and CLOSED sets:
# an open task may go anywhere else (BLOCKED again with a new reason); a closed one may
# only be reopened.
ALLOWED_MOVES = {
    *((a, b) for a in OPEN_STATUSES for b in TaskStatus if a is not b),
    (S.BLOCKED, S.BLOCKED),
    (S.DONE, S.TODO),
    (S.DONE, S.IN_PROGRESS),
    (S.CANCELLED, S.TODO),
    (S.CANCELLED, S.IN_PROGRESS),
}
MOVE_PAIRS = list(product(TaskStatus, TaskStatus))


def _task(
    status: TaskStatus = S.TODO,
    *,
    assignee_id: str | None = None,
    blocked_reason: str | None = None,
    task_id: str = "task-1",
) -> Task:
    if status is S.BLOCKED and blocked_reason is None:
        blocked_reason = "Waiting for lab"
    return Task(
        id=task_id,
        team_id="t-1",
        title="Check INR",
        source="manual",
        updated_at=CREATED_AT,
        created_at=CREATED_AT,
        assignee_id=assignee_id,
        status=status,
        blocked_reason=blocked_reason,
    )


def _create(**fields: Any) -> CreateTask:
    return CreateTask(**{"task_id": "task-1", "team_id": "t-1", "title": "Check INR", **fields})


# --- CreateTask ----------------------------------------------------------------------


def test_creating_a_task_records_one_manual_task_created_with_its_fields() -> None:
    command = build(
        CreateTask,
        task_id="task-1",
        team_id="t-1",
        title="  Check INR  ",
        patient_id="p-1",
        discipline="NURSE",
        assignee_id="u-2",
        due_date=date(2026, 11, 30),
        sensitivity=("GENETIC", "MENTAL_HEALTH", "GENETIC"),
    )
    assert decide(command, None, NOW) == [
        TaskCreated(
            task_id="task-1",
            team_id="t-1",
            title="Check INR",
            patient_id="p-1",
            discipline=Discipline.NURSE,
            assignee_id="u-2",
            due_date=date(2026, 11, 30),
            sensitivity=(Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH),
            source="manual",
        )
    ]


def test_a_bare_created_task_has_no_patient_plan_or_tags() -> None:
    (created,) = decide(_create(), None, NOW)
    assert isinstance(created, TaskCreated)
    assert (created.source, created.sensitivity) == ("manual", ())
    assert (created.patient_id, created.plan_id, created.intervention_id) == (None, None, None)
    assert (created.huddle_id, created.due_date, created.assignee_id) == (None, None, None)


def test_a_tagged_task_about_no_patient_is_refused_as_nobody_could_read_or_change_it() -> None:
    # A tag is released by the patient's consent; with no patient, none can ever cover it,
    # so the task would be [restricted] to everyone and, seen redacted, changed by no one.
    with pytest.raises(InvalidInput) as caught:
        decide(_create(sensitivity=(Sensitivity.GENETIC,)), None, NOW)

    assert caught.value.message.startswith("sensitivity needs patientId")
    assert decide(_create(sensitivity=(Sensitivity.GENETIC,), patient_id="p-1"), None, NOW)


def test_creating_a_task_that_exists_is_a_conflict() -> None:
    with pytest.raises(StateConflict) as caught:
        decide(_create(), _task(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}


def test_the_backdate_limit_is_thirty_days() -> None:
    assert MAX_BACKDATE_DAYS == 30
    assert dates.earliest_today(NOW) == EARLIEST_TODAY


@pytest.mark.parametrize(
    "due",
    [
        EARLIEST_TODAY - timedelta(days=30),
        EARLIEST_TODAY - timedelta(days=1),
        EARLIEST_TODAY,
        date(2036, 11, 22),  # exactly ten years ahead
    ],
)
def test_a_due_date_up_to_thirty_days_back_or_ten_years_ahead_is_accepted(due: date) -> None:
    (created,) = decide(_create(due_date=due), None, NOW)
    assert isinstance(created, TaskCreated)
    assert created.due_date == due


def test_a_due_date_thirty_one_days_back_is_refused_naming_the_limit() -> None:
    with pytest.raises(InvalidInput) as caught:
        decide(_create(due_date=EARLIEST_TODAY - timedelta(days=31)), None, NOW)
    assert "dueDate" in caught.value.message
    assert "30 days" in caught.value.message
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_a_due_date_more_than_ten_years_ahead_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"dueDate .* more than 10 years"):
        decide(_create(due_date=date(2036, 11, 23)), None, NOW)


@pytest.mark.parametrize(
    ("title", "problem"),
    [("", "must not be empty"), ("   ", "must not be empty"), ("x" * 201, "at most 200")],
)
def test_a_blank_or_overlong_title_is_refused_when_the_command_is_built(
    title: str, problem: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build(CreateTask, task_id="task-1", team_id="t-1", title=title)
    assert caught.value.message.startswith("title ")
    assert problem in caught.value.message
    assert "xxxx" not in caught.value.message  # the value is never quoted


def test_a_title_of_two_hundred_characters_is_accepted() -> None:
    command = build(CreateTask, task_id="task-1", team_id="t-1", title="x" * 200)
    assert command.title == "x" * 200


# --- MoveTask ------------------------------------------------------------------------


def test_allowed_moves_cover_every_open_move_and_only_reopening_a_closed_task() -> None:
    assert len(MOVE_PAIRS) == 25
    assert len(ALLOWED_MOVES) == 3 * 4 + 1 + 2 * 2


@pytest.mark.parametrize(("before", "after"), MOVE_PAIRS, ids=[f"{a}->{b}" for a, b in MOVE_PAIRS])
def test_a_move_is_recorded_only_along_the_documented_moves(
    before: TaskStatus, after: TaskStatus
) -> None:
    # A move to BLOCKED always says why, and (from BLOCKED) gives a new reason.
    reason = "Waiting for the GP" if after is S.BLOCKED else None
    command = MoveTask(task_id="task-1", status=after, reason=reason)
    if (before, after) in ALLOWED_MOVES:
        assert decide(command, _task(before), NOW) == [
            TaskMoved(task_id="task-1", status=after, previous=before, reason=reason)
        ]
    elif before is after:
        assert decide(command, _task(before), NOW) == []  # already there: nothing changes
    else:
        with pytest.raises(StateConflict) as caught:
            decide(command, _task(before), NOW)
        assert "task-1" in caught.value.message


@pytest.mark.parametrize("status", [S.TODO, S.IN_PROGRESS, S.DONE, S.CANCELLED])
def test_moving_a_task_to_its_own_status_changes_nothing(status: TaskStatus) -> None:
    assert decide(MoveTask(task_id="task-1", status=status), _task(status), NOW) == []


def test_blocking_a_blocked_task_for_the_same_reason_changes_nothing() -> None:
    command = MoveTask(task_id="task-1", status=S.BLOCKED, reason="Waiting for lab")
    assert decide(command, _task(S.BLOCKED, blocked_reason="Waiting for lab"), NOW) == []


def test_blocking_a_blocked_task_for_a_new_reason_records_the_new_reason() -> None:
    command = MoveTask(task_id="task-1", status=S.BLOCKED, reason="Waiting for the GP")
    assert decide(command, _task(S.BLOCKED, blocked_reason="Waiting for lab"), NOW) == [
        TaskMoved(
            task_id="task-1", status=S.BLOCKED, previous=S.BLOCKED, reason="Waiting for the GP"
        )
    ]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_moving_to_blocked_without_a_reason_is_refused_asking_for_one(
    reason: str | None,
) -> None:
    command = build(MoveTask, task_id="task-1", status="BLOCKED", reason=reason)
    with pytest.raises(InvalidInput, match="reason"):
        decide(command, _task(S.TODO), NOW)


def test_a_move_carries_the_previous_status_and_the_reason_given() -> None:
    command = build(MoveTask, task_id="task-1", status="DONE", reason="  Result filed  ")
    assert decide(command, _task(S.IN_PROGRESS), NOW) == [
        TaskMoved(task_id="task-1", status=S.DONE, previous=S.IN_PROGRESS, reason="Result filed")
    ]


@pytest.mark.parametrize(
    "command",
    [
        MoveTask(task_id="task-1", status=S.DONE),
        MoveTask(task_id="task-1", status=S.BLOCKED, reason="Waiting for lab"),
        AssignTask(task_id="task-1", assignee_id="u-2"),
    ],
    ids=["move", "block", "assign"],
)
def test_changing_a_task_that_does_not_exist_is_a_conflict(command: object) -> None:
    with pytest.raises(StateConflict, match="does not exist"):
        decide(command, None, NOW)


def test_a_task_cannot_handle_a_foreign_command() -> None:
    with pytest.raises(InvalidInput, match="GoalAdded"):
        decide(GoalAdded(plan_id="cp-1", goal_id="g-1", description="Walk"), _task(), NOW)


# --- AssignTask ----------------------------------------------------------------------


@pytest.mark.parametrize("previous", [None, "u-1"])
@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_assigning_an_open_task_to_someone_new_records_the_previous_assignee(
    status: TaskStatus, previous: str | None
) -> None:
    command = AssignTask(task_id="task-1", assignee_id="u-2")
    assert decide(command, _task(status, assignee_id=previous), NOW) == [
        TaskAssigned(task_id="task-1", assignee_id="u-2", previous_assignee_id=previous)
    ]


def test_assigning_a_task_to_its_assignee_changes_nothing() -> None:
    command = AssignTask(task_id="task-1", assignee_id="u-2")
    assert decide(command, _task(S.IN_PROGRESS, assignee_id="u-2"), NOW) == []


@pytest.mark.parametrize("status", CLOSED_STATUSES)
@pytest.mark.parametrize("previous", [None, "u-1"])
def test_assigning_a_done_or_cancelled_task_is_a_conflict(
    status: TaskStatus, previous: str | None
) -> None:
    command = AssignTask(task_id="task-1", assignee_id="u-2")
    with pytest.raises(StateConflict, match="reopen it"):
        decide(command, _task(status, assignee_id=previous), NOW)


# --- close ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", CLOSED_STATUSES)
@pytest.mark.parametrize("status", OPEN_STATUSES)
def test_closing_an_open_task_moves_it_with_the_reason(
    status: TaskStatus, target: TaskStatus
) -> None:
    assert close(_task(status), target, "No longer needed.") == TaskMoved(
        task_id="task-1", status=target, previous=status, reason="No longer needed."
    )


@pytest.mark.parametrize("target", CLOSED_STATUSES)
@pytest.mark.parametrize("status", CLOSED_STATUSES)
def test_closing_a_closed_task_does_nothing(status: TaskStatus, target: TaskStatus) -> None:
    assert close(_task(status), target, "No longer needed.") is None


def test_closing_a_task_that_does_not_exist_does_nothing() -> None:
    assert close(None, S.CANCELLED, "No longer needed.") is None


# --- tasks started by other records --------------------------------------------------

INTERVENTION = InterventionAdded(
    plan_id="cp-1",
    intervention_id="i-1",
    kind=InterventionKind.THERAPY,
    tier=Tier.SECOND_LINE,
    title="CBT",
    detail="weekly",
    responsible_discipline=Discipline.MENTAL_HEALTH,
    sensitivity=(Sensitivity.MENTAL_HEALTH,),
    due_date=date(2026, 12, 1),
)
REVIEWED = CarePlanReviewed(plan_id="cp-1", summary="Stable", next_review_date=date(2027, 2, 20))


def test_an_intervention_starts_a_task_for_its_discipline_due_and_tagged_as_it_is() -> None:
    assert from_intervention(INTERVENTION, team_id="t-1", patient_id="p-1") == TaskCreated(
        task_id=intervention_task_id("i-1"),
        team_id="t-1",
        title="CBT",
        patient_id="p-1",
        plan_id="cp-1",
        intervention_id="i-1",
        discipline=Discipline.MENTAL_HEALTH,
        due_date=date(2026, 12, 1),
        sensitivity=(Sensitivity.MENTAL_HEALTH,),
        source="intervention",
    )


def test_intervention_task_ids_are_deterministic_and_distinct() -> None:
    assert intervention_task_id("i-1") == intervention_task_id("i-1")
    assert intervention_task_id("i-1") != intervention_task_id("i-2")
    assert intervention_task_id("i-1") != "i-1"
    again = from_intervention(INTERVENTION, team_id="t-1", patient_id="p-1")
    other = from_intervention(
        INTERVENTION.model_copy(update={"intervention_id": "i-2"}), team_id="t-1", patient_id="p-1"
    )
    assert again.task_id == intervention_task_id("i-1")
    assert other.task_id == intervention_task_id("i-2")


def test_review_task_ids_are_deterministic_and_distinct_per_plan_and_number() -> None:
    assert review_task_id("cp-1", 1) == review_task_id("cp-1", 1)
    ids = {review_task_id(plan, n) for plan in ("cp-1", "cp-2") for n in (1, 2, 3)}
    assert len(ids) == 6
    assert review_task_id("cp-1", 1) != intervention_task_id("cp-1")
    # No collision from how plan id and number are joined.
    assert review_task_id("cp-1", 12) != review_task_id("cp-11", 2)


def test_a_review_starts_a_review_task_due_on_the_next_review_date() -> None:
    assert from_review(
        REVIEWED, plan_title="Diabetes", team_id="t-1", patient_id="p-1", number=2
    ) == TaskCreated(
        task_id=review_task_id("cp-1", 2),
        team_id="t-1",
        title="Review care plan: Diabetes",
        patient_id="p-1",
        plan_id="cp-1",
        due_date=date(2027, 2, 20),
        source="review",
    )


def test_an_action_item_task_keeps_the_items_task_id() -> None:
    item = ActionItemRaised(huddle_id="h-1", task_id="task-7", title="Call GP")
    created = from_action_item(item, team_id="t-1")
    assert (created.task_id, created.huddle_id, created.source) == ("task-7", "h-1", "action_item")
    assert from_action_item(item, team_id="t-1") == created


# --- board tasks of a care-plan change -----------------------------------------------


class FakeRepository(Repository):
    """Aggregates by stream id, as `load` returns them; records what was loaded."""

    def __init__(self, streams: dict[str, Loaded[Any]] | None = None) -> None:
        # No event store: nothing here reads one.
        self.streams = streams or {}
        self.loaded: list[str] = []

    async def load(self, kind: AggregateType[Any], aggregate_id: str) -> Loaded[Any]:
        stream_id = kind.stream_id(aggregate_id)
        self.loaded.append(stream_id)
        return self.streams.get(stream_id, Loaded(None, 0))

    async def load_many(self, kind: AggregateType[Any], ids: Sequence[str]) -> list[Loaded[Any]]:
        found = [await self.load(kind, i) for i in ids]
        return [f for f in found if f.state is not None]


def _plan(reviews: int = 0) -> Loaded[CarePlan]:
    plan = CarePlan(id="cp-1", patient_id="p-1", team_id="t-1", title="Diabetes", reviews=reviews)
    return Loaded(plan, 7)


SCOPE = Scope("t-1", "p-1")


def _stream(task_id: str) -> str:
    return f"task-{task_id}"


DISCONTINUED = InterventionDiscontinued(
    plan_id="cp-1", intervention_id="i-1", reason="Side effects"
)


async def test_an_intervention_added_starts_its_task_on_a_new_stream() -> None:
    repository = FakeRepository()
    follow_ups = await plan_tasks(repository, [INTERVENTION], _plan(), SCOPE)
    task_id = intervention_task_id("i-1")
    assert follow_ups == [
        FollowUp(
            _stream(task_id),
            [from_intervention(INTERVENTION, team_id="t-1", patient_id="p-1")],
            expected_version=0,
        )
    ]
    (created,) = follow_ups[0].events
    assert isinstance(created, TaskCreated)
    assert (created.task_id, created.team_id, created.patient_id) == (task_id, "t-1", "p-1")
    assert repository.loaded == []


@pytest.mark.parametrize("status", OPEN_STATUSES)
async def test_an_intervention_discontinued_cancels_its_open_task_at_the_version_read(
    status: TaskStatus,
) -> None:
    task_id = intervention_task_id("i-1")
    task = _task(status, task_id=task_id)
    repository = FakeRepository({_stream(task_id): Loaded(task, 3)})
    (follow_up,) = await plan_tasks(repository, [DISCONTINUED], _plan(), SCOPE)
    assert (follow_up.stream_id, follow_up.expected_version) == (_stream(task_id), 3)
    (moved,) = follow_up.events
    assert isinstance(moved, TaskMoved)
    assert (moved.task_id, moved.status, moved.previous) == (task_id, S.CANCELLED, status)
    assert moved.reason


@pytest.mark.parametrize("status", CLOSED_STATUSES)
async def test_an_intervention_discontinued_leaves_a_closed_task_alone(status: TaskStatus) -> None:
    task_id = intervention_task_id("i-1")
    repository = FakeRepository({_stream(task_id): Loaded(_task(status, task_id=task_id), 4)})
    assert await plan_tasks(repository, [DISCONTINUED], _plan(), SCOPE) == []
    assert repository.loaded == [_stream(task_id)]


async def test_an_intervention_discontinued_without_a_task_starts_nothing() -> None:
    repository = FakeRepository()
    assert await plan_tasks(repository, [DISCONTINUED], _plan(), SCOPE) == []
    assert repository.loaded == [_stream(intervention_task_id("i-1"))]


def _review_task(number: int) -> TaskCreated:
    return TaskCreated(
        task_id=review_task_id("cp-1", number),
        team_id="t-1",
        title="Review care plan: Diabetes",
        patient_id="p-1",
        plan_id="cp-1",
        due_date=date(2027, 2, 20),
        source="review",
    )


async def test_the_first_review_only_starts_review_task_one() -> None:
    repository = FakeRepository()
    assert await plan_tasks(repository, [REVIEWED], _plan(reviews=0), SCOPE) == [
        FollowUp(_stream(review_task_id("cp-1", 1)), [_review_task(1)])
    ]
    assert repository.loaded == []


async def test_the_second_review_closes_review_task_one_and_starts_review_task_two() -> None:
    first = review_task_id("cp-1", 1)
    repository = FakeRepository({_stream(first): Loaded(_task(S.IN_PROGRESS, task_id=first), 1)})
    done, started = await plan_tasks(repository, [REVIEWED], _plan(reviews=1), SCOPE)
    assert (done.stream_id, done.expected_version) == (_stream(first), 1)
    (moved,) = done.events
    assert isinstance(moved, TaskMoved)
    assert (moved.task_id, moved.status, moved.previous) == (first, S.DONE, S.IN_PROGRESS)
    assert moved.reason
    assert started == FollowUp(_stream(review_task_id("cp-1", 2)), [_review_task(2)])


async def test_a_review_after_the_previous_review_task_was_done_only_starts_the_next() -> None:
    second = review_task_id("cp-1", 2)
    repository = FakeRepository({_stream(second): Loaded(_task(S.DONE, task_id=second), 2)})
    assert await plan_tasks(repository, [REVIEWED], _plan(reviews=2), SCOPE) == [
        FollowUp(_stream(review_task_id("cp-1", 3)), [_review_task(3)])
    ]
    assert repository.loaded == [_stream(second)]


@pytest.mark.parametrize(
    "event",
    [GoalAdded(plan_id="cp-1", goal_id="g-1", description="Walk")],
    ids=["GoalAdded"],
)
async def test_other_plan_events_start_no_board_tasks(event: Event) -> None:
    repository = FakeRepository()
    assert await plan_tasks(repository, [event], _plan(reviews=1), SCOPE) == []
    assert repository.loaded == []


@pytest.mark.parametrize("status", [PlanStatus.COMPLETED, PlanStatus.REVOKED])
async def test_a_plan_completed_or_revoked_cancels_its_open_tasks(status: PlanStatus) -> None:
    active = Intervention(
        id="i-1",
        kind=InterventionKind.MEDICATION,
        tier=Tier.FIRST_LINE,
        title="Metformin",
        detail=None,
        responsible_discipline=Discipline.PHARMACIST,
        sensitivity=(),
        due_date=None,
    )
    stopped = replace(active, id="i-2", active=False)
    finished = replace(active, id="i-3")
    base = _plan(reviews=1).state
    assert base is not None
    plan = replace(base, interventions=(active, stopped, finished))
    open_review = review_task_id("cp-1", 1)
    repository = FakeRepository(
        {
            _stream(intervention_task_id("i-1")): Loaded(
                _task(S.IN_PROGRESS, task_id=intervention_task_id("i-1")), 2
            ),
            _stream(intervention_task_id("i-3")): Loaded(
                _task(S.DONE, task_id=intervention_task_id("i-3")), 3
            ),
            _stream(open_review): Loaded(_task(S.TODO, task_id=open_review), 1),
        }
    )
    changed = PlanStatusChanged(plan_id="cp-1", status=status, previous=PlanStatus.ACTIVE)
    follow_ups = await plan_tasks(repository, [changed], Loaded(plan, 9), SCOPE)
    reason = f"Care plan {status.value.lower()}."
    assert follow_ups == [
        FollowUp(
            _stream(intervention_task_id("i-1")),
            [
                TaskMoved(
                    task_id=intervention_task_id("i-1"),
                    status=S.CANCELLED,
                    previous=S.IN_PROGRESS,
                    reason=reason,
                )
            ],
            expected_version=2,
        ),
        FollowUp(
            _stream(open_review),
            [TaskMoved(task_id=open_review, status=S.CANCELLED, previous=S.TODO, reason=reason)],
            expected_version=1,
        ),
    ]


async def test_a_plan_put_on_hold_leaves_its_tasks_alone() -> None:
    changed = PlanStatusChanged(
        plan_id="cp-1", status=PlanStatus.ON_HOLD, previous=PlanStatus.ACTIVE
    )
    assert await plan_tasks(FakeRepository(), [changed], _plan(reviews=1), SCOPE) == []
