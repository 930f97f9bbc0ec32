"""The generic write side: load an aggregate from the event store, decide, append (with the
follow-ups the command causes in other streams), return the state.

One handler serves every aggregate: the domain's `decide` says what happens, the event
store's expected-version check makes concurrent edits safe. A caller that sent
`expectedVersion` gets CONFLICT as soon as the record moved on; one that did not has its
command re-decided against the newer state (a few times) before giving up.

What a command writes beyond its own stream (the board task an intervention starts) is
registered once, in a FollowUpRegistry the Handler is built with, so every caller of the
write side keeps those invariants, not only the ones that remember to ask.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from schemas.base import Event
from schemas.envelope import Envelope
from services.common import dates
from services.common.commands import Command
from services.common.domain import AggregateType, Meta
from services.common.errors import StateConflict
from services.common.event_store import (
    Claim,
    ClaimTaken,
    EventStorePort,
    NewEvent,
    StreamWrite,
    WrongExpectedVersion,
)
from services.common.log import get_logger

S = TypeVar("S")
Other = TypeVar("Other")
_log = get_logger(__name__)
# Each failed attempt means another writer succeeded, so N concurrent writers of one
# record need at most N - 1 retries; past this many, the record is too busy to wait for.
_RETRIES = 25


@dataclass
class Commits:
    """The highest event-store position the commands of one request committed at (0:
    none committed), so the request's answer can say it (read-your-writes)."""

    position: int = 0


_commits: ContextVar[Commits | None] = ContextVar("commits", default=None)


def track_commits() -> Commits:
    """Note, from now on in this task (and the tasks it starts), the positions the
    handler commits at, in the object returned."""
    commits = Commits()
    _commits.set(commits)
    return commits


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """An aggregate as of its latest event: its state (None: never created) and version."""

    state: S | None
    version: int
    updated_at: datetime | None = None


# An aggregate whose id was just generated: nothing to read.
NEW: Loaded[Any] = Loaded(None, 0)


@dataclass(frozen=True)
class Caller:
    """Who sent the command, and the ids that tie its events to the request."""

    actor_id: str
    correlation_id: str


@dataclass(frozen=True)
class Scope:
    """Where the command's events belong: the team (Kafka key) and the patient, if any."""

    team_id: str
    patient_id: str | None = None


@dataclass(frozen=True)
class FollowUp:
    """Events a command writes to another stream in the same transaction: a task it
    starts (expected_version 0) or closes (the version the task was read at)."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int = 0


# What else a command writes, given the repository (to read what it closes), the events it
# decided, the aggregate they were decided on and the command's scope; called afresh on
# each attempt, so what it reads is as current as that state.
FollowUpRule = Callable[
    ["Repository", Sequence[Event], "Loaded[Any]", "Scope"], Awaitable[Sequence[FollowUp]]
]


@dataclass(frozen=True)
class FollowUpRegistry:
    """The follow-up rules of each kind of aggregate (by stream prefix), in order."""

    rules: Mapping[str, tuple[FollowUpRule, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, *entries: tuple[AggregateType[Any], FollowUpRule]) -> FollowUpRegistry:
        rules: dict[str, tuple[FollowUpRule, ...]] = {}
        for kind, rule in entries:
            rules[kind.stream_prefix] = (*rules.get(kind.stream_prefix, ()), rule)
        return cls(rules)

    def for_kind(self, kind: AggregateType[Any]) -> tuple[FollowUpRule, ...]:
        return self.rules.get(kind.stream_prefix, ())


# A write side whose commands cause nothing beyond their own stream.
NO_FOLLOW_UPS = FollowUpRegistry()


class StaleVersion(StateConflict):
    """The caller's expectedVersion is behind the record's."""

    def __init__(self, what: str, aggregate_id: str, expected: int, actual: int) -> None:
        if expected < actual:
            message = (
                f"The {what} {aggregate_id} was changed by someone else since you loaded it "
                f"(it is at version {actual}, you sent expectedVersion {expected}); "
                "reload it and try again."
            )
        else:
            message = (
                f"The {what} {aggregate_id} is at version {actual}; expectedVersion "
                f"{expected} is ahead of it. Send the version you last read."
            )
        super().__init__(message)
        self.extensions["currentVersion"] = actual


def new_id() -> str:
    """A new aggregate id."""
    return str(uuid.uuid4())


def fold(kind: AggregateType[S], envelopes: Sequence[Envelope], start: Loaded[S]) -> Loaded[S]:
    state, version, updated_at = start.state, start.version, start.updated_at
    for env in envelopes:
        meta = Meta(actor_id=env.actor_id, occurred_at=env.occurred_at, team_id=env.team_id)
        state = kind.evolve(state, env.payload, meta)
        version, updated_at = env.stream_version, env.occurred_at
    return Loaded(state, version, updated_at)


def _storable(aggregate_id: str) -> bool:
    # No stored id contains NUL (commands refuse it), and PostgreSQL cannot even compare
    # one: such an id names nothing.
    return "\x00" not in aggregate_id


class Repository:
    """Aggregates read from the event store (each read is current: read-your-writes).

    With `remember` > 0 it keeps that many recently used aggregates (their states are
    immutable) and reads only the events after the version it holds: still one query,
    but a long-lived plan is not decoded and folded from its first event every time."""

    def __init__(self, store: EventStorePort, *, remember: int = 0) -> None:
        self.store = store
        self._remember = remember
        self._known: OrderedDict[str, Loaded[Any]] = OrderedDict()

    async def load(self, kind: AggregateType[S], aggregate_id: str) -> Loaded[S]:
        if not _storable(aggregate_id):
            return Loaded(None, 0)
        stream_id = kind.stream_id(aggregate_id)
        known: Loaded[S] = self._known.get(stream_id, NEW)
        envelopes = await self.store.read_stream(stream_id, after_version=known.version)
        return self._folded(kind, stream_id, envelopes, known)

    async def load_with(
        self,
        kind: AggregateType[S],
        aggregate_id: str,
        other: AggregateType[Other],
        other_id: Callable[[S], str | None],
    ) -> tuple[Loaded[S], Loaded[Other] | None]:
        """The aggregate, and the one `other_id` names from its state (its team, say; None:
        none wanted); the second is None when the aggregate does not exist or none is
        wanted. `other_id` must name the same aggregate for the whole life of the first.

        When the aggregate is already known, both are read in one query (one round trip
        instead of two, each read as `load` reads it); else one after the other."""
        if not _storable(aggregate_id):
            return Loaded(None, 0), None
        stream_id = kind.stream_id(aggregate_id)
        known: Loaded[S] = self._known.get(stream_id, NEW)
        if known.state is None:
            loaded = await self.load(kind, aggregate_id)
            wanted = other_id(loaded.state) if loaded.state is not None else None
            return loaded, await self.load(other, wanted) if wanted is not None else None
        wanted = other_id(known.state)
        if wanted is None or not _storable(wanted):
            return await self.load(kind, aggregate_id), None
        other_stream = other.stream_id(wanted)
        other_known: Loaded[Other] = self._known.get(other_stream, NEW)
        news = await self.store.read_streams_after(
            {stream_id: known.version, other_stream: other_known.version}
        )
        loaded = self._folded(kind, stream_id, news.get(stream_id, []), known)
        return loaded, self._folded(other, other_stream, news.get(other_stream, []), other_known)

    def _folded(
        self, kind: AggregateType[S], stream_id: str, envelopes: list[Envelope], known: Loaded[S]
    ) -> Loaded[S]:
        loaded = fold(kind, envelopes, known)
        self.remember(stream_id, loaded)
        # Loads that overlapped (a team's subscribers reconnecting at once) each folded
        # their own copy: all but the one kept are let go, so the state is held once.
        held = self._known.get(stream_id)
        return held if held is not None and held.version == loaded.version else loaded

    def remember(self, stream_id: str, loaded: Loaded[Any]) -> None:
        """Keep the aggregate as of this version (a later one wins over an earlier; of
        two at one version, the one kept first stays)."""
        if not self._remember or loaded.state is None:
            return
        known = self._known.get(stream_id)
        if known is None or known.version < loaded.version:
            self._known[stream_id] = loaded
        self._known.move_to_end(stream_id)
        while len(self._known) > self._remember:
            self._known.popitem(last=False)

    async def load_many(self, kind: AggregateType[S], ids: Sequence[str]) -> list[Loaded[S]]:
        """The aggregates that exist among ids, in the order of ids."""
        ids = [i for i in ids if _storable(i)]
        streams = await self.store.read_streams([kind.stream_id(i) for i in ids])
        loaded = []
        for aggregate_id in dict.fromkeys(ids):
            envelopes = streams.get(kind.stream_id(aggregate_id))
            if envelopes:
                loaded.append(fold(kind, envelopes, Loaded(None, 0)))
        return loaded

    async def ids_for_patient(
        self, kind: AggregateType[Any], patient_id: str, started_by: type[Event]
    ) -> list[str]:
        """Ids of the patient's aggregates of this kind (those `started_by` created)."""
        if not _storable(patient_id):
            return []
        streams = await self.store.streams_started_for_patient(patient_id, started_by.event_type)
        return [s.removeprefix(kind.stream_prefix) for s in streams]

    async def load_for_patients(
        self, kind: AggregateType[S], patient_ids: Sequence[str], started_by: type[Event]
    ) -> list[Loaded[S]]:
        """The patients' aggregates of this kind (those `started_by` created), oldest first."""
        ids = [p for p in dict.fromkeys(patient_ids) if _storable(p)]
        if not ids:
            return []
        streams = await self.store.streams_of_patients(ids, started_by.event_type)
        return [fold(kind, envelopes, Loaded(None, 0)) for envelopes in streams.values()]

    async def team_has(self, team_id: str, event: type[Event]) -> bool:
        """Whether an `event` was ever recorded for the team (a patient enrolled on it)."""
        if not _storable(team_id):
            return False
        return await self.store.team_holds(team_id, event.event_type)


class Handler:
    """Runs commands against aggregates in the event store.

    `follow_ups` is what commands cause in other streams (required: a write side built
    without the registry would let an intervention exist without its task); a taken
    claim is refused with `claim_messages[scope]`, in words for the caller."""

    def __init__(
        self,
        repository: Repository,
        *,
        follow_ups: FollowUpRegistry,
        claim_messages: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = dates.utcnow,
    ) -> None:
        self.repository = repository
        self.follow_ups = follow_ups
        self.claim_messages = dict(claim_messages or {})
        self.clock = clock

    async def execute(
        self,
        kind: AggregateType[S],
        aggregate_id: str,
        command: Command,
        *,
        caller: Caller,
        scope: Scope,
        expected_version: int | None = None,
        claims: Sequence[Claim] = (),
        known: Loaded[S] | None = None,
    ) -> Loaded[S]:
        """Decide the command against the latest state and append what it produced.

        `known` is the aggregate as the caller just loaded it (to authorize), or NEW for an
        id just generated: the first attempt decides on it instead of reading again. If it
        is already stale, the append's version check says so and the retry reads afresh.
        Returns the aggregate after the change (unchanged when the command was a no-op).
        """
        if kind.decide is None:
            raise TypeError(f"{kind.name} has no commands")
        for attempt in range(_RETRIES):
            if attempt == 0 and known is not None:
                loaded = known
            else:
                loaded = await self.repository.load(kind, aggregate_id)
            if expected_version is not None and loaded.version != expected_version:
                raise StaleVersion(kind.name, aggregate_id, expected_version, loaded.version)
            events = kind.decide(command, loaded.state, self.clock())
            if not events:
                return loaded
            news = [self._new(e, caller, scope) for e in events]
            main = StreamWrite(kind.stream_id(aggregate_id), loaded.version, news, claims)
            others = [
                follow_up
                for rule in self.follow_ups.for_kind(kind)
                for follow_up in await rule(self.repository, events, loaded, scope)
            ]
            writes = [main, *self._follow_ups(others, news, caller, scope)]
            try:
                recorded = await self.repository.store.append_many(writes)
            except WrongExpectedVersion as exc:
                if expected_version is not None and exc.stream_id == main.stream_id:
                    raise StaleVersion(
                        kind.name, aggregate_id, expected_version, exc.actual
                    ) from None
                # Someone else wrote first: decide again on what they left, after a short,
                # random pause so that a crowd of writers does not collide in lock step.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
                continue
            except ClaimTaken as exc:
                raise StateConflict(
                    self.claim_messages.get(exc.scope, "That value is already taken.")
                ) from None
            after = fold(kind, [r.envelope for r in recorded[0]], loaded)
            if (commits := _commits.get()) is not None:
                top = max(events[-1].position for events in recorded if events)
                commits.position = max(commits.position, top)
            self.repository.remember(main.stream_id, after)
            # Ids and event types only: payloads hold PHI.
            _log.info(
                "command_applied",
                aggregate=kind.name,
                aggregate_id=aggregate_id,
                team_id=scope.team_id,
                patient_id=scope.patient_id,
                version=after.version,
                events=[e.event.event_type for e in news],
                position=recorded[0][-1].position,
            )
            return after
        raise StateConflict(
            f"The {kind.name} {aggregate_id} is being changed by others right now; try again."
        )

    @staticmethod
    def _new(event: Event, caller: Caller, scope: Scope, cause: str | None = None) -> NewEvent:
        return NewEvent(
            event=event,
            team_id=scope.team_id,
            patient_id=scope.patient_id,
            actor_id=caller.actor_id,
            correlation_id=caller.correlation_id,
            causation_id=cause,
            event_id=uuid.uuid4(),
        )

    def _follow_ups(
        self,
        follow_ups: Sequence[FollowUp],
        news: Sequence[NewEvent],
        caller: Caller,
        scope: Scope,
    ) -> list[StreamWrite]:
        cause = str(news[0].event_id)
        return [
            StreamWrite(
                f.stream_id,
                f.expected_version,
                [self._new(e, caller, scope, cause) for e in f.events],
            )
            for f in follow_ups
        ]
