"""The Huddle aggregate: schedule window, open/close state machine, notes and action items."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from schemas.base import Event
from schemas.common import Discipline, Sensitivity
from schemas.huddle import (
    ActionItemRaised,
    HuddleClosed,
    HuddleNoteRecorded,
    HuddleOpened,
    HuddleScheduled,
)
from schemas.team import TeamCreated
from services.common.commands import Command, build
from services.common.domain import Meta
from services.common.errors import InvalidInput, Refused, StateConflict
from services.plans.domain.huddle import (
    HUDDLE,
    ActionItem,
    CloseHuddle,
    Huddle,
    HuddleStatus,
    Note,
    OpenHuddle,
    RaiseActionItem,
    RecordHuddleNote,
    ScheduleHuddle,
    decide,
    evolve,
)
from services.plans.domain.team import CreateTeam

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
AT = NOW + timedelta(days=2)
META = Meta("u-1", datetime(2026, 11, 24, 9, 30, tzinfo=UTC), "t-1")

SCHEDULED = HuddleScheduled(huddle_id="h-1", team_id="t-1", scheduled_for=AT)
STATUS_EVENTS: dict[HuddleStatus, tuple[Event, ...]] = {
    HuddleStatus.SCHEDULED: (),
    HuddleStatus.OPEN: (HuddleOpened(huddle_id="h-1"),),
    HuddleStatus.CLOSED: (HuddleOpened(huddle_id="h-1"), HuddleClosed(huddle_id="h-1")),
}


def _fold(*events: Event, meta: Meta = META) -> Huddle:
    huddle: Huddle | None = None
    for event in events:
        huddle = evolve(huddle, event, meta)
    assert huddle is not None
    return huddle


def _huddle(status: HuddleStatus = HuddleStatus.SCHEDULED, *more: Event) -> Huddle:
    huddle = _fold(SCHEDULED, *STATUS_EVENTS[status], *more)
    assert huddle.status is status
    return huddle


def _schedule(at: datetime) -> ScheduleHuddle:
    return build(ScheduleHuddle, huddle_id="h-1", team_id="t-1", at=at)


def _note(note_id: str = "n-1", **fields: object) -> RecordHuddleNote:
    return build(RecordHuddleNote, huddle_id="h-1", note_id=note_id, text="BP up", **fields)


def _item(task_id: str = "task-1", **fields: object) -> RaiseActionItem:
    return build(RaiseActionItem, huddle_id="h-1", task_id=task_id, title="Call GP", **fields)


OPEN = build(OpenHuddle, huddle_id="h-1")
CLOSE = build(CloseHuddle, huddle_id="h-1")


def _refusal(error: type[Refused], command: object, huddle: Huddle | None) -> Refused:
    with pytest.raises(error) as caught:
        decide(command, huddle, NOW)
    assert caught.value.extensions == {"code": error.code}
    return caught.value


def test_scheduling_a_huddle_records_huddle_scheduled() -> None:
    assert decide(_schedule(AT), None, NOW) == [SCHEDULED]


def test_a_scheduled_huddle_folds_into_the_scheduled_state() -> None:
    assert _fold(SCHEDULED) == Huddle(id="h-1", team_id="t-1", scheduled_for=AT)


@pytest.mark.parametrize(
    "at",
    [
        NOW - timedelta(days=1),
        NOW - timedelta(hours=3),
        NOW,
        NOW + timedelta(days=366),
    ],
    ids=["a-day-ago", "earlier-today", "now", "366-days-ahead"],
)
def test_a_huddle_may_be_scheduled_from_a_day_ago_to_a_year_ahead(at: datetime) -> None:
    (event,) = decide(_schedule(at), None, NOW)
    assert isinstance(event, HuddleScheduled)
    assert event.scheduled_for == at


def test_a_huddle_more_than_a_day_in_the_past_is_refused() -> None:
    error = _refusal(InvalidInput, _schedule(NOW - timedelta(days=1, seconds=1)), None)
    assert error.message == "at is more than a day in the past."


def test_a_huddle_more_than_a_year_ahead_is_refused() -> None:
    error = _refusal(InvalidInput, _schedule(NOW + timedelta(days=366, seconds=1)), None)
    assert error.message == "at is more than a year away."


def test_scheduling_a_huddle_with_a_naive_time_is_refused_by_the_command() -> None:
    with pytest.raises(InvalidInput) as caught:
        build(ScheduleHuddle, huddle_id="h-1", team_id="t-1", at=datetime(2026, 11, 24, 9))
    assert caught.value.message.startswith("at ")
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_scheduling_a_huddle_that_exists_is_a_conflict() -> None:
    _refusal(StateConflict, _schedule(AT), _huddle())


@pytest.mark.parametrize("command", [OPEN, CLOSE, _note(), _item()], ids=lambda c: type(c).__name__)
def test_acting_on_a_huddle_that_does_not_exist_is_a_conflict(command: Command) -> None:
    _refusal(StateConflict, command, None)


def test_opening_a_scheduled_huddle_records_huddle_opened() -> None:
    events = decide(OPEN, _huddle(), NOW)
    assert events == [HuddleOpened(huddle_id="h-1")]
    assert _fold(SCHEDULED, *events).status is HuddleStatus.OPEN


@pytest.mark.parametrize("status", [HuddleStatus.OPEN, HuddleStatus.CLOSED])
def test_a_huddle_opens_only_once(status: HuddleStatus) -> None:
    error = _refusal(StateConflict, OPEN, _huddle(status))
    assert error.message == f"Huddle h-1 is {status.value}, not SCHEDULED."


def test_closing_an_open_huddle_records_huddle_closed() -> None:
    events = decide(CLOSE, _huddle(HuddleStatus.OPEN), NOW)
    assert events == [HuddleClosed(huddle_id="h-1")]
    assert evolve(_huddle(HuddleStatus.OPEN), events[0], META).status is HuddleStatus.CLOSED


@pytest.mark.parametrize("status", [HuddleStatus.SCHEDULED, HuddleStatus.CLOSED])
def test_only_an_open_huddle_can_be_closed(status: HuddleStatus) -> None:
    error = _refusal(StateConflict, CLOSE, _huddle(status))
    assert error.message == f"Huddle h-1 is {status.value}; only an OPEN huddle closes."


@pytest.mark.parametrize("status", [HuddleStatus.SCHEDULED, HuddleStatus.OPEN])
def test_notes_may_be_recorded_while_scheduled_or_open(status: HuddleStatus) -> None:
    command = _note(patient_id="p-1", sensitivity=("GENETIC", "GENETIC", "MENTAL_HEALTH"))
    assert decide(command, _huddle(status), NOW) == [
        HuddleNoteRecorded(
            huddle_id="h-1",
            note_id="n-1",
            text="BP up",
            patient_id="p-1",
            sensitivity=(Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH),
        )
    ]


@pytest.mark.parametrize("status", [HuddleStatus.SCHEDULED, HuddleStatus.OPEN])
def test_action_items_may_be_raised_while_scheduled_or_open(status: HuddleStatus) -> None:
    command = _item(patient_id="p-1", discipline="NURSE", assignee_id="u-2", due_date=TODAY)
    assert decide(command, _huddle(status), NOW) == [
        ActionItemRaised(
            huddle_id="h-1",
            task_id="task-1",
            title="Call GP",
            patient_id="p-1",
            discipline=Discipline.NURSE,
            assignee_id="u-2",
            due_date=TODAY,
        )
    ]


@pytest.mark.parametrize("command", [_note(), _item()], ids=["note", "action-item"])
def test_nothing_can_be_added_to_a_closed_huddle(command: Command) -> None:
    error = _refusal(StateConflict, command, _huddle(HuddleStatus.CLOSED))
    assert error.message == "Huddle h-1 is closed; nothing more can be added to it."


def test_a_tagged_note_about_no_patient_is_refused_as_nobody_could_read_it() -> None:
    error = _refusal(InvalidInput, _note(sensitivity=("SUBSTANCE_USE",)), _huddle())

    assert error.message.startswith("sensitivity needs patientId")
    assert decide(_note(sensitivity=("SUBSTANCE_USE",), patient_id="p-1"), _huddle(), NOW)


def test_recording_a_note_id_twice_is_a_conflict() -> None:
    huddle = _huddle(
        HuddleStatus.OPEN, HuddleNoteRecorded(huddle_id="h-1", note_id="n-1", text="x")
    )
    _refusal(StateConflict, _note("n-1"), huddle)
    assert decide(_note("n-2"), huddle, NOW)


def test_raising_an_action_item_twice_is_a_conflict() -> None:
    raised = ActionItemRaised(huddle_id="h-1", task_id="task-1", title="x")
    huddle = _huddle(HuddleStatus.OPEN, raised)
    _refusal(StateConflict, _item("task-1"), huddle)
    assert decide(_item("task-2"), huddle, NOW)


@pytest.mark.parametrize(
    ("due", "ok"),
    [
        (None, True),
        (TODAY, True),
        (date(2036, 11, 22), True),
        (TODAY - timedelta(days=1), False),
        (date(2037, 1, 1), False),
    ],
    ids=str,
)
def test_an_action_item_due_date_is_from_today_to_ten_years_ahead(
    due: date | None, ok: bool
) -> None:
    command = _item(due_date=due)
    if ok:
        assert decide(command, _huddle(), NOW)
    else:
        _refusal(InvalidInput, command, _huddle())


def test_a_huddle_cannot_handle_a_foreign_command() -> None:
    foreign = build(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A")
    with pytest.raises(InvalidInput, match="CreateTeam"):
        decide(foreign, _huddle(), NOW)


def test_a_folded_note_carries_its_author_and_time_from_meta() -> None:
    recorded = HuddleNoteRecorded(
        huddle_id="h-1",
        note_id="n-1",
        text="BP up",
        patient_id="p-1",
        sensitivity=(Sensitivity.GENETIC,),
    )
    huddle = _fold(SCHEDULED, recorded, meta=Meta("u-7", NOW, "t-1"))
    assert huddle.notes == (
        Note(
            id="n-1",
            author_id="u-7",
            text="BP up",
            patient_id="p-1",
            sensitivity=(Sensitivity.GENETIC,),
            at=NOW,
        ),
    )


def test_folded_notes_and_action_items_keep_their_order() -> None:
    huddle = _huddle(
        HuddleStatus.OPEN,
        HuddleNoteRecorded(huddle_id="h-1", note_id="n-1", text="a"),
        ActionItemRaised(huddle_id="h-1", task_id="task-1", title="One", due_date=TODAY),
        HuddleNoteRecorded(huddle_id="h-1", note_id="n-2", text="b"),
        ActionItemRaised(huddle_id="h-1", task_id="task-2", title="Two", discipline="NURSE"),
    )
    assert [n.id for n in huddle.notes] == ["n-1", "n-2"]
    assert all((n.author_id, n.at) == (META.actor_id, META.occurred_at) for n in huddle.notes)
    assert huddle.action_items == (
        ActionItem("task-1", "One", None, None, None, TODAY),
        ActionItem("task-2", "Two", None, Discipline.NURSE, None, None),
    )


def test_a_huddle_event_before_huddle_scheduled_is_an_error() -> None:
    with pytest.raises(ValueError, match="before HuddleScheduled"):
        evolve(None, HuddleOpened(huddle_id="h-1"), META)


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = TeamCreated(team_id="t", name="n", lead_user_id="u", lead_name="A")
    with pytest.raises(ValueError, match="TeamCreated"):
        evolve(_huddle(), foreign, META)


def test_the_huddle_aggregate_type_names_its_stream() -> None:
    assert HUDDLE.stream_id("h-1") == "huddle-h-1"
    assert (HUDDLE.name, HUDDLE.decide, HUDDLE.evolve) == ("huddle", decide, evolve)
