"""The board read model as pure functions: what a batch touches, what each event makes of
it, the task card it publishes, and the board update's wire form."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson
import pytest

from schemas.base import Event
from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.careplan import CarePlanCreated, CarePlanReviewed, GoalAdded, PlanStatusChanged
from schemas.codec import decode_board_update, encode_board_update, publish_queued_board_update
from schemas.common import Discipline, PlanStatus, Purpose, Sensitivity, TaskStatus
from schemas.consent import ConsentGranted, ConsentRevoked
from schemas.envelope import Envelope
from schemas.errors import InvalidEvent, MalformedMessage
from schemas.huddle import (
    ActionItemRaised,
    HuddleClosed,
    HuddleNoteRecorded,
    HuddleOpened,
    HuddleScheduled,
)
from schemas.task import TaskAssigned, TaskCreated, TaskMoved
from schemas.team import MemberRemoved, RoleRevoked, TeamCreated
from services.tasks.domain import Task
from services.tasks.projector import (
    CONSENT_CARDS,
    CONSENT_MORE,
    Applied,
    Board,
    HuddleSlot,
    Notice,
    PlanSchedule,
    Wanted,
    apply,
    merge,
    wanted,
)
from services.tasks.store import _body, card, task_from_card, task_from_row

CREATED_AT = datetime(2026, 11, 20, 8, tzinfo=UTC)
WHEN = datetime(2026, 11, 22, 12, tzinfo=UTC)
MEETING = datetime(2026, 11, 24, 9, tzinfo=UTC)


def _env(payload: Event, *, at: datetime = WHEN, patient_id: str | None = None) -> Envelope:
    return Envelope.wrap(
        payload,
        event_id=uuid4(),
        stream_id="stream-1",
        stream_version=1,
        team_id="t-1",
        actor_id="u-1",
        occurred_at=at,
        correlation_id="c-1",
        patient_id=patient_id,
    )


TASK_CREATED = TaskCreated(
    task_id="task-1",
    team_id="t-1",
    title="Check INR",
    patient_id="p-1",
    plan_id="cp-1",
    intervention_id="i-1",
    discipline=Discipline.NURSE,
    assignee_id="u-2",
    due_date=date(2026, 11, 30),
    sensitivity=(Sensitivity.GENETIC,),
    source="intervention",
)
ON_BOARD = Task(
    id="task-1",
    team_id="t-1",
    title="Check INR",
    source="intervention",
    updated_at=CREATED_AT,
    created_at=CREATED_AT,
    patient_id="p-1",
    plan_id="cp-1",
    intervention_id="i-1",
    discipline=Discipline.NURSE,
    assignee_id="u-2",
    due_date=date(2026, 11, 30),
    sensitivity=(Sensitivity.GENETIC,),
)
ITEM_TASK = Task(
    id="task-7",
    team_id="t-1",
    title="Call GP",
    source="action_item",
    updated_at=CREATED_AT,
    created_at=CREATED_AT,
    huddle_id="h-1",
)
PLAN = PlanSchedule("cp-1", "t-1", "p-1", PlanStatus.ACTIVE)
SLOT = HuddleSlot("h-1", "t-1", "SCHEDULED", MEETING)

CONSENT = ConsentGranted(
    consent_id="c-1",
    patient_id="p-1",
    categories=(Sensitivity.GENETIC,),
    purposes=(Purpose.TREATMENT,),
    disciplines=(Discipline.GENETIC_COUNSELOR,),
    evidence="form-1",
)


def _board() -> Board:
    return Board(
        tasks={"task-1": ON_BOARD, "task-7": ITEM_TASK},
        plans={"cp-1": PLAN},
        huddles={"h-1": SLOT},
    )


def _huddle_notice(huddle_id: str = "h-1") -> Notice:
    return Notice("t-1", "huddle", huddle_id=huddle_id)


# --- wanted --------------------------------------------------------------------------


def test_wanted_collects_the_task_plan_and_huddle_ids_a_batch_touches() -> None:
    envelopes = [
        _env(TASK_CREATED),
        _env(TaskMoved(task_id="task-2", status=TaskStatus.DONE, previous=TaskStatus.TODO)),
        _env(TaskAssigned(task_id="task-3", assignee_id="u-2")),
        _env(TaskAssigned(task_id="task-1", assignee_id="u-3")),
        _env(CarePlanCreated(plan_id="cp-1", patient_id="p-1", team_id="t-1", title="D")),
        _env(
            PlanStatusChanged(plan_id="cp-2", status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT)
        ),
        _env(CarePlanReviewed(plan_id="cp-3", summary="Stable", next_review_date=date(2027, 1, 1))),
        _env(HuddleScheduled(huddle_id="h-1", team_id="t-1", scheduled_for=MEETING)),
        _env(HuddleOpened(huddle_id="h-2")),
        _env(HuddleClosed(huddle_id="h-3")),
    ]
    assert wanted(envelopes) == Wanted(
        task_ids=frozenset({"task-1", "task-2", "task-3"}),
        plan_ids=frozenset({"cp-1", "cp-2", "cp-3"}),
        huddle_ids=frozenset({"h-1", "h-2", "h-3"}),
    )


def test_wanted_collects_nothing_for_events_that_change_no_board_record() -> None:
    envelopes = [
        _env(GoalAdded(plan_id="cp-1", goal_id="g-1", description="Walk")),
        _env(HuddleNoteRecorded(huddle_id="h-1", note_id="n-1", text="Discussed")),
        _env(ActionItemRaised(huddle_id="h-1", task_id="task-7", title="Call GP")),
        _env(RoleRevoked(team_id="t-1", user_id="u-2", discipline=Discipline.NURSE)),
        _env(MemberRemoved(team_id="t-1", user_id="u-2")),
        _env(TeamCreated(team_id="t-1", name="Oncology", lead_user_id="u-1", lead_name="Ada")),
    ]
    assert wanted(envelopes) == Wanted(frozenset(), frozenset(), frozenset())
    assert wanted([]) == Wanted(frozenset(), frozenset(), frozenset())


def test_wanted_collects_the_patients_whose_cards_a_consent_change_re_decides() -> None:
    revoked = ConsentRevoked(consent_id="c-1", patient_id="p-2", evidence="form-2")
    envelopes = [_env(CONSENT, patient_id="p-1"), _env(revoked, patient_id="p-2")]
    assert wanted(envelopes) == Wanted(
        frozenset(), frozenset(), frozenset(), patient_ids=frozenset({"p-1", "p-2"})
    )


# --- apply: tasks --------------------------------------------------------------------


def test_a_created_task_goes_on_the_board_with_the_events_fields() -> None:
    applied = apply(Board(), _env(TASK_CREATED, at=CREATED_AT))
    assert applied == Applied(
        tasks=(ON_BOARD,),
        notices=(Notice("t-1", "task", BoardChange.CREATED, task=ON_BOARD),),
    )


def test_a_created_task_of_a_huddle_also_tells_subscribers_to_reread_the_huddle() -> None:
    created = TaskCreated(
        task_id="task-7", team_id="t-1", title="Call GP", huddle_id="h-1", source="action_item"
    )
    applied = apply(Board(), _env(created, at=CREATED_AT))
    assert applied.tasks == (ITEM_TASK,)
    assert applied.notices == (
        Notice("t-1", "task", BoardChange.CREATED, task=ITEM_TASK),
        _huddle_notice("h-1"),
    )


def test_a_moved_task_changes_status_and_time_and_is_announced_as_moved() -> None:
    moved = TaskMoved(
        task_id="task-1", status=TaskStatus.BLOCKED, previous=TaskStatus.TODO, reason="Lab"
    )
    applied = apply(_board(), _env(moved))
    expected = replace(ON_BOARD, status=TaskStatus.BLOCKED, blocked_reason="Lab", updated_at=WHEN)
    assert applied == Applied(
        tasks=(expected,), notices=(Notice("t-1", "task", BoardChange.MOVED, task=expected),)
    )


def test_a_task_blocked_again_for_a_new_reason_shows_the_new_reason() -> None:
    board = _board()
    board.tasks["task-1"] = replace(ON_BOARD, status=TaskStatus.BLOCKED, blocked_reason="Lab")
    moved = TaskMoved(
        task_id="task-1", status=TaskStatus.BLOCKED, previous=TaskStatus.BLOCKED, reason="GP"
    )
    (task,) = apply(board, _env(moved)).tasks
    assert (task.status, task.blocked_reason) == (TaskStatus.BLOCKED, "GP")


def test_an_assigned_task_changes_assignee_and_is_announced_as_updated() -> None:
    assigned = TaskAssigned(task_id="task-1", assignee_id="u-9", previous_assignee_id="u-2")
    applied = apply(_board(), _env(assigned))
    expected = replace(ON_BOARD, assignee_id="u-9", updated_at=WHEN)
    assert applied == Applied(
        tasks=(expected,), notices=(Notice("t-1", "task", BoardChange.UPDATED, task=expected),)
    )


@pytest.mark.parametrize(
    ("event", "change"),
    [
        (
            TaskMoved(task_id="task-7", status=TaskStatus.DONE, previous=TaskStatus.TODO),
            BoardChange.MOVED,
        ),
        (TaskAssigned(task_id="task-7", assignee_id="u-9"), BoardChange.UPDATED),
    ],
    ids=["moved", "assigned"],
)
def test_a_change_to_a_huddles_task_also_tells_subscribers_to_reread_the_huddle(
    event: Event, change: BoardChange
) -> None:
    applied = apply(_board(), _env(event))
    (task,) = applied.tasks
    assert applied.notices == (Notice("t-1", "task", change, task=task), _huddle_notice("h-1"))


@pytest.mark.parametrize(
    "event",
    [
        TaskMoved(task_id="task-9", status=TaskStatus.DONE, previous=TaskStatus.TODO),
        TaskAssigned(task_id="task-9", assignee_id="u-2"),
    ],
    ids=["moved", "assigned"],
)
def test_a_change_to_a_task_not_on_the_board_cannot_be_applied(event: Event) -> None:
    with pytest.raises(ValueError, match="before TaskCreated"):
        apply(_board(), _env(event))


# --- apply: plans --------------------------------------------------------------------


def test_a_created_plan_is_scheduled_as_a_draft_without_a_review_date() -> None:
    created = CarePlanCreated(plan_id="cp-2", patient_id="p-2", team_id="t-1", title="Asthma")
    assert apply(Board(), _env(created)) == Applied(
        plans=(PlanSchedule("cp-2", "t-1", "p-2", PlanStatus.DRAFT),)
    )


@pytest.mark.parametrize("status", [PlanStatus.ON_HOLD, PlanStatus.COMPLETED])
def test_a_plan_status_change_updates_the_plans_status_only(status: PlanStatus) -> None:
    board = _board()
    board.plans["cp-1"] = replace(PLAN, next_review_date=date(2027, 1, 1), reviewed_at=CREATED_AT)
    changed = PlanStatusChanged(plan_id="cp-1", status=status, previous=PlanStatus.ACTIVE)
    assert apply(board, _env(changed)) == Applied(
        plans=(replace(board.plans["cp-1"], status=status),)
    )


def test_a_review_sets_the_next_review_date_and_when_it_was_reviewed() -> None:
    reviewed = CarePlanReviewed(plan_id="cp-1", summary="Stable", next_review_date=date(2027, 2, 1))
    assert apply(_board(), _env(reviewed)) == Applied(
        plans=(replace(PLAN, next_review_date=date(2027, 2, 1), reviewed_at=WHEN),)
    )


@pytest.mark.parametrize(
    "event",
    [
        PlanStatusChanged(plan_id="cp-9", status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT),
        CarePlanReviewed(plan_id="cp-9", summary="Stable", next_review_date=date(2027, 2, 1)),
    ],
    ids=["status", "review"],
)
def test_a_change_to_a_plan_not_on_the_board_cannot_be_applied(event: Event) -> None:
    with pytest.raises(ValueError, match="cp-9"):
        apply(_board(), _env(event))


# --- apply: huddles ------------------------------------------------------------------


def test_a_scheduled_huddle_is_recorded_and_announced() -> None:
    scheduled = HuddleScheduled(huddle_id="h-2", team_id="t-1", scheduled_for=MEETING)
    assert apply(Board(), _env(scheduled)) == Applied(
        huddles=(HuddleSlot("h-2", "t-1", "SCHEDULED", MEETING),),
        notices=(_huddle_notice("h-2"),),
    )


def test_an_opened_huddle_is_open_and_announced() -> None:
    assert apply(_board(), _env(HuddleOpened(huddle_id="h-1"))) == Applied(
        huddles=(replace(SLOT, status="OPEN"),), notices=(_huddle_notice(),)
    )


def test_a_closed_huddle_is_closed_when_the_event_occurred_and_announced() -> None:
    board = _board()
    board.huddles["h-1"] = replace(SLOT, status="OPEN")
    assert apply(board, _env(HuddleClosed(huddle_id="h-1"))) == Applied(
        huddles=(replace(SLOT, status="CLOSED", closed_at=WHEN),), notices=(_huddle_notice(),)
    )


@pytest.mark.parametrize("event", [HuddleOpened(huddle_id="h-9"), HuddleClosed(huddle_id="h-9")])
def test_a_change_to_a_huddle_not_on_the_board_cannot_be_applied(event: Event) -> None:
    with pytest.raises(ValueError, match="h-9"):
        apply(_board(), _env(event))


@pytest.mark.parametrize(
    "event",
    [
        HuddleNoteRecorded(huddle_id="h-3", note_id="n-1", text="Discussed", patient_id="p-1"),
        ActionItemRaised(huddle_id="h-3", task_id="task-8", title="Call GP"),
    ],
    ids=["note", "action-item"],
)
def test_a_huddle_note_or_action_item_only_tells_subscribers_to_reread_the_huddle(
    event: Event,
) -> None:
    # The huddle need not be on the board: nothing of it is changed.
    assert apply(Board(), _env(event)) == Applied(notices=(_huddle_notice("h-3"),))


# --- apply: roster and everything else -----------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        RoleRevoked(team_id="t-1", user_id="u-2", discipline=Discipline.NURSE),
        MemberRemoved(team_id="t-1", user_id="u-2"),
    ],
    ids=["role-revoked", "member-removed"],
)
def test_a_member_losing_a_role_is_a_roster_notice_for_the_team(event: Event) -> None:
    assert apply(_board(), _env(event)) == Applied(notices=(Notice("t-1", "roster"),))


@pytest.mark.parametrize(
    "event",
    [
        GoalAdded(plan_id="cp-1", goal_id="g-1", description="Walk"),
        TeamCreated(team_id="t-1", name="Oncology", lead_user_id="u-1", lead_name="Ada"),
    ],
    ids=["goal-added", "team-created"],
)
def test_events_the_board_does_not_show_change_nothing(event: Event) -> None:
    assert apply(_board(), _env(event)) == Applied()


@pytest.mark.parametrize(
    "event",
    [CONSENT, ConsentRevoked(consent_id="c-1", patient_id="p-1", evidence="form-2")],
    ids=["granted", "revoked"],
)
def test_a_consent_change_has_the_patients_cards_decided_again_and_changes_no_record(
    event: Event,
) -> None:
    # What viewers may see of the cards changed; the cards themselves did not. The notice
    # carries the patient's sensitive cards as they stand at the change.
    assert apply(_board(), _env(event)) == Applied(
        notices=(Notice("t-1", "consent", patient_id="p-1", tasks=(ON_BOARD,)),)
    )


def test_a_consent_change_re_decides_only_the_patients_tagged_cards_open_or_closed_lately() -> None:
    at = CREATED_AT + timedelta(days=400)
    board = _board()
    board.tasks |= {
        "untagged": replace(ON_BOARD, id="untagged", sensitivity=()),
        "other": replace(ON_BOARD, id="other", patient_id="p-9"),
        "done-lately": replace(
            ON_BOARD, id="done-lately", status=TaskStatus.DONE, updated_at=at - timedelta(days=2)
        ),
        "done-long-ago": replace(ON_BOARD, id="done-long-ago", status=TaskStatus.DONE),
    }
    [notice] = apply(board, _env(CONSENT, at=at)).notices
    # Oldest first (these were all created together: then by id).
    assert [t.id for t in notice.tasks] == ["done-lately", "task-1"]


def test_a_consent_change_re_decides_a_card_closed_before_the_boards_default_days() -> None:
    # Closed 20 days before the change: past a default board read's 14 days, but a board
    # read with closedDays (or a wall screen that read it a week ago) still shows it, and
    # must hear that it is now withheld.
    at = CREATED_AT + timedelta(days=30)
    board = _board()
    closed = replace(
        ON_BOARD, id="done-weeks-ago", status=TaskStatus.DONE, updated_at=at - timedelta(days=20)
    )
    board.tasks |= {closed.id: closed}
    [notice] = apply(board, _env(CONSENT, at=at)).notices
    assert [t.id for t in notice.tasks] == ["done-weeks-ago", "task-1"]


def test_a_consent_change_over_many_cards_comes_in_parts_each_within_the_brokers_limit() -> None:
    # A patient's many tagged cards in one update would outgrow what the broker takes, and
    # stop every team's board updates queued behind it.
    at = CREATED_AT + timedelta(days=1)
    board = _board()
    board.tasks = {
        f"task-{i:03}": replace(ON_BOARD, id=f"task-{i:03}", blocked_reason="x" * 1000)
        for i in range(CONSENT_CARDS * 2 + 5)
    }
    notices = apply(board, _env(CONSENT, at=at)).notices
    updates = [
        decode_board_update(publish_queued_board_update(1, _body(replace(n, position=7)).decode()))
        for n in notices
    ]

    assert [len(n.tasks) for n in notices] == [CONSENT_CARDS, CONSENT_CARDS, 5]
    assert [n.change for n in notices] == [CONSENT_MORE, CONSENT_MORE, None]
    assert [t.id for n in notices for t in n.tasks] == sorted(board.tasks)
    assert max(len(_body(n)) for n in notices) < 1024 * 1024
    assert [u.change for u in updates] == [CONSENT_MORE, CONSENT_MORE, None]


ALL_KINDS: list[Event] = [
    TASK_CREATED,
    TaskMoved(task_id="task-1", status=TaskStatus.DONE, previous=TaskStatus.TODO),
    TaskAssigned(task_id="task-7", assignee_id="u-9"),
    CarePlanCreated(plan_id="cp-1", patient_id="p-1", team_id="t-1", title="D"),
    PlanStatusChanged(plan_id="cp-1", status=PlanStatus.ON_HOLD, previous=PlanStatus.ACTIVE),
    CarePlanReviewed(plan_id="cp-1", summary="Stable", next_review_date=date(2027, 2, 1)),
    HuddleScheduled(huddle_id="h-1", team_id="t-1", scheduled_for=MEETING),
    HuddleOpened(huddle_id="h-1"),
    HuddleClosed(huddle_id="h-1"),
    HuddleNoteRecorded(huddle_id="h-1", note_id="n-1", text="Discussed"),
    ActionItemRaised(huddle_id="h-1", task_id="task-8", title="Call GP"),
    MemberRemoved(team_id="t-1", user_id="u-2"),
]


@pytest.mark.parametrize("event", ALL_KINDS, ids=[e.event_type for e in ALL_KINDS])
def test_apply_never_changes_the_board_it_is_given(event: Event) -> None:
    board = _board()
    before = copy.deepcopy(board)
    applied = apply(board, _env(event))
    assert board == before
    assert applied != Applied()


# --- merge ---------------------------------------------------------------------------


def _run(board: Board, *events: Event) -> list[Notice]:
    """What the store does with a batch: apply each event to the board as merged so far."""
    notices: list[Notice] = []
    for event in events:
        applied = apply(board, _env(event))
        merge(board, applied)
        notices += applied.notices
    return notices


def test_a_task_created_and_moved_in_one_batch_ends_in_its_final_status() -> None:
    board = Board()
    notices = _run(
        board,
        TASK_CREATED,
        TaskMoved(task_id="task-1", status=TaskStatus.IN_PROGRESS, previous=TaskStatus.TODO),
        TaskAssigned(task_id="task-1", assignee_id="u-9", previous_assignee_id="u-2"),
    )
    task = board.tasks["task-1"]
    assert (task.status, task.assignee_id, task.created_at) == (TaskStatus.IN_PROGRESS, "u-9", WHEN)
    assert [n.change for n in notices] == [
        BoardChange.CREATED,
        BoardChange.MOVED,
        BoardChange.UPDATED,
    ]
    assert notices[-1].task == task


def test_a_plan_and_a_huddle_created_in_one_batch_can_be_changed_in_it() -> None:
    board = Board()
    _run(
        board,
        CarePlanCreated(plan_id="cp-2", patient_id="p-2", team_id="t-1", title="Asthma"),
        PlanStatusChanged(plan_id="cp-2", status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT),
        CarePlanReviewed(plan_id="cp-2", summary="Stable", next_review_date=date(2027, 2, 1)),
        HuddleScheduled(huddle_id="h-2", team_id="t-1", scheduled_for=MEETING),
        HuddleOpened(huddle_id="h-2"),
        HuddleClosed(huddle_id="h-2"),
    )
    assert board.plans == {
        "cp-2": PlanSchedule("cp-2", "t-1", "p-2", PlanStatus.ACTIVE, date(2027, 2, 1), WHEN)
    }
    assert board.huddles == {"h-2": HuddleSlot("h-2", "t-1", "CLOSED", MEETING, WHEN)}


def test_merge_replaces_records_by_id_and_keeps_the_others() -> None:
    board = _board()
    moved = replace(ON_BOARD, status=TaskStatus.DONE)
    merge(board, Applied(tasks=(moved,), notices=(Notice("t-1", "roster"),)))
    assert board.tasks == {"task-1": moved, "task-7": ITEM_TASK}
    assert (board.plans, board.huddles) == ({"cp-1": PLAN}, {"h-1": SLOT})


# --- task cards and rows -------------------------------------------------------------

EVERY_FIELD = Task(
    id="task-1",
    team_id="t-1",
    title="Check INR",
    source="intervention",
    updated_at=WHEN,
    created_at=CREATED_AT,
    patient_id="p-1",
    plan_id="cp-1",
    intervention_id="i-1",
    huddle_id="h-1",
    discipline=Discipline.PHARMACIST,
    assignee_id="u-2",
    due_date=date(2026, 11, 30),
    sensitivity=(Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE),
    status=TaskStatus.BLOCKED,
    blocked_reason="Waiting for lab",
    signal_count=3,
    urgent_since=CREATED_AT,
    escalated_at=WHEN,
)


def test_a_task_with_every_field_set_survives_a_card_round_trip() -> None:
    shown = card(EVERY_FIELD)
    assert isinstance(shown, TaskCard)
    assert (shown.task_id, shown.status, shown.created_at) == (
        "task-1",
        TaskStatus.BLOCKED,
        CREATED_AT,
    )
    assert task_from_card(shown) == EVERY_FIELD


def test_a_card_of_a_task_without_created_at_shows_its_update_time() -> None:
    task = replace(EVERY_FIELD, created_at=None)
    assert card(task).created_at == WHEN


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": "task-1",
        "team_id": "t-1",
        "title": "Check INR",
        "source": "intervention",
        "status": "BLOCKED",
        "patient_id": "p-1",
        "plan_id": "cp-1",
        "intervention_id": "i-1",
        "huddle_id": "h-1",
        "discipline": "PHARMACIST",
        "assignee_id": "u-2",
        "due_date": date(2026, 11, 30),
        "sensitivity": ["GENETIC", "SUBSTANCE_USE"],
        "blocked_reason": "Waiting for lab",
        "created_at": CREATED_AT,
        "updated_at": WHEN,
        "signal_count": 3,
        "urgent_since": CREATED_AT,
        "escalated_at": WHEN,
    }
    return {**row, **changes}


def test_a_board_tasks_row_reads_as_the_task_with_enums() -> None:
    task = task_from_row(_row())
    assert task == EVERY_FIELD
    assert task.discipline is Discipline.PHARMACIST
    assert task.sensitivity == (Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE)


def test_a_bare_board_tasks_row_reads_with_no_discipline_and_no_tags() -> None:
    row = _row(
        status="TODO",
        patient_id=None,
        plan_id=None,
        intervention_id=None,
        huddle_id=None,
        discipline=None,
        assignee_id=None,
        due_date=None,
        sensitivity=[],
        blocked_reason=None,
        signal_count=0,
        urgent_since=None,
        escalated_at=None,
    )
    assert task_from_row(row) == Task(
        id="task-1",
        team_id="t-1",
        title="Check INR",
        source="intervention",
        updated_at=WHEN,
        created_at=CREATED_AT,
    )


# --- board updates on the wire -------------------------------------------------------


@pytest.mark.parametrize(
    "update",
    [
        BoardUpdate(
            seq=1, team_id="t-1", kind="task", change=BoardChange.MOVED, task=card(EVERY_FIELD)
        ),
        BoardUpdate(seq=42, team_id="t-1", kind="huddle", huddle_id="h-1"),
        BoardUpdate(seq=7, team_id="t-1", kind="roster"),
    ],
    ids=["task", "huddle", "roster"],
)
def test_a_board_update_round_trips_through_bytes(update: BoardUpdate) -> None:
    data = encode_board_update(update)
    assert isinstance(data, bytes)
    assert decode_board_update(data) == update


def test_a_board_update_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_board_update(b"{no")


def _task_update_without_seq() -> dict[str, Any]:
    update = BoardUpdate(
        seq=1,
        team_id="t-1",
        kind="task",
        change=BoardChange.CREATED,
        task=card(replace(EVERY_FIELD, title="Mrs Jones INR")),
    )
    body: dict[str, Any] = orjson.loads(encode_board_update(update))
    del body["seq"]
    return body


def test_a_board_update_without_seq_is_invalid_and_does_not_quote_the_task() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_board_update(orjson.dumps(_task_update_without_seq()))
    assert caught.value.field == "seq"
    assert "Mrs Jones" not in str(caught.value)


@pytest.mark.parametrize("seq", ["1", 0, 1.5])
def test_a_board_update_with_a_seq_that_is_not_a_positive_integer_is_invalid(seq: object) -> None:
    body = {**_task_update_without_seq(), "seq": seq}
    with pytest.raises(InvalidEvent) as caught:
        decode_board_update(orjson.dumps(body))
    assert caught.value.field == "seq"
    assert "Mrs Jones" not in str(caught.value)


@pytest.mark.parametrize("blocked", [False, True])
def test_a_queued_notice_reads_back_as_the_card_of_its_task(blocked: bool) -> None:
    task = Task(
        id="t-1",
        team_id="team-1",
        title="Warfarin dose per CYP2C9 result",
        source="intervention",
        status=TaskStatus.BLOCKED if blocked else TaskStatus.IN_PROGRESS,
        patient_id="p-1",
        plan_id="plan-1",
        intervention_id="i-1",
        huddle_id=None,
        discipline=Discipline.PHARMACIST,
        assignee_id="u-2",
        due_date=date(2026, 12, 1),
        sensitivity=(Sensitivity.GENETIC,),
        blocked_reason="waiting for the lab" if blocked else None,
        created_at=None if blocked else datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
        updated_at=datetime(2026, 11, 2, 14, 5, 7, 123456, tzinfo=UTC),
    )
    notice = Notice("team-1", "task", BoardChange.MOVED, task=task)

    update = BoardUpdate.model_validate({**orjson.loads(_body(notice)), "seq": 3})

    assert update.task == card(task)
    assert update.change is BoardChange.MOVED and update.kind == "task"
    assert task_from_card(update.task) == replace(
        task, created_at=task.created_at or task.updated_at
    )


@pytest.mark.parametrize(
    "notice",
    [
        Notice("team-1", "task", BoardChange.MOVED, task=EVERY_FIELD, position=12),
        Notice("team-1", "roster"),
        Notice("team-1", "goal", plan_id="plan-1", goal_id="g-1", position=3),
    ],
    ids=["task", "roster", "goal"],
)
def test_a_queued_notice_is_published_as_its_update_with_the_seq_put_first(
    notice: Notice,
) -> None:
    published = publish_queued_board_update(41, _body(notice).decode())

    assert published.startswith(b'{"seq":41,')
    assert decode_board_update(published) == BoardUpdate.model_validate(
        {**orjson.loads(_body(notice)), "seq": 41}
    )


@pytest.mark.parametrize("body", ["{}", "[1]", '"text"', ""])
def test_a_queued_body_that_is_not_an_object_with_fields_is_not_published(body: str) -> None:
    with pytest.raises(MalformedMessage):
        publish_queued_board_update(1, body)
