"""The enumerations every part of the schema shares, and small helpers for ids.

The enums are the events' own enumerations, registered with strawberry, so values pass
from GraphQL arguments to commands and from state to results without translation.
"""

from __future__ import annotations

from enum import Enum

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
    "AccessOutcome",
    "Comparator",
    "Discipline",
    "GoalProgress",
    "GoalStatus",
    "HuddleStatus",
    "InterventionKind",
    "PlanStatus",
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


def optional_id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)
