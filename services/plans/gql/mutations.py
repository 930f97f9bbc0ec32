"""Mutations of teams, patients and care plans. Each returns the record as the change left it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from functools import partial

import strawberry

from schemas.audit import AccessAction
from schemas.common import Discipline, GoalStatus, InterventionKind, PlanStatus, Sensitivity, Tier
from services.api.access import authorize, view
from services.api.context import Context
from services.common.commands import build
from services.common.event_store import Claim
from services.common.policy import Action
from services.plans.domain import careplan, patient, team
from services.plans.domain.careplan import CARE_PLAN
from services.plans.domain.patient import PATIENT, mrn_key
from services.plans.domain.team import TEAM
from services.plans.gql import guard
from services.plans.gql.types import CarePlan, Info, Patient, Team
from services.plans.handlers import NEW, Scope
from services.tasks.follow_ups import board_tasks


def new_id() -> str:
    return str(uuid.uuid4())


# --- team roster ---------------------------------------------------------------------


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


# --- patients ------------------------------------------------------------------------


async def enroll_patient(
    info: Info, team_id: strawberry.ID, mrn: str, name: str, birth_date: date
) -> Patient:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.WRITE, resource="team")
    patient_id = new_id()
    command = build(
        patient.EnrollPatient,
        patient_id=patient_id,
        team_id=team_id,
        mrn=mrn,
        name=name,
        birth_date=birth_date,
    )
    loaded = await ctx.handler.execute(
        PATIENT,
        patient_id,
        command,
        caller=ctx.caller(),
        scope=Scope(team_id, patient_id),
        claims=[Claim("patient_mrn", mrn_key(team_id, command.mrn))],
        known=NEW,
    )
    await view(ctx, access, AccessAction.CREATE, "Patient", patient_id, {patient_id: frozenset()})
    return Patient.from_state(loaded)


# --- care plans ----------------------------------------------------------------------


async def create_care_plan(info: Info, patient_id: strawberry.ID, title: str) -> CarePlan:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    plan_id = new_id()
    command = build(
        careplan.CreateCarePlan,
        plan_id=plan_id,
        patient_id=patient_id,
        team_id=enrolled.state.team_id,
        title=title,
    )
    loaded = await ctx.handler.execute(
        CARE_PLAN,
        plan_id,
        command,
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    shown = await guard.changed(ctx, access, CARE_PLAN, plan_id, loaded, created=True)
    return CarePlan.from_state(loaded, shown)


async def _change_plan(
    ctx: Context,
    plan_id: str,
    expected_version: int | None,
    command_type: type[careplan.PlanCommand],
    **fields: object,
) -> CarePlan:
    plan, access = await guard.load(ctx, CARE_PLAN, plan_id, Action.WRITE, one_patient=True)
    assert plan.state is not None
    command = build(command_type, plan_id=plan_id, **fields)
    loaded = await ctx.handler.execute(
        CARE_PLAN,
        plan_id,
        command,
        caller=ctx.caller(),
        scope=Scope(plan.state.team_id, plan.state.patient_id),
        expected_version=expected_version,
        follow_ups=partial(board_tasks, ctx.repository),
        known=plan,
    )
    return CarePlan.from_state(loaded, await guard.changed(ctx, access, CARE_PLAN, plan_id, loaded))


async def add_goal(
    info: Info,
    plan_id: strawberry.ID,
    description: str,
    target: str | None = None,
    due_date: date | None = None,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.AddGoal,
        goal_id=new_id(),
        description=description,
        target=target,
        due_date=due_date,
    )


async def set_goal_status(
    info: Info,
    plan_id: strawberry.ID,
    goal_id: strawberry.ID,
    status: GoalStatus,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.SetGoalStatus,
        goal_id=goal_id,
        status=status,
    )


async def add_intervention(
    info: Info,
    plan_id: strawberry.ID,
    kind: InterventionKind,
    tier: Tier,
    title: str,
    responsible_discipline: Discipline,
    detail: str | None = None,
    sensitivity: Sequence[Sensitivity] | None = (),
    due_date: date | None = None,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.AddIntervention,
        intervention_id=new_id(),
        kind=kind,
        tier=tier,
        title=title,
        detail=detail,
        responsible_discipline=responsible_discipline,
        sensitivity=tuple(sensitivity or ()),
        due_date=due_date,
    )


async def discontinue_intervention(
    info: Info,
    plan_id: strawberry.ID,
    intervention_id: strawberry.ID,
    reason: str,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.DiscontinueIntervention,
        intervention_id=intervention_id,
        reason=reason,
    )


async def set_plan_status(
    info: Info, plan_id: strawberry.ID, status: PlanStatus, expected_version: int | None = None
) -> CarePlan:
    return await _change_plan(
        info.context, plan_id, expected_version, careplan.SetPlanStatus, status=status
    )


async def review_care_plan(
    info: Info,
    plan_id: strawberry.ID,
    summary: str,
    next_review_date: date,
    expected_version: int | None = None,
) -> CarePlan:
    return await _change_plan(
        info.context,
        plan_id,
        expected_version,
        careplan.ReviewCarePlan,
        summary=summary,
        next_review_date=next_review_date,
    )
