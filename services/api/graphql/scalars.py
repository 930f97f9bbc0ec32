"""The enumerations every part of the schema shares, and small helpers for ids.

The enums are the events' own enumerations, registered with strawberry, so values pass
from GraphQL arguments to commands and from state to results without translation.
"""

from __future__ import annotations

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
from services.tasks.signals import GoalProgress

__all__ = [
    "AccessOutcome",
    "Comparator",
    "Discipline",
    "GoalProgress",
    "GoalStatus",
    "InterventionKind",
    "PlanStatus",
    "Purpose",
    "Sensitivity",
    "SignalStatus",
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
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    SignalStatus,
    Tier,
    TaskStatus,
):
    strawberry.enum(_enum)  # registers the class itself; it stays the same class


def optional_id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)
