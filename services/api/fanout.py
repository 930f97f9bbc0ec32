"""Subscriptions fan-out: each API process reads care.board-updates and hands every update
to the subscriptions that want it, through a bounded queue per subscription.

A subscriber that falls behind by more than its queue holds is cut off (its WebSocket
closed with a reason saying so) rather than slowing the others or growing memory. Updates
arrive at least once; a repeat (a seq delivered lately) is dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import codec
from schemas.board import BoardUpdate
from services.api.queues import SmallQueue
from services.common import kafka
from services.common.log import get_logger
from services.common.pipeline_mac import PipelineKeys, Refused
from services.common.projection import ERROR_HEADER, SOURCE_HEADER
from services.settings import Settings

_log = get_logger(__name__)

# WebSocket close code and reason for a subscriber that could not keep up: 1013, "try
# again later", which graphql-ws and other clients retry (they give up on 4429, "too many
# initialisation requests"). The reason must stay under 123 bytes.
OVERFLOW_CLOSE_CODE = 1013
OVERFLOW_REASON = "Too slow: board updates overflowed your queue. Reconnect and refetch the board."


class Overflowed(Exception):
    """The subscription's queue overflowed; it has ended."""


@dataclass(eq=False, slots=True)
class Subscription:
    """One GraphQL subscription's place in the hub: its updates wait in a bounded queue,
    read either by the subscription's own task (`next`) or, once handed to a pump, by a
    task that runs only while updates wait (`hand_to`): an idle subscriber then holds no
    task of its own."""

    team_id: str
    huddle_id: str | None
    queue: SmallQueue[BoardUpdate]
    on_overflow: Callable[[], None]
    overflowed: bool = False
    pump: Callable[[BoardUpdate], Awaitable[None]] | None = None
    draining: asyncio.Future[None] | None = None

    def offer(self, update: BoardUpdate) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed = True
            self.stop()
            self.on_overflow()
            return
        if self.pump is not None and self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())

    async def next(self) -> BoardUpdate:
        if self.overflowed:
            raise Overflowed(OVERFLOW_REASON)
        return await self.queue.get()

    def hand_to(self, pump: Callable[[BoardUpdate], Awaitable[None]]) -> None:
        """From now on `pump` takes each update, in order, one at a time (those waiting
        first); it never runs after `stop`."""
        self.pump = pump
        if not self.queue.empty() and self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())

    def stop(self) -> None:
        """No more pumping (an update being pumped is cancelled)."""
        self.pump = None
        draining, self.draining = self.draining, None
        if draining is not None and draining is not asyncio.current_task():
            draining.cancel()

    async def _drain(self) -> None:
        try:
            while (pump := self.pump) is not None and not self.queue.empty():
                await pump(self.queue.get_nowait())
        finally:
            if self.draining is asyncio.current_task():
                self.draining = None


def wants(huddle_id: str | None, update: BoardUpdate) -> bool:
    """Whether a subscription (to a team's board, or to one of its huddles) hears of an
    update: board subscribers get task cards, goals whose progress moved and patients
    whose cards are to be decided again, huddle subscribers their huddle's changes, and
    all of the team's hear of roster changes (each re-checks its caller's membership)."""
    if update.kind == "roster":
        return True
    if huddle_id is None:
        return update.kind in ("task", "goal", "consent")
    return update.kind == "huddle" and update.huddle_id == huddle_id


class _Seen:
    """The seqs delivered lately. Updates come at least once and, when workers commit out
    of seq order, not always in seq order (a task's own changes always are): a repeat is
    one seen lately, not merely one at or below the highest seen."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._order: deque[int] = deque()
        self._set: set[int] = set()

    def first_time(self, seq: int) -> bool:
        if seq in self._set:
            return False
        self._set.add(seq)
        self._order.append(seq)
        if len(self._order) > self._size:
            self._set.discard(self._order.popleft())
        return True


@dataclass
class Hub:
    settings: Settings
    # The pipeline keys: an update is pushed only if a worker signed it. None: every
    # update is refused (a hub that cannot verify pushes nothing).
    keys: PipelineKeys | None = None
    _teams: dict[str, set[Subscription]] = field(default_factory=dict)
    _seen: _Seen = field(default_factory=_Seen)
    # Where to resume each partition of care.board-updates after reconnecting.
    _next_offsets: dict[int, int] = field(default_factory=dict)
    delivered: int = 0
    overflows: int = 0
    # Subscriptions that joined the hub, and that left it (overflowed ones included).
    started: int = 0
    ended: int = 0
    # Updates refused because their MAC did not verify, by (topic, reason).
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    _dlq: AIOKafkaProducer | None = None
    # Readers waiting for a team's read models to move (read-your-writes), woken by the
    # team's next update.
    _moved: dict[str, asyncio.Event] = field(default_factory=dict)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._teams.values())

    @contextlib.contextmanager
    def subscribe(
        self, team_id: str, *, huddle_id: str | None = None, on_overflow: Callable[[], None]
    ) -> Iterator[Subscription]:
        """A subscription to a team's board (or one of its huddles) while the block runs."""
        sub = self.join(team_id, huddle_id=huddle_id, on_overflow=on_overflow)
        try:
            yield sub
        finally:
            self.leave(sub)

    def join(
        self, team_id: str, *, huddle_id: str | None = None, on_overflow: Callable[[], None]
    ) -> Subscription:
        """A subscription to a team's board (or one of its huddles), until `leave`."""
        sub = Subscription(
            team_id,
            huddle_id,
            SmallQueue(maxsize=self.settings.subscriber_queue_size),
            on_overflow,
        )
        self._teams.setdefault(team_id, set()).add(sub)
        self.started += 1
        return sub

    def leave(self, sub: Subscription) -> None:
        """The subscription ends: it is offered nothing more (once only)."""
        subs = self._teams.get(sub.team_id)
        if subs is None or sub not in subs:
            return
        sub.stop()
        self.ended += 1
        subs.discard(sub)
        if not subs:
            del self._teams[sub.team_id]
        if sub.overflowed:
            self.overflows += 1

    def dispatch(self, update: BoardUpdate) -> None:
        """Hand an update to the subscriptions that want it (`wants`)."""
        if not self._seen.first_time(update.seq):
            return  # published again after a worker restart: already delivered
        if (moved := self._moved.pop(update.team_id, None)) is not None:
            moved.set()
        for sub in list(self._teams.get(update.team_id, ())):
            if wants(sub.huddle_id, update):
                sub.offer(update)
                self.delivered += 1

    async def moved(self, team_id: str, seconds: float) -> None:
        """Return when the team's next update arrives, or after `seconds` (a change that
        tells subscribers nothing moves a read model too: wait no longer than that)."""
        event = self._moved.setdefault(team_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Read care.board-updates until stop is set: from its end at first, then, after a
        broker outage, from where it left off (from the start of a partition the broker
        lost, as its offsets restart at zero)."""
        backoff = 0.5
        topic = self.settings.board_updates_topic
        while not stop.is_set():
            consumer = kafka.make_consumer(self.settings, auto_offset_reset="earliest")
            try:
                await consumer.start()
                partitions = await kafka.partitions_for(consumer, topic)
                if not partitions:
                    raise kafka.BrokerUnavailable(f"no topic {topic} yet")
                consumer.assign(partitions)
                for tp in partitions:
                    if tp.partition in self._next_offsets:
                        consumer.seek(tp, self._next_offsets[tp.partition])
                    else:
                        await consumer.seek_to_end(tp)
                backoff = 0.5
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200)
                    for tp, messages in batches.items():
                        for message in messages:
                            await self._receive(message)
                            self._next_offsets[tp.partition] = message.offset + 1
            except (KafkaError, OSError, kafka.BrokerUnavailable) as exc:
                _log.warning(
                    "fanout.broker_unavailable", error=type(exc).__name__, retry_in_s=backoff
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
        await self._close_dlq()

    async def _receive(self, message: Any) -> None:
        """Verify, decode and dispatch one message of care.board-updates."""
        try:
            if self.keys is None:
                raise Refused("no pipeline keys loaded")
            self.keys.verify(message.topic, message.key, message.value, message.headers)
        except Refused as exc:
            # Not published by a worker: never pushed. Logged by position only.
            self.refused[(message.topic, str(exc))] += 1
            _log.warning(
                "fanout.refused",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=str(exc),
            )
            await self._dead_letter(message, f"fanout: refused, not signed by the services: {exc}")
            return
        self._apply(message.value)

    def _apply(self, value: bytes | None) -> None:
        try:
            update = codec.decode_board_update(value or b"")
        except codec.CodecError as exc:
            _log.warning("fanout.bad_update", error=str(exc)[:200])
            return
        self.dispatch(update)

    async def _dead_letter(self, message: Any, reason: str) -> None:
        """Put a refused update on the dead-letter topic with the reason, as the worker
        does; a broker that refuses that too is logged, never fatal."""
        headers = [
            *((k, v) for k, v in (message.headers or ()) if k != ERROR_HEADER),
            (ERROR_HEADER, reason.encode()[:4000]),
            (SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
        ]
        try:
            if self._dlq is None:
                producer = kafka.make_producer(self.settings, linger_ms=0)
                await producer.start()
                self._dlq = producer
            await self._dlq.send_and_wait(
                self.settings.dlq_topic, message.value, key=message.key, headers=headers
            )
        except (KafkaError, OSError) as exc:
            _log.warning(
                "fanout.dead_letter_failed",
                partition=message.partition,
                offset=message.offset,
                error=type(exc).__name__,
            )
            await self._close_dlq()

    async def _close_dlq(self) -> None:
        producer, self._dlq = self._dlq, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2)
