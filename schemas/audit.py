"""Events of the audit review workflow: compliance dispositions of break-glass accesses."""

from __future__ import annotations

from typing import ClassVar

from schemas.base import Event
from schemas.common import Id, NonEmptyStr


class BreakGlassReviewed(Event):
    """A compliance officer reviewed a break-glass access and recorded a disposition."""

    event_type: ClassVar[str] = "BreakGlassReviewed"

    seq: Id
    disposition: NonEmptyStr
    reviewer_id: Id
