"""An event store held in memory, for unit tests: EventStorePort's contract without I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from schemas.envelope import Envelope
from services.common.event_store import (
    COLUMNS,
    Claim,
    ClaimTaken,
    EventStorePort,
    NewEvent,
    RecordedEvent,
    StreamWrite,
    WrongExpectedVersion,
    new_envelope,
    recorded_from_row,
    row_values,
)

Row = dict[str, Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stored(recorded: RecordedEvent) -> Row:
    """The row as PostgreSQL would hand it back, so that reads decode the same envelopes:
    the payload through JSON (jsonb, read with orjson as the pool does), the time in UTC
    (timestamptz)."""
    row = dict(zip(COLUMNS, row_values(recorded), strict=True))
    row["payload"] = orjson.loads(orjson.dumps(row["payload"]))
    row["occurred_at"] = row["occurred_at"].astimezone(UTC)
    return row


def _check_versions(writes: Sequence[StreamWrite], versions: dict[str, int]) -> None:
    """WrongExpectedVersion if a write is stale (a command writing one stream twice is
    stale on its second write)."""
    after: dict[str, int] = {}
    for write in writes:
        current = after.get(write.stream_id, versions[write.stream_id])
        if write.expected_version is not None and current != write.expected_version:
            raise WrongExpectedVersion(write.stream_id, write.expected_version, current)
        after[write.stream_id] = current + len(write.events)


def _place(
    writes: Sequence[StreamWrite],
    versions: dict[str, int],
    head: int,
    clock: Callable[[], datetime],
) -> list[list[RecordedEvent]]:
    """Each write's events at the positions after `head` and the versions after the stream's
    in `versions` (which it advances). events_append (migration 0013) places them alike."""
    results = []
    for write in writes:
        current = versions[write.stream_id]
        results.append(
            [
                RecordedEvent(
                    position=head + i,
                    envelope=new_envelope(write.stream_id, current + i, new, clock),
                )
                for i, new in enumerate(write.events, start=1)
            ]
        )
        head += len(write.events)
        versions[write.stream_id] = current + len(write.events)
    return results


async def _suspend() -> None:
    # The real store always awaits the database: yielding here too lets other coroutines run
    # between a caller's read and its append, as they would in production.
    await asyncio.sleep(0)


class InMemoryEventStore:
    """Streams, positions and claims in dicts and lists, with EventStore's semantics.

    Each append checks and writes without awaiting in between, so it is atomic with respect
    to other coroutines, as the advisory lock makes the PostgreSQL store's appends.
    """

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._rows: list[Row] = []  # position p is at index p - 1
        self._streams: dict[str, list[Row]] = {}  # in version order
        self._claims: dict[tuple[str, str], str] = {}  # (scope, key) -> the holding stream
        self._event_ids: set[uuid.UUID] = set()

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        [recorded] = await self.append_many(
            [StreamWrite(stream_id, expected_version, events, claims)]
        )
        return recorded

    async def append_many(self, writes: Sequence[StreamWrite]) -> list[list[RecordedEvent]]:
        await _suspend()
        if not any(w.events or w.claims for w in writes):
            return [[] for _ in writes]
        versions = {w.stream_id: len(self._streams.get(w.stream_id, ())) for w in writes}
        _check_versions(writes, versions)
        claimed = self._claim(writes)
        head = len(self._rows)
        results = _place(writes, versions, head, self._clock)
        recorded = [r for rs in results for r in rs]
        ids = [r.envelope.event_id for r in recorded]
        if len(set(ids)) < len(ids) or not self._event_ids.isdisjoint(ids):
            # What PostgreSQL's unique event id comes out as (EventStore._commit).
            first = writes[0]
            current = first.expected_version or 0
            raise WrongExpectedVersion(first.stream_id, current, current + 1)
        # Everything is checked: from here on nothing can fail, so the call lands whole.
        for rec in recorded:
            row = _stored(rec)
            self._rows.append(row)
            self._streams.setdefault(rec.envelope.stream_id, []).append(row)
        self._claims.update(claimed)
        self._event_ids.update(ids)
        return results

    def _claim(self, writes: Sequence[StreamWrite]) -> dict[tuple[str, str], str]:
        """The claims the writes would take; ClaimTaken if one is held already, or twice."""
        claimed: dict[tuple[str, str], str] = {}
        for write in writes:
            for claim in write.claims:
                key = (claim.scope, claim.key)
                if key in self._claims or key in claimed:
                    raise ClaimTaken(claim.scope)
                claimed[key] = write.stream_id
        return claimed

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[Envelope]:
        await _suspend()
        rows = self._streams.get(stream_id, [])
        return [recorded_from_row(r).envelope for r in rows[max(after_version, 0) :]]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[Envelope]]:
        await _suspend()
        return {
            stream_id: [recorded_from_row(r).envelope for r in self._streams[stream_id]]
            for stream_id in sorted(set(stream_ids))
            if stream_id in self._streams
        }

    async def read_streams_after(self, after: Mapping[str, int]) -> dict[str, list[Envelope]]:
        await _suspend()
        found = {
            stream_id: [recorded_from_row(r).envelope for r in rows[max(version, 0) :]]
            for stream_id, version in after.items()
            if (rows := self._streams.get(stream_id, []))
        }
        return {stream_id: envelopes for stream_id, envelopes in found.items() if envelopes}

    async def streams_started_for_patient(self, patient_id: str, event_type: str) -> list[str]:
        await _suspend()
        return list(self._holding([patient_id], event_type))

    async def streams_of_patients(
        self, patient_ids: Sequence[str], event_type: str
    ) -> dict[str, list[Envelope]]:
        await _suspend()
        holding = set(self._holding(patient_ids, event_type))
        streams: dict[str, list[Envelope]] = {}
        for row in self._rows:
            if row["stream_id"] in holding:
                streams.setdefault(row["stream_id"], []).append(recorded_from_row(row).envelope)
        return streams

    def _holding(self, patient_ids: Sequence[str], event_type: str) -> dict[str, None]:
        """Streams with an `event_type` event naming one of the patients, by the position
        of the first such event."""
        wanted = set(patient_ids)
        return {
            row["stream_id"]: None
            for row in self._rows
            if row["type"] == event_type and row["patient_id"] in wanted
        }

    async def patient_events(
        self, patient_id: str, event_type: str, *, after_position: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        await _suspend()
        found = (
            recorded_from_row(r)
            for r in self._rows[max(after_position, 0) :]
            if r["patient_id"] == patient_id and r["type"] == event_type
        )
        return [e for _, e in zip(range(max(limit, 0)), found, strict=False)]

    async def team_holds(self, team_id: str, event_type: str) -> bool:
        await _suspend()
        return any(r["team_id"] == team_id and r["type"] == event_type for r in self._rows)

    async def stream_version(self, stream_id: str) -> int:
        await _suspend()
        return len(self._streams.get(stream_id, ()))

    async def existing_streams(self, stream_ids: Sequence[str]) -> set[str]:
        await _suspend()
        return {s for s in stream_ids if self._streams.get(s)}

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        await _suspend()
        start = max(after_position, 0)
        return [recorded_from_row(r) for r in self._rows[start : start + limit]]

    async def head(self) -> int:
        await _suspend()
        return len(self._rows)


if TYPE_CHECKING:
    # mypy holds the memory store to the same port as the PostgreSQL one.
    _conforms: type[EventStorePort] = InMemoryEventStore
