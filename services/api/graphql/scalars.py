"""The enumerations every part of the schema shares, and small helpers for ids.

The enums are the events' own enumerations, registered with strawberry, so values pass
from GraphQL arguments to commands and from state to results without translation.
"""

from __future__ import annotations

from enum import Enum
from typing import NewType

import strawberry

from schemas.common import (
    AccessOutcome,
    Comparator,
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    TaskStatus,
    Tier,
)
from schemas.signal import SignalStatus
from services.plans.domain.huddle import HuddleStatus
from services.tasks.signals import GoalProgress

__all__ = [
    "POSITION_SCALAR",
    "AccessOutcome",
    "Comparator",
    "Discipline",
    "GoalProgress",
    "GoalStatus",
    "HuddleStatus",
    "InterventionKind",
    "PlanStatus",
    "Position",
    "Purpose",
    "Sensitivity",
    "SignalStatus",
    "TaskSource",
    "TaskStatus",
    "Tier",
    "optional_id",
]

for _enum in (
    AccessOutcome,
    Comparator,
    Discipline,
    GoalProgress,
    GoalStatus,
    HuddleStatus,
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    SignalStatus,
    Tier,
    TaskStatus,
):
    strawberry.enum(_enum)  # registers the class itself; it stays the same class


@strawberry.enum(
    description="Where a task came from: put on the board by hand, an intervention of a "
    "care plan, a huddle's action item, a care plan's review, or a signal (readings of a "
    "monitoring plan out of range, or overdue)."
)
class TaskSource(Enum):
    """The events' task sources ("action_item") under GraphQL's names (ACTION_ITEM)."""

    MANUAL = "manual"
    INTERVENTION = "intervention"
    ACTION_ITEM = "action_item"
    REVIEW = "review"
    SIGNAL = "signal"


# The largest position PostgreSQL's bigint holds.
_MAX_POSITION = 2**63 - 1


def _parse_position(value: object) -> int:
    """A position as a client sends it: a string of decimal digits (or a small whole
    number). Anything else is refused with BAD_USER_INPUT, naming no value."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError("A position is a string of decimal digits.")
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 19):
        raise ValueError("A position is a string of decimal digits.")
    number = int(text)
    if number > _MAX_POSITION:
        raise ValueError("That position is beyond any the event store can reach.")
    return number


# The type resolvers use; the schema maps it to the scalar below (StrawberryConfig's
# scalar_map in build_schema).
Position = NewType("Position", int)
POSITION_SCALAR = strawberry.scalar(
    name="Position",
    description="A position in the event store, where every change is recorded in order: "
    "a whole number written as a string of decimal digits (it may exceed what a "
    "JavaScript number holds exactly). Pass one back as it came; compare them only as "
    "numbers.",
    serialize=str,
    parse_value=_parse_position,
)


def optional_id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)
