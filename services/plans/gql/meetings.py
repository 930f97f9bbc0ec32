"""Mutations of huddles and consents. Each returns the record as the change left it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import strawberry

from schemas.base import Event
from schemas.common import Discipline, Purpose, Sensitivity
from schemas.huddle import ActionItemRaised
from services.api.access import authorize
from services.api.context import Context
from services.common import dates
from services.common.commands import Command, build
from services.common.policy import Action
from services.plans.domain import consent, huddle
from services.plans.domain.consent import CONSENT
from services.plans.domain.huddle import HUDDLE
from services.plans.domain.patient import PATIENT
from services.plans.gql import guard
from services.plans.gql.mutations import new_id
from services.plans.gql.types import Consent, Huddle, Info
from services.plans.handlers import NEW, FollowUp, Loaded, Scope
from services.tasks.domain import TASK, from_action_item

# --- huddles -------------------------------------------------------------------------


async def schedule_huddle(info: Info, team_id: strawberry.ID, at: datetime) -> Huddle:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.WRITE, resource="team")
    dates.aware(at, argument="at")
    huddle_id = new_id()
    command = build(huddle.ScheduleHuddle, huddle_id=huddle_id, team_id=team_id, at=at)
    loaded = await ctx.handler.execute(
        HUDDLE, huddle_id, command, caller=ctx.caller(), scope=Scope(team_id), known=NEW
    )
    return Huddle.from_state(loaded, await guard.changed(ctx, access, HUDDLE, huddle_id, loaded))


async def open_huddle(info: Info, huddle_id: strawberry.ID) -> Huddle:
    return await _change_huddle(info.context, huddle_id, huddle.OpenHuddle, None)


async def close_huddle(info: Info, huddle_id: strawberry.ID) -> Huddle:
    return await _change_huddle(info.context, huddle_id, huddle.CloseHuddle, None)


async def record_huddle_note(
    info: Info,
    huddle_id: strawberry.ID,
    text: str,
    patient_id: strawberry.ID | None = None,
    sensitivity: Sequence[Sensitivity] | None = (),
) -> Huddle:
    return await _change_huddle(
        info.context,
        huddle_id,
        huddle.RecordHuddleNote,
        patient_id,
        note_id=new_id(),
        text=text,
        sensitivity=tuple(sensitivity or ()),
    )


async def raise_action_item(
    info: Info,
    huddle_id: strawberry.ID,
    title: str,
    patient_id: strawberry.ID | None = None,
    discipline: Discipline | None = None,
    assignee_id: strawberry.ID | None = None,
    due_date: date | None = None,
) -> Huddle:
    return await _change_huddle(
        info.context,
        huddle_id,
        huddle.RaiseActionItem,
        patient_id,
        task_id=new_id(),
        title=title,
        discipline=discipline,
        assignee_id=assignee_id,
        due_date=due_date,
    )


async def _change_huddle(
    ctx: Context,
    huddle_id: str,
    command_type: type[Command],
    patient_id: str | None,
    **fields: object,
) -> Huddle:
    meeting, access = await guard.load(ctx, HUDDLE, huddle_id, Action.WRITE)
    assert meeting.state is not None
    team_id = meeting.state.team_id
    if patient_id is not None:
        fields["patient_id"] = patient_id
    command = build(command_type, huddle_id=huddle_id, **fields)
    await guard.patient_on_team(ctx, patient_id, team_id, "this huddle's team")
    guard.assignee_on_team(access, getattr(command, "assignee_id", None))

    async def tasks(events: Sequence[Event], _: Loaded[Any]) -> list[FollowUp]:
        # Each action item starts the task that carries it on the board, atomically.
        return [
            FollowUp(TASK.stream_id(e.task_id), [from_action_item(e, team_id=team_id)])
            for e in events
            if isinstance(e, ActionItemRaised)
        ]

    loaded = await ctx.handler.execute(
        HUDDLE,
        huddle_id,
        command,
        caller=ctx.caller(),
        scope=Scope(team_id, patient_id),
        follow_ups=tasks,
        known=meeting,
    )
    return Huddle.from_state(loaded, await guard.changed(ctx, access, HUDDLE, huddle_id, loaded))


# --- consent -------------------------------------------------------------------------


async def grant_consent(
    info: Info,
    patient_id: strawberry.ID,
    categories: list[Sensitivity],
    purposes: list[Purpose],
    disciplines: list[Discipline],
    valid_until: datetime | None = None,
) -> Consent:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    if valid_until is not None:
        dates.aware(valid_until, argument="validUntil")
    consent_id = new_id()
    command = build(
        consent.GrantConsent,
        consent_id=consent_id,
        patient_id=patient_id,
        categories=tuple(categories),
        purposes=tuple(purposes),
        disciplines=tuple(disciplines),
        valid_until=valid_until,
    )
    loaded = await ctx.handler.execute(
        CONSENT,
        consent_id,
        command,
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    await guard.changed(ctx, access, CONSENT, consent_id, loaded, created=True)
    return Consent.from_state(loaded, now=ctx.now())


async def revoke_consent(info: Info, consent_id: strawberry.ID) -> Consent:
    ctx = info.context
    current, access = await guard.load(ctx, CONSENT, consent_id, Action.WRITE, one_patient=True)
    assert current.state is not None
    command = build(consent.RevokeConsent, consent_id=consent_id)
    loaded = await ctx.handler.execute(
        CONSENT,
        consent_id,
        command,
        caller=ctx.caller(),
        scope=Scope(current.state.team_id, current.state.patient_id),
        known=current,
    )
    await guard.changed(ctx, access, CONSENT, consent_id, loaded)
    return Consent.from_state(loaded, now=ctx.now())
