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

from schemas import codec
from schemas.audit import PACKED_MAX
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
# After a batch that left nothing due, the relay lets records gather this long before it
# looks again: a lease and a send cost about the same for one row as for hundreds, and a
# record reaching the log a moment later changes nothing (it was committed to the outbox
# before its response left).
_GATHER_SECONDS = 0.1
# A pack's size at most (a single record larger than this goes alone): well below the
# broker's message limit (1 MiB by default).
PACK_BYTES = 256 * 1024


def packed(due: list[outbox.Queued]) -> list[list[outbox.Queued]]:
    """The rows in messages: each key's rows together (in the order they were queued, as
    one patient's records stay in order on one partition), at most PACKED_MAX records and
    PACK_BYTES of records a message (a larger record goes alone)."""
    packs: list[list[outbox.Queued]] = []
    open_pack: dict[bytes, tuple[list[outbox.Queued], int]] = {}  # key -> (pack, bytes)
    for row in due:
        pack, size = open_pack.get(row.key, ([], 0))
        if not pack or len(pack) >= PACKED_MAX or size + len(row.value) > PACK_BYTES:
            pack, size = [], 0
            packs.append(pack)
        pack.append(row)
        open_pack[row.key] = (pack, size + len(row.value))
    return packs


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
        self.messages = 0  # and the messages that carried them
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _GATHER_SECONDS)
            waits = [asyncio.ensure_future(self._news.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=_POLL_SECONDS, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()

    async def _send(self, due: list[outbox.Queued]) -> None:
        """Produce the leased rows, a patient's packed into one message (packs). Rows the
        broker could not take are given back (due again at once) and the error raised, to
        reconnect; a message refused on its own (too large) keeps its rows' leases, so they
        are tried again after the resend interval rather than ahead of everything else in
        a tight loop."""
        packs = packed(due)
        try:
            producer = await self._started()
            async with asyncio.timeout(self._settings.audit_produce_timeout_seconds):
                results = [await self._produce(producer, pack) for pack in packs]
                acks = await asyncio.gather(*results, return_exceptions=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await outbox.release(self._pool, [row.record_id for row in due])
            raise
        refused = [row for pack, a in zip(packs, acks, strict=True) if _alone(a) for row in pack]
        failed = [
            (row, a)
            for pack, a in zip(packs, acks, strict=True)
            if isinstance(a, BaseException) and not _alone(a)
            for row in pack
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
        self.messages += sum(1 for a in acks if not isinstance(a, BaseException))
        self._healthy = self._healthy or len(failed) < len(due)
        if failed:
            with contextlib.suppress(Exception):
                await outbox.release(self._pool, [row.record_id for row, _ in failed])
            raise failed[0][1]
        log.debug("audit_relay.sent", topic=self._topic, count=len(due) - len(refused))

    async def _produce(
        self, producer: AIOKafkaProducer, pack: list[outbox.Queued]
    ) -> asyncio.Future[Any]:
        """The broker's answer to come; a message refused at once answers with its error.
        A row on its own goes as the record it is; several as an AccessRecords pack."""
        key = pack[0].key
        value = pack[0].value if len(pack) == 1 else codec.pack_access([r.value for r in pack])
        headers = self._keys.sign(self._topic, key, value)
        try:
            sent: asyncio.Future[Any] = await producer.send(
                self._topic, value, key=key, headers=headers
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
