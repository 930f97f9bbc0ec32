"""Sample events for tests and benchmarks."""

from __future__ import annotations

import uuid

from schemas.careplan import GoalAdded
from services.common.event_store import NewEvent


def goal_added(
    plan_id: str,
    *,
    team_id: str,
    description: str = "HbA1c below 7.5% in 3 months",
    actor_id: str = "user-1",
    patient_id: str | None = None,
) -> NewEvent:
    """A GoalAdded event for a plan's stream, ready to append."""
    return NewEvent(
        event=GoalAdded(
            plan_id=plan_id,
            goal_id=str(uuid.uuid4()),
            description=description,
            target=None,
            due_date=None,
        ),
        team_id=team_id,
        actor_id=actor_id,
        patient_id=patient_id,
    )
