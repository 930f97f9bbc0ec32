"""The event store: atomic appends, optimistic concurrency per stream, reads by position."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import codec
from schemas.base import Event
from schemas.envelope import Envelope
from services.common.db import Conn

# Appends serialize on this transaction-scoped advisory lock, so global positions are
# handed out in commit order: a reader polling read_all never skips an event that
# commits late (the lock is released only after the commit is visible).
_APPEND_LOCK = 7_206_351_002
NOTIFY_CHANNEL = "carecoord_events"

_COLUMNS = (
    "position, stream_id, stream_version, event_id, type, schema_version, team_id, "
    "patient_id, actor_id, occurred_at, correlation_id, causation_id, payload"
)


class WrongExpectedVersion(Exception):
    """The stream moved on since the caller read it; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, not the expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended, with the metadata its envelope will carry."""

    event: Event
    team_id: str
    actor_id: str
    patient_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: datetime | None = None
    event_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A value that may belong to one stream only, ever (an MRN on its team)."""

    scope: str
    key: str


class ClaimTaken(Exception):
    """Another stream already holds the claimed value; nothing was written."""

    def __init__(self, scope: str) -> None:
        # The key itself may be PHI (an MRN): only the scope is named.
        super().__init__(f"a {scope} claim is already held by another stream")
        self.scope = scope


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """Events for one stream, with its expected version and any unique claims."""

    stream_id: str
    expected_version: int | None
    events: Sequence[NewEvent]
    claims: Sequence[Claim] = ()


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    envelope: Envelope


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _row_to_recorded(row: asyncpg.Record) -> RecordedEvent:
    envelope = codec.from_mapping(
        {
            "event_id": str(row["event_id"]),
            "type": row["type"],
            "schema_version": row["schema_version"],
            "stream_id": row["stream_id"],
            "stream_version": row["stream_version"],
            "team_id": row["team_id"],
            "patient_id": row["patient_id"],
            "actor_id": row["actor_id"],
            "occurred_at": row["occurred_at"].isoformat(),
            "correlation_id": row["correlation_id"],
            "causation_id": row["causation_id"],
            "payload": row["payload"],
        }
    )
    return RecordedEvent(position=row["position"], envelope=envelope)


def _by_stream(rows: Sequence[asyncpg.Record]) -> dict[str, list[Envelope]]:
    streams: dict[str, list[Envelope]] = {}
    for row in rows:
        streams.setdefault(row["stream_id"], []).append(_row_to_recorded(row).envelope)
    return streams


class EventStore:
    """Append-only event storage in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool[Any], *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._pool = pool
        self._clock = clock

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        """Append events to a stream atomically.

        expected_version is the stream's version the caller decided on (0: a new
        stream); None skips the check. A stale version raises WrongExpectedVersion, a
        claim already held raises ClaimTaken; either way nothing is written.
        """
        [recorded] = await self.append_many(
            [StreamWrite(stream_id, expected_version, events, claims)]
        )
        return recorded

    async def append_many(self, writes: Sequence[StreamWrite]) -> list[list[RecordedEvent]]:
        """Append to several streams in one transaction: all of them, or none.

        Used when one command starts more than one aggregate (a huddle's action item
        and the task that carries it). Returns the recorded events per write.
        """
        if not any(w.events or w.claims for w in writes):
            return [[] for _ in writes]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
            head: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            results: list[list[RecordedEvent]] = []
            versions: list[int] = []
            for write in writes:
                current: int = await conn.fetchval(
                    "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
                    write.stream_id,
                )
                if write.expected_version is not None and current != write.expected_version:
                    raise WrongExpectedVersion(write.stream_id, write.expected_version, current)
                await self._claim(conn, write)
                versions.append(current)
                results.append(
                    [
                        RecordedEvent(
                            position=head + i,
                            envelope=self._envelope(write.stream_id, current + i, new),
                        )
                        for i, new in enumerate(write.events, start=1)
                    ]
                )
                head += len(write.events)
            rows = [self._row(r) for recorded in results for r in recorded]
            try:
                await conn.executemany(
                    f"INSERT INTO events ({_COLUMNS}) "  # noqa: S608 - constant column list
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    rows,
                )
            except asyncpg.UniqueViolationError as exc:
                # Only reachable when a writer bypasses the lock (or one command writes the
                # same stream twice); still never a lost update.
                stream_id, current = writes[0].stream_id, versions[0]
                raise WrongExpectedVersion(stream_id, current, current + 1) from exc
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(head))
        return results

    @staticmethod
    async def _claim(conn: Conn, write: StreamWrite) -> None:
        for claim in write.claims:
            taken = await conn.fetchval(
                "INSERT INTO unique_claims (scope, key, stream_id) VALUES ($1, $2, $3) "
                "ON CONFLICT (scope, key) DO NOTHING RETURNING false",
                claim.scope,
                claim.key,
                write.stream_id,
            )
            if taken is None:
                raise ClaimTaken(claim.scope)

    def _envelope(self, stream_id: str, version: int, new: NewEvent) -> Envelope:
        event_id = new.event_id or uuid.uuid4()
        return Envelope(
            event_id=event_id,
            type=new.event.event_type,
            schema_version=new.event.schema_version,
            stream_id=stream_id,
            stream_version=version,
            team_id=new.team_id,
            patient_id=new.patient_id,
            actor_id=new.actor_id,
            occurred_at=new.occurred_at or self._clock(),
            correlation_id=new.correlation_id or str(event_id),
            causation_id=new.causation_id,
            payload=new.event,
        )

    @staticmethod
    def _row(recorded: RecordedEvent) -> tuple[Any, ...]:
        env = recorded.envelope
        return (
            recorded.position,
            env.stream_id,
            env.stream_version,
            env.event_id,
            env.type,
            env.schema_version,
            env.team_id,
            env.patient_id,
            env.actor_id,
            env.occurred_at,
            env.correlation_id,
            env.causation_id,
            codec.payload_to_mapping(env.payload),
        )

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[Envelope]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
            stream_id,
            after_version,
        )
        return [_row_to_recorded(r).envelope for r in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[Envelope]]:
        """Several streams in one query; a stream with no events is absent from the result."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
            list(stream_ids),
        )
        return _by_stream(rows)

    async def streams_started_for_patient(self, patient_id: str, event_type: str) -> list[str]:
        """Ids of the streams whose `event_type` event names this patient, oldest first."""
        rows = await self._pool.fetch(
            "SELECT stream_id FROM events WHERE patient_id = $1 AND type = $2 "
            "GROUP BY stream_id ORDER BY min(position)",
            patient_id,
            event_type,
        )
        return [r["stream_id"] for r in rows]

    async def streams_of_patients(
        self, patient_ids: Sequence[str], event_type: str
    ) -> dict[str, list[Envelope]]:
        """The whole streams whose `event_type` event names one of these patients, in one
        query (the patients' consents, say), by stream id, oldest stream first."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id IN ("  # noqa: S608 - constant
            "SELECT stream_id FROM events WHERE patient_id = ANY($1::text[]) AND type = $2"
            ") ORDER BY position",
            list(patient_ids),
            event_type,
        )
        return _by_stream(rows)

    async def stream_version(self, stream_id: str) -> int:
        version: int = await self._pool.fetchval(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
            stream_id,
        )
        return version

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events with a global position above after_position, in position order."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE position > $1 ORDER BY position LIMIT $2",
            after_position,
            limit,
        )
        return [_row_to_recorded(r) for r in rows]

    async def head(self) -> int:
        """The highest global position committed so far (0 for an empty store)."""
        position: int = await self._pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return position
