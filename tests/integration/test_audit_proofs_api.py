"""The audit log's proofs over GraphQL on a real PostgreSQL: compliance officers get
inclusion and consistency proofs that check offline against signed notes, the newest
checkpoints and the log's key; anyone else is FORBIDDEN; bad arguments are BAD_USER_INPUT
naming what is allowed; every call is recorded in the audit log."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.common import AccessOutcome
from services.audit import keys as audit_keys
from services.audit import note, proofs
from services.audit.keys import AuditKeys
from services.audit.witness import Kind
from services.audit.witnessing import SourceError, StateFile, Witness
from services.cli.witness import ApiSource
from services.common.auth import mint_token
from services.settings import Settings
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import SECRET
from tests.integration.audit_chains import cut, grow, vkey
from tests.integration.kafka_helpers import access_records_sent

OFFICER = mint_token(
    secret=SECRET, sub="co-1", name="Cora Compliance", roles=["compliance_officer"]
)
CLINICIAN = mint_token(secret=SECRET, sub="doc-1", name="Dr Example")

INCLUSION = """
query($seq: ID!, $size: Int) {
  auditInclusionProof(seq: $seq, treeSize: $size) {
    seq chain leafIndex treeSize entryHash leafHash path checkpoint
  }
}"""
CONSISTENCY = """
query($chain: Int!, $from: Int!, $to: Int) {
  auditConsistencyProof(chain: $chain, fromSize: $from, toSize: $to) {
    chain fromSize toSize path fromCheckpoint toCheckpoint
  }
}"""
CHECKPOINTS = "query { auditCheckpoints }"
KEY = "query { auditLogKey }"


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    # The development key file the API reads too.
    return audit_keys.load(settings, create=True)


async def written(pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys) -> None:
    """Chain 2: 10 entries, notes signed at 4, 8 and 10; chain 5: 3 entries, one note."""
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 2, 10)
        await grow(conn, settings, keys, 5, 3)


def verifier(settings: Settings, keys: AuditKeys) -> note.Verifier:
    return note.parse_vkey(note.vkey(settings.audit_log_name, keys.verify_key))


def as_bundle(kind: str, answer: dict[str, Any]) -> bytes:
    """An API answer is a bundle once it says its format and kind."""
    import json

    return json.dumps({"format": proofs.FORMAT, "kind": kind, **answer}).encode()


async def test_a_compliance_officer_gets_proofs_that_check_offline(
    keys: AuditKeys, api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    await written(pool, settings, keys)
    check = verifier(settings, keys)
    key = (await gql(api, KEY, token=OFFICER))["auditLogKey"]
    assert key == note.vkey(settings.audit_log_name, keys.verify_key)

    answer = (await gql(api, INCLUSION, {"seq": "2:3"}, token=OFFICER))["auditInclusionProof"]
    assert (answer["seq"], answer["leafIndex"], answer["treeSize"]) == ("2:3", 2, 10)
    assert proofs.check(proofs.read(as_bundle("inclusion", answer)), check).startswith("OK")
    pinned = await gql(api, INCLUSION, {"seq": "02:3", "size": 4}, token=OFFICER)
    assert pinned["auditInclusionProof"]["treeSize"] == 4
    assert pinned["auditInclusionProof"]["seq"] == "2:3"

    grown = await gql(api, CONSISTENCY, {"chain": 2, "from": 4}, token=OFFICER)
    answer = grown["auditConsistencyProof"]
    assert (answer["toSize"], answer["fromCheckpoint"] is not None) == (10, True)
    assert proofs.check(proofs.read(as_bundle("consistency", answer)), check).startswith("OK")
    unsigned = await gql(api, CONSISTENCY, {"chain": 2, "from": 5, "to": 8}, token=OFFICER)
    answer = unsigned["auditConsistencyProof"]
    assert answer["fromCheckpoint"] is None
    kept = pinned["auditInclusionProof"]["checkpoint"]  # a note of 4: not of 5
    with pytest.raises(proofs.Refused, match="tree of 4, not 5"):
        proofs.check(proofs.read(as_bundle("consistency", answer)), check, kept=kept)

    notes = (await gql(api, CHECKPOINTS, token=OFFICER))["auditCheckpoints"]
    opened = [note.open_note(text, check) for text in notes]
    assert [(c.origin.rpartition("/")[2], c.size) for c in opened] == [("2", 10), ("5", 3)]

    recorded = await access_records_sent(settings)
    looked = {r.resource_id for r in recorded if r.resource_type == "AuditLog"}
    assert {"inclusion proof", "consistency proof", "checkpoints", "log key"} <= looked


async def test_anyone_but_a_compliance_officer_is_refused_and_recorded(
    keys: AuditKeys, api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    await written(pool, settings, keys)
    for query, variables in (
        (INCLUSION, {"seq": "2:3"}),
        (CONSISTENCY, {"chain": 2, "from": 4}),
        (CHECKPOINTS, {}),
        (KEY, {}),
    ):
        with pytest.raises(GraphQLErrors) as refused:
            await gql(api, query, variables, token=CLINICIAN)
        assert refused.value.code == "FORBIDDEN"
    recorded = await access_records_sent(settings)
    denied = [r for r in recorded if r.resource_type == "AuditLog" and r.actor_id == "doc-1"]
    assert {r.outcome for r in denied} == {AccessOutcome.DENY}
    assert len(denied) == 4


@pytest.mark.parametrize(
    ("query", "variables", "says"),
    [
        (INCLUSION, {"seq": "two:3"}, "'chain:sequence'"),
        (INCLUSION, {"seq": "2:0"}, "a sequence from 1"),
        (INCLUSION, {"seq": "2:\u0663"}, "'chain:sequence'"),
        (INCLUSION, {"seq": "2:11"}, "chain 2 has entries 1 to 10"),
        (INCLUSION, {"seq": "9:1"}, "chain 9 has no entries"),
        (INCLUSION, {"seq": "2:3", "size": 7}, "no signed checkpoint of 7 entries"),
        (INCLUSION, {"seq": "2:3", "size": 2}, "treeSize must be at least 3"),
        (INCLUSION, {"seq": "2:3", "size": 0}, "treeSize must be 1 or more"),
        (CONSISTENCY, {"chain": -1, "from": 1}, "chain must be between 0"),
        (CONSISTENCY, {"chain": 9, "from": 1}, "chain 9 has no signed checkpoint"),
        (CONSISTENCY, {"chain": 2, "from": 0}, "fromSize must be 1 or more"),
        (CONSISTENCY, {"chain": 2, "from": 11}, "fromSize must be between 1 and toSize (10)"),
        (CONSISTENCY, {"chain": 2, "from": 1, "to": 7}, "the newest: 4, 8, 10"),
    ],
)
async def test_bad_arguments_are_bad_user_input_naming_what_is_allowed(
    keys: AuditKeys,
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    settings: Settings,
    query: str,
    variables: dict[str, Any],
    says: str,
) -> None:
    await written(pool, settings, keys)
    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, query, variables, token=OFFICER)
    assert refused.value.code == "BAD_USER_INPUT"
    assert says in refused.value.errors[0]["message"]


@dataclass
class _Answer:
    status: int
    body: bytes

    @property
    def content(self) -> _Answer:
        return self

    async def read(self, limit: int) -> bytes:
        return self.body[:limit]


@dataclass
class AsgiSession:
    """What the witness asks of an aiohttp session, answered by the in-process API."""

    client: httpx.AsyncClient

    @contextlib.asynccontextmanager
    async def post(
        self, url: str, *, json: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[_Answer]:
        response = await self.client.post(url, json=json, headers=headers)
        yield _Answer(response.status_code, response.content)


async def test_a_witness_run_by_another_party_reads_the_log_over_the_api(
    keys: AuditKeys,
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    tmp_path: Path,
) -> None:
    await written(pool, settings, keys)
    token = tmp_path / "token"
    token.write_text(OFFICER + "\n")
    source = ApiSource("http://testserver/graphql", token, AsgiSession(api))
    watcher = Witness(source, StateFile(tmp_path / "state.json"), vkey(settings, keys))
    first = await watcher.once()
    assert (first.problems, [a.chain for a in first.accepted]) == ([], [2, 5])
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 2, 3)
    grown = await watcher.once()
    assert [(a.chain, a.grew_from, a.seen.size) for a in grown.accepted] == [(2, 10, 13)]
    async with admin_pool.acquire() as conn:  # behind the services' back
        await cut(conn, 2, 9)
        await cut(conn, 5, 0)
    done = await watcher.once()
    assert [(p.chain, p.kind) for p in done.problems] == [
        (2, Kind.TAIL_TRUNCATION),
        (5, Kind.DELETED_CHAIN),
    ]
    # A token that is no compliance officer's gives no verdict at all.
    token.write_text(CLINICIAN)
    with pytest.raises(SourceError, match="FORBIDDEN"):
        await watcher.once()
