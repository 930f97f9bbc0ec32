"""The event store: atomic appends, optimistic concurrency per stream, reads by position."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import orjson

from schemas import codec
from schemas.base import Event
from schemas.envelope import Envelope

# Appends serialize on this transaction-scoped advisory lock, so global positions are
# handed out in commit order: a reader polling read_all never skips an event that
# commits late (the lock is released only after the commit is visible). The function
# events_append (migration 0013) takes it; its number is written there too.
_APPEND_LOCK = 7_206_351_002
NOTIFY_CHANNEL = "carecoord_events"  # events_append notifies it; the outbox relay listens
# The most commands one group commit takes; more wait for the next.
_MOST = 1000

# An event's row, in the order of row_values; InMemoryEventStore keeps the same rows.
COLUMNS = (
    "position",
    "stream_id",
    "stream_version",
    "event_id",
    "type",
    "schema_version",
    "team_id",
    "patient_id",
    "actor_id",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "payload",
)
_COLUMNS = ", ".join(COLUMNS)
# A group commit is one statement in autocommit: the function takes the append lock, reads
# the head and versions, checks each command's versions and claims in turn and inserts the
# accepted commands' events, all in the server (one round trip; the lock is held only while
# the server works). A column an array; the payloads as JSON text.
_APPEND = (
    "SELECT * FROM events_append($1::text[], $2::int[], $3::int[], $4::int[], $5::int[],"
    " $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::int[], $12::text[],"
    " $13::text[], $14::text[], $15::timestamptz[], $16::text[], $17::text[],"
    " $18::text[]::jsonb[])"
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


class EventStorePort(Protocol):
    """What the rest of carecoord asks of an event store. EventStore (PostgreSQL) keeps this
    contract and so does InMemoryEventStore (unit tests); tests/event_store_contract.py
    holds both to it.

    A stream starts empty, at version 0. Each appended event takes its stream's next version
    (1, 2, ...) and the store's next global position (1, 2, ...): positions have no gaps
    and follow commit order. Nothing is ever changed or removed, claims included. Every read
    sees every append that returned before it began. Reads decode envelopes afresh from what
    was stored (upcast to the latest schema; occurred_at in UTC): equal to the envelopes the
    append returned, yet never the same objects.
    """

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        """append_many with a single write; its recorded events, in the order given."""
        ...

    async def append_many(self, writes: Sequence[StreamWrite]) -> list[list[RecordedEvent]]:
        """Append to several streams at once: every write lands, or none does.

        Returns each write's recorded events, in the order of `writes`. Positions run on
        without a gap through the writes in that order; a stream written twice in one call
        goes on from where its first write left it.

        `expected_version` is the version the caller decided on (0: the stream must be new;
        None: no check). A write whose stream is at another version (counting the call's
        earlier writes) raises WrongExpectedVersion carrying that write's stream_id, its
        `expected` and the `actual` version. A claim any stream holds (the claiming one
        included), or one the call makes twice, raises ClaimTaken carrying only the `scope`:
        the key may be PHI. Versions are checked before claims. An event id the store
        already holds is refused too, as WrongExpectedVersion naming the call's first write
        (its versions then mean nothing). Whatever is refused, nothing of the call is
        written: no event, no claim. A write of claims alone holds them and records no event.
        A call with neither events nor claims writes nothing and checks no version.

        Concurrent calls never interleave: each is checked against all that committed before
        it. The envelope takes type and schema_version from the event, the rest from the
        NewEvent; unless it brings them, event_id is a new UUID, correlation_id the event
        id and occurred_at the store's clock. A caller cancelled before the call returns
        cannot know whether it landed (whole, if it did).
        """
        ...

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[Envelope]:
        """The stream's events after `after_version`, in version order; [] for a stream
        never written, or with nothing newer."""
        ...

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[Envelope]]:
        """Each stream that has events, whole and in version order, by stream id; a stream
        with none is absent. The order of the keys is not promised."""
        ...

    async def read_streams_after(self, after: Mapping[str, int]) -> dict[str, list[Envelope]]:
        """Each stream's events after the version given for it, in version order, by stream
        id, all read at one instant; a stream with nothing newer is absent."""
        ...

    async def streams_started_for_patient(self, patient_id: str, event_type: str) -> list[str]:
        """Ids of the streams holding an `event_type` event whose envelope names this
        patient, ordered by the position of their first such event; [] if none does."""
        ...

    async def streams_of_patients(
        self, patient_ids: Sequence[str], event_type: str
    ) -> dict[str, list[Envelope]]:
        """Every stream holding an `event_type` event whose envelope names one of these
        patients, whole and in version order, by stream id, oldest stream (lowest first
        position) first; other streams are absent."""
        ...

    async def patient_events(
        self, patient_id: str, event_type: str, *, after_position: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """At most `limit` `event_type` events whose envelope names this patient, with a
        position above `after_position`, in position order (a stable page: a reader asking
        again from the last position it got never skips or repeats one)."""
        ...

    async def team_holds(self, team_id: str, event_type: str) -> bool:
        """Whether any stream holds an `event_type` event whose envelope names this team."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event; 0 for a stream never written."""
        ...

    async def existing_streams(self, stream_ids: Sequence[str]) -> set[str]:
        """Those of these streams that hold at least one event."""
        ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """At most `limit` events with a position above `after_position`, in position
        order. A reader that asks again from the last position it got never skips or
        repeats an event, even one whose append began before another's and committed after
        it."""
        ...

    async def head(self) -> int:
        """The highest position committed so far; 0 for an empty store."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def recorded_from_row(row: asyncpg.Record | Mapping[str, Any]) -> RecordedEvent:
    """The recorded event a stored row holds, decoded (and upcast) as every read does."""
    envelope = codec.from_mapping(
        {
            # The id and the time as asyncpg decoded them (a UUID, an aware datetime in
            # UTC), which the envelope takes as they are: no string to parse back.
            "event_id": row["event_id"],
            "type": row["type"],
            "schema_version": row["schema_version"],
            "stream_id": row["stream_id"],
            "stream_version": row["stream_version"],
            "team_id": row["team_id"],
            "patient_id": row["patient_id"],
            "actor_id": row["actor_id"],
            "occurred_at": row["occurred_at"],
            "correlation_id": row["correlation_id"],
            "causation_id": row["causation_id"],
            "payload": row["payload"],
        }
    )
    return RecordedEvent(position=row["position"], envelope=envelope)


def _by_stream(rows: Sequence[asyncpg.Record]) -> dict[str, list[Envelope]]:
    streams: dict[str, list[Envelope]] = {}
    for row in rows:
        streams.setdefault(row["stream_id"], []).append(recorded_from_row(row).envelope)
    return streams


def new_envelope(
    stream_id: str, version: int, new: NewEvent, clock: Callable[[], datetime]
) -> Envelope:
    """The envelope an appended event gets: a fresh id, the clock's time and the event's own
    id as correlation, unless the NewEvent brings them."""
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
        occurred_at=new.occurred_at or clock(),
        correlation_id=new.correlation_id or str(event_id),
        causation_id=new.causation_id,
        payload=new.event,
    )


def row_values(recorded: RecordedEvent) -> tuple[Any, ...]:
    """A recorded event's row, in the order of COLUMNS."""
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


@dataclass(frozen=True, slots=True, eq=False)
class _Pending:
    """One command's writes, waiting for the group commit that takes them."""

    writes: Sequence[StreamWrite]
    result: asyncio.Future[list[list[RecordedEvent]]]


def _cancelled_at_shutdown() -> RuntimeError:
    return RuntimeError("the append was cancelled at shutdown")


def _answer(
    pending: _Pending, result: list[list[RecordedEvent]] | None, error: BaseException | None
) -> None:
    """Hand a command its outcome, unless its caller has stopped waiting."""
    if pending.result.done():
        return
    if error is not None:
        pending.result.set_exception(error)
    else:
        assert result is not None
        pending.result.set_result(result)


def _filled(new: NewEvent, clock: Callable[[], datetime]) -> NewEvent:
    """The event with the id, time and correlation its envelope will carry (the ones it
    brings, else a new UUID, the clock's time and its own id): they are sent before the
    positions are known, and the envelope is made after with the same values."""
    if new.event_id is not None and new.occurred_at is not None and new.correlation_id:
        return new
    event_id = new.event_id or uuid.uuid4()
    return replace(
        new,
        event_id=event_id,
        occurred_at=new.occurred_at or clock(),
        correlation_id=new.correlation_id or str(event_id),
    )


def _arguments(batch: Sequence[_Pending], filled: list[list[list[NewEvent]]]) -> list[list[Any]]:
    """events_append's arguments for a batch: its writes, claims and events, in order."""
    writes: list[tuple[Any, ...]] = []
    claims: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for command, (pending, command_events) in enumerate(zip(batch, filled, strict=True), 1):
        for write, write_events in zip(pending.writes, command_events, strict=True):
            writes.append((write.stream_id, write.expected_version, len(write_events), command))
            claims.extend((len(writes), claim.scope, claim.key) for claim in write.claims)
            events.extend(
                (
                    write.stream_id,
                    new.event_id,
                    new.event.event_type,
                    new.event.schema_version,
                    new.team_id,
                    new.patient_id,
                    new.actor_id,
                    new.occurred_at,
                    new.correlation_id,
                    new.causation_id,
                    orjson.dumps(codec.payload_to_mapping(new.event)).decode(),
                )
                for new in write_events
            )
    return [*_columns(writes, 4), *_columns(claims, 3), *_columns(events, 11)]


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as a list per column (`width` empty lists for no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def _refusal(row: asyncpg.Record, command: int) -> Exception | None:
    """The refusal events_append returned for the batch's command at this index, if any."""
    kind = row["refused_kind"][command]
    if kind is None:
        return None
    if kind == "claim":
        return ClaimTaken(row["refused_scope"][command])
    return WrongExpectedVersion(
        row["refused_stream"][command],
        row["refused_expected"][command],
        row["refused_actual"][command],
    )


class EventStore:
    """Append-only event storage in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool[Any], *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._pool = pool
        self._clock = clock
        # Commands waiting for the next group commit, and the task committing them in turn.
        self._queue: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None

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

        Commands that arrive while another commit is under way share the next one (a group
        commit): one statement (events_append, migration 0013) for all of them, each still
        all-or-nothing, each checked against the versions the ones before it left.
        """
        if not any(w.events or w.claims for w in writes):
            return [[] for _ in writes]
        pending = _Pending(writes, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._committer is None:
            # One task commits, batch after batch, while commands queue; a caller only
            # waits for its answer. (Callers taking turns at a lock to find their batch
            # done cost an event-loop pass each: 63 passes for a commit of 64.)
            self._committer = asyncio.create_task(self._commit_queued())
        try:
            return await pending.result
        except asyncio.CancelledError:
            # Not taken yet: never written. Taken: the commit goes on for the others in
            # its batch, and nobody is left to read this one's answer.
            if pending in self._queue:
                self._queue.remove(pending)
            raise

    async def _commit_queued(self) -> None:
        """Commit what is queued, then what queued meanwhile, until nothing is (at most
        _MOST commands at a time: one statement and one lock hold stay bounded)."""
        try:
            while self._queue:
                batch, self._queue = self._queue[:_MOST], self._queue[_MOST:]
                await self._commit(batch)
        except asyncio.CancelledError:
            for pending in self._queue:
                _answer(pending, None, _cancelled_at_shutdown())
            self._queue = []
            raise
        finally:
            self._committer = None

    async def _commit(self, batch: list[_Pending]) -> None:
        """Commit the batch and answer every command in it; never raises (each caller gets
        its own outcome, a database failure included)."""
        try:
            await self._transaction(batch)
        except (asyncpg.UniqueViolationError, asyncpg.DataError) as exc:
            if len(batch) > 1:  # find the one at fault (a duplicate, a NUL): each on its own
                for n, pending in enumerate(batch):
                    try:
                        await self._commit([pending])
                    except asyncio.CancelledError:
                        for waiting in batch[n + 1 :]:
                            _answer(waiting, None, _cancelled_at_shutdown())
                        raise
                return
            if isinstance(exc, asyncpg.DataError):
                _answer(batch[0], None, exc)
                return
            # Only reachable when a writer bypasses the lock (or an event id is sent twice);
            # still never a lost update.
            write = batch[0].writes[0]
            current = write.expected_version or 0
            stale = WrongExpectedVersion(write.stream_id, current, current + 1)
            stale.__cause__ = exc
            _answer(batch[0], None, stale)
        except asyncio.CancelledError:
            for pending in batch:
                _answer(pending, None, _cancelled_at_shutdown())
            raise
        except Exception as exc:
            for pending in batch:
                _answer(pending, None, exc)

    async def _transaction(self, batch: list[_Pending]) -> None:
        """One call of events_append for the batch; each command answered with its events
        or its refusal."""
        filled = [
            [[_filled(new, self._clock) for new in w.events] for w in p.writes] for p in batch
        ]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_APPEND, *_arguments(batch, filled))
        assert row is not None
        positions, versions = row["positions"], row["versions"]
        e = 0  # the command's first event in the call
        for i, (pending, events) in enumerate(zip(batch, filled, strict=True)):
            refusal = _refusal(row, i)
            if refusal is not None:
                _answer(pending, None, refusal)
                e += sum(len(write_events) for write_events in events)
                continue
            results = []
            for write, write_events in zip(pending.writes, events, strict=True):
                recorded = []
                for new in write_events:
                    envelope = new_envelope(write.stream_id, versions[e], new, self._clock)
                    recorded.append(RecordedEvent(position=positions[e], envelope=envelope))
                    e += 1
                results.append(recorded)
            _answer(pending, results, None)

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[Envelope]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
            stream_id,
            after_version,
        )
        return [recorded_from_row(r).envelope for r in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[Envelope]]:
        """Several streams in one query; a stream with no events is absent from the result."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
            list(stream_ids),
        )
        return _by_stream(rows)

    async def read_streams_after(self, after: Mapping[str, int]) -> dict[str, list[Envelope]]:
        """A few streams' new events in one query: each stream read as read_stream reads
        it (an index range scan), the parts joined by UNION ALL. One statement per number of
        streams (two, in practice), so the server keeps one plan for each; a join over
        unnested arrays got a generic plan (a bitmap scan and a sort) that cost more."""
        if not after:
            return {}
        parts = " UNION ALL ".join(
            f"(SELECT {_COLUMNS} FROM events WHERE stream_id = ${2 * n + 1} "  # noqa: S608 - constant columns, numbered parameters
            f"AND stream_version > ${2 * n + 2}::integer)"
            for n in range(len(after))
        )
        rows = await self._pool.fetch(
            f"SELECT * FROM ({parts}) AS s ORDER BY stream_id, stream_version",  # noqa: S608 - as above
            *(value for pair in after.items() for value in pair),
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

    async def patient_events(
        self, patient_id: str, event_type: str, *, after_position: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        # One range of the index events_patient_type (patient_id, type, position).
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events "  # noqa: S608 - constant column list
            "WHERE patient_id = $1 AND type = $2 AND position > $3 "
            "ORDER BY position LIMIT $4",
            patient_id,
            event_type,
            after_position,
            limit,
        )
        return [recorded_from_row(r) for r in rows]

    async def team_holds(self, team_id: str, event_type: str) -> bool:
        """Whether the team has an `event_type` event: one index range (team_id, position)
        read until the first match, which for a team's first enrollment comes early."""
        found: bool = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE team_id = $1 AND type = $2)",
            team_id,
            event_type,
        )
        return found

    async def existing_streams(self, stream_ids: Sequence[str]) -> set[str]:
        """Which of these streams hold at least one event."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1::text[])",
            list(stream_ids),
        )
        return {r["stream_id"] for r in rows}

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
        return [recorded_from_row(r) for r in rows]

    async def head(self) -> int:
        """The highest global position committed so far (0 for an empty store)."""
        position: int = await self._pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return position


if TYPE_CHECKING:
    # mypy holds the PostgreSQL store to the port it documents.
    _conforms: type[EventStorePort] = EventStore
