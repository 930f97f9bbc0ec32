"""The access policy's guards on change, through the GraphQL API on a real PostgreSQL and
broker: no change to an item one may only see redacted, consent documented by the entitled
on evidence and never to widen the documenter's own access, and separation of duties at
break-glass. Every refusal writes nothing and is an access record (DENY) with its reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.audit import AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from schemas.consent import ConsentGrantedV1
from services.audit import keys as audit_keys
from services.audit import store as audit_store
from services.common.auth import mint_token
from services.common.event_store import EventStore, NewEvent
from services.settings import Settings
from services.tasks.domain import intervention_task_id
from tests import operations as op
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import SECRET, in_process_api, token
from tests.integration.kafka_helpers import access_records_sent

LEAD = token("lead-1", "Dr Lead")
PHARMACIST = token("ph-1", "Pat Pharm")
DIETITIAN = token("dt-1", "Dee Dietitian")
SOCIAL_WORKER = token("sw-1", "Sam Social")
OUTSIDER = token("er-1", "Dr Emergency")
RESULT = op.GENETIC_RESULT
SECRET_WORD = "CYP2C9"


def officer(sub: str) -> str:
    return mint_token(secret=SECRET, sub=sub, name="Cora Compliance", roles=["compliance_officer"])


async def refused(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], **kw: Any
) -> GraphQLErrors:
    with pytest.raises(GraphQLErrors) as info:
        await gql(client, query, variables, **kw)
    return info.value


async def recorded(settings: Settings) -> list[AccessRecorded]:
    """Every access record the API sent to care.audit so far."""
    return await access_records_sent(settings)


def denied(records: list[AccessRecorded], actor: str) -> list[AccessRecorded]:
    return [r for r in records if r.actor_id == actor and r.outcome is AccessOutcome.DENY]


async def clinic(api: httpx.AsyncClient, lead_discipline: str | None = None) -> dict[str, str]:
    """A team (lead-1 with `lead_discipline`, taken while setting the team up, or none; a
    pharmacist, a dietitian, a social worker), a patient whose consent lets the pharmacist
    see genetic results, and a plan."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Anticoagulation"}, token=LEAD))["createTeam"]
    staff = [
        ("ph-1", "Pat Pharm", "PHARMACIST"),
        ("dt-1", "Dee Dietitian", "DIETITIAN"),
        ("sw-1", "Sam Social", "SOCIAL_WORKER"),
    ]
    if lead_discipline is not None:
        staff.insert(0, ("lead-1", "Dr Lead", lead_discipline))
    for user, name, discipline in staff:
        variables = {"teamId": team["id"], "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=LEAD)
    enrollment = {"teamId": team["id"], "mrn": "G-1", "name": "Gale Example"}
    patient = (await gql(api, op.ENROLL, enrollment | {"birthDate": "1968-04-02"}, token=LEAD))[
        "enrollPatient"
    ]["id"]
    consent = {
        "patientId": patient,
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["PHARMACIST"],
        "evidence": "HIM-CF-1",
    }
    consent_id = (await gql(api, op.GRANT, consent, token=LEAD))["grantConsent"]["id"]
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "T2D"}, token=LEAD))[
        "createCarePlan"
    ]["id"]
    return {"team": team["id"], "patient": patient, "plan": plan, "consent": consent_id}


async def genetic_result(api: httpx.AsyncClient, plan: str) -> str:
    variables = op.genetic_result(plan)
    written = (await gql(api, op.ADD_INTERVENTION, variables, token=PHARMACIST))["addIntervention"]
    intervention: str = written["interventions"][0]["id"]
    return intervention


# --- no change to what one may only see redacted ---------------------------------------


async def test_a_member_who_sees_an_item_redacted_can_neither_move_nor_discontinue_it(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    intervention = await genetic_result(api, ids["plan"])
    task = intervention_task_id(intervention)
    await gql(api, op.SET_PLAN_STATUS, {"planId": ids["plan"], "status": "ACTIVE"}, token=LEAD)
    seen = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=DIETITIAN))["carePlan"]
    assert seen["interventions"][0]["redacted"] is True
    head = await EventStore(pool).head()

    attempts = {
        "move": (op.MOVE_TASK, {"taskId": task, "status": "DONE"}),
        "assign": (op.ASSIGN_TASK, {"taskId": task, "assigneeId": "dt-1"}),
        "discontinue": (
            op.DISCONTINUE,
            {"planId": ids["plan"], "interventionId": intervention, "reason": "not needed"},
        ),
        "complete the plan": (op.SET_PLAN_STATUS, {"planId": ids["plan"], "status": "COMPLETED"}),
        "revoke the plan": (op.SET_PLAN_STATUS, {"planId": ids["plan"], "status": "REVOKED"}),
    }
    errors = {
        what: await refused(api, query, variables, token=DIETITIAN)
        for what, (query, variables) in attempts.items()
    }

    for what, error in errors.items():
        assert error.code == "FORBIDDEN", what
        message = error.errors[0]["message"]
        assert "only see redacted" in message, what
        assert "GENETIC" not in message and SECRET_WORD not in message, what
    assert await EventStore(pool).head() == head
    # Whom the consent covers changes it; an untagged change is anyone's on the team.
    moved = await gql(
        api, op.MOVE_TASK, {"taskId": task, "status": "IN_PROGRESS"}, token=PHARMACIST
    )
    assert moved["moveTask"]["status"] == "IN_PROGRESS"
    await gql(api, op.ADD_GOAL, {"planId": ids["plan"], "description": "Walk"}, token=DIETITIAN)

    refusals = denied(await recorded(settings), "dt-1")
    assert {(r.resource_type, r.resource_id) for r in refusals} == {
        ("Task", task),
        ("Intervention", intervention),
    }
    assert len(refusals) == len(attempts)
    for r in refusals:
        assert (r.patient_id, r.sensitivity) == (ids["patient"], (Sensitivity.GENETIC,))
        assert "only see redacted, and they may not change it" in (r.reason or "")


async def test_a_tagged_item_the_caller_may_see_in_full_is_theirs_to_change(
    api: httpx.AsyncClient,
) -> None:
    ids = await clinic(api)
    intervention = await genetic_result(api, ids["plan"])

    plan = await gql(
        api,
        op.DISCONTINUE,
        {"planId": ids["plan"], "interventionId": intervention, "reason": "Switched"},
        token=PHARMACIST,
    )

    [stopped] = plan["discontinueIntervention"]["interventions"]
    assert (stopped["active"], stopped["redacted"]) == (False, False)


# --- consent is documented by the entitled, on evidence --------------------------------


async def test_a_member_who_is_neither_lead_nor_entitled_can_neither_document_nor_revoke_consent(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    head = await EventStore(pool).head()
    grant = {
        "patientId": ids["patient"],
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["DIETITIAN"],
        "evidence": "HIM-CF-2",
    }

    own = await refused(api, op.GRANT, grant, token=DIETITIAN)
    other = await refused(api, op.GRANT, grant | {"disciplines": ["NURSE"]}, token=SOCIAL_WORKER)
    withdrawal = {"id": ids["consent"], "evidence": "HIM-WD-2"}
    revoke = await refused(api, op.REVOKE_CONSENT, withdrawal, token=PHARMACIST)
    outsider = await refused(api, op.GRANT, grant, token=OUTSIDER)

    for error in (own, other, revoke, outsider):
        assert error.code == "FORBIDDEN"
    assert "Only a lead of this team" in own.errors[0]["message"]
    assert await EventStore(pool).head() == head
    consents = (await gql(api, op.CONSENTS, {"patientId": ids["patient"]}, token=LEAD))["consents"]
    assert [c["active"] for c in consents] == [True]
    records = await recorded(settings)
    for actor in ("dt-1", "sw-1", "ph-1"):
        [refusal] = denied(records, actor)
        assert refusal.resource_type == "Consent" and refusal.patient_id == ids["patient"]
        assert "neither a lead nor of a discipline entitled" in (refusal.reason or "")
    [revoking] = denied(records, "ph-1")
    assert revoking.resource_id == ids["consent"]
    assert "revoke a patient's consent" in (revoking.reason or "")


async def test_nobody_documents_a_consent_that_widens_their_own_access(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    # This deployment entitles social workers besides leads.
    entitled = settings.model_copy(
        update={"consent_recorder_disciplines": frozenset({Discipline.SOCIAL_WORKER})}
    )
    async with in_process_api(pool, entitled) as api:
        ids = await clinic(api, lead_discipline="PHYSICIAN")
        head = await EventStore(pool).head()
        grant = {
            "patientId": ids["patient"],
            "categories": ["MENTAL_HEALTH"],
            "purposes": ["TREATMENT"],
            "evidence": "HIM-CF-3",
        }

        lead = await refused(
            api, op.GRANT, grant | {"disciplines": ["PHYSICIAN", "NURSE"]}, token=LEAD
        )
        social = await refused(
            api, op.GRANT, grant | {"disciplines": ["SOCIAL_WORKER"]}, token=SOCIAL_WORKER
        )
        written = await EventStore(pool).head()
        # A second entitled member, whose access it does not widen, documents it.
        documented = (
            await gql(api, op.GRANT, grant | {"disciplines": ["PHYSICIAN"]}, token=SOCIAL_WORKER)
        )["grantConsent"]
        # A revocation narrows access: the lead it names may document the withdrawal.
        withdrawal = {"id": documented["id"], "evidence": "HIM-WD-3"}
        revoked = (await gql(api, op.REVOKE_CONSENT, withdrawal, token=LEAD))["revokeConsent"]

    for error in (lead, social):
        assert error.code == "FORBIDDEN"
        message = error.errors[0]["message"]
        assert "widen your own access" in message and "another entitled member" in message
    assert written == head
    assert (documented["grantedBy"], documented["evidence"]) == ("sw-1", "HIM-CF-3")
    assert (revoked["active"], revoked["revokedBy"]) == (False, "lead-1")
    records = await recorded(settings)
    for actor, discipline in (("lead-1", "PHYSICIAN"), ("sw-1", "SOCIAL_WORKER")):
        [refusal] = denied(records, actor)
        assert refusal.resource_type == "Consent"
        assert f"names {discipline}, which they hold" in (refusal.reason or "")


async def test_a_lead_who_takes_the_discipline_of_a_consent_they_documented_is_not_covered_by_it(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    # The lead holds PHYSICIAN: documenting a consent naming PHYSICIAN is refused, so they
    # drop the role, document it, and have a co-lead (who need not know) give it back.
    entitled = settings.model_copy(
        update={"consent_recorder_disciplines": frozenset({Discipline.SOCIAL_WORKER})}
    )
    async with in_process_api(pool, entitled) as api:
        ids = await clinic(api, lead_discipline="PHYSICIAN")
        intervention = await genetic_result(api, ids["plan"])
        await gql(api, op.SET_PLAN_STATUS, {"planId": ids["plan"], "status": "ACTIVE"}, token=LEAD)
        co_lead = {"teamId": ids["team"], "userId": "cl-2", "name": "Cal Colead"}
        await gql(api, op.ASSIGN_ROLE, co_lead | {"discipline": "NURSE", "lead": True}, token=LEAD)
        role = {"teamId": ids["team"], "userId": "lead-1", "name": "Dr Lead"}
        grant = {
            "patientId": ids["patient"],
            "categories": ["GENETIC"],
            "purposes": ["TREATMENT"],
            "disciplines": ["PHYSICIAN"],
            "evidence": "HIM-CF-4",
        }
        await refused(api, op.GRANT, grant, token=LEAD)
        await gql(api, op.REVOKE_ROLE, role | {"discipline": "PHYSICIAN"}, token=LEAD)
        await gql(api, op.GRANT, grant, token=LEAD)
        given_back = role | {"discipline": "PHYSICIAN"}
        await gql(api, op.ASSIGN_ROLE, given_back, token=token("cl-2", "Cal Colead"))

        seen = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=LEAD))["carePlan"]
        task = {"taskId": intervention_task_id(intervention), "status": "DONE"}
        move = await refused(api, op.MOVE_TASK, task, token=LEAD)
        # A second entitled member documenting the same consent is what covers the lead.
        await gql(api, op.GRANT, grant | {"evidence": "HIM-CF-5"}, token=SOCIAL_WORKER)
        covered = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=LEAD))["carePlan"]

    [shown] = seen["interventions"]
    assert (shown["redacted"], shown["title"]) == (True, "[restricted]")
    assert move.code == "FORBIDDEN" and "only see redacted" in move.errors[0]["message"]
    assert covered["interventions"][0]["title"] == RESULT
    records = await recorded(settings)
    assert any(
        "a consent they documented themselves never covers them" in (r.reason or "")
        for r in records
        if r.actor_id == "lead-1" and r.outcome is AccessOutcome.PERMIT_REDACTED
    )


async def test_a_consent_documented_before_evidence_was_asked_for_still_loads_and_counts(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    ids = await clinic(api)
    await genetic_result(api, ids["plan"])
    # As stored before v2: ConsentGranted v1, no evidence.
    old = ConsentGrantedV1(
        consent_id="c-old-1",
        patient_id=ids["patient"],
        categories=(Sensitivity.GENETIC,),
        purposes=(Purpose.TREATMENT,),
        disciplines=(Discipline.DIETITIAN,),
    )
    event = NewEvent(old, team_id=ids["team"], actor_id="lead-1", patient_id=ids["patient"])
    await EventStore(pool).append("consent-c-old-1", 0, [event])

    consents = (await gql(api, op.CONSENTS, {"patientId": ids["patient"]}, token=LEAD))["consents"]
    seen = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=DIETITIAN))["carePlan"]

    [legacy] = [c for c in consents if c["id"] == "c-old-1"]
    assert (legacy["evidence"], legacy["grantedBy"], legacy["active"]) == (None, "lead-1", True)
    assert seen["interventions"][0]["title"] == RESULT


# --- nobody widens their own access alone ----------------------------------------------


async def test_a_lead_cannot_give_themselves_a_discipline_once_the_team_has_a_patient(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    ids = await clinic(api)
    intervention = await genetic_result(api, ids["plan"])
    co_lead = {"teamId": ids["team"], "userId": "cl-2", "name": "Cal Colead"}
    await gql(api, op.ASSIGN_ROLE, co_lead | {"discipline": "NURSE", "lead": True}, token=LEAD)
    # A genuine consent, documented by the co-lead, covers pharmacists.
    grant = {
        "patientId": ids["patient"],
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["PHARMACIST"],
        "evidence": "HIM-CF-9",
    }
    await gql(api, op.GRANT, grant, token=token("cl-2", "Cal Colead"))
    head = await EventStore(pool).head()

    own = {"teamId": ids["team"], "userId": "lead-1", "name": "Dr Lead"}
    alone = await refused(api, op.ASSIGN_ROLE, own | {"discipline": "PHARMACIST"}, token=LEAD)
    padded = own | {"userId": " lead-1 ", "discipline": "PHARMACIST"}
    spaced = await refused(api, op.ASSIGN_ROLE, padded, token=LEAD)
    written = await EventStore(pool).head()
    before = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=LEAD))["carePlan"]
    # A second lead gives it; taking it away again is the lead's own to do.
    given = await gql(
        api, op.ASSIGN_ROLE, own | {"discipline": "PHARMACIST"}, token=token("cl-2", "Cal Colead")
    )
    after = (await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=LEAD))["carePlan"]
    dropped = await gql(api, op.REVOKE_ROLE, own | {"discipline": "PHARMACIST"}, token=LEAD)

    for error in (alone, spaced):
        assert error.code == "FORBIDDEN"
        message = error.errors[0]["message"]
        assert "cannot give yourself a discipline" in message
        assert "another lead of the team must assign it" in message
    assert written == head
    assert [(i["id"], i["redacted"]) for i in before["interventions"]] == [(intervention, True)]
    assert after["interventions"][0]["title"] == RESULT
    roster = {m["userId"]: m["disciplines"] for m in given["assignRole"]["members"]}
    assert roster["lead-1"] == ["PHARMACIST"]
    lead = next(m for m in dropped["revokeRole"]["members"] if m["userId"] == "lead-1")
    assert lead["disciplines"] == []
    refusals = denied(await recorded(settings), "lead-1")
    assert len(refusals) == 2
    for refusal in refusals:
        assert (refusal.resource_type, refusal.resource_id) == ("Team", ids["team"])
        assert "giving themselves a discipline on a team with a patient enrolled" in (
            refusal.reason or ""
        )


async def test_a_lead_setting_up_a_team_with_no_patient_gives_themselves_a_discipline(
    api: httpx.AsyncClient,
) -> None:
    team = (await gql(api, op.CREATE_TEAM, {"name": "New clinic"}, token=LEAD))["createTeam"]
    own = {"teamId": team["id"], "userId": "lead-1", "name": "Dr Lead", "discipline": "PHYSICIAN"}

    taken = (await gql(api, op.ASSIGN_ROLE, own, token=LEAD))["assignRole"]

    assert taken["members"][0]["disciplines"] == ["PHYSICIAN"]


# --- separation of duties at break-glass -----------------------------------------------


async def test_a_compliance_officer_cannot_break_the_glass_and_the_attempt_is_recorded(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    ids = await clinic(api)
    headers = {"X-Break-Glass": "Unresponsive in the emergency department"}

    error = await refused(
        api, op.CARE_PLAN, {"id": ids["plan"]}, token=officer("co-1"), headers=headers
    )
    missing = await refused(
        api, op.CARE_PLAN, {"id": "nope"}, token=officer("co-1"), headers=headers
    )

    assert error.code == missing.code == "FORBIDDEN"
    assert error.errors[0]["message"] == missing.errors[0]["message"]
    assert "cannot break the glass" in error.errors[0]["message"]
    [refusal] = [r for r in denied(await recorded(settings), "co-1") if r.patient_id]
    assert refusal.patient_id == ids["patient"]
    assert "global role compliance_officer" in (refusal.reason or "")
    assert "separation of duties" in (refusal.reason or "")


async def test_nobody_reviews_their_own_break_glass_access_and_the_attempt_is_recorded(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    keys = audit_keys.load(settings, create=True)
    ids = await clinic(api)
    headers = {"X-Break-Glass": "Unresponsive in the emergency department"}
    await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=OUTSIDER, headers=headers)
    # The audit writer's part: the records sent so far, appended to the log.
    async with pool.acquire() as conn:
        await audit_store.append(
            conn,
            0,
            await recorded(settings),
            keys,
            role=settings.audit_db_role,
            checkpoint_every=1000,
            now=datetime.now(UTC),
        )
    # The clinician who broke the glass later holds the compliance officer's role.
    same_person = officer("er-1")
    [access] = [
        e
        for e in (await gql(api, op.BREAK_GLASS_QUEUE, {}, token=same_person))["breakGlassQueue"]
        if e["patientId"] == ids["patient"]
    ]
    review = {"seq": access["seq"], "disposition": "Justified"}

    own = await refused(api, op.MARK_REVIEWED, review, token=same_person)
    queue = (await gql(api, op.BREAK_GLASS_QUEUE, {}, token=same_person))["breakGlassQueue"]
    other = (await gql(api, op.MARK_REVIEWED, review, token=officer("co-2")))[
        "markBreakGlassReviewed"
    ]

    assert access["actorId"] == "er-1"
    assert own.code == "FORBIDDEN"
    assert "another compliance officer" in own.errors[0]["message"]
    assert access["seq"] in {e["seq"] for e in queue}
    assert other["review"]["reviewerId"] == "co-2"
    [refusal] = [
        r for r in denied(await recorded(settings), "er-1") if r.resource_type == "BreakGlassReview"
    ]
    assert (refusal.resource_id, refusal.patient_id) == (access["seq"], ids["patient"])
    assert "may not review it" in (refusal.reason or "")
