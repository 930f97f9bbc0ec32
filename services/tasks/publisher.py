"""Publishes queued board changes (board_outbox) to care.board-updates, at least once: a
row is deleted only after Kafka acknowledged it.

One worker publishes at a time (a session advisory lock, tried, never waited for), so a
team's changes go out in seq order; no transaction or lock is held while Kafka answers
except that one, which only makes other workers skip their flush (the holder keeps
going until the outbox is empty, and the periodic sweep catches what it missed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from services.common.pipeline_mac import PipelineKeys
from services.tasks import store

_OUTBOX_LOCK = 0x6361_7265_6F75_7462  # "careoutb"
_BATCH = 500


class BoardPublisher:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        producer: AIOKafkaProducer,
        topic: str,
        keys: PipelineKeys,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = topic
        # Each update is signed, so the API hub pushes only what a worker published.
        self._keys = keys
        self._lock = asyncio.Lock()
        self.published = 0

    async def flush(self) -> int:
        """Publish everything queued; return how many updates went out (0 when another
        worker is publishing). Raises the broker's error; the rows stay queued."""
        sent = 0
        async with self._lock, self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _OUTBOX_LOCK):
                return 0
            try:
                while updates := await store.take_outbox(conn, _BATCH):
                    futures = []
                    for u in updates:
                        key = u.team_id.encode()
                        futures.append(
                            await self._producer.send(
                                self._topic,
                                key=key,
                                value=u.value,
                                headers=self._keys.sign(self._topic, key, u.value),
                            )
                        )
                    await asyncio.gather(*futures)
                    await store.drop_outbox(conn, [u.seq for u in updates])
                    sent += len(updates)
                    self.published += len(updates)
                    # A short take emptied the queue as it stood; a change committed
                    # since then was followed by a kick, which flushes again.
                    if len(updates) < _BATCH:
                        break
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _OUTBOX_LOCK)
        return sent
