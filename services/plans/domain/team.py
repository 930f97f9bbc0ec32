"""The Team aggregate: a care team's roster of members, their disciplines and its leads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from schemas.base import Event
from schemas.common import Discipline
from schemas.team import MemberRemoved, RoleAssigned, RoleRevoked, TeamCreated
from services.common.commands import Command, IdText, Name, UserId
from services.common.domain import AggregateType, Meta
from services.common.errors import InvalidInput, Missing, NotPermitted, StateConflict
from services.common.text import user_id_key


@dataclass(frozen=True)
class Member:
    user_id: str
    name: str
    disciplines: frozenset[Discipline] = frozenset()
    lead: bool = False


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    # Insertion order is joining order, which is how the roster is listed.
    members: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))

    def member(self, user_id: str) -> Member | None:
        return self.members.get(user_id)

    def is_lead(self, user_id: str) -> bool:
        member = self.members.get(user_id)
        return member is not None and member.lead

    @property
    def leads(self) -> list[Member]:
        return [m for m in self.members.values() if m.lead]


class CreateTeam(Command):
    team_id: IdText
    name: Name
    # From the verified token, taken as they are (not trimmed or capped like arguments).
    actor_id: str
    actor_name: str


class AssignRole(Command):
    """Give a user a discipline on the team; `lead=True` also makes them a lead.

    `lead=False` never demotes: a lead who gains a discipline stays a lead.
    """

    team_id: IdText
    user_id: UserId
    name: Name
    discipline: Discipline
    lead: bool = False
    actor_id: str


class RevokeRole(Command):
    """Take a discipline away; a member left with none (and not a lead) leaves the team."""

    team_id: IdText
    user_id: IdText
    discipline: Discipline
    actor_id: str


class RemoveMember(Command):
    """Take a user off the team altogether, lead or not; a team keeps at least one lead."""

    team_id: IdText
    user_id: IdText
    actor_id: str


def decide(command: object, team: Team | None, now: datetime) -> Sequence[Event]:
    del now  # the roster does not depend on the time
    match command:
        case CreateTeam():
            if team is not None:
                raise StateConflict(f"Team {command.team_id} already exists.")
            return [
                TeamCreated(
                    team_id=command.team_id,
                    name=command.name,
                    lead_user_id=command.actor_id,
                    lead_name=command.actor_name,
                )
            ]
        case AssignRole():
            team = _existing(team, command.team_id)
            _require_lead(team, command.actor_id)
            current = team.member(command.user_id)
            if current is None:
                _refuse_look_alike(team, command.user_id)
            if (
                current is not None
                and command.discipline in current.disciplines
                and (current.lead or not command.lead)
                and current.name == command.name
            ):
                return []  # already so: nothing to record
            return [
                RoleAssigned(
                    team_id=team.id,
                    user_id=command.user_id,
                    name=command.name,
                    discipline=command.discipline,
                    lead=command.lead,
                )
            ]
        case RevokeRole():
            team = _existing(team, command.team_id)
            _require_lead(team, command.actor_id)
            current = _on_roster(team, command.user_id)
            if command.discipline not in current.disciplines:
                raise StateConflict(
                    f"User {command.user_id} does not hold the {command.discipline.value} "
                    "role on this team."
                )
            return [
                RoleRevoked(team_id=team.id, user_id=command.user_id, discipline=command.discipline)
            ]
        case RemoveMember():
            team = _existing(team, command.team_id)
            _require_lead(team, command.actor_id)
            current = _on_roster(team, command.user_id)
            if current.lead and len(team.leads) == 1:
                raise StateConflict(
                    f"User {current.user_id} is the team's only lead; make someone else a "
                    "lead first, so that someone can still manage the roster."
                )
            return [MemberRemoved(team_id=team.id, user_id=current.user_id)]
    raise InvalidInput(f"The team cannot handle {type(command).__name__}.")


def _on_roster(team: Team, user_id: str) -> Member:
    member = team.member(user_id)
    if member is None:
        raise Missing(f"User {user_id} is not a member of this team.")
    return member


def _refuse_look_alike(team: Team, user_id: str) -> None:
    """A new member's id may not read as an existing member's (letter case, 0/O, 1/l/I):
    a reader of the roster, an assignee list or the audit log could not tell them apart."""
    key = user_id_key(user_id)
    for member in team.members.values():
        if user_id_key(member.user_id) == key:
            raise StateConflict(
                f"userId reads the same as the id of member {member.user_id} (they differ "
                "only in letter case or look-alike characters such as 0/O or 1/l/I); "
                "use that member's id, or have the new member's sign-in id changed."
            )


def _existing(team: Team | None, team_id: str) -> Team:
    if team is None:
        # Handlers authorize before deciding, so this is reached only by direct callers.
        raise StateConflict(f"Team {team_id} does not exist.")
    return team


def _require_lead(team: Team, actor_id: str) -> None:
    if not team.is_lead(actor_id):
        raise NotPermitted("Only a lead of this team can change its roster.")


def evolve(team: Team | None, event: Event, meta: Meta | None = None) -> Team:
    del meta  # nothing here depends on who or when
    match event:
        case TeamCreated():
            lead = Member(user_id=event.lead_user_id, name=event.lead_name, lead=True)
            return Team(
                id=event.team_id, name=event.name, members=MappingProxyType({lead.user_id: lead})
            )
        case RoleAssigned():
            team = _must(team, event)
            before = team.member(event.user_id)
            member = Member(
                user_id=event.user_id,
                name=event.name,
                disciplines=(before.disciplines if before else frozenset()) | {event.discipline},
                lead=(before is not None and before.lead) or event.lead,
            )
            return replace(team, members=MappingProxyType({**team.members, member.user_id: member}))
        case RoleRevoked():
            team = _must(team, event)
            before = team.member(event.user_id)
            if before is None:
                return team
            members = dict(team.members)
            left = before.disciplines - {event.discipline}
            if left or before.lead:
                members[before.user_id] = replace(before, disciplines=left)
            else:
                del members[before.user_id]
            return replace(team, members=MappingProxyType(members))
        case MemberRemoved():
            team = _must(team, event)
            members = {k: v for k, v in team.members.items() if k != event.user_id}
            return replace(team, members=MappingProxyType(members))
    raise ValueError(f"a team has no {event.event_type} events")


def _must(team: Team | None, event: Event) -> Team:
    if team is None:
        raise ValueError(f"{event.event_type} before TeamCreated")
    return team


TEAM = AggregateType[Team](name="team", stream_prefix="team-", evolve=evolve, decide=decide)
