"""Compliance review of break-glass accesses: the review aggregate (one per reviewed
entry, so an access is reviewed once) and the queue of accesses still waiting for one.

A review is an event in the event store (`BreakGlassReviewed`, on the stream
`break-glass-review-<chain>:<seq>`, filed under the accessed patient's team) and an
access record in the audit log, which carries the disposition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.audit import BreakGlassReviewed
from schemas.base import Event
from services.common.commands import Command, IdText, ShortText, UserId
from services.common.domain import AggregateType, Meta
from services.common.errors import InvalidInput, StateConflict


@dataclass(frozen=True)
class Review:
    seq: str
    disposition: str
    reviewer_id: str
    reviewed_at: datetime


class MarkReviewed(Command):
    seq: IdText
    disposition: ShortText
    reviewer_id: UserId


def decide(command: object, review: Review | None, now: datetime) -> Sequence[Event]:
    if not isinstance(command, MarkReviewed):
        raise InvalidInput(f"A break-glass review cannot handle {type(command).__name__}.")
    if review is not None:
        raise StateConflict(
            f"Break-glass access {review.seq} was already reviewed by {review.reviewer_id}."
        )
    return [
        BreakGlassReviewed(
            seq=command.seq, disposition=command.disposition, reviewer_id=command.reviewer_id
        )
    ]


def evolve(review: Review | None, event: Event, meta: Meta) -> Review:
    if not isinstance(event, BreakGlassReviewed):
        raise ValueError(f"a break-glass review has no {event.event_type} events")
    return Review(
        seq=event.seq,
        disposition=event.disposition,
        reviewer_id=event.reviewer_id,
        reviewed_at=meta.occurred_at,
    )


REVIEW = AggregateType[Review](
    name="break-glass review", stream_prefix="break-glass-review-", evolve=evolve, decide=decide
)


def parse_seq(seq: str) -> tuple[int, int]:
    """'2:17' -> (2, 17); BAD_USER_INPUT for anything else."""
    chain, sep, number = seq.partition(":")
    if sep and chain.isdigit() and number.isdigit() and len(seq) <= 40:
        return int(chain), int(number)
    raise InvalidInput("seq must be an audit entry's 'chain:sequence', e.g. '2:17'.")
