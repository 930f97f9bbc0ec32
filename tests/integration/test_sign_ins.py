"""Refused sign-ins on the in-process API with the real broker: each lands on care.audit
as a security event naming the patient reached for, the claimed subject, the client
address and the reason (never the token), and a flood adds a bounded number of records
that still count every refusal."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from schemas.audit import UNAUTHENTICATED_ACTOR, AccessAction, AccessRecorded, SignInOutcome
from services.common.auth import mint_token
from services.settings import Settings
from tests import operations as op
from tests.conftest import wait_until
from tests.graphql import gql
from tests.integration.api import in_process_api, token
from tests.integration.kafka_helpers import access_records_sent

FORGED = mint_token(secret="a-forger-s-own-secret-of-enough-length", sub="dr-house", name="X")
WINDOW, KEYS = 1.0, 3


async def _patient(api: httpx.AsyncClient) -> str:
    lead = token("lead-s")
    team = (await gql(api, op.CREATE_TEAM, {"name": "Renal"}, token=lead))["createTeam"]["id"]
    enrolled = await gql(
        api,
        op.ENROLL,
        {"teamId": team, "mrn": "S-1", "name": "Sam Example", "birthDate": "1970-01-01"},
        token=lead,
    )
    return str(enrolled["enrollPatient"]["id"])


async def _read_patient(
    api: httpx.AsyncClient, patient_id: str, authorization: str | None
) -> dict[str, Any]:
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.post(
        "/graphql", json={"query": op.PATIENT, "variables": {"id": patient_id}}, headers=headers
    )
    body: dict[str, Any] = response.json()
    assert body["data"] is None or body["data"]["patient"] is None, body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    return body


async def _sign_ins(settings: Settings) -> list[AccessRecorded]:
    records = await access_records_sent(settings)
    return [r for r in records if r.action is AccessAction.SIGN_IN]


async def test_a_forged_or_missing_token_reaching_for_a_patient_is_recorded_against_that_patient(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    async with in_process_api(pool, settings) as api:
        patient_id = await _patient(api)
        body = await _read_patient(api, patient_id, f"Bearer {FORGED}")
        await _read_patient(api, patient_id, None)
        # A request naming no patient without a token is no failed sign-in: clients start so.
        await api.post("/graphql", json={"query": "{ me { userId } }"})

        records: list[AccessRecorded] = []

        async def both_recorded() -> bool:
            nonlocal records
            records = await _sign_ins(settings)
            return len(records) >= 2

        await wait_until(both_recorded, seconds=20, what="two sign-in records")

    assert "Sam Example" not in str(body)
    forged, missing = sorted(records, key=lambda r: r.claimed_subject is None)
    for record in (forged, missing):
        assert record.patient_id == patient_id
        assert record.resource_type == "Patient" and record.resource_id == patient_id
        assert record.outcome is SignInOutcome.UNAUTHENTICATED
        assert record.actor_id == UNAUTHENTICATED_ACTOR
        assert record.client_addr == "127.0.0.1"
        assert record.refusals == 1
        assert FORGED not in record.model_dump_json()
        assert FORGED.split(".")[2] not in record.model_dump_json()
    assert forged.claimed_subject == "dr-house"
    assert "signature" in forged.reason
    assert missing.claimed_subject is None
    assert "no access token" in missing.reason
    assert len(records) == 2


async def test_a_flood_of_refused_sign_ins_adds_a_bounded_number_of_records_counting_them_all(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"sign_in_failure_window_seconds": WINDOW, "sign_in_failure_keys_per_window": KEYS}
    )
    flood = 40
    async with in_process_api(pool, settings) as api:
        patient_id = await _patient(api)
        for i in range(flood):
            # Half at the real patient, half at made-up ids (each a key of its own).
            await _read_patient(api, patient_id if i % 2 else f"made-up-{i}", f"Bearer {FORGED}")

        records: list[AccessRecorded] = []

        async def all_counted() -> bool:
            nonlocal records
            records = await _sign_ins(settings)
            return sum(r.refusals or 0 for r in records) >= flood

        await wait_until(all_counted, seconds=20, what="every refusal counted")

    assert sum(r.refusals or 0 for r in records) == flood
    # Each open key (at most KEYS, plus the overflow) makes at most two records a window.
    assert len(records) <= 2 * (KEYS + 1)
    on_patient = [r for r in records if r.patient_id == patient_id]
    assert sum(r.refusals or 0 for r in on_patient) == flood // 2
    assert any(r.refusals == 1 for r in on_patient)  # the first, recorded at once
