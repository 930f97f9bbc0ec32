"""The outbox relay: publishes the event store to Kafka by global position, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from schemas import codec
from services.common import kafka
from services.common.event_store import NOTIFY_CHANNEL, EventStore, RecordedEvent
from services.common.log import get_logger
from services.common.progress import Progress
from services.settings import Settings

log = get_logger(__name__)

# Transient broker trouble: the relay backs off, reconnects and carries on.
_BROKER_ERRORS = (KafkaError, kafka.BrokerUnavailable, OSError, TimeoutError)


# The relay's checkpoint: its position, and each partition's offsets (the partitions no
# longer listed dropped). The three parts touch different rows, so they go in one.
_SAVE_CHECKPOINT = """
WITH checkpoint AS (
    INSERT INTO relay_checkpoints (topic, position, updated_at) VALUES ($1, $2, now())
    ON CONFLICT (topic) DO UPDATE SET position = $2, updated_at = now()
), dropped AS (
    DELETE FROM relay_partition_offsets WHERE topic = $1 AND partition <> ALL($3::int[])
)
INSERT INTO relay_partition_offsets (topic, partition, last_offset, batch_floor)
SELECT $1, p, last_offset, batch_floor
FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS o(p, last_offset, batch_floor)
ON CONFLICT (topic, partition) DO UPDATE
SET last_offset = EXCLUDED.last_offset, batch_floor = EXCLUDED.batch_floor
"""


class OutboxRelay:
    """Reads the store after its checkpoint, produces each event keyed by team, and
    records the position (and each partition's offset) Kafka acknowledged.

    When the broker's log ends below an offset it once acknowledged, it has lost its
    data (the embedded broker keeps memory only): the relay starts again from
    position 0, so the store refills it.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        pool: asyncpg.Pool[Any],
        store: EventStore | None = None,
        topic: str | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._store = store or EventStore(pool)
        self._topic = topic or settings.events_topic
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._news = asyncio.Event()
        self._position = 0
        # partition -> (highest offset acknowledged, first offset of the last batch)
        self._offsets: dict[int, tuple[int, int]] = {}
        # Each event's partition is chosen here (as the producer would: by its team), so
        # the partitions checked before a batch are the ones it is sent to.
        self._partitioner = kafka.KeyedPartitioner()
        # The partitions the last batch went to: a commit's event most likely goes there too.
        self._recent: set[int] = set()
        self.published = 0  # messages acknowledged since start, for logs and tests
        self._progress = Progress()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until stop is set, riding out broker outages."""
        backoff = 0.5
        async with self._pool.acquire() as listen_conn:
            await listen_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while not stop.is_set():
                    try:
                        await self._connect()
                        backoff = 0.5
                        await self._pump(stop)
                    except _BROKER_ERRORS as exc:
                        log.warning(
                            "relay.broker_unavailable",
                            topic=self._topic,
                            error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=backoff,
                        )
                        await self._disconnect()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), backoff)
                        backoff = min(backoff * 2, 5.0)
            finally:
                await listen_conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                await self._disconnect()

    def _on_notify(self, *_: object) -> None:
        self._news.set()

    async def _connect(self) -> None:
        # No linger: a batch is sent whole before its acks are awaited (one request), and
        # a lone event, a command's, goes at once: 2 ms off every mutation's push.
        self._producer = kafka.make_producer(self._settings, linger_ms=0)
        await self._producer.start()
        self._consumer = kafka.make_consumer(self._settings)
        await self._consumer.start()

    async def _disconnect(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._producer = self._consumer = None

    async def _pump(self, stop: asyncio.Event) -> None:
        await self._load_checkpoint()
        await self._check_broker_kept_its_log()
        last_check = time.monotonic()
        interval = self._settings.relay_watermark_check_seconds
        woken = True
        while not stop.is_set():
            self._news.clear()
            # Before a batch is sent, the partitions it goes to are checked, so that new
            # events never reach an emptied broker ahead of the refill (which would break
            # per-team order there); every partition is checked every `interval`, so a
            # loss where nothing is being sent is refilled too. The check is the broker's
            # ListOffsets, whose cost grows with what the broker holds (the embedded one
            # scans its log): only what a batch needs is asked.
            read = self._store.read_all(self._position, self._settings.relay_batch_size)
            if time.monotonic() - last_check >= interval:
                batch, lost = await asyncio.gather(read, self._check_broker_kept_its_log())
                last_check = time.monotonic()
                checked = None
            elif woken and self._recent:
                # Woken by a commit, the relay expects a batch, most likely to the
                # partitions of the last: those are checked beside the read.
                checked = set(self._recent)
                batch, lost = await asyncio.gather(read, self._check_broker_kept_its_log(checked))
            else:
                batch, lost, checked = await read, False, set()
            if lost:
                continue  # the batch was read before the start-over: read again
            if not batch:
                try:
                    await asyncio.wait_for(self._news.wait(), min(interval, 0.5))
                    woken = True
                except TimeoutError:
                    woken = False
                continue
            placed = await self._placed(batch)
            rest = set(placed) - checked if checked is not None else set()
            if rest and await self._check_broker_kept_its_log(rest):
                continue
            await self._publish(batch, placed)
            # A full batch leaves more to read at once (its partitions checked beside
            # that read); after a short one, the next read most likely finds nothing.
            woken = len(batch) >= self._settings.relay_batch_size

    async def _placed(self, batch: Sequence[RecordedEvent]) -> list[int]:
        """Each event's partition: by its team, as the producer would place it."""
        assert self._producer is not None
        parts = sorted(await self._producer.partitions_for(self._topic))
        return [
            self._partitioner(recorded.envelope.team_id.encode(), parts, parts)
            for recorded in batch
        ]

    async def _publish(self, batch: Sequence[RecordedEvent], placed: Sequence[int]) -> None:
        assert self._producer is not None
        futures = []
        for recorded, partition in zip(batch, placed, strict=True):
            env = recorded.envelope
            try:
                futures.append(
                    await self._producer.send(
                        self._topic,
                        value=codec.encode(env),
                        key=env.team_id.encode(),
                        partition=partition,
                        headers=[
                            (kafka.POSITION_HEADER, str(recorded.position).encode()),
                            (kafka.TYPE_HEADER, env.type.encode()),
                        ],
                    )
                )
            except AssertionError as exc:
                # aiokafka asserts that a partition it is given exists: the topic was
                # made again with fewer partitions while the batch was sent. Like any
                # broker trouble: reconnect, then read from the checkpoint again.
                raise kafka.BrokerUnavailable(f"partition {partition} is gone") from exc
        acks: list[RecordMetadata] = list(await asyncio.gather(*futures))
        if any(ack.offset <= self._offsets.get(ack.partition, (-1, -1))[0] for ack in acks):
            await self._start_over("an acknowledged offset went backwards")
            return
        self._recent = {ack.partition for ack in acks}
        for partition in self._recent:
            offsets = [ack.offset for ack in acks if ack.partition == partition]
            self._offsets[partition] = (max(offsets), min(offsets))
        self._position = batch[-1].position
        self.published += len(acks)
        await self._save_checkpoint()
        log.debug("relay.published", topic=self._topic, count=len(acks), position=self._position)
        if (done := self._progress.add(len(acks))) is not None:
            head = await self._store.head()
            log.info(
                "relay.progress",
                topic=self._topic,
                published=done,
                position=self._position,
                lag=max(0, head - self._position),
            )

    async def _check_broker_kept_its_log(self, only: set[int] | None = None) -> bool:
        """Start over (and say so) when the topic is gone or a partition's log ends below
        the last batch Kafka acknowledged there; True when it started over. `only`: the
        partitions to look at (None: every one)."""
        assert self._consumer is not None
        parts = {tp.partition for tp in await kafka.partitions_for(self._consumer, self._topic)}
        if not parts:
            if self._offsets:
                await self._start_over("the topic is gone")
                return True
            await kafka.ensure_topics(self._settings)
            return False
        known = {p: o for p, o in self._offsets.items() if only is None or p in only}
        tps = [TopicPartition(self._topic, p) for p in known if p in parts]
        ends = await self._consumer.end_offsets(tps) if tps else {}
        for partition, (_last, floor) in known.items():
            end = ends.get(TopicPartition(self._topic, partition), 0)
            if end <= floor:
                await self._start_over(
                    f"partition {partition} ends at {end}, before the last acknowledged batch"
                )
                return True
        return False

    async def _start_over(self, why: str) -> None:
        log.warning(
            "relay.broker_lost_data",
            topic=self._topic,
            reason=why,
            republish_from=0,
            was_at=self._position,
        )
        await kafka.ensure_topics(self._settings)
        self._position = 0
        self._offsets = {}
        await self._save_checkpoint()

    async def _load_checkpoint(self) -> None:
        async with self._pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM relay_checkpoints WHERE topic = $1", self._topic
            )
            rows = await conn.fetch(
                "SELECT partition, last_offset, batch_floor FROM relay_partition_offsets "
                "WHERE topic = $1",
                self._topic,
            )
        self._position = position or 0
        self._offsets = {r["partition"]: (r["last_offset"], r["batch_floor"]) for r in rows}

    async def _save_checkpoint(self) -> None:
        # One statement (so one round trip, and its own transaction): the batch after
        # this one waits on it.
        parts = sorted(self._offsets)
        await self._pool.execute(
            _SAVE_CHECKPOINT,
            self._topic,
            self._position,
            parts,
            [self._offsets[p][0] for p in parts],
            [self._offsets[p][1] for p in parts],
        )


async def relay_positions(pool: asyncpg.Pool[Any]) -> dict[str, int]:
    """How far the relay has had Kafka acknowledge the store, per topic."""
    rows = await pool.fetch("SELECT topic, position FROM relay_checkpoints")
    return {r["topic"]: r["position"] for r in rows}
