"""The write side over HTTP on the running stack: the README's first session exactly as
written, concurrent edits of one plan, and who may do what."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from websockets import Subprotocol

from tests import operations as op
from tests.e2e.conftest import Stack
from tests.graphql import GraphQLErrors, gql
from tests.readme import CAPTURES, WRITTEN_ON, first_session, shifted


async def test_the_readmes_first_session_runs_as_written_and_reads_back(stack: Stack) -> None:
    (sub, name), steps = first_session()
    token = stack.token(sub, name)
    days = (datetime.now(UTC).date() - WRITTEN_ON).days
    ids: dict[str, str] = {}
    results: list[dict[str, Any]] = []

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for step in steps:
            variables = shifted(step.variables, days)
            for placeholder, value in ids.items():
                variables = variables.replace(f'"{placeholder}"', json.dumps(value))
            query = shifted(step.query, days)
            if step.expect:
                with pytest.raises(GraphQLErrors) as refused:
                    await gql(client, query, json.loads(variables), token=token)
                assert refused.value.code == step.expect
                continue
            data = await gql(client, query, json.loads(variables), token=token)
            results.append(data)
            for field, placeholder in CAPTURES.items():
                if field in data:
                    ids[placeholder] = data[field]["id"]

    assert len(steps) == 12
    assert sorted(ids) == sorted(CAPTURES.values())
    roster = results[1]["counselor"]["members"]
    assert {d for m in roster for d in m["disciplines"]} == {
        "PHYSICIAN",
        "NURSE_PRACTITIONER",
        "PHARMACIST",
        "GENETIC_COUNSELOR",
    }
    assert [m["lead"] for m in roster] == [True, False, False, False]
    read = results[-1]
    assert read["patient"] == {
        "name": "Maria Santos",
        "mrn": "MRN-104233",
        "birthDate": shifted("1968-05-14", days),
    }
    [plan] = read["carePlans"]
    assert (plan["status"], plan["version"]) == ("ACTIVE", 7)
    assert plan["nextReviewDate"] == shifted("2027-01-03", days)
    assert [g["description"] for g in plan["goals"]] == [
        "HbA1c below 7%",
        "Home blood pressure below 130/80",
    ]
    assert [(i["tier"], i["active"]) for i in plan["interventions"]] == [
        ("FIRST_LINE", True),
        ("SECOND_LINE", True),
    ]
    assert read["huddle"] == {
        "status": "CLOSED",
        "notes": [{"text": "Misses evening doses after night shifts"}],
        "actionItems": [{"title": "Adherence call", "status": "TODO"}],
    }
    assert read["consents"] == [
        {
            "categories": ["GENETIC"],
            "disciplines": ["PHARMACIST", "GENETIC_COUNSELOR"],
            "active": False,
        }
    ]


async def _plan(client: httpx.AsyncClient, lead: str) -> dict[str, Any]:
    team = (await gql(client, op.CREATE_TEAM, {"name": "Renal"}, token=lead))["createTeam"]
    patient = await gql(
        client,
        op.ENROLL,
        {"teamId": team["id"], "mrn": "R-1", "name": "Lee Example", "birthDate": "1970-01-02"},
        token=lead,
    )
    plan = await gql(
        client,
        op.CREATE_PLAN,
        {"patientId": patient["enrollPatient"]["id"], "title": "CKD"},
        token=lead,
    )
    return dict(plan["createCarePlan"])


async def test_twenty_concurrent_goals_on_one_version_let_exactly_one_through(
    stack: Stack,
) -> None:
    lead = stack.token("lead-conc", "Dr. Concurrent")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        plan = await _plan(client, lead)

        async def add(n: int) -> str:
            variables = {"planId": plan["id"], "description": f"goal {n}", "expectedVersion": 1}
            try:
                await gql(client, op.ADD_GOAL, variables, token=lead)
            except GraphQLErrors as exc:
                return str(exc.code)
            return "ok"

        outcomes = await asyncio.gather(*(add(n) for n in range(20)))
        after = (await gql(client, op.CARE_PLAN, {"id": plan["id"]}, token=lead))["carePlan"]

    assert sorted(outcomes) == ["CONFLICT"] * 19 + ["ok"]
    assert len(after["goals"]) == 1
    assert after["version"] == 2


async def test_outsiders_non_leads_and_bad_tokens_get_the_right_codes(stack: Stack) -> None:
    lead = stack.token("lead-acl", "Dr. Lead")
    member = stack.token("rx-acl", "R. Member")
    outsider = stack.token("out-acl", "Dr. Outside")
    forged = lead[:-4] + ("AAAA" if not lead.endswith("AAAA") else "BBBB")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        plan = await _plan(client, lead)
        roster = {"teamId": plan["teamId"], "userId": "rx-acl", "name": "R. Member"}
        await gql(client, op.ASSIGN_ROLE, {**roster, "discipline": "PHARMACIST"}, token=lead)

        async def code(query: str, variables: dict[str, Any], token: str | None) -> str | None:
            with pytest.raises(GraphQLErrors) as refused:
                await gql(client, query, variables, token=token)
            return refused.value.code

        read = {"id": plan["id"]}
        write = {"planId": plan["id"], "description": "x"}
        assert await code(op.CARE_PLAN, read, outsider) == "FORBIDDEN"
        assert await code(op.ADD_GOAL, write, outsider) == "FORBIDDEN"
        assert await code(op.ASSIGN_ROLE, {**roster, "discipline": "NURSE"}, member) == "FORBIDDEN"
        assert await code(op.CARE_PLAN, read, None) == "UNAUTHENTICATED"
        assert await code(op.ADD_GOAL, write, forged) == "UNAUTHENTICATED"
        # The member reads and writes the plan; the refusals above changed nothing.
        plan_now = await gql(client, op.ADD_GOAL, write, token=member)
        assert plan_now["addGoal"]["version"] == 2


async def test_a_member_taken_off_the_team_is_refused_on_a_websocket_already_open(
    stack: Stack,
) -> None:
    lead = stack.token("lead-ws", "Dr. Lead")
    member = stack.token("rx-ws", "R. Member")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        plan = await _plan(client, lead)
        roster = {"teamId": plan["teamId"], "userId": "rx-ws"}
        await gql(
            client,
            op.ASSIGN_ROLE,
            {**roster, "name": "R. Member", "discipline": "PHARMACIST"},
            token=lead,
        )
        url = stack.base_url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:

            async def run(op_id: str) -> dict[str, Any]:
                payload = {"query": op.PATIENT, "variables": {"id": plan["patientId"]}}
                await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))
                message = json.loads(await ws.recv())
                assert message["type"] == "next", message
                assert json.loads(await ws.recv())["type"] == "complete"
                return dict(message["payload"])

            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {member}"}}
                )
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            before = await run("1")
            await gql(client, op.REMOVE_MEMBER, roster, token=lead)
            after = await run("2")

    assert before["data"]["patient"]["id"] == plan["patientId"]
    assert after["data"] == {"patient": None}
    assert [e["extensions"]["code"] for e in after["errors"]] == ["FORBIDDEN"]
