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
    ) -> list[RecordedEvent]:
        """Append events to a stream atomically.

        expected_version is the stream's version the caller decided on (0: a new
        stream); None skips the check. A stale version raises WrongExpectedVersion and
        writes nothing.
        """
        if not events:
            return []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
            current: int = await conn.fetchval(
                "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
                stream_id,
            )
            if expected_version is not None and current != expected_version:
                raise WrongExpectedVersion(stream_id, expected_version, current)
            head: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            recorded = [
                RecordedEvent(
                    position=head + i,
                    envelope=self._envelope(stream_id, current + i, new),
                )
                for i, new in enumerate(events, start=1)
            ]
            try:
                await conn.executemany(
                    f"INSERT INTO events ({_COLUMNS}) "  # noqa: S608 - constant column list
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    [self._row(r) for r in recorded],
                )
            except asyncpg.UniqueViolationError as exc:
                # Only reachable when a writer bypasses the lock; still never a lost update.
                raise WrongExpectedVersion(stream_id, current, current + 1) from exc
            await conn.execute(
                "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(recorded[-1].position)
            )
        return recorded

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
