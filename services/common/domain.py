"""The pure kernel every aggregate is built on: the aggregate type (stream prefix, decide,
evolve), what an event's envelope tells `evolve`, and the patients a record touches.

What `decide` raises when it refuses a command is in services.common.errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from schemas.base import Event
from schemas.common import Sensitivity

S = TypeVar("S")

# The patients whose data a record holds, each with the sensitivity categories of it:
# what an access record names when the record is read or changed.
Touched = Mapping[str, frozenset[Sensitivity]]
NOTHING: Touched = {}


def touched(
    pairs: Iterable[tuple[str | None, Iterable[Sensitivity]]],
) -> dict[str, frozenset[Sensitivity]]:
    """Merge (patient id, categories) pairs, skipping items about no patient."""
    merged: dict[str, frozenset[Sensitivity]] = {}
    for patient_id, categories in pairs:
        if patient_id is not None:
            merged[patient_id] = merged.get(patient_id, frozenset()).union(categories)
    return merged


@dataclass(frozen=True)
class Meta:
    """What the envelope says about an event beyond its payload: who, when, which team."""

    actor_id: str
    occurred_at: datetime
    team_id: str


@dataclass(frozen=True)
class AggregateType(Generic[S]):
    """How a kind of aggregate is stored and rebuilt: its stream prefix, decide and evolve."""

    name: str  # as a clinician says it: "care plan"
    stream_prefix: str
    evolve: Callable[[S | None, Event, Meta], S]
    decide: Callable[[Any, S | None, datetime], Sequence[Event]] | None = None

    def stream_id(self, aggregate_id: str) -> str:
        return f"{self.stream_prefix}{aggregate_id}"
