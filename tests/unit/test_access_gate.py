"""The access gate without a database or broker: `authorize`, `view` and the operation's
access records, on the in-memory event store, with the records caught on their way out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.api.bootstrap import Services
from services.api.graphql import access
from services.api.graphql.context import Context
from services.audit.keys import ReaderKeyring
from services.audit.sink import AuditUnavailable
from services.common.actor import Actor
from services.common.aggregates import NEW, Caller, Handler, Scope, new_id
from services.common.auth import Authenticator
from services.common.commands import build
from services.common.errors import InvalidInput, NotPermitted, Unauthenticated, Unavailable
from services.common.memory_store import InMemoryEventStore
from services.common.policy import Action
from services.plans.domain import consent, team
from services.plans.domain.consent import CONSENT
from services.plans.domain.team import TEAM
from services.settings import Settings
from services.tasks.write_side import build_handler
from tests.write_side import assign, create_team, enroll, enrollment

NOW = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
LEAD = Actor(user_id="dr-1", name="Dr One", roles=frozenset())
PHARMACIST = Actor(user_id="rx-1", name="Rx One", roles=frozenset())
STRANGER = Actor(user_id="dr-9", name="Dr Nine", roles=frozenset())


def clock() -> datetime:
    return NOW


@dataclass
class CaughtRecords:
    """Where the access records go: kept, or refused when `down` (the log is away)."""

    published: list[AccessRecorded] = field(default_factory=list)
    down: bool = False

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        if self.down and records:
            raise AuditUnavailable("the audit log is away")
        self.published.extend(records)

    async def close(self) -> None:
        return None


@dataclass
class Clinic:
    services: Services
    sink: CaughtRecords
    team_id: str
    patient_id: str

    def context(
        self, actor: Actor | None, *, purpose: str = "TREATMENT", break_glass: str | None = None
    ) -> Context:
        access.begin_operation()
        return Context(
            services=self.services,
            request_id="req-1",
            correlation_id="req-1",
            actor=actor,
            purpose=purpose,
            break_glass=break_glass,
        )

    async def grant(
        self, purposes: tuple[Purpose, ...], categories: tuple[Sensitivity, ...]
    ) -> None:
        consent_id = new_id()
        command = build(
            consent.GrantConsent,
            consent_id=consent_id,
            patient_id=self.patient_id,
            categories=categories,
            purposes=purposes,
            disciplines=(Discipline.PHARMACIST,),
            evidence="form-1",
        )
        await self.services.handler.execute(
            CONSENT,
            consent_id,
            command,
            caller=Caller("dr-1", "c-1"),
            scope=Scope(self.team_id, self.patient_id),
            known=NEW,
        )


@pytest.fixture
async def clinic() -> Clinic:
    """A team (lead dr-1, pharmacist rx-1) with one patient, on the in-memory store."""
    store = InMemoryEventStore(clock=clock)
    handler: Handler = build_handler(store, clock=clock)
    sink = CaughtRecords()
    settings = Settings(jwt_secret=SecretStr("unit-test-secret-that-is-long-enough-too"))
    services = Services(
        settings=settings,
        pool=None,  # type: ignore[arg-type]  # the gate reads no read model
        store=store,
        handler=handler,
        authenticator=Authenticator(secret=None),
        keyring=ReaderKeyring(settings),
        audit=sink,
        clock=clock,
    )
    team_id = await create_team(handler)
    await assign(handler, team_id, "rx-1", Discipline.PHARMACIST)
    patient_id = await enroll(handler, enrollment(team_id))
    return Clinic(services, sink, team_id, patient_id)


@pytest.fixture(autouse=True)
def fresh_operation() -> Iterator[None]:
    access.begin_operation()
    yield


def outcomes(records: Sequence[AccessRecorded]) -> list[tuple[str | None, AccessOutcome]]:
    return [(r.patient_id, r.outcome) for r in records]


async def _authorize(ctx: Context, clinic: Clinic, **kwargs: Any) -> access.Access:
    defaults: dict[str, Any] = {
        "team_id": clinic.team_id,
        "action": Action.READ,
        "resource": "team",
    }
    return await access.authorize(ctx, **{**defaults, **kwargs})


# --- who gets in -----------------------------------------------------------------------


async def test_a_member_is_let_through_and_what_the_answer_shows_is_recorded_once_sent(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(PHARMACIST)

    gate = await _authorize(ctx, clinic, patient_id=clinic.patient_id)
    await access.view(
        ctx, gate, AccessAction.READ, "Patient", clinic.patient_id, {clinic.patient_id: frozenset()}
    )
    assert clinic.sink.published == []  # nothing leaves before the operation's end
    await access.flush(ctx)

    (record,) = clinic.sink.published
    assert (record.patient_id, record.outcome) == (clinic.patient_id, AccessOutcome.PERMIT)
    assert (record.actor_id, record.purpose, record.action) == (
        "rx-1",
        Purpose.TREATMENT,
        AccessAction.READ,
    )
    assert record.actor_disciplines == (Discipline.PHARMACIST,)


async def test_a_stranger_is_refused_alike_whether_or_not_the_record_exists_and_it_is_recorded(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(STRANGER)
    patients = {clinic.patient_id: frozenset[Sensitivity]()}

    with pytest.raises(NotPermitted) as existing:
        await _authorize(ctx, clinic, patients=patients, resource="patient")
    with pytest.raises(NotPermitted) as missing:
        await _authorize(ctx, clinic, team_id=None, resource="patient")
    await access.flush(ctx)

    assert existing.value.message == missing.value.message
    assert "or it does not exist" in existing.value.message
    assert outcomes(clinic.sink.published) == [
        (clinic.patient_id, AccessOutcome.DENY),
        (None, AccessOutcome.DENY),
    ]


async def test_no_token_is_unauthenticated_and_nothing_is_read(clinic: Clinic) -> None:
    ctx = clinic.context(None)

    with pytest.raises(Unauthenticated, match="not signed in"):
        await _authorize(ctx, clinic)

    assert ctx.teams == {}  # the roster was never loaded


async def test_a_purpose_of_use_that_is_not_one_is_bad_input(clinic: Clinic) -> None:
    ctx = clinic.context(PHARMACIST, purpose="MARKETING")

    with pytest.raises(InvalidInput, match="X-Purpose-Of-Use"):
        await _authorize(ctx, clinic)


async def test_only_a_lead_changes_the_roster(clinic: Clinic) -> None:
    member = clinic.context(PHARMACIST)
    with pytest.raises(NotPermitted, match="Only a lead"):
        await _authorize(member, clinic, action=Action.MANAGE_ROSTER)

    lead = clinic.context(LEAD)
    gate = await _authorize(lead, clinic, action=Action.MANAGE_ROSTER)
    assert gate.membership is not None and gate.membership.lead


async def test_a_lead_gives_themselves_a_discipline_only_on_a_team_with_no_patient_yet(
    clinic: Clinic,
) -> None:
    lead = clinic.context(LEAD)
    gate = await _authorize(lead, clinic, action=Action.MANAGE_ROSTER)
    with pytest.raises(NotPermitted, match="another lead of the team must assign it"):
        await access.role_assignment(lead, gate, team_id=clinic.team_id, user_id="dr-1")
    # Another member, by the same lead: nothing of the lead's own access widens.
    await access.role_assignment(lead, gate, team_id=clinic.team_id, user_id="rx-1")
    await access.flush(lead)
    (record,) = clinic.sink.published
    assert (record.resource_type, record.resource_id) == ("Team", clinic.team_id)
    assert (record.outcome, record.patient_id) == (AccessOutcome.DENY, None)
    assert "giving themselves a discipline" in record.reason

    # A team being set up, with no patient yet: the lead takes a discipline alone.
    empty = await create_team(clinic.services.handler)
    setting_up = clinic.context(LEAD)
    gate = await _authorize(setting_up, clinic, team_id=empty, action=Action.MANAGE_ROSTER)
    await access.role_assignment(setting_up, gate, team_id=empty, user_id="dr-1")


async def test_research_use_needs_the_patients_consent_naming_it_and_the_discipline(
    clinic: Clinic,
) -> None:
    refused = clinic.context(PHARMACIST, purpose="RESEARCH")
    with pytest.raises(NotPermitted, match="purpose of use"):
        await _authorize(refused, clinic, patient_id=clinic.patient_id, resource="patient")

    await clinic.grant((Purpose.RESEARCH,), (Sensitivity.GENETIC,))
    allowed = clinic.context(PHARMACIST, purpose="RESEARCH")
    gate = await _authorize(allowed, clinic, patient_id=clinic.patient_id, resource="patient")
    assert gate.decision.outcome is AccessOutcome.PERMIT


async def test_break_glass_opens_one_patients_record_for_treatment_but_never_a_team_board(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(STRANGER, break_glass="Unconscious in the emergency room")
    gate = await _authorize(ctx, clinic, patient_id=clinic.patient_id, resource="patient")
    assert gate.decision.outcome is AccessOutcome.BREAK_GLASS

    board = clinic.context(STRANGER, break_glass="Unconscious in the emergency room")
    with pytest.raises(NotPermitted):
        await _authorize(board, clinic, resource="board")


async def test_a_member_removed_since_the_last_operation_is_refused_at_once(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(PHARMACIST)
    await _authorize(ctx, clinic)
    remove = build(team.RemoveMember, team_id=clinic.team_id, user_id="rx-1", actor_id="dr-1")
    await clinic.services.handler.execute(
        TEAM, clinic.team_id, remove, caller=Caller("dr-1", "c-2"), scope=Scope(clinic.team_id)
    )
    ctx.teams.clear()  # what each new operation does (schema's fresh-roster extension)

    with pytest.raises(NotPermitted):
        await _authorize(ctx, clinic)


async def test_a_compliance_officer_breaking_the_glass_is_refused_whether_or_not_it_exists(
    clinic: Clinic,
) -> None:
    officer = Actor(user_id="co-1", name="Cora", roles=frozenset({"compliance_officer"}))
    reason = "Unconscious in the emergency room"
    patients = {clinic.patient_id: frozenset[Sensitivity]()}

    ctx = clinic.context(officer, break_glass=reason)
    with pytest.raises(NotPermitted) as existing:
        await _authorize(
            ctx, clinic, patient_id=clinic.patient_id, patients=patients, resource="patient"
        )
    with pytest.raises(NotPermitted) as missing:
        await _authorize(ctx, clinic, team_id=None, resource="patient")
    await access.flush(ctx)

    assert existing.value.message == missing.value.message
    assert "cannot break the glass" in existing.value.message
    refusal = clinic.sink.published[0]
    assert (refusal.patient_id, refusal.outcome) == (clinic.patient_id, AccessOutcome.DENY)
    assert "global role compliance_officer" in refusal.reason


# --- changes to what one may only see redacted -----------------------------------------


async def test_a_member_may_not_change_a_task_it_may_only_see_redacted_and_the_refusal_is_recorded(
    clinic: Clinic,
) -> None:
    tags = frozenset({Sensitivity.MENTAL_HEALTH})
    ctx = clinic.context(PHARMACIST)

    with pytest.raises(NotPermitted) as refused:
        await _authorize(
            ctx,
            clinic,
            action=Action.WRITE,
            resource="task",
            resource_id="k-1",
            patients={clinic.patient_id: tags},
            patient_id=clinic.patient_id,
            sensitivity=tags,
        )
    await access.flush(ctx)

    assert refused.value.message.startswith("This task is one you may only see redacted")
    assert "MENTAL_HEALTH" not in refused.value.message
    (record,) = clinic.sink.published
    assert (record.resource_type, record.resource_id) == ("Task", "k-1")
    assert (record.outcome, record.action) == (AccessOutcome.DENY, AccessAction.UPDATE)
    assert record.sensitivity == (Sensitivity.MENTAL_HEALTH,)

    await clinic.grant((Purpose.TREATMENT,), (Sensitivity.MENTAL_HEALTH,))
    covered = clinic.context(PHARMACIST)
    gate = await _authorize(
        covered,
        clinic,
        action=Action.WRITE,
        resource="task",
        patient_id=clinic.patient_id,
        sensitivity=tags,
    )
    assert gate.decision.outcome is AccessOutcome.PERMIT


async def test_may_change_refuses_an_item_of_a_record_the_caller_may_only_see_redacted(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(PHARMACIST)
    gate = await _authorize(ctx, clinic, action=Action.WRITE, patient_id=clinic.patient_id)
    items = [("i-plain", ()), ("i-genetic", (Sensitivity.GENETIC,))]

    with pytest.raises(NotPermitted, match="only see redacted"):
        await access.may_change(
            ctx, gate, resource="intervention", patient_id=clinic.patient_id, items=items
        )
    await access.flush(ctx)

    (record,) = clinic.sink.published
    assert (record.resource_type, record.resource_id) == ("Intervention", "i-genetic")
    assert record.outcome is AccessOutcome.DENY


# --- who documents consent -------------------------------------------------------------


async def test_consent_is_documented_by_leads_and_entitled_disciplines_never_widening_their_own(
    clinic: Clinic,
) -> None:
    member = clinic.context(PHARMACIST)
    gate = await _authorize(member, clinic, action=Action.WRITE, patient_id=clinic.patient_id)
    with pytest.raises(NotPermitted, match="Only a lead of this team"):
        await access.consent_entry(
            member, gate, patient_id=clinic.patient_id, consent_id=None, disciplines=[]
        )

    clinic.services.settings.consent_recorder_disciplines = frozenset({Discipline.PHARMACIST})
    with pytest.raises(NotPermitted, match="widen your own access"):
        await access.consent_entry(
            member,
            gate,
            patient_id=clinic.patient_id,
            consent_id=None,
            disciplines=[Discipline.PHARMACIST],
        )
    await access.consent_entry(
        member, gate, patient_id=clinic.patient_id, consent_id=None, disciplines=[Discipline.NURSE]
    )
    await access.flush(member)

    # Both refusals, in the patient's one DENY record of the operation.
    (record,) = clinic.sink.published
    assert (record.resource_type, record.outcome) == ("Consent", AccessOutcome.DENY)
    assert "neither a lead nor" in record.reason and "widen their own access" in record.reason


# --- what each item shows --------------------------------------------------------------


async def test_a_genetic_item_is_redacted_without_consent_and_shown_under_one(
    clinic: Clinic,
) -> None:
    genetic = frozenset({Sensitivity.GENETIC})
    ctx = clinic.context(PHARMACIST)
    gate = await _authorize(ctx, clinic, patient_id=clinic.patient_id)
    before = await access.view(
        ctx, gate, AccessAction.READ, "CarePlan", None, {clinic.patient_id: genetic}
    )
    assert before.item(clinic.patient_id, genetic).outcome is AccessOutcome.PERMIT_REDACTED

    await clinic.grant((Purpose.TREATMENT,), (Sensitivity.GENETIC,))
    after = await access.view(
        ctx, gate, AccessAction.READ, "CarePlan", None, {clinic.patient_id: genetic}
    )
    assert after.item(clinic.patient_id, genetic).outcome is AccessOutcome.PERMIT
    await access.flush(ctx)
    # One record for the patient per operation, naming the most guarded outcome it had.
    (record,) = clinic.sink.published
    assert (record.patient_id, record.outcome) == (
        clinic.patient_id,
        AccessOutcome.PERMIT_REDACTED,
    )
    assert record.sensitivity == (Sensitivity.GENETIC,)


async def test_genetic_items_are_never_shown_for_employment_whatever_the_consent(
    clinic: Clinic,
) -> None:
    genetic = frozenset({Sensitivity.GENETIC})
    await clinic.grant((Purpose.EMPLOYMENT,), (Sensitivity.GENETIC,))
    ctx = clinic.context(PHARMACIST, purpose="EMPLOYMENT")
    gate = await _authorize(ctx, clinic, patient_id=clinic.patient_id, resource="patient")

    shown = await access.view(
        ctx, gate, AccessAction.READ, "CarePlan", None, {clinic.patient_id: genetic}
    )

    assert shown.item(clinic.patient_id, genetic).outcome is AccessOutcome.DENY
    assert shown.item(clinic.patient_id, ()).outcome is AccessOutcome.PERMIT


# --- fail-closed -----------------------------------------------------------------------


async def test_when_the_audit_log_cannot_take_the_records_nothing_is_answered(
    clinic: Clinic,
) -> None:
    clinic.sink.down = True
    ctx = clinic.context(PHARMACIST)
    gate = await _authorize(ctx, clinic, patient_id=clinic.patient_id)
    await access.view(
        ctx, gate, AccessAction.READ, "Patient", clinic.patient_id, {clinic.patient_id: frozenset()}
    )

    with pytest.raises(Unavailable, match="could not be recorded"):
        await access.flush(ctx)


async def test_the_clock_the_gate_judges_by_is_the_one_the_services_were_built_with(
    clinic: Clinic,
) -> None:
    ctx = clinic.context(PHARMACIST)

    assert ctx.now() == NOW
    assert ctx.handler.clock() == NOW
    assert ctx.now() + timedelta(0) == clinic.services.clock()


# --- subscription pushes ---------------------------------------------------------------


async def _push_to(clinic: Clinic, actors: Sequence[Actor]) -> list[BaseException | None]:
    """One board change pushed to a subscriber per actor, at once, as the hub wakes them."""

    async def one(actor: Actor) -> None:
        ctx = clinic.context(actor)
        gate = await _authorize(ctx, clinic)
        shown = await access.view(
            ctx,
            gate,
            AccessAction.SUBSCRIBE_PUSH,
            "Task",
            "task-1",
            {clinic.patient_id: frozenset()},
            live=True,
        )
        await access.pushed(ctx, shown)

    return await asyncio.gather(*(one(a) for a in actors), return_exceptions=True)


async def test_the_records_of_one_changes_pushes_to_many_subscribers_go_in_one_hand_off(
    clinic: Clinic,
) -> None:
    handoffs: list[int] = []
    publish = clinic.sink.publish

    async def counted(records: Sequence[AccessRecorded]) -> None:
        handoffs.append(len(records))
        await publish(records)

    clinic.sink.publish = counted  # type: ignore[method-assign]
    answers = await _push_to(clinic, [LEAD, PHARMACIST] * 5)

    assert answers == [None] * 10
    assert handoffs == [10]
    assert {r.actor_id for r in clinic.sink.published} == {"dr-1", "rx-1"}
    assert {r.action for r in clinic.sink.published} == {AccessAction.SUBSCRIBE_PUSH}


async def test_when_the_hand_off_of_pushes_fails_none_of_them_is_sent(clinic: Clinic) -> None:
    clinic.sink.down = True

    answers = await _push_to(clinic, [LEAD, PHARMACIST] * 5)

    assert all(isinstance(a, Unavailable) for a in answers)
    assert clinic.sink.published == []
