"""Publishes queued board changes (board_outbox) to care.board-updates, in order, at least
once: rows are deleted only after Kafka acknowledged them."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas import codec
from services.tasks import store

# One publisher at a time across workers, so each team's changes reach Kafka in seq order.
_OUTBOX_LOCK = 0x6361_7265_6F75_7462  # "careoutb"
_BATCH = 500


class BoardPublisher:
    def __init__(self, pool: asyncpg.Pool[Any], producer: AIOKafkaProducer, topic: str) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._lock = asyncio.Lock()
        self.published = 0

    async def flush(self) -> int:
        """Publish everything queued; return how many updates went out. Raises the
        broker's error (the rows stay queued for the next flush)."""
        sent = 0
        async with self._lock:
            while True:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _OUTBOX_LOCK)
                    updates = await store.take_outbox(conn, _BATCH)
                    if not updates:
                        return sent
                    futures = [
                        await self._producer.send(
                            self._topic,
                            key=u.team_id.encode(),
                            value=codec.encode_board_update(u),
                        )
                        for u in updates
                    ]
                    await asyncio.gather(*futures)
                    await store.drop_outbox(conn, updates[-1].seq)
                sent += len(updates)
                self.published += len(updates)
