"""The board read model as pure functions: which records an event touches, and the new
versions of those records plus what subscribers are told.

A board holds tasks (cards), the review schedule of each care plan (for the huddle
agenda) and each huddle's status (the agenda runs "since the last huddle"). The store
loads the records a batch of events touches, `apply` says what each event makes of
them, and the store writes the result in the transaction that records the position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from schemas.board import BoardChange
from schemas.careplan import CarePlanCreated, CarePlanReviewed, PlanStatusChanged
from schemas.common import PlanStatus
from schemas.consent import ConsentGranted, ConsentRevoked
from schemas.envelope import Envelope
from schemas.huddle import (
    ActionItemRaised,
    HuddleClosed,
    HuddleNoteRecorded,
    HuddleOpened,
    HuddleScheduled,
)
from schemas.task import TaskAssigned, TaskCreated, TaskEscalated, TaskMoved, TaskSignalled
from schemas.team import MemberRemoved, RoleRevoked
from services.common.domain import Meta
from services.tasks.domain import OPEN, Task, evolve

# Plans in these statuses need no more reviews.
FINISHED_PLANS = frozenset({PlanStatus.COMPLETED, PlanStatus.REVOKED})
_TASK_CHANGES = {
    TaskCreated: BoardChange.CREATED,
    TaskMoved: BoardChange.MOVED,
    TaskAssigned: BoardChange.UPDATED,
    TaskSignalled: BoardChange.UPDATED,
    TaskEscalated: BoardChange.UPDATED,
}
_HUDDLE_STATUS = {HuddleOpened: "OPEN", HuddleClosed: "CLOSED"}
# Closed cards a consent change re-decides: as far back as a board read may show them
# (closedDays, at most this many days), since a client keeps what it read (a wall screen,
# for weeks) and must hear that a card it holds is now withheld.
CLOSED_SHOWN = timedelta(days=366)
# The most cards one consent notice carries (each at most ~5 KB: a 200-character title and
# a 1,000-character blocked reason), well under the broker's 1 MB a message; a change
# with more comes in several notices at one position, all but the last marked MORE.
CONSENT_CARDS = 100
CONSENT_MORE = BoardChange.UPDATED


@dataclass(frozen=True)
class PlanSchedule:
    """When a care plan is next due for review, and whether it still needs one."""

    plan_id: str
    team_id: str
    patient_id: str
    status: PlanStatus
    next_review_date: date | None = None
    reviewed_at: datetime | None = None


@dataclass(frozen=True)
class HuddleSlot:
    huddle_id: str
    team_id: str
    status: str  # SCHEDULED | OPEN | CLOSED
    scheduled_for: datetime
    closed_at: datetime | None = None


@dataclass(frozen=True)
class Notice:
    """What a team's subscribers are told: a task card, a huddle to re-read, a roster
    that lost someone (whose subscriptions must end), a goal whose progress moved, or a
    patient whose consents changed (each card about them is decided again). `position` is
    the event's store position (None for a change no event made)."""

    team_id: str
    kind: Literal["task", "huddle", "roster", "goal", "consent"]
    change: BoardChange | None = None
    task: Task | None = None
    huddle_id: str | None = None
    plan_id: str | None = None
    goal_id: str | None = None
    patient_id: str | None = None
    position: int | None = None
    # kind "consent": the patient's cards it re-decides, as they stand at `position` (in
    # parts: `change` is CONSENT_MORE on all but the last).
    tasks: tuple[Task, ...] = ()


@dataclass
class Board:
    """The records of the read model a batch of events touches, by id."""

    tasks: dict[str, Task] = field(default_factory=dict)
    plans: dict[str, PlanSchedule] = field(default_factory=dict)
    huddles: dict[str, HuddleSlot] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """What one event makes of the board: records to write, and notices to publish."""

    tasks: tuple[Task, ...] = ()
    plans: tuple[PlanSchedule, ...] = ()
    huddles: tuple[HuddleSlot, ...] = ()
    notices: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class Wanted:
    """The ids of the records a batch of events touches (to load before applying)."""

    task_ids: frozenset[str]
    plan_ids: frozenset[str]
    huddle_ids: frozenset[str]
    # Patients whose sensitive cards a consent change re-decides.
    patient_ids: frozenset[str] = frozenset()


# The events `apply` does something for; it leaves the board as it is for any other (a
# goal, a reading, a monitoring plan), so a batch's other events need not reach it.
HANDLED = (
    TaskCreated,
    TaskMoved,
    TaskAssigned,
    TaskSignalled,
    TaskEscalated,
    CarePlanCreated,
    PlanStatusChanged,
    CarePlanReviewed,
    HuddleScheduled,
    HuddleOpened,
    HuddleClosed,
    HuddleNoteRecorded,
    ActionItemRaised,
    RoleRevoked,
    MemberRemoved,
    ConsentGranted,
    ConsentRevoked,
)
# The same, to match a payload's own type (an event model is never subclassed): a set
# lookup, where isinstance asks each class's metaclass in turn.
HANDLED_TYPES = frozenset(HANDLED)


def wanted(envelopes: Iterable[Envelope]) -> Wanted:
    tasks, plans, huddles, patients = set(), set(), set(), set()
    for env in envelopes:
        payload = env.payload
        if isinstance(
            payload, TaskCreated | TaskMoved | TaskAssigned | TaskSignalled | TaskEscalated
        ):
            tasks.add(payload.task_id)
        elif isinstance(payload, CarePlanCreated | PlanStatusChanged | CarePlanReviewed):
            plans.add(payload.plan_id)
        elif isinstance(payload, HuddleScheduled | HuddleOpened | HuddleClosed):
            huddles.add(payload.huddle_id)
        elif isinstance(payload, ConsentGranted | ConsentRevoked):
            patients.add(payload.patient_id)
    return Wanted(frozenset(tasks), frozenset(plans), frozenset(huddles), frozenset(patients))


def apply(board: Board, env: Envelope, *, position: int | None = None) -> Applied:
    """What `env` (at store `position`, which its notices carry) does to the board. Raises
    ValueError when the board lacks the record the event changes (the event cannot be
    applied: it belongs on the dead-letter topic)."""
    event = env.payload
    team = env.team_id
    match event:
        case TaskCreated() | TaskMoved() | TaskAssigned() | TaskSignalled() | TaskEscalated():
            meta = Meta(actor_id=env.actor_id, occurred_at=env.occurred_at, team_id=team)
            task = evolve(board.tasks.get(event.task_id), event, meta)
            change = _TASK_CHANGES[type(event)]
            notices = [Notice(team, "task", change, task=task, position=position)]
            if task.huddle_id is not None:  # the huddle's action items changed
                notices.append(_huddle_notice(team, task.huddle_id, position))
            return Applied(tasks=(task,), notices=tuple(notices))
        case CarePlanCreated():
            plan = PlanSchedule(event.plan_id, team, event.patient_id, PlanStatus.DRAFT)
            return Applied(plans=(plan,))
        case PlanStatusChanged():
            return Applied(plans=(replace(_plan(board, event.plan_id), status=event.status),))
        case CarePlanReviewed():
            plan = replace(
                _plan(board, event.plan_id),
                next_review_date=event.next_review_date,
                reviewed_at=env.occurred_at,
            )
            return Applied(plans=(plan,))
        case HuddleScheduled():
            slot = HuddleSlot(event.huddle_id, team, "SCHEDULED", event.scheduled_for)
            notice = _huddle_notice(team, event.huddle_id, position)
            return Applied(huddles=(slot,), notices=(notice,))
        case HuddleOpened() | HuddleClosed():
            slot = replace(_huddle(board, event.huddle_id), status=_HUDDLE_STATUS[type(event)])
            if isinstance(event, HuddleClosed):
                slot = replace(slot, closed_at=env.occurred_at)
            notice = _huddle_notice(team, event.huddle_id, position)
            return Applied(huddles=(slot,), notices=(notice,))
        case HuddleNoteRecorded() | ActionItemRaised():
            return Applied(notices=(_huddle_notice(team, event.huddle_id, position),))
        case RoleRevoked() | MemberRemoved():
            return Applied(notices=(Notice(team, "roster", position=position),))
        case ConsentGranted() | ConsentRevoked():
            # What a viewer may see of the patient's cards changed; the cards did not.
            cards = _consented(board, team, event.patient_id, env.occurred_at)
            return Applied(notices=_consent_notices(team, event.patient_id, cards, position))
    return Applied()


def merge(board: Board, applied: Applied) -> None:
    """Put what an event made into the board, so the next event of the batch sees it."""
    for t in applied.tasks:
        board.tasks[t.id] = t
    for p in applied.plans:
        board.plans[p.plan_id] = p
    for h in applied.huddles:
        board.huddles[h.huddle_id] = h


def _consented(board: Board, team: str, patient_id: str, at: datetime) -> tuple[Task, ...]:
    """The patient's cards on the team's board a consent governs (those tagged with a
    sensitivity), open or closed within what a board read may show, as they stand now,
    oldest first."""
    since = at - CLOSED_SHOWN
    cards = (
        t
        for t in board.tasks.values()
        if t.patient_id == patient_id
        and t.team_id == team
        and t.sensitivity
        and (t.status in OPEN or t.updated_at >= since)
    )
    return tuple(sorted(cards, key=lambda t: (t.created_at or t.updated_at, t.id)))


def _consent_notices(
    team: str, patient_id: str, cards: tuple[Task, ...], position: int | None
) -> tuple[Notice, ...]:
    """A consent change's notices: its cards in parts of at most CONSENT_CARDS, so that no
    one update outgrows what the broker takes (a patient's many tagged cards would stop
    every team's updates behind it). All but the last part say MORE in `change`."""
    parts = [cards[i : i + CONSENT_CARDS] for i in range(0, len(cards), CONSENT_CARDS)] or [()]
    return tuple(
        Notice(
            team,
            "consent",
            change=None if i == len(parts) - 1 else CONSENT_MORE,
            patient_id=patient_id,
            tasks=part,
            position=position,
        )
        for i, part in enumerate(parts)
    )


def _huddle_notice(team_id: str, huddle_id: str, position: int | None) -> Notice:
    return Notice(team_id, "huddle", huddle_id=huddle_id, position=position)


def _plan(board: Board, plan_id: str) -> PlanSchedule:
    plan = board.plans.get(plan_id)
    if plan is None:
        raise ValueError(f"care plan {plan_id} is not on the board")
    return plan


def _huddle(board: Board, huddle_id: str) -> HuddleSlot:
    slot = board.huddles.get(huddle_id)
    if slot is None:
        raise ValueError(f"huddle {huddle_id} is not on the board")
    return slot
