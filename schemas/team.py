"""Events of the Team aggregate: creation and the roster of disciplines and leads."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import Event
from schemas.common import Discipline, Id, NonEmptyStr


class TeamCreated(Event):
    """A team was created; its creator became its first lead."""

    event_type: ClassVar[str] = "TeamCreated"

    team_id: Id
    name: NonEmptyStr
    lead_user_id: Id
    lead_name: NonEmptyStr


class RoleAssigned(Event):
    """A user joined a team in a discipline (or gained one), possibly as a lead."""

    event_type: ClassVar[str] = "RoleAssigned"

    team_id: Id
    user_id: Id
    name: NonEmptyStr
    discipline: Discipline
    # Strict: a stray "yes" or 1 must not quietly make someone a lead.
    lead: bool = Field(strict=True)


class RoleRevoked(Event):
    """A user no longer acts for a team in a discipline."""

    event_type: ClassVar[str] = "RoleRevoked"

    team_id: Id
    user_id: Id
    discipline: Discipline


class MemberRemoved(Event):
    """A user left a team: every discipline, and any lead role, went with them."""

    event_type: ClassVar[str] = "MemberRemoved"

    team_id: Id
    user_id: Id
