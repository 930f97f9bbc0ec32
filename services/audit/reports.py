"""Reading the audit log for compliance officers: the trail with filters and paging, the
access report, the accounting of disclosures (45 CFR 164.528), and verification."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.audit import AccessRecorded, SignInOutcome
from schemas.codec import CodecError, decode_access
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.audit import cipher, note, store, verifying
from services.audit.keys import LogKeys
from services.audit.review import REVIEW
from services.audit.verify import Verification
from services.common.errors import InvalidInput, StateConflict
from services.common.event_store import EventStorePort
from services.settings import Settings

# Entries this much older than the newest access must be covered by a signed checkpoint
# (the writer signs every few seconds; a stopped writer signs what it left on restart).
UNSIGNED_GRACE = timedelta(minutes=15)
# An accounting of disclosures reaches back six years (45 CFR 164.528(a)).
DISCLOSURE_YEARS = 6
# Accesses for treatment, payment and health care operations are not disclosures to
# account for; care coordination is treatment.
ROUTINE_PURPOSES = (
    Purpose.TREATMENT,
    Purpose.CARE_COORDINATION,
    Purpose.PAYMENT,
    Purpose.OPERATIONS,
)
RELEASED = (AccessOutcome.PERMIT, AccessOutcome.PERMIT_REDACTED, AccessOutcome.BREAK_GLASS)


@dataclass(frozen=True)
class Found:
    """A stored entry with its decrypted record."""

    entry: store.Entry
    record: AccessRecorded

    @property
    def label(self) -> str:
        return self.entry.label


@dataclass(frozen=True)
class TrailFilter:
    patient_id: str | None = None
    actor_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: AccessOutcome | None = None
    sensitivity: Sensitivity | None = None
    # True: only security events (refused sign-ins); False: none of them; None: all.
    security_events: bool | None = None


# The outcome only security events (refused sign-ins) have; a column of its own, so the
# filter needs no decryption.
SECURITY_OUTCOMES = (SignInOutcome.UNAUTHENTICATED.value,)


def _outcomes(outcome: AccessOutcome | None) -> tuple[str, ...]:
    # A refused sign-in is shown as DENY (services.api.graphql.audit), so it is found so.
    if outcome is AccessOutcome.DENY:
        return (outcome.value, *SECURITY_OUTCOMES)
    return (outcome.value,) if outcome else ()


def encode_cursor(entry: store.Entry) -> str:
    raw = f"{entry.at.isoformat()}|{entry.chain}|{entry.seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, chain, seq = raw.split("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("no offset")
        return when, int(chain), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("'after' is not a cursor this API gave out.") from None


class AuditReader:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        keys: LogKeys,
        *,
        log_name: str = store.LOG_NAME,
        dsn: str | None = None,
        workers: int = 1,
        split_from: int = verifying.SPLIT_FROM,
    ) -> None:
        """`dsn` and `workers`: verify() splits a log of `split_from` entries or more into
        its chains over up to `workers` processes, each with a connection of its own to
        `dsn` (the pool's database)."""
        self._pool = pool
        self._keys = keys
        # The name the checkpoints' notes are signed under (settings.audit_log_name).
        self._log_name = log_name
        self._dsn = dsn
        self._workers = workers
        self._split_from = split_from

    @classmethod
    def of(cls, pool: asyncpg.Pool[Any], keys: LogKeys, settings: Settings) -> AuditReader:
        """The reader the settings describe: the log's name, and verify's processes (each
        connecting to the settings' database)."""
        return cls(
            pool,
            keys,
            log_name=settings.audit_log_name,
            dsn=settings.database_url,
            workers=settings.audit_verify_workers,
        )

    def _filter(self, f: TrailFilter) -> store.Filter:
        keys = self._keys
        where = store.Filter(
            patient_ix=cipher.blind(keys, "patient", f.patient_id) if f.patient_id else None,
            actor_ix=cipher.blind(keys, "actor", f.actor_id) if f.actor_id else None,
            since=f.since,
            until=f.until,
            outcomes=_outcomes(f.outcome),
            sensitivity=f.sensitivity.value if f.sensitivity else None,
        )
        if f.security_events is True:
            wanted = [o for o in where.outcomes or SECURITY_OUTCOMES if o in SECURITY_OUTCOMES]
            # With an outcome no security event has, nothing matches ('' is no outcome).
            where = replace(where, outcomes=tuple(wanted) or ("",))
        elif f.security_events is False:
            where = replace(where, not_outcomes=SECURITY_OUTCOMES)
        return where

    async def trail(
        self, f: TrailFilter, *, first: int, after: str | None
    ) -> tuple[list[Found], str | None]:
        """A page of entries, oldest first, and the cursor of the next page (None: last)."""
        cursor = decode_cursor(after) if after else None
        async with self._pool.acquire() as conn:
            rows = await store.search(conn, self._filter(f), after=cursor, limit=first + 1)
        page = rows[:first]
        more = len(rows) > first
        return self._open(page), encode_cursor(page[-1]) if more and page else None

    async def access_report(
        self, patient_id: str, since: datetime | None, until: datetime | None
    ) -> list[Found]:
        f = self._filter(TrailFilter(patient_id=patient_id, since=since, until=until))
        async with self._pool.acquire() as conn:
            return self._open(await store.search(conn, f))

    async def disclosure_report(
        self, patient_id: str, since: datetime | None, until: datetime | None, *, now: datetime
    ) -> list[Found]:
        start = since or now - timedelta(days=365 * DISCLOSURE_YEARS + 2)
        f = self._filter(TrailFilter(patient_id=patient_id, since=start, until=until))
        f = store.Filter(
            patient_ix=f.patient_ix,
            since=f.since,
            until=f.until,
            outcomes=tuple(o.value for o in RELEASED),
            not_purposes=tuple(p.value for p in ROUTINE_PURPOSES),
        )
        async with self._pool.acquire() as conn:
            return self._open(await store.search(conn, f))

    async def break_glass_queue(self, events: EventStorePort) -> list[Found]:
        """Break-glass accesses no compliance officer has reviewed yet, oldest first. A
        review is an event (services.audit.review): `events` says which exist."""
        f = store.Filter(outcomes=(AccessOutcome.BREAK_GLASS.value,))
        async with self._pool.acquire() as conn:
            entries = await store.search(conn, f)
        reviewed = await events.existing_streams([REVIEW.stream_id(e.label) for e in entries])
        return self._open([e for e in entries if REVIEW.stream_id(e.label) not in reviewed])

    async def entry(self, chain: int, seq: int) -> Found | None:
        async with self._pool.acquire() as conn:
            found = await store.entry(conn, chain, seq)
        return self._open([found])[0] if found is not None else None

    async def verify(
        self,
        *,
        public_key: Ed25519PublicKey | None = None,
        unsigned_grace: timedelta | None = UNSIGNED_GRACE,
        vkey: note.Verifier | None = None,
    ) -> Verification:
        """Check the whole log in one consistent snapshot. Entries older than
        `unsigned_grace` must be covered by a checkpoint (None: not checked). A verifier
        key (`vkey`) gives both the public key and the log's name."""
        log_name = self._log_name
        if vkey is not None:
            public_key, log_name = vkey.key, vkey.name
        return await verifying.verify_log(
            self._pool,
            self._keys,
            log_name=log_name,
            public_key=public_key,
            unsigned_grace=unsigned_grace,
            dsn=self._dsn,
            workers=self._workers,
            split_from=self._split_from,
        )

    def _open(self, entries: Sequence[store.Entry]) -> list[Found]:
        """Decrypt; an entry that will not open stops the report, naming it, rather than
        being left out of it."""
        found = []
        for entry in entries:
            at = cipher.place(entry.chain, entry.seq, entry.record_id)
            try:
                plain = cipher.decrypt(self._keys, entry.key_id, entry.ciphertext, at=at)
                found.append(Found(entry=entry, record=decode_access(plain)))
            except (cipher.Undecryptable, CodecError):
                raise StateConflict(
                    f"Audit entry {entry.label} cannot be read: it was changed or its key is "
                    "missing. Run verifyAuditLog (or `carecoord audit verify`)."
                ) from None
        return found
