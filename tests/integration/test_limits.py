"""Bounded work per request on a real PostgreSQL and broker: an oversized document without a
token is refused while another client is answered, and a member reading faster than the
per-actor rate is refused, with one audit record per window, not one per refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from schemas.common import AccessOutcome
from services.settings import Settings
from tests import operations as op
from tests.graphql import gql
from tests.integration.api import in_process_api, token
from tests.integration.kafka_helpers import access_records_sent

LEAD = token("lead-1", "Dr Lead")
FLOOD = "{ " + " ".join(f"a{i}: __typename" for i in range(150_000)) + " }"


async def enrolled(api: httpx.AsyncClient) -> str:
    team = (await gql(api, op.CREATE_TEAM, {"name": "Cardiometabolic"}, token=LEAD))["createTeam"]
    patient = await gql(
        api,
        op.ENROLL,
        {"teamId": team["id"], "mrn": "MRN-7", "name": "Ana Example", "birthDate": "1968-04-02"},
        token=LEAD,
    )
    return str(patient["enrollPatient"]["id"])


async def test_a_150000_alias_document_without_a_token_is_refused_while_a_member_is_answered(
    api: httpx.AsyncClient,
) -> None:
    patient_id = await enrolled(api)

    async def flood() -> httpx.Response:
        return await api.post("/graphql", json={"query": FLOOD})

    async def member() -> list[dict[str, Any]]:
        return [await gql(api, op.PATIENT, {"id": patient_id}, token=LEAD) for _ in range(5)]

    refusals, answers = await asyncio.gather(asyncio.gather(*(flood() for _ in range(3))), member())

    for refused in refusals:
        [error] = refused.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["limit"] == "maxBodyBytes"
        assert "maxBodyBytes" in error["message"]
    assert all(a["patient"]["mrn"] == "MRN-7" for a in answers)


async def test_reads_past_the_actors_rate_are_refused_and_recorded_once_per_window(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    slow = settings.model_copy(update={"read_rate_burst": 4, "read_rate_per_second": 0.01})
    async with in_process_api(pool, slow) as api:
        patient_id = await enrolled(api)  # the enrolment's answer reads nothing
        for _ in range(4):
            await gql(api, op.PATIENT, {"id": patient_id}, token=LEAD)
        refused = [
            (
                await api.post(
                    "/graphql",
                    json={"query": op.PATIENT, "variables": {"id": patient_id}},
                    headers={"Authorization": f"Bearer {LEAD}"},
                )
            ).json()
            for _ in range(5)
        ]
        other = token("lead-2", "Dr Other")
        elsewhere = await api.post(
            "/graphql",
            json={"query": "{ me { userId } }"},
            headers={"Authorization": f"Bearer {other}"},
        )

    for body in refused:
        [error] = body["errors"]
        assert body["data"] is None or body["data"]["patient"] is None
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["limit"] == "readRate"
        assert error["extensions"]["retryAfter"] >= 1
        assert "Retry after" in error["message"]
    assert elsewhere.json() == {"data": {"me": {"userId": "lead-2"}}}
    records = await access_records_sent(settings)
    denied = [r for r in records if r.outcome is AccessOutcome.DENY and r.actor_id == "lead-1"]
    assert len(denied) == 1
    assert "readRate" in denied[0].reason
    assert denied[0].patient_id == patient_id
