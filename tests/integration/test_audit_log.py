"""The audit log on a real PostgreSQL and broker: tampering of every kind is named by
verification, the table refuses changes, records never hold PHI in clear, redelivered
records are kept once, and no patient data leaves the API when care.audit is away."""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from schemas import codec
from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.api.app import create_app
from services.audit import chain as chains
from services.audit import cipher, merkle, note, store, verifying
from services.audit import keys as audit_keys
from services.audit.keys import AuditKeys
from services.audit.reports import AuditReader
from services.audit.sink import KafkaAuditSink
from services.common.auth import mint_token
from services.common.projection import ERROR_HEADER
from services.settings import Settings
from tests import operations as op
from tests.conftest import Broker, wait_until
from tests.graphql import GraphQLErrors, gql
from tests.integration.kafka_helpers import produce, read_to_end
from tests.integration.workers import Workers, environment

SECRET = "integration-test-secret-of-enough-length"
ROLE = "carecoord_audit"
NOW = datetime.now(UTC)
# Two chains of 12 entries, appended 4 at a time, a checkpoint every 4 (at 4, 8 and 12).
CHAINS, PER_CHAIN, BATCH, EVERY = 2, 12, 4, 4


def record(i: int, **changes: Any) -> AccessRecorded:
    fields: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "at": NOW + timedelta(milliseconds=i),
        "actor_id": f"user-{i % 3}",
        "actor_name": "Pat Pharmacist",
        "patient_id": f"patient-{i % 4}",
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "resource_id": f"plan-{i}",
        "purpose": Purpose.TREATMENT,
        "outcome": AccessOutcome.DENY if i % 5 == 0 else AccessOutcome.PERMIT,
        "reason": "user is a team member (PHARMACIST)",
        "sensitivity": (Sensitivity.GENETIC,) if i % 2 else (),
    }
    return AccessRecorded(**{**fields, **changes})


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    return audit_keys.load(settings, create=True)


@pytest.fixture
async def filled(pool: asyncpg.Pool[Any], keys: AuditKeys) -> asyncpg.Pool[Any]:
    """A log of two chains, written as the audit writer writes (its role, its batches)."""
    n = 0
    async with pool.acquire() as conn:
        for chain in range(CHAINS):
            for _ in range(PER_CHAIN // BATCH):
                batch = [record(n + k) for k in range(BATCH)]
                n += BATCH
                await store.append(
                    conn, chain, batch, keys, role=ROLE, checkpoint_every=EVERY, now=NOW
                )
    return pool


async def as_superuser(pool: asyncpg.Pool[Any], sql: str, *args: Any) -> None:
    """Change the log behind the writer's back: a superuser with triggers switched off."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


async def flip_a_byte(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    async with pool.acquire() as conn:
        blob = bytearray(
            await conn.fetchval("SELECT ciphertext FROM audit_entries WHERE chain = 1 AND seq = 7")
        )
    blob[20] ^= 0x01
    await as_superuser(
        pool, "UPDATE audit_entries SET ciphertext = $1 WHERE chain = 1 AND seq = 7", bytes(blob)
    )
    return "1:7"


async def delete_one(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    await as_superuser(pool, "DELETE FROM audit_entries WHERE chain = 0 AND seq = 6")
    return "0:6"


async def swap_two(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    await as_superuser(
        pool,
        "UPDATE audit_entries SET seq = CASE seq WHEN 3 THEN 9 ELSE 3 END"
        " WHERE chain = 0 AND seq IN (3, 9)",
    )
    return "0:3"


async def forge_a_checkpoint(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    # Someone without the signing key signs the chain head with a key of their own.
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT seq, hash, signed_at FROM audit_checkpoints WHERE chain = 1 AND seq = 8"
        )
    forged = chains.sign_checkpoint(
        Ed25519PrivateKey.generate(), 1, row["seq"], row["hash"], row["signed_at"]
    )
    await as_superuser(
        pool,
        "UPDATE audit_checkpoints SET signature = $1 WHERE chain = 1 AND seq = 8",
        forged,
    )
    return "1:8"


async def rewrite_with_the_record_key(pool: asyncpg.Pool[Any], keys: AuditKeys) -> str:
    """An insider with the record key turns a refusal into a permit and re-chains every
    later entry: each entry then checks out, but the signed checkpoint does not."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, ciphertext, key_id, record_id FROM audit_entries"
            " WHERE chain = 0 AND seq >= 1 ORDER BY seq"
        )
        prev = chains.GENESIS
        for row in rows:
            place = cipher.place(0, row["seq"], row["record_id"])
            blob = cipher.decrypt(keys, row["key_id"], row["ciphertext"], at=place)
            plain = codec.decode_access(blob)
            if row["seq"] == 1:
                assert plain.outcome is AccessOutcome.DENY
                plain = plain.model_copy(update={"outcome": AccessOutcome.PERMIT})
            entry = store.seal(keys, 0, row["seq"], prev, plain)
            prev = entry.hash
            await as_superuser(
                pool,
                "UPDATE audit_entries SET ciphertext = $1, key_id = $2, prev_hash = $3,"
                " hash = $4, outcome = $5 WHERE chain = 0 AND seq = $6",
                entry.ciphertext,
                entry.key_id,
                entry.prev_hash,
                entry.hash,
                entry.outcome,
                row["seq"],
            )
        data = [
            bytes(r["hash"])
            for r in await conn.fetch("SELECT hash FROM audit_entries WHERE chain = 0 ORDER BY seq")
        ]
    # The tree's nodes need no key: they are rebuilt from the new hashes too.
    await as_superuser(pool, "DELETE FROM audit_tree WHERE chain = 0")
    for level, idx, digest in merkle.new_nodes(0, (), data):
        await as_superuser(
            pool, "INSERT INTO audit_tree VALUES (0, $1, $2, $3)", level, idx, digest
        )
    return "0:4"


async def remove_a_checkpoint(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    await as_superuser(pool, "DELETE FROM audit_checkpoints WHERE chain = 0 AND seq = 8")
    return "0:12"  # the next checkpoint no longer follows its predecessor


async def cut_and_renumber(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    """Without the keys: drop the later checkpoints and an entry, then renumber and re-hash
    what follows so the chain of hashes is whole again."""
    await as_superuser(pool, "DELETE FROM audit_checkpoints WHERE chain = 0 AND seq >= 6")
    await as_superuser(pool, "DELETE FROM audit_entries WHERE chain = 0 AND seq = 6")
    async with pool.acquire() as conn:
        prev = bytes(
            await conn.fetchval("SELECT hash FROM audit_entries WHERE chain = 0 AND seq = 5")
        )
        rows = await conn.fetch(
            "SELECT seq, key_id, ciphertext FROM audit_entries WHERE chain = 0 AND seq > 6"
            " ORDER BY seq"
        )
    for row in rows:
        seq = row["seq"] - 1
        digest = chains.entry_hash(0, seq, prev, row["key_id"], bytes(row["ciphertext"]))
        await as_superuser(
            pool,
            "UPDATE audit_entries SET seq = $1, prev_hash = $2, hash = $3"
            " WHERE chain = 0 AND seq = $4",
            seq,
            prev,
            digest,
            row["seq"],
        )
        prev = digest
    return "0:6"  # its tag binds it to where it was written: it no longer opens here


async def alter_a_tree_node(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    # The node over entries 1:5 to 1:8, made when 1:8 was appended.
    await as_superuser(
        pool,
        "UPDATE audit_tree SET hash = sha256(hash) WHERE chain = 1 AND level = 2 AND idx = 1",
    )
    return "1:8"


async def remove_a_tree_node(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    await as_superuser(pool, "DELETE FROM audit_tree WHERE chain = 0 AND level = 0 AND idx = 2")
    return "0:3"


async def alter_a_note(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    # The note claims a larger tree; its signature no longer verifies.
    await as_superuser(
        pool,
        "UPDATE audit_checkpoints SET note = replace(note, E'/chain/1\n8\n', E'/chain/1\n9\n')"
        " WHERE chain = 1 AND seq = 8",
    )
    return "1:8"


async def strip_a_note(pool: asyncpg.Pool[Any], _: AuditKeys) -> str:
    # Without its note (and root) a checkpoint would look older than the tree: it is not.
    await as_superuser(
        pool,
        "UPDATE audit_checkpoints SET note = NULL, root = NULL WHERE chain = 0 AND seq = 8",
    )
    return "0:8"


Tamper = Callable[["asyncpg.Pool[Any]", AuditKeys], Awaitable[str]]


@pytest.mark.parametrize(
    "tamper",
    [
        flip_a_byte,
        delete_one,
        swap_two,
        forge_a_checkpoint,
        rewrite_with_the_record_key,
        remove_a_checkpoint,
        cut_and_renumber,
        alter_a_tree_node,
        remove_a_tree_node,
        alter_a_note,
        strip_a_note,
    ],
    ids=lambda t: t.__name__,
)
async def test_verification_names_the_first_bad_entry_after_tampering(
    filled: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    keys: AuditKeys,
    settings: Settings,
    tamper: Tamper,
) -> None:
    untouched = await AuditReader(filled, keys).verify()
    assert untouched.ok, untouched.problems
    assert (untouched.entries_checked, untouched.chains) == (CHAINS * PER_CHAIN, CHAINS)
    assert untouched.checkpoints_checked == CHAINS * 3
    assert untouched.nodes_checked == CHAINS * (12 + 6 + 3 + 1)  # the complete subtrees

    bad = await tamper(admin_pool, keys)

    result = await AuditReader(filled, keys).verify()
    assert not result.ok
    assert result.first is not None and result.first.label == bad, result.problems
    # Each chain in a process of its own, in the same snapshot: the same findings.
    split = AuditReader(filled, keys, dsn=settings.database_url, workers=2, split_from=0)
    assert await split.verify() == result
    cli = run_cli(settings, "audit", "verify")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"first bad entry {bad}:" in cli.stderr


@pytest.mark.parametrize("start", ["fork", "forkserver"])
async def test_a_log_split_by_chain_over_processes_verifies_as_in_one(
    filled: asyncpg.Pool[Any],
    keys: AuditKeys,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    start: str,
) -> None:
    """Both ways of starting the verifying processes (forkserver where the caller runs
    other threads), and an entry appended after the split began is not read by them."""
    context = multiprocessing.get_context(start)
    monkeypatch.setattr(verifying, "_context", lambda: context)
    whole = await AuditReader(filled, keys).verify()
    split = AuditReader(filled, keys, dsn=settings.database_url, workers=2, split_from=0)
    assert await split.verify() == whole
    assert whole.ok and whole.entries_checked == CHAINS * PER_CHAIN

    # The workers read the snapshot the split took: an append in between is not seen.
    real_run = verifying._run

    async def append_first(jobs: Any) -> Any:
        async with filled.acquire() as conn:
            await store.append(
                conn, 1, [record(999)], keys, role=ROLE, checkpoint_every=EVERY, now=NOW
            )
        return await real_run(jobs)

    monkeypatch.setattr(verifying, "_run", append_first)
    assert await split.verify() == whole
    monkeypatch.setattr(verifying, "_run", real_run)
    later = await split.verify()
    assert later.ok and later.entries_checked == CHAINS * PER_CHAIN + 1


async def test_verifies_asked_at_once_run_one_at_a_time(
    filled: asyncpg.Pool[Any],
    keys: AuditKeys,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each may start processes: a caller asking many times at once starts them once."""
    running, most = 0, 0
    real = verifying._run

    async def counted(jobs: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)
            return await real(jobs)
        finally:
            running -= 1

    monkeypatch.setattr(verifying, "_run", counted)
    split = AuditReader(filled, keys, dsn=settings.database_url, workers=2, split_from=0)
    results = await asyncio.gather(*(split.verify() for _ in range(4)))

    assert most == 1
    assert all(r.ok and r.entries_checked == CHAINS * PER_CHAIN for r in results)


async def test_an_untouched_log_passes_the_command_line_verification(
    filled: asyncpg.Pool[Any], settings: Settings
) -> None:
    cli = run_cli(settings, "audit", "verify")
    assert cli.returncode == 0, cli.stderr
    assert f"checked {CHAINS * PER_CHAIN} entries in {CHAINS} chain(s)" in cli.stdout
    assert "OK: the audit log is intact" in cli.stdout


async def test_the_command_line_verification_takes_the_logs_verifier_key(
    filled: asyncpg.Pool[Any], keys: AuditKeys, settings: Settings, tmp_path: Path
) -> None:
    ours = tmp_path / "ours.vkey"
    ours.write_text(note.vkey(settings.audit_log_name, keys.verify_key) + "\n")
    cli = run_cli(settings, "audit", "verify", "--vkey", str(ours))
    assert cli.returncode == 0, cli.stderr
    # The right key under another name: the chained signatures hold, the notes do not.
    renamed = tmp_path / "renamed.vkey"
    renamed.write_text(note.vkey("elsewhere.example/audit", keys.verify_key))
    cli = run_cli(settings, "audit", "verify", "--vkey", str(renamed))
    assert cli.returncode == 1
    assert "first bad entry 0:4: checkpoint 0:4's signed note does not verify" in cli.stderr
    garbled = tmp_path / "garbled.vkey"
    garbled.write_text("not a key")
    cli = run_cli(settings, "audit", "verify", "--vkey", str(garbled))
    assert cli.returncode == 2 and "verifier key" in cli.stderr


async def test_the_writers_role_and_the_trigger_refuse_updates_deletes_and_truncation(
    filled: asyncpg.Pool[Any], owner_database_url: str
) -> None:
    changes = [
        "UPDATE audit_entries SET outcome = 'PERMIT'",
        "DELETE FROM audit_entries WHERE seq = 1",
        "TRUNCATE audit_entries",
        "UPDATE audit_checkpoints SET seq = seq + 1",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
    ]
    owner = await asyncpg.connect(owner_database_url)
    try:
        async with filled.acquire() as conn:
            partition = await conn.fetchval("SELECT audit_ensure_partition(now())")
            # The writer's role, the services' login role, then the owner of the tables.
            for who, role in ((conn, ROLE), (conn, None), (owner, None)):
                for sql in [*changes, f"TRUNCATE {partition}"]:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                        async with who.transaction():
                            if role:
                                await who.execute(f"SET LOCAL ROLE {role}")
                            await who.execute(sql)
                    if who is owner:
                        assert "append-only" in str(refused.value), sql
            count = await conn.fetchval("SELECT count(*) FROM audit_entries")
    finally:
        await owner.close()
    assert count == CHAINS * PER_CHAIN


async def test_a_redelivered_record_is_appended_once(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    batch = [record(i) for i in range(6)]
    async with pool.acquire() as conn:
        first = await store.append(conn, 0, batch, keys, role=ROLE, checkpoint_every=100, now=NOW)
        again = await store.append(
            conn,
            0,
            [*batch[3:], record(99), batch[0]],
            keys,
            role=ROLE,
            checkpoint_every=100,
            now=NOW,
        )
        ids = [
            r["record_id"]
            for r in await conn.fetch("SELECT record_id FROM audit_entries ORDER BY chain, seq")
        ]
    assert (first.written, first.duplicates) == (6, 0)
    assert (again.written, again.duplicates, again.head_seq) == (1, 4, 7)
    assert len(ids) == len(set(ids)) == 7
    assert (await AuditReader(pool, keys).verify()).ok


# --- through the API and the worker --------------------------------------------------

PATIENT_NAME = "Zebulon Quixote-Marsh"
MRN = "MRN-QX-778899"
NOTE = "disclosed nightly benzodiazepine use to the pharmacist"
PLAN_TITLE = "Warfarin dose per CYP2C9 result"


def token(sub: str, name: str, *roles: str) -> str:
    return mint_token(secret=SECRET, sub=sub, name=name, roles=list(roles))


LEAD = token("lead-1", "Dr Lead")


@pytest.fixture
async def api_factory(
    pool: asyncpg.Pool[Any],
) -> AsyncIterator[Callable[[Settings], httpx.AsyncClient]]:
    sinks: list[KafkaAuditSink] = []

    def make(settings: Settings) -> httpx.AsyncClient:
        async def kafka_ok() -> None:
            return None

        settings = settings.model_copy(update={"jwt_secret": SecretStr(SECRET)})
        sink = KafkaAuditSink(settings)
        sinks.append(sink)
        app = create_app(settings, pool=pool, kafka_ping=kafka_ok, live_updates=False, audit=sink)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    yield make
    for sink in sinks:
        await sink.close()


async def clinical_story(api: httpx.AsyncClient) -> dict[str, str]:
    team = (await gql(api, op.CREATE_TEAM, {"name": "Anticoagulation"}, token=LEAD))["createTeam"][
        "id"
    ]
    patient = (
        await gql(
            api,
            op.ENROLL,
            {"teamId": team, "mrn": MRN, "name": PATIENT_NAME, "birthDate": "1968-04-02"},
            token=LEAD,
        )
    )["enrollPatient"]["id"]
    plan = (
        await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": PLAN_TITLE}, token=LEAD)
    )["createCarePlan"]["id"]
    huddle = (await gql(api, op.SCHEDULE, {"teamId": team, "at": NOW.isoformat()}, token=LEAD))[
        "scheduleHuddle"
    ]["id"]
    await gql(api, op.OPEN_HUDDLE, {"id": huddle}, token=LEAD)
    await gql(
        api,
        op.NOTE,
        {"id": huddle, "text": NOTE, "patientId": patient, "sensitivity": ["SUBSTANCE_USE"]},
        token=LEAD,
    )
    await gql(api, op.PATIENT, {"id": patient}, token=LEAD)
    return {"team": team, "patient": patient, "plan": plan, "huddle": huddle}


async def test_records_reach_the_log_without_any_phi_in_clear_once_each_and_poison_goes_to_the_dlq(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    workers: Workers,
    api_factory: Callable[[Settings], httpx.AsyncClient],
) -> None:
    async with api_factory(settings) as api:
        ids = await clinical_story(api)
    # The broker delivers at least once: the same record twice, and something unreadable.
    repeated = record(1, patient_id=ids["patient"])
    await produce(
        settings,
        settings.audit_topic,
        [
            (ids["patient"].encode(), codec.encode_access(repeated), None),
            (ids["patient"].encode(), b"{not an access record", None),
            (ids["patient"].encode(), codec.encode_access(repeated), None),
        ],
        signed=True,
    )
    worker = workers.start(settings, CARECOORD_AUDIT_CHECKPOINT_SECONDS="0.5")

    async def written() -> bool:
        worker.assert_alive()
        async with pool.acquire() as conn:
            n = await conn.fetchval(
                "SELECT count(*) FROM audit_entries WHERE record_id = $1", repeated.record_id
            )
            total = await conn.fetchval("SELECT count(*) FROM audit_entries")
        return bool(n) and total >= 5  # enroll, plan, note, read, and the repeated one

    await wait_until(written, seconds=60, what="the access records in the audit log")

    async def heads_signed() -> bool:
        async with pool.acquire() as conn:
            unsigned = await conn.fetchval(
                "SELECT count(*) FROM (SELECT chain, max(seq) AS head FROM audit_entries"
                " GROUP BY chain) h WHERE NOT EXISTS (SELECT 1 FROM audit_checkpoints c"
                " WHERE c.chain = h.chain AND c.seq = h.head)"
            )
        return unsigned == 0

    # Fewer entries than a checkpoint's count: the timer signs each chain's head.
    await wait_until(heads_signed, seconds=30, what="a signed checkpoint of every chain head")
    verified = await AuditReader(pool, keys).verify()
    assert verified.ok and verified.checkpoints_checked >= 1, verified.problems
    found = await AuditReader(pool, keys).access_report(ids["patient"], None, None)
    actions = {(f.record.action, f.record.resource_type) for f in found}
    assert {
        (AccessAction.CREATE, "Patient"),
        (AccessAction.CREATE, "CarePlan"),
        (AccessAction.UPDATE, "Huddle"),
        (AccessAction.READ, "Patient"),
    } <= actions
    [note] = [
        f
        for f in found
        if f.record.resource_type == "Huddle" and f.record.action is AccessAction.UPDATE
    ][-1:]
    assert note.record.sensitivity == (Sensitivity.SUBSTANCE_USE,)
    assert [f.record.record_id for f in found].count(repeated.record_id) == 1

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM audit_entries")
        rows += await conn.fetch("SELECT * FROM audit_checkpoints")
    stored = b"".join(
        value if isinstance(value, bytes) else str(value).encode()
        for row in rows
        for value in row.values()
    )
    for secret in (PATIENT_NAME, MRN, NOTE, PLAN_TITLE, "Dr Lead", "PHARMACIST"):
        assert secret.encode() not in stored, secret
        assert secret.encode().hex().encode() not in stored, secret

    dead = await read_to_end(settings, settings.dlq_topic)
    [poison] = [m for m in dead if m.value == b"{not an access record"]
    assert b"not an access record" in poison.headers[ERROR_HEADER]
    worker.assert_alive()


async def test_no_patient_data_leaves_the_api_while_the_audit_log_cannot_take_records(
    settings: Settings,
    own_broker: Broker,
    api_factory: Callable[[Settings], httpx.AsyncClient],
) -> None:
    settings = settings.model_copy(
        update={"kafka_bootstrap": own_broker.bootstrap, "audit_produce_timeout_seconds": 2.0}
    )
    async with api_factory(settings) as api:
        ids = await clinical_story(api)
        own_broker.stop()

        for query, variables in (
            (op.CARE_PLAN, {"id": ids["plan"]}),
            (op.PATIENT, {"id": ids["patient"]}),
            (op.HUDDLE, {"id": ids["huddle"]}),
        ):
            response = await api.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {LEAD}"},
            )
            body = response.json()
            assert body["data"] is None, body
            assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"]
            for secret in (PATIENT_NAME, MRN, PLAN_TITLE):
                assert secret not in response.text

        # A mutation's answer is withheld too (the change may be saved: the message says so).
        with pytest.raises(GraphQLErrors) as withheld:
            await gql(
                api, op.ADD_GOAL, {"planId": ids["plan"], "description": "INR 2-3"}, token=LEAD
            )
        assert withheld.value.code == "SERVICE_UNAVAILABLE"
        assert "may already have been saved" in withheld.value.errors[0]["message"]

        # The broker comes back (empty): answers flow again, without a restart.
        own_broker.start()
        plan = await gql(api, op.CARE_PLAN, {"id": ids["plan"]}, token=LEAD)
        assert plan["carePlan"]["title"] == PLAN_TITLE


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
