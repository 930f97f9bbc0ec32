"""What every aggregate's `decide` raises when it refuses a command, and the aggregate type.

Refusals carry the public error code in `extensions`, the attribute GraphQL copies onto
the error it reports, so the domain stays free of GraphQL imports while the client
still gets `BAD_USER_INPUT`, `FORBIDDEN`, `NOT_FOUND` or `CONFLICT`. Messages are for
clinicians and name ids, never PHI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

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


class Refused(Exception):
    """A command the domain will not carry out; nothing was written."""

    code: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code}


class InvalidInput(Refused):
    """The request itself is wrong, whatever the record's state (an impossible date)."""

    code = "BAD_USER_INPUT"


class NotPermitted(Refused):
    """The caller may not do this (a non-lead changing the roster)."""

    code = "FORBIDDEN"


class Missing(Refused):
    """A part named inside a record the caller can see does not exist (an unknown goal)."""

    code = "NOT_FOUND"


class StateConflict(Refused):
    """The record's current state does not allow this (a completed plan, a closed huddle),
    or it changed since the caller read it."""

    code = "CONFLICT"


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
