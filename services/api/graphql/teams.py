"""Teams and their rosters: the Team, Member and Membership types, `team`, `me` (with the
caller's teams), a team's patients and huddles, and the roster changes (createTeam,
assignRole, revokeRole, removeMember). Only a lead changes a roster."""

from __future__ import annotations

import strawberry

from schemas.common import Discipline as DisciplineValue
from services.api.graphql import freshness, paging
from services.api.graphql.access import Access, authorize, role_assignment
from services.api.graphql.context import Context, Info
from services.api.graphql.guard import present
from services.api.graphql.huddles import HuddlePage, team_huddles
from services.api.graphql.patients import PatientPage, team_patients
from services.api.graphql.scalars import Discipline, HuddleStatus, Position
from services.common import directory
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.policy import Action
from services.plans.domain import team
from services.plans.domain.team import TEAM

_DISCIPLINE_ORDER = {d: i for i, d in enumerate(DisciplineValue)}


def _ordered(disciplines: frozenset[DisciplineValue]) -> list[DisciplineValue]:
    return sorted(disciplines, key=_DISCIPLINE_ORDER.__getitem__)


async def _patients(
    root: Team,
    info: Info,
    first: int | None = paging.DEFAULT_PAGE,
    after: str | None = None,
    search: str | None = None,
    at_least: Position | None = None,
) -> PatientPage:
    access = await _team_access(info.context, root)
    await freshness.caught_up(info.context, root.id, at_least, freshness.EVENT_STORE)
    return await team_patients(info.context, access, first=first, after=after, search=search)


async def _huddles(
    root: Team,
    info: Info,
    status: HuddleStatus | None = None,
    first: int | None = paging.DEFAULT_PAGE,
    after: str | None = None,
    at_least: Position | None = None,
) -> HuddlePage:
    access = await _team_access(info.context, root)
    await freshness.caught_up(info.context, root.id, at_least, freshness.EVENT_STORE)
    return await team_huddles(info.context, access, status=status, first=first, after=after)


@strawberry.type(description="A care team: its roster of members, disciplines and leads.")
class Team:
    id: strawberry.ID
    name: str
    members: list[Member]
    version: int
    # The caller's access, where the gate has been passed already for this operation.
    access: strawberry.Private[Access | None] = None

    patients: PatientPage = strawberry.field(
        resolver=_patients,
        description="The team's patients, in the order they were enrolled. `search` keeps "
        "those whose MRN, or a word of whose name, starts with it (case aside). Read from "
        "the event store itself, so every committed change is in it (`atLeast` is only "
        "checked to be a position the store has reached).",
    )
    huddles: HuddlePage = strawberry.field(
        resolver=_huddles,
        description="The team's huddles, in the order they were scheduled; `status` keeps "
        "those in it now. Read from the event store itself (`atLeast` as for patients).",
    )

    @classmethod
    def from_state(cls, loaded: Loaded[team.Team], access: Access | None = None) -> Team:
        state = present(loaded)
        return cls(
            id=strawberry.ID(state.id),
            name=state.name,
            members=[Member.from_state(m) for m in state.members.values()],
            version=loaded.version,
            access=access,
        )


async def _team_access(ctx: Context, root: Team) -> Access:
    if root.access is None:
        root.access = await authorize(ctx, team_id=root.id, action=Action.READ, resource="team")
    return root.access


@strawberry.type(description="The caller's place on one team.")
class Membership:
    team: Team
    disciplines: list[Discipline]
    lead: bool


async def _disciplines(root: Member, info: Info) -> list[Discipline]:
    if root.held is not None:
        return root.held
    mine = await _memberships(info.context)
    return _ordered(frozenset().union(*(m.disciplines for m in mine)))


async def _lead(root: Member, info: Info) -> bool:
    if root.held is not None:
        return root.leads
    return any(m.lead for m in await _memberships(info.context))


async def _teams(root: Member, info: Info) -> list[Membership] | None:
    if root.held is not None:
        return None
    return await _memberships(info.context)


@strawberry.type(description="A person on a care team, or the caller (`me`).")
class Member:
    user_id: strawberry.ID
    name: str
    # A roster's member carries its disciplines and lead role; the caller (`me`) reads its
    # memberships only when asked for them, so `me { userId name }` touches no database.
    held: strawberry.Private[list[Discipline] | None] = None
    leads: strawberry.Private[bool] = False

    disciplines: list[Discipline] = strawberry.field(
        resolver=_disciplines,
        description="On a roster: the member's disciplines on that team. On `me`: those the "
        "caller holds on any team (see `teams` for which).",
    )
    lead: bool = strawberry.field(
        resolver=_lead,
        description="On a roster: a lead of that team. On `me`: a lead of any team.",
    )
    teams: list[Membership] | None = strawberry.field(
        resolver=_teams,
        description="On `me`: the teams the caller is on, in the order they joined, each "
        "with their disciplines and lead role there. Null on a roster's members.",
    )

    @classmethod
    def from_state(cls, member: team.Member) -> Member:
        return cls(
            user_id=strawberry.ID(member.user_id),
            name=member.name,
            held=_ordered(member.disciplines),
            leads=member.lead,
        )


# --- queries -------------------------------------------------------------------------

# Unknown ids and ids of other teams' records are both FORBIDDEN (services.api.graphql.
# access), so the nullable record fields answer null only where a record has no team.


# The teams `me` lists at most: a clinician is on a handful.
MAX_TEAMS = 200


async def resolve_me(info: Info) -> Member:
    actor = info.context.require_actor()
    return Member(user_id=strawberry.ID(actor.user_id), name=actor.name)


async def _memberships(ctx: Context) -> list[Membership]:
    """The caller's teams as the rosters stand (read once per operation: the loaders are
    dropped with each one)."""
    known: list[Membership] | None = ctx.loaders.get("memberships")
    if known is not None:
        return known
    actor = ctx.require_actor()
    async with ctx.database.acquire() as conn:
        ids = await directory.teams_of(conn, actor.user_id, limit=MAX_TEAMS)
    teams: list[Membership] = []
    for loaded in await ctx.repository.load_many(TEAM, ids):
        # Put on once, perhaps removed since: the roster as it stands decides.
        state = loaded.state
        member = state.member(actor.user_id) if state is not None else None
        if state is None or member is None:
            continue
        ctx.teams[state.id] = state
        teams.append(
            Membership(
                team=Team.from_state(loaded),
                disciplines=_ordered(member.disciplines),
                lead=member.lead,
            )
        )
    ctx.loaders["memberships"] = teams
    return teams


async def resolve_team(info: Info, id: strawberry.ID) -> Team | None:
    ctx = info.context
    ctx.require_actor()
    loaded = await ctx.repository.load(TEAM, id)
    access = await authorize(
        ctx, team_id=loaded.state.id if loaded.state else None, action=Action.READ, resource="team"
    )
    return Team.from_state(loaded, access)


# --- mutations -----------------------------------------------------------------------


async def create_team(info: Info, name: str) -> Team:
    ctx = info.context
    actor = ctx.require_actor()
    team_id = new_id()
    command = build(
        team.CreateTeam, team_id=team_id, name=name, actor_id=actor.user_id, actor_name=actor.name
    )
    loaded = await ctx.handler.execute(
        TEAM, team_id, command, caller=ctx.caller(), scope=Scope(team_id), known=NEW
    )
    return Team.from_state(loaded)


async def assign_role(
    info: Info,
    team_id: strawberry.ID,
    user_id: strawberry.ID,
    name: str,
    discipline: Discipline,
    lead: bool | None = False,
) -> Team:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.MANAGE_ROSTER, resource="team")
    command = build(
        team.AssignRole,
        team_id=team_id,
        user_id=user_id,
        name=name,
        discipline=discipline,
        lead=bool(lead),  # null means the default: not a lead
        actor_id=access.actor.user_id,
    )
    # The id as the roster keeps it (trimmed, normalised) is what names the caller.
    await role_assignment(ctx, access, team_id=team_id, user_id=command.user_id)
    return await _change_team(ctx, command, team_id)


async def revoke_role(
    info: Info, team_id: strawberry.ID, user_id: strawberry.ID, discipline: Discipline
) -> Team:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.MANAGE_ROSTER, resource="team")
    command = build(
        team.RevokeRole,
        team_id=team_id,
        user_id=user_id,
        discipline=discipline,
        actor_id=access.actor.user_id,
    )
    return await _change_team(ctx, command, team_id)


async def remove_member(info: Info, team_id: strawberry.ID, user_id: strawberry.ID) -> Team:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.MANAGE_ROSTER, resource="team")
    command = build(
        team.RemoveMember, team_id=team_id, user_id=user_id, actor_id=access.actor.user_id
    )
    return await _change_team(ctx, command, team_id)


async def _change_team(
    ctx: Context, command: team.AssignRole | team.RevokeRole | team.RemoveMember, team_id: str
) -> Team:
    loaded = await ctx.handler.execute(
        TEAM, team_id, command, caller=ctx.caller(), scope=Scope(team_id)
    )
    ctx.teams[team_id] = loaded.state
    return Team.from_state(loaded)


@strawberry.type
class TeamsQuery:
    team: Team | None = strawberry.field(resolver=resolve_team)


@strawberry.type
class TeamsMutation:
    create_team: Team = strawberry.mutation(
        resolver=create_team, description="Create a team; the caller becomes a lead."
    )
    assign_role: Team = strawberry.mutation(
        resolver=assign_role,
        description="Give a user a discipline on the team (leads only; a lead gives "
        "themselves one only while the team has no patient enrolled, after that another "
        "lead must); lead=true also makes them a lead, lead=false never demotes.",
    )
    revoke_role: Team = strawberry.mutation(
        resolver=revoke_role,
        description="Take a discipline away (leads only); a member left with none leaves the "
        "team, unless a lead.",
    )
    remove_member: Team = strawberry.mutation(
        resolver=remove_member,
        description="Take a user off the team, lead or not (leads only); the team's last lead "
        "cannot be removed.",
    )
