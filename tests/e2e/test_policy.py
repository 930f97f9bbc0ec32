"""The access policy on the running stack: a genetic result shown per consent, purpose of
use and GINA, in answers, on the board and in subscription pushes; break-glass access
and its compliance review; every decision in the audit log with its outcome and reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests import operations as op
from tests.e2e.conftest import Stack
from tests.e2e.trail import Entries, trail_until
from tests.graphql import GraphQLErrors, gql
from tests.ws import Socket, connect

PURPOSE = "X-Purpose-Of-Use"
BREAK_GLASS = "X-Break-Glass"
RESULT = op.GENETIC_RESULT
SECRET_WORD = "CYP2C9"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


async def _post(
    api: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str, **headers: str
) -> tuple[dict[str, Any], str]:
    """The response body and its raw text (to search for what must not be in it)."""
    response = await api.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", **headers},
    )
    return response.json(), response.text


async def _team(api: httpx.AsyncClient, lead: str, suffix: str) -> dict[str, str]:
    """A team with a genetic counselor, a pharmacist and a dietitian; a patient whose
    consent lets the genetic counselor and the pharmacist see genetic results; a plan."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Anticoagulation"}, token=lead))["createTeam"][
        "id"
    ]
    for user, name, discipline in (
        (f"gc-{suffix}", "Gil Counselor", "GENETIC_COUNSELOR"),
        (f"ph-{suffix}", "Pat Pharm", "PHARMACIST"),
        (f"dt-{suffix}", "Dee Dietitian", "DIETITIAN"),
    ):
        variables = {"teamId": team, "userId": user, "name": name, "discipline": discipline}
        await gql(api, op.ASSIGN_ROLE, variables, token=lead)
    patient = (
        await gql(
            api,
            op.ENROLL,
            {
                "teamId": team,
                "mrn": f"G-{suffix}",
                "name": "Gale Example",
                "birthDate": "1968-04-02",
            },
            token=lead,
        )
    )["enrollPatient"]["id"]
    await _consent(api, lead, patient, ["TREATMENT"], ["GENETIC_COUNSELOR", "PHARMACIST"])
    plan = (
        await gql(
            api, op.CREATE_PLAN, {"patientId": patient, "title": "Anticoagulation"}, token=lead
        )
    )["createCarePlan"]["id"]
    return {"team": team, "patient": patient, "plan": plan}


async def _consent(
    api: httpx.AsyncClient, lead: str, patient: str, purposes: list[str], disciplines: list[str]
) -> str:
    variables = {
        "patientId": patient,
        "categories": ["GENETIC"],
        "purposes": purposes,
        "disciplines": disciplines,
        "evidence": f"form-{patient}",
    }
    consent: str = (await gql(api, op.GRANT, variables, token=lead))["grantConsent"]["id"]
    return consent


async def _record_result(api: httpx.AsyncClient, counselor: str, plan: str) -> dict[str, Any]:
    variables = op.genetic_result(plan)
    plan_after: dict[str, Any] = (await gql(api, op.ADD_INTERVENTION, variables, token=counselor))[
        "addIntervention"
    ]
    return plan_after


async def _push(socket: Socket) -> tuple[dict[str, Any], str]:
    message = await socket.receive()
    assert message["type"] == "next", message
    return message["payload"]["data"]["boardChanged"], str(message)


def _card(board: dict[str, Any], task_id: str) -> dict[str, Any]:
    [card] = [t for c in board["columns"] for t in c["tasks"] if t["id"] == task_id]
    found: dict[str, Any] = card
    return found


async def test_a_genetic_result_is_released_only_under_consent_and_never_for_underwriting(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-p", "Dr Lead")
    counselor = stack.token("gc-p", "Gil Counselor")
    pharmacist = stack.token("ph-p", "Pat Pharm")
    dietitian = stack.token("dt-p", "Dee Dietitian")
    officer = stack.token("co-p", "Cora Compliance", "compliance_officer")
    ids = await _team(api, lead, "p")

    async with (
        connect(stack.base_url, dietitian) as socket,
        connect(stack.base_url, counselor) as counselors,
    ):
        await socket.subscribe(op.BOARD_CHANGED, {"teamId": ids["team"]})
        await counselors.subscribe(op.BOARD_CHANGED, {"teamId": ids["team"]})
        await asyncio.sleep(0.5)  # the subscriptions are registered before the change
        written = await _record_result(api, counselor, ids["plan"])
        # The counselor, whom the patient's consent covers, sees what they wrote.
        [result] = written["interventions"]
        assert (result["title"], result["redacted"]) == (RESULT, False)
        task_id = await _task_of(api, pharmacist, ids["team"])

        # Without consent the dietitian sees the item redacted everywhere, CYP2C9 nowhere.
        created, raw_push = await _push(socket)
        assert created["change"] == "CREATED" and created["task"]["id"] == task_id
        assert created["task"]["redacted"] is True
        assert created["task"]["title"] == "[restricted]"
        assert SECRET_WORD not in raw_push
        # The counselor's subscription, with the same document, is pushed the same change
        # in full: each subscriber's card is decided for them, never taken from another's.
        theirs, _ = await _push(counselors)
        assert theirs["task"]["id"] == task_id
        assert (theirs["task"]["title"], theirs["task"]["redacted"]) == (RESULT, False)
        body, raw = await _post(api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian)
        [shown] = body["data"]["carePlan"]["interventions"]
        assert shown["id"] == result["id"] and shown["redacted"] is True
        assert (shown["title"], shown["detail"]) == ("[restricted]", "[restricted]")
        assert shown["sensitivity"] == ["GENETIC"] and shown["active"] is True
        assert SECRET_WORD not in raw
        body, raw = await _post(api, op.BOARD, {"teamId": ids["team"]}, dietitian)
        card = _card(body["data"]["board"], task_id)
        assert card["redacted"] is True and card["status"] == "TODO"
        assert SECRET_WORD not in raw

        # The patient consents to the dietitian seeing genetic results for treatment.
        consent = await _consent(api, lead, ids["patient"], ["TREATMENT"], ["DIETITIAN"])
        body, raw = await _post(api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian)
        [shown] = body["data"]["carePlan"]["interventions"]
        assert (shown["title"], shown["redacted"]) == (RESULT, False)
        body, _ = await _post(api, op.BOARD, {"teamId": ids["team"]}, dietitian)
        assert _card(body["data"]["board"], task_id)["title"] == RESULT
        # The open subscription is told at once: the card, decided again.
        granted, _ = await _push(socket)
        assert (granted["change"], granted["task"]["id"]) == ("UPDATED", task_id)
        assert (granted["task"]["title"], granted["task"]["redacted"]) == (RESULT, False)
        await gql(api, op.MOVE_TASK, {"taskId": task_id, "status": "IN_PROGRESS"}, token=pharmacist)
        moved, _ = await _push(socket)
        assert (moved["task"]["title"], moved["task"]["redacted"]) == (RESULT, False)

        # Consent or not, genetic information is not released for underwriting or employment.
        for purpose in ("UNDERWRITING", "EMPLOYMENT"):
            body, raw = await _post(
                api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian, **{PURPOSE: purpose}
            )
            assert body["data"] is None or body["data"]["carePlan"] is None
            assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
            assert SECRET_WORD not in raw
        # Even a consent that names those purposes does not release it (GINA): the plan is
        # answered, without the genetic item.
        await _consent(api, lead, ids["patient"], ["UNDERWRITING", "EMPLOYMENT"], ["DIETITIAN"])
        regranted, _ = await _push(socket)  # decided again: still shown, for treatment
        assert (regranted["task"]["title"], regranted["task"]["redacted"]) == (RESULT, False)
        for purpose in ("UNDERWRITING", "EMPLOYMENT"):
            body, raw = await _post(
                api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian, **{PURPOSE: purpose}
            )
            assert "errors" not in body, body
            assert body["data"]["carePlan"]["interventions"] == []
            assert SECRET_WORD not in raw
            # The genetic task itself cannot be reached for those purposes either, and the
            # refusal does not say why (that would tell it is genetic).
            move = {"taskId": task_id, "status": "BLOCKED", "reason": "x"}
            body, raw = await _post(api, op.MOVE_TASK, move, dietitian, **{PURPOSE: purpose})
            assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
            assert "GENETIC" not in raw and SECRET_WORD not in raw

        # Revoked: redacted again, in answers and in the next push.
        withdrawal = {"id": consent, "evidence": f"withdrawal-{consent}"}
        await gql(api, op.REVOKE_CONSENT, withdrawal, token=lead)
        body, raw = await _post(api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian)
        assert body["data"]["carePlan"]["interventions"][0]["redacted"] is True
        assert SECRET_WORD not in raw
        revoked, raw_push = await _push(socket)
        assert (revoked["change"], revoked["task"]["redacted"]) == ("UPDATED", True)
        assert SECRET_WORD not in raw_push
        await gql(api, op.MOVE_TASK, {"taskId": task_id, "status": "DONE"}, token=pharmacist)
        done, raw_push = await _push(socket)
        assert done["task"]["status"] == "DONE" and done["task"]["redacted"] is True
        assert SECRET_WORD not in raw_push

    # Every decision is in the audit log with its outcome and reason.
    def denied_for(entries: Entries, said: str) -> set[str]:
        return {
            e["purpose"]
            for e in _of(entries, "dt-p")
            if e["outcome"] == "DENY" and said in (e["reason"] or "")
        }

    def decided(entries: Entries) -> bool:
        outcomes = {(e["outcome"], e["action"], e["purpose"]) for e in _of(entries, "dt-p")}
        # Wait for every record asserted on below: the writer appends them in batches, so
        # the trail may show the read refused for EMPLOYMENT before the move refused after it.
        return {
            ("PERMIT_REDACTED", "read", "TREATMENT"),
            ("PERMIT", "read", "TREATMENT"),
            ("DENY", "read", "UNDERWRITING"),
            ("DENY", "read", "EMPLOYMENT"),
            ("PERMIT", "read", "UNDERWRITING"),
            ("PERMIT_REDACTED", "subscribe-push", "TREATMENT"),
            ("PERMIT", "subscribe-push", "TREATMENT"),
        } <= outcomes and all(
            denied_for(entries, said) >= {"UNDERWRITING", "EMPLOYMENT"}
            for said in ("GINA", "no active consent")
        )

    entries = _of(await trail_until(api, officer, ids["patient"], decided), "dt-p")
    redacted = [e for e in entries if e["outcome"] == "PERMIT_REDACTED"]
    assert all("GENETIC" in e["sensitivity"] for e in redacted)
    assert all("no active consent" in e["reason"] and "DIETITIAN" in e["reason"] for e in redacted)
    assert any(consent in e["reason"] for e in entries if e["outcome"] == "PERMIT")
    gina = [e for e in entries if e["outcome"] == "DENY" and "GINA" in (e["reason"] or "")]
    assert {e["purpose"] for e in gina} == {"UNDERWRITING", "EMPLOYMENT"}
    assert all(e["sensitivity"] == ["GENETIC"] for e in gina)
    without_consent = [
        e for e in entries if e["outcome"] == "DENY" and "no active consent" in (e["reason"] or "")
    ]
    assert {e["purpose"] for e in without_consent} == {"UNDERWRITING", "EMPLOYMENT"}


async def _task_of(api: httpx.AsyncClient, member: str, team: str) -> str:
    """The board task the intervention put up (the projector follows within moments)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        board = (await gql(api, op.BOARD, {"teamId": team}, token=member))["board"]
        tasks = [t for c in board["columns"] for t in c["tasks"]]
        if tasks:
            task_id: str = tasks[0]["id"]
            return task_id
        await asyncio.sleep(0.1)
    raise AssertionError("the intervention's task never reached the board")


def _tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


def _of(entries: Entries, actor: str) -> Entries:
    return [e for e in entries if e["actorId"] == actor]


async def test_an_outsider_breaks_the_glass_and_a_compliance_officer_reviews_it(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-q", "Dr Lead")
    counselor = stack.token("gc-q", "Gil Counselor")
    pharmacist = stack.token("ph-q", "Pat Pharm")
    outsider = stack.token("ed-q", "Dr Emergency")
    officer = stack.token("co-q", "Cora Compliance", "compliance_officer")
    ids = await _team(api, lead, "q")
    await _record_result(api, counselor, ids["plan"])
    reason = "Unresponsive in the emergency department; anticoagulation status needed"

    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=outsider)
    assert refused.value.code == "FORBIDDEN"
    plan = (
        await gql(
            api, op.CARE_PLAN, {"id": ids["plan"]}, token=outsider, headers={BREAK_GLASS: reason}
        )
    )["carePlan"]
    # The emergency read releases the record, the genetic result included (42 CFR 2.51).
    assert plan["interventions"][0]["title"] == RESULT
    for query, variables, headers in (
        (op.CARE_PLAN, {"id": ids["plan"]}, {BREAK_GLASS: reason, PURPOSE: "RESEARCH"}),
        (op.BOARD, {"teamId": ids["team"]}, {BREAK_GLASS: reason}),
        (op.ADD_GOAL, {"planId": ids["plan"], "description": "x"}, {BREAK_GLASS: reason}),
    ):
        with pytest.raises(GraphQLErrors) as not_opened:
            await gql(api, query, variables, token=outsider, headers=headers)
        assert not_opened.value.code == "FORBIDDEN"

    async def queued() -> Entries:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            queue: Entries = (await gql(api, op.BREAK_GLASS_QUEUE, {}, token=officer))[
                "breakGlassQueue"
            ]
            mine = [e for e in queue if e["patientId"] == ids["patient"]]
            if mine:
                return mine
            await asyncio.sleep(0.2)
        raise AssertionError("the break-glass access never reached the queue")

    [access] = await queued()
    assert (access["actorId"], access["outcome"]) == ("ed-q", "BREAK_GLASS")
    assert access["resource"] == f"CarePlan/{ids['plan']}"
    assert reason in access["reason"] and "review" in access["reason"]
    with pytest.raises(GraphQLErrors) as clinician:
        await gql(api, op.BREAK_GLASS_QUEUE, {}, token=pharmacist)
    assert clinician.value.code == "FORBIDDEN"
    with pytest.raises(GraphQLErrors) as not_break_glass:
        await gql(api, op.MARK_REVIEWED, {"seq": "0:1", "disposition": "justified"}, token=officer)
    assert not_break_glass.value.code == "BAD_USER_INPUT"
    # Separation of duties: the one who took the access, later a compliance officer,
    # cannot review it; and a compliance officer cannot break the glass.
    taker = stack.token("ed-q", "Dr Emergency", "compliance_officer")
    with pytest.raises(GraphQLErrors) as own:
        await gql(api, op.MARK_REVIEWED, {"seq": access["seq"], "disposition": "ok"}, token=taker)
    assert own.value.code == "FORBIDDEN"
    with pytest.raises(GraphQLErrors) as officer_glass:
        await gql(
            api, op.CARE_PLAN, {"id": ids["plan"]}, token=officer, headers={BREAK_GLASS: reason}
        )
    assert officer_glass.value.code == "FORBIDDEN"

    disposition = "Justified: emergency admission, attending confirmed"
    reviewed = (
        await gql(
            api, op.MARK_REVIEWED, {"seq": access["seq"], "disposition": disposition}, token=officer
        )
    )["markBreakGlassReviewed"]
    assert reviewed["seq"] == access["seq"]
    assert (reviewed["review"]["reviewerId"], reviewed["review"]["disposition"]) == (
        "co-q",
        disposition,
    )
    queue = (await gql(api, op.BREAK_GLASS_QUEUE, {}, token=officer))["breakGlassQueue"]
    assert access["seq"] not in {e["seq"] for e in queue}
    with pytest.raises(GraphQLErrors) as twice:
        await gql(
            api, op.MARK_REVIEWED, {"seq": access["seq"], "disposition": "again"}, token=officer
        )
    assert twice.value.code == "CONFLICT"

    # The refusals and the review are in the audit log too, with their reasons.
    def reviews(entries: Entries, outcome: str) -> Entries:
        resource = f"BreakGlassReview/{access['seq']}"
        return [e for e in entries if e["resource"] == resource and e["outcome"] == outcome]

    def complete(entries: Entries) -> bool:
        return bool(reviews(entries, "PERMIT") and reviews(entries, "DENY"))

    entries = await trail_until(api, officer, ids["patient"], complete)
    [review] = reviews(entries, "PERMIT")
    assert review["actorId"] == "co-q" and disposition in review["reason"]
    denied = [e["reason"] for e in _of(entries, "ed-q") if e["outcome"] == "DENY"]
    assert any("not a member" in r and "broke the glass" not in r for r in denied)
    assert any("emergency treatment, not RESEARCH" in r for r in denied)
    assert any("changes nothing" in r for r in denied)
    [own_review] = reviews(entries, "DENY")
    assert own_review["actorId"] == "ed-q"
    assert "may not review it" in own_review["reason"]
    [glass] = [e for e in _of(entries, "co-q") if e["outcome"] == "DENY"]
    assert "global role compliance_officer" in glass["reason"]
    assert glass["resource"] == f"CarePlan/{ids['plan']}"


async def test_what_a_member_sees_redacted_they_cannot_change_nor_consent_themselves_into(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-s", "Dr Lead")
    counselor = stack.token("gc-s", "Gil Counselor")
    pharmacist = stack.token("ph-s", "Pat Pharm")
    dietitian = stack.token("dt-s", "Dee Dietitian")
    officer = stack.token("co-s", "Cora Compliance", "compliance_officer")
    ids = await _team(api, lead, "s")
    written = await _record_result(api, counselor, ids["plan"])
    [result] = written["interventions"]
    task_id = await _task_of(api, pharmacist, ids["team"])
    [consent] = (await gql(api, op.CONSENTS, {"patientId": ids["patient"]}, token=lead))["consents"]

    # The dietitian sees the result as [restricted]: it is not theirs to change.
    discontinue = {"planId": ids["plan"], "interventionId": result["id"], "reason": "x"}
    for query, variables in (
        (op.MOVE_TASK, {"taskId": task_id, "status": "DONE"}),
        (op.DISCONTINUE, discontinue),
    ):
        body, raw = await _post(api, query, variables, dietitian)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
        assert "only see redacted" in body["errors"][0]["message"]
        assert "GENETIC" not in raw and SECRET_WORD not in raw
    # Nor may they document a consent for themselves (or anyone), or withdraw the
    # patient's: only leads (this deployment names no other discipline).
    grant = {
        "patientId": ids["patient"],
        "categories": ["GENETIC"],
        "purposes": ["TREATMENT"],
        "disciplines": ["DIETITIAN"],
        "evidence": "form-forged",
    }
    for query, variables in (
        (op.GRANT, grant),
        (op.REVOKE_CONSENT, {"id": consent["id"], "evidence": "withdrawal-forged"}),
    ):
        body, _ = await _post(api, query, variables, dietitian)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    body, raw = await _post(api, op.CARE_PLAN, {"id": ids["plan"]}, dietitian)
    assert body["data"]["carePlan"]["interventions"][0]["redacted"] is True
    assert SECRET_WORD not in raw
    # The pharmacist, whom the consent covers, moves it.
    moved = {"taskId": task_id, "status": "IN_PROGRESS"}
    assert (await gql(api, op.MOVE_TASK, moved, token=pharmacist))["moveTask"]["status"] == (
        "IN_PROGRESS"
    )
    assert consent["grantedBy"] == "lead-s" and consent["evidence"] == f"form-{ids['patient']}"

    def refusals(entries: Entries) -> Any:
        return len([e for e in _of(entries, "dt-s") if e["outcome"] == "DENY"]) >= 4

    entries = await trail_until(api, officer, ids["patient"], refusals)
    denied = {e["resource"]: e for e in _of(entries, "dt-s") if e["outcome"] == "DENY"}
    assert set(denied) == {
        f"Task/{task_id}",
        f"Intervention/{result['id']}",
        "Consent",
        f"Consent/{consent['id']}",
    }
    for resource in (f"Task/{task_id}", f"Intervention/{result['id']}"):
        assert "only see redacted" in denied[resource]["reason"]
        assert denied[resource]["sensitivity"] == ["GENETIC"]
    for resource in ("Consent", f"Consent/{consent['id']}"):
        assert "neither a lead nor of a discipline entitled" in denied[resource]["reason"]


HUDDLE_SEEN = """subscription($huddleId: ID!) {
  huddleChanged(huddleId: $huddleId) { id notes { id text redacted }
    actionItems { id title redacted } } }"""
NOTE_TEXT = "Relapse reported; naltrexone started"


async def test_huddle_notes_pushes_and_the_agenda_are_redacted_per_viewer(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-r", "Dr Lead")
    counselor = stack.token("gc-r", "Gil Counselor")
    pharmacist = stack.token("ph-r", "Pat Pharm")
    dietitian = stack.token("dt-r", "Dee Dietitian")
    ids = await _team(api, lead, "r")
    consent = {
        "patientId": ids["patient"],
        "categories": ["SUBSTANCE_USE"],
        "purposes": ["TREATMENT"],
        "disciplines": ["PHARMACIST"],
        "evidence": "form-r",
    }
    await gql(api, op.GRANT, consent, token=lead)
    meeting = (await gql(api, op.SCHEDULE, {"teamId": ids["team"], "at": _tomorrow()}, token=lead))[
        "scheduleHuddle"
    ]["id"]
    await gql(api, op.OPEN_HUDDLE, {"id": meeting}, token=lead)

    async with connect(stack.base_url, dietitian) as socket:
        await socket.subscribe(HUDDLE_SEEN, {"huddleId": meeting})
        await asyncio.sleep(0.5)
        variables = {
            "id": meeting,
            "text": NOTE_TEXT,
            "patientId": ids["patient"],
            "sensitivity": ["SUBSTANCE_USE"],
        }
        written = (await gql(api, op.NOTE, variables, token=pharmacist))["recordHuddleNote"]
        assert written["notes"][0]["text"] == NOTE_TEXT  # the consent covers the pharmacist
        message = await socket.receive()
        while not message["payload"]["data"]["huddleChanged"]["notes"]:
            message = await socket.receive()  # the huddle's opening, pushed late
        [note] = message["payload"]["data"]["huddleChanged"]["notes"]
        assert (note["text"], note["redacted"]) == ("[restricted]", True)
        assert "naltrexone" not in str(message)

    body, raw = await _post(api, op.HUDDLE, {"id": meeting}, dietitian)
    [note] = body["data"]["huddle"]["notes"]
    assert note["redacted"] is True and note["patientId"] == ids["patient"]
    assert "naltrexone" not in raw
    shown = (await gql(api, op.HUDDLE, {"id": meeting}, token=pharmacist))["huddle"]["notes"]
    assert [(n["text"], n["redacted"]) for n in shown] == [(NOTE_TEXT, False)]

    # A blocked genetic task on the agenda: its title and its reason are withheld.
    await _record_result(api, counselor, ids["plan"])
    task_id = await _task_of(api, pharmacist, ids["team"])
    blocked = {"taskId": task_id, "status": "BLOCKED", "reason": "Awaiting CYP2C9 genotype"}
    # The dietitian, who sees it redacted, may not change it; the pharmacist may.
    answer, raw = await _post(api, op.MOVE_TASK, blocked, dietitian)
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["FORBIDDEN"]
    assert SECRET_WORD not in raw and "GENETIC" not in raw
    await gql(api, op.MOVE_TASK, blocked, token=pharmacist)

    async def agenda(token: str) -> tuple[dict[str, Any], str]:
        deadline = time.monotonic() + 20
        while True:
            body, raw = await _post(api, op.AGENDA, {"teamId": ids["team"]}, token)
            cards = body["data"]["huddleAgenda"]["blockedTasks"]
            if cards or time.monotonic() > deadline:
                [card] = cards
                return card, raw
            await asyncio.sleep(0.2)

    card, raw = await agenda(dietitian)
    assert (card["title"], card["blockedReason"], card["redacted"]) == (
        "[restricted]",
        "[restricted]",
        True,
    )
    assert SECRET_WORD not in raw
    card, _ = await agenda(pharmacist)
    assert (card["title"], card["blockedReason"]) == (RESULT, "Awaiting CYP2C9 genotype")

    # Each of the dietitian's redacted views is in the audit log, with what was withheld.
    def withheld(entries: Entries) -> set[tuple[str, str, str]]:
        return {
            (e["action"], e["resource"].split("/")[0], s)
            for e in _of(entries, "dt-r")
            if e["outcome"] == "PERMIT_REDACTED"
            for s in e["sensitivity"]
        }

    wanted = {
        ("subscribe-push", "Huddle", "SUBSTANCE_USE"),
        ("read", "Huddle", "SUBSTANCE_USE"),
        ("read", "HuddleAgenda", "GENETIC"),
    }
    officer = stack.token("co-r", "Cora Compliance", "compliance_officer")
    entries = await trail_until(api, officer, ids["patient"], lambda es: wanted <= withheld(es))
    [refused] = [e for e in _of(entries, "dt-r") if e["outcome"] == "DENY"]
    assert (refused["action"], refused["resource"]) == ("update", f"Task/{task_id}")
    assert refused["sensitivity"] == ["GENETIC"]
