"""Records made through the write side itself (no GraphQL), for unit tests on the in-memory
event store: a team with its lead, members, patients."""

from __future__ import annotations

from datetime import date

from schemas.common import Discipline
from services.common.aggregates import NEW, Caller, Handler, Loaded, Scope, new_id
from services.common.commands import build
from services.common.event_store import Claim
from services.plans.domain import patient, team
from services.plans.domain.patient import MRN_CLAIM, PATIENT, mrn_key
from services.plans.domain.team import TEAM

LEAD = "dr-1"
CALLER = Caller(actor_id=LEAD, correlation_id="c-1")


async def create_team(handler: Handler) -> str:
    """A new team whose lead is dr-1; its id."""
    team_id = new_id()
    create = build(team.CreateTeam, team_id=team_id, name="Clinic", actor_id=LEAD, actor_name="D")
    await handler.execute(TEAM, team_id, create, caller=CALLER, scope=Scope(team_id), known=NEW)
    return team_id


async def assign(
    handler: Handler, team_id: str, user_id: str, discipline: Discipline
) -> Loaded[team.Team]:
    """The lead gives `user_id` a discipline on the team; the team as it left it."""
    command = build(
        team.AssignRole,
        team_id=team_id,
        user_id=user_id,
        name=user_id.upper(),
        discipline=discipline,
        actor_id=LEAD,
    )
    return await handler.execute(TEAM, team_id, command, caller=CALLER, scope=Scope(team_id))


def enrollment(team_id: str, mrn: str = "MRN-1") -> patient.EnrollPatient:
    return build(
        patient.EnrollPatient,
        patient_id=new_id(),
        team_id=team_id,
        mrn=mrn,
        name="A Patient",
        birth_date=date(1970, 1, 1),
    )


async def enroll(handler: Handler, command: patient.EnrollPatient) -> str:
    """The patient enrolled as the API enrolls one (claiming the MRN); the patient's id."""
    await handler.execute(
        PATIENT,
        command.patient_id,
        command,
        caller=CALLER,
        scope=Scope(command.team_id, command.patient_id),
        claims=[Claim(MRN_CLAIM, mrn_key(command.team_id, command.mrn))],
        known=NEW,
    )
    return command.patient_id
