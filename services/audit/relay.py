"""The audit relay: moves access records from the audit outbox to care.audit, signed with
the pipeline key, at least once.

It wakes on the outbox's NOTIFY (and polls, in case a notification was missed), leases a
batch of due rows, produces them (acks=all) and leaves them: the audit writer deletes a
row when it appends the record. A row the writer has not taken `audit_resend_seconds`
after it was sent is sent again (a broker that lost it, a relay that died mid-batch);
the writer skips a record it already holds. Logs carry counts and ids, never a record.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from services.audit import outbox
from services.common import kafka
from services.common.dev_secrets import pipeline_keys
from services.common.log import get_logger
from services.common.pipeline_mac import PipelineKeys
from services.settings import Settings

log = get_logger(__name__)

# What the relay rides out: it backs off, reconnects and carries on.
_TRANSIENT = (
    KafkaError,
    kafka.BrokerUnavailable,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# How often an idle relay looks for rows due again (or queued while it missed a NOTIFY).
_POLL_SECONDS = 1.0


def _alone(answer: object) -> bool:
    """A message the broker refuses for what it is, not for the broker's state."""
    return isinstance(answer, MessageSizeTooLargeError)


class AuditRelay:
    """One relay's loop: wake, lease due rows, produce them signed, repeat."""

    def __init__(
        self, *, settings: Settings, pool: asyncpg.Pool[Any], keys: PipelineKeys | None = None
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._topic = settings.audit_topic
        # Loaded now: a relay without the pipeline keys fails at start, not at first send.
        self._keys = keys or pipeline_keys(settings)
        self._producer: AIOKafkaProducer | None = None
        self._news = asyncio.Event()
        self.sent = 0  # records acknowledged by the broker since start (resends included)
        self._healthy = False  # a batch went out since the last outage

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until stop is set, riding out broker and database outages."""
        backoff = 0.5
        async with self._pool.acquire() as listen_conn:
            await listen_conn.add_listener(outbox.CHANNEL, self._on_notify)
            try:
                while not stop.is_set():
                    try:
                        await self._pump(stop)
                    except _TRANSIENT as exc:
                        if self._healthy:
                            backoff, self._healthy = 0.5, False
                        log.warning(
                            "audit_relay.unavailable",
                            topic=self._topic,
                            error=type(exc).__name__,
                            retry_in_s=backoff,
                        )
                        await self._disconnect()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), backoff)
                        backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await listen_conn.remove_listener(outbox.CHANNEL, self._on_notify)
                await self._disconnect()

    def _on_notify(self, *_: object) -> None:
        self._news.set()

    async def _pump(self, stop: asyncio.Event) -> None:
        batch = self._settings.audit_relay_batch_size
        while not stop.is_set():
            self._news.clear()
            due = await outbox.claim(
                self._pool, limit=batch, resend_after=self._settings.audit_resend_seconds
            )
            if due:
                await self._send(due)
                if len(due) == batch:
                    continue
            waits = [asyncio.ensure_future(self._news.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=_POLL_SECONDS, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()

    async def _send(self, due: list[outbox.Queued]) -> None:
        """Produce the leased rows. Rows the broker could not take are given back (due
        again at once) and the error raised, to reconnect; a row refused on its own (too
        large) keeps its lease, so it is tried again after the resend interval rather than
        ahead of everything else in a tight loop."""
        try:
            producer = await self._started()
            async with asyncio.timeout(self._settings.audit_produce_timeout_seconds):
                results = [await self._produce(producer, row) for row in due]
                acks = await asyncio.gather(*results, return_exceptions=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await outbox.release(self._pool, [row.record_id for row in due])
            raise
        refused = [row for row, a in zip(due, acks, strict=True) if _alone(a)]
        failed = [
            (row, a)
            for row, a in zip(due, acks, strict=True)
            if isinstance(a, BaseException) and not _alone(a)
        ]
        if refused:
            log.warning(
                "audit_relay.refused",
                topic=self._topic,
                count=len(refused),
                record_ids=[row.record_id for row in refused[:20]],
                retry_in_s=self._settings.audit_resend_seconds,
            )
        self.sent += len(due) - len(refused) - len(failed)
        self._healthy = self._healthy or len(failed) < len(due)
        if failed:
            with contextlib.suppress(Exception):
                await outbox.release(self._pool, [row.record_id for row, _ in failed])
            raise failed[0][1]
        log.debug("audit_relay.sent", topic=self._topic, count=len(due) - len(refused))

    async def _produce(self, producer: AIOKafkaProducer, row: outbox.Queued) -> asyncio.Future[Any]:
        """The broker's answer to come; a row refused at once answers with its error."""
        headers = self._keys.sign(self._topic, row.key, row.value)
        try:
            sent: asyncio.Future[Any] = await producer.send(
                self._topic, row.value, key=row.key, headers=headers
            )
            return sent
        except MessageSizeTooLargeError as exc:
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await kafka.started_producer(
                self._settings, [self._topic], linger_ms=0
            )
        return self._producer

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        await kafka.stop_quietly(producer)
