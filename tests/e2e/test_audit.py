"""The audit log on the running stack: accesses recorded, examined by compliance officers
only, verified, and exported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.auth import mint_token
from tests import operations as op
from tests.e2e.conftest import Stack
from tests.e2e.trail import trail_until
from tests.graphql import GraphQLErrors, gql
from tests.ws import connect

PURPOSE = "X-Purpose-Of-Use"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


async def _team_plan(api: httpx.AsyncClient, lead: str) -> dict[str, str]:
    team = (await gql(api, op.CREATE_TEAM, {"name": "Renal"}, token=lead))["createTeam"]["id"]
    await gql(
        api,
        op.ASSIGN_ROLE,
        {"teamId": team, "userId": "ph-a", "name": "Pat Pharm", "discipline": "PHARMACIST"},
        token=lead,
    )
    patient = (
        await gql(
            api,
            op.ENROLL,
            {"teamId": team, "mrn": "A-1", "name": "Ana Example", "birthDate": "1968-04-02"},
            token=lead,
        )
    )["enrollPatient"]["id"]
    plan = (await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": "CKD"}, token=lead))[
        "createCarePlan"
    ]["id"]
    return {"team": team, "patient": patient, "plan": plan}


def _by(entries: list[dict[str, Any]], actor: str, outcome: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["actorId"] == actor and e["outcome"] == outcome]


async def test_a_compliance_officer_sees_a_read_and_a_refusal_and_clinicians_may_not_look(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-a", "Dr Lead")
    pharmacist = stack.token("ph-a", "Pat Pharm")
    outsider = stack.token("out-a", "Dr Elsewhere")
    officer = stack.token("co-a", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)

    await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=pharmacist)
    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=outsider)
    assert refused.value.code == "FORBIDDEN"

    entries = await trail_until(
        api,
        officer,
        ids["patient"],
        lambda es: _by(es, "ph-a", "PERMIT") and _by(es, "out-a", "DENY"),
    )
    [read] = [e for e in _by(entries, "ph-a", "PERMIT") if e["action"] == "read"]
    assert read["resource"] == f"CarePlan/{ids['plan']}"
    assert read["purpose"] == "TREATMENT"
    assert read["actorName"] == "Pat Pharm"
    assert "PHARMACIST" in read["reason"]
    [denied] = _by(entries, "out-a", "DENY")
    assert denied["resource"] == f"CarePlan/{ids['plan']}"
    assert "not a member" in denied["reason"]
    # The lead's writes are there too, as creates and updates.
    assert {e["action"] for e in entries if e["actorId"] == "lead-a"} >= {"create"}
    assert all(e["chain"] == int(e["seq"].split(":")[0]) for e in entries)

    for clinician in (pharmacist, lead):
        for query, variables in (
            (op.AUDIT_TRAIL, {"filter": {"patientId": ids["patient"]}}),
            (op.ACCESS_REPORT, {"patientId": ids["patient"]}),
            (op.DISCLOSURE_REPORT, {"patientId": ids["patient"]}),
            (op.VERIFY_AUDIT_LOG, {}),
        ):
            with pytest.raises(GraphQLErrors) as forbidden:
                await gql(api, query, variables, token=clinician)
            assert forbidden.value.code == "FORBIDDEN"
    # Those refused looks at the audit log are themselves in it, against the patient.
    await trail_until(
        api,
        officer,
        ids["patient"],
        lambda es: any(e["resource"].startswith("AuditLog") and e["outcome"] == "DENY" for e in es),
    )


async def test_disclosures_are_accesses_for_purposes_beyond_treatment_payment_and_operations(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-b", "Dr Lead")
    pharmacist = stack.token("ph-a", "Pat Pharm")
    officer = stack.token("co-b", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=pharmacist)
    # Research is not care: it needs the patient's consent naming it.
    consent = {
        "patientId": ids["patient"],
        "categories": ["MENTAL_HEALTH"],
        "purposes": ["RESEARCH"],
        "disciplines": ["PHARMACIST"],
        "evidence": "form-b",
    }
    await gql(api, op.GRANT, consent, token=lead)
    await gql(
        api, op.CARE_PLAN, {"id": ids["plan"]}, token=pharmacist, headers={PURPOSE: "RESEARCH"}
    )
    with pytest.raises(GraphQLErrors) as unknown:
        await gql(
            api, op.CARE_PLAN, {"id": ids["plan"]}, token=pharmacist, headers={PURPOSE: "GOSSIP"}
        )
    assert unknown.value.code == "BAD_USER_INPUT"

    await trail_until(
        api, officer, ids["patient"], lambda es: any(e["purpose"] == "RESEARCH" for e in es)
    )
    report = (await gql(api, op.DISCLOSURE_REPORT, {"patientId": ids["patient"]}, token=officer))[
        "disclosureReport"
    ]
    assert [(e["actorId"], e["purpose"], e["action"]) for e in report] == [
        ("ph-a", "RESEARCH", "read")
    ]
    everything = (await gql(api, op.ACCESS_REPORT, {"patientId": ids["patient"]}, token=officer))[
        "accessReport"
    ]
    assert {e["purpose"] for e in everything} == {"TREATMENT", "RESEARCH"}
    assert len(everything) > len(report)


async def test_each_subscription_push_carrying_patient_data_is_recorded(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-c", "Dr Lead")
    pharmacist = stack.token("ph-a", "Pat Pharm")
    officer = stack.token("co-c", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    async with connect(stack.base_url, pharmacist) as socket:
        await socket.subscribe(op.BOARD_CHANGED, {"teamId": ids["team"]})
        await asyncio.sleep(0.5)  # the subscription is registered before the change
        task = (
            await gql(
                api,
                op.CREATE_TASK,
                {"teamId": ids["team"], "title": "Check potassium", "patientId": ids["patient"]},
                token=lead,
            )
        )["createTask"]
        pushed = await socket.receive()
        assert pushed["payload"]["data"]["boardChanged"]["task"]["id"] == task["id"]
    entries = await trail_until(
        api,
        officer,
        ids["patient"],
        lambda es: any(e["action"] == "subscribe-push" for e in es),
    )
    [push] = [e for e in entries if e["action"] == "subscribe-push"]
    assert (push["actorId"], push["resource"]) == ("ph-a", f"Task/{task['id']}")


async def test_the_log_verifies_and_exports_for_a_patient(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-d", "Dr Lead")
    officer = stack.token("co-d", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=lead)
    await trail_until(api, officer, ids["patient"], lambda es: len(es) >= 3)

    result = (await gql(api, op.VERIFY_AUDIT_LOG, {}, token=officer))["verifyAuditLog"]
    assert result["ok"] is True, result
    assert result["entriesChecked"] >= 3 and result["firstBadSeq"] is None

    verify = _cli(stack, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "OK: the audit log is intact" in verify.stdout

    exported = _cli(stack, "audit", "export", "--patient", ids["patient"], "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert lines and {line["patient_id"] for line in lines} == {ids["patient"]}
    bundle = json.loads(
        _cli(stack, "audit", "export", "--patient", ids["patient"], "--format", "fhir").stdout
    )
    assert bundle["resourceType"] == "Bundle"
    assert len(bundle["entry"]) >= len(lines)
    # The exports themselves are accesses to the patient's records.
    await trail_until(
        api, officer, ids["patient"], lambda es: any(e["action"] == "export" for e in es)
    )


async def test_the_stacks_witness_keeps_what_it_verified_and_an_entry_proves_offline(
    stack: Stack, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    lead = stack.token("lead-w", "Dr Lead")
    officer = stack.token("co-w", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    entries = await trail_until(api, officer, ids["patient"], lambda es: len(es) >= 2)
    chain, number = (int(part) for part in entries[-1]["seq"].split(":"))
    vkey = _cli(stack, "audit", "public-key", "--vkey").stdout.strip()
    assert (await gql(api, "query { auditLogKey }", token=officer))["auditLogKey"] == vkey

    # `carecoord up`'s witness (every 10 s) keeps a signed checkpoint covering the entry.
    state = stack.data_dir / "witness-state.json"
    deadline = time.monotonic() + 60
    while True:
        kept = json.loads(state.read_text())["chains"] if state.exists() else {}
        if kept.get(str(chain), {}).get("size", 0) >= number:
            break
        assert time.monotonic() < deadline, f"the witness kept {kept}"
        await asyncio.sleep(0.5)
    assert not any("witness.problem" in line for line in stack.lines)

    bundle = tmp_path / "proof.json"
    proved = _cli(stack, "audit", "prove", "--entry", f"{chain}:{number}", "--out", str(bundle))
    assert proved.returncode == 0, proved.stderr
    checked = _cli(stack, "audit", "check-proof", str(bundle), "--vkey", vkey)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"OK: entry {chain}:{number} is in the tree of")


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **stack.env,
        "CARECOORD_DATABASE_URL": stack.database_url,
        "CARECOORD_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_refused_subscription_and_a_query_over_a_websocket_are_recorded(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-e", "Dr Lead")
    outsider = stack.token("out-e", "Dr Elsewhere")
    officer = stack.token("co-e", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    async with connect(stack.base_url, outsider) as socket:
        await socket.subscribe(op.BOARD_CHANGED, {"teamId": ids["team"]})
        refused = await socket.receive()
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]
    async with connect(stack.base_url, lead) as socket:
        await socket.subscribe(op.PATIENT, {"id": ids["patient"]})
        answer = await socket.receive()
        assert answer["payload"]["data"]["patient"]["id"] == ids["patient"]

    async def outsider_refused() -> bool:
        page = await gql(
            api,
            op.AUDIT_TRAIL,
            {"filter": {"actorId": "out-e", "outcome": "DENY"}},
            token=officer,
        )
        return any(e["resource"] == f"Board/{ids['team']}" for e in page["auditTrail"]["entries"])

    deadline = time.monotonic() + 20
    while not await outsider_refused():
        assert time.monotonic() < deadline, "the refused subscription was never recorded"
        await asyncio.sleep(0.2)
    await trail_until(
        api,
        officer,
        ids["patient"],
        lambda es: any(e["resource"] == f"Patient/{ids['patient']}" for e in es),
    )


async def test_a_forged_token_reaching_for_a_patient_is_a_security_event_officers_filter_for(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    lead = stack.token("lead-sec", "Dr Lead")
    officer = stack.token("co-sec", "Cora Compliance", "compliance_officer")
    ids = await _team_plan(api, lead)
    forged = mint_token(secret="a-forger-s-own-secret-of-enough-length", sub="lead-sec", name="X")

    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, op.PATIENT, {"id": ids["patient"]}, token=forged)
    assert refused.value.code == "UNAUTHENTICATED"
    await gql(api, op.PATIENT, {"id": ids["patient"]}, token=lead)

    def signed_in_refused(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e["action"] == "sign-in"]

    entries = await trail_until(api, officer, ids["patient"], signed_in_refused)
    [event] = signed_in_refused(entries)
    assert event["outcome"] == "DENY"
    assert event["claimedSubject"] == "lead-sec"
    assert event["actorId"] == "(unauthenticated)"
    assert event["clientAddress"] == "127.0.0.1"
    assert event["resource"] == f"Patient/{ids['patient']}"
    assert "signature" in event["reason"]
    assert event["refusedSignIns"] == 1
    assert forged not in json.dumps(entries)

    async def security_events(flag: bool) -> list[dict[str, Any]]:
        wanted = {"patientId": ids["patient"], "securityEvents": flag}
        page = await gql(api, op.AUDIT_TRAIL, {"filter": wanted, "first": 1000}, token=officer)
        return list(page["auditTrail"]["entries"])

    only = await security_events(True)
    assert [e["seq"] for e in only] == [event["seq"]]
    without = await security_events(False)
    assert without and all(e["action"] != "sign-in" for e in without)
