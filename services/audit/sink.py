"""Where access records go before a response leaves: the audit outbox in PostgreSQL
(committed; the audit relay takes them on to care.audit), or, for a process with no
database, care.audit itself (acks=all).

Fail-closed: publish() returns only once every record is durably accepted, and raises
AuditUnavailable otherwise, so the caller withholds the patient data. The embedded broker
keeps memory only, so its acks=all is not durability: every process with a database
uses the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from schemas.audit import AccessRecorded
from schemas.codec import encode_access
from services.audit import outbox
from services.audit.outbox import key_of
from services.common import kafka
from services.common.dev_secrets import pipeline_keys
from services.common.log import get_logger
from services.common.pipeline_mac import BadPipelineKeys, PipelineKeys
from services.settings import Settings

log = get_logger(__name__)


# At most one wake-up of the relays this often per sink.
WAKE_GAP_SECONDS = 0.05


class AuditUnavailable(RuntimeError):
    """The access records could not be durably accepted (the outbox, or care.audit)."""


class AuditSink(Protocol):
    async def publish(self, records: Sequence[AccessRecorded]) -> None: ...

    async def close(self) -> None: ...


class OutboxAuditSink:
    """Commits the records to the audit outbox, one statement per batch, then wakes the
    relay outside the request's path: one NOTIFY in flight per sink, the wake-ups of the
    publishes meanwhile folded into the next (the relay also polls, so a lost one only
    delays). The pool is the caller's (closed by its owner)."""

    def __init__(
        self, pool: asyncpg.Pool[Any], settings: Settings, *, wake_gap: float = WAKE_GAP_SECONDS
    ) -> None:
        self._pool = pool
        self._timeout = settings.audit_produce_timeout_seconds
        self._wake_gap = wake_gap
        self._closed = False
        self._wanted = False
        self._waker: asyncio.Task[None] | None = None

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        if not records:
            return
        if self._closed:
            raise AuditUnavailable("the audit sink is closed")
        try:
            async with asyncio.timeout(self._timeout):
                await outbox.enqueue(self._pool, records)
        except Exception as exc:  # whatever stopped the commit, nothing may leave
            log.warning("audit.unrecorded", records=len(records), error=type(exc).__name__)
            raise AuditUnavailable(type(exc).__name__) from exc
        self._wanted = True
        if self._waker is None or self._waker.done():
            self._waker = asyncio.create_task(self._wake(), name="audit-outbox-wake")

    async def _wake(self) -> None:
        while self._wanted and not self._closed:
            self._wanted = False
            try:
                await outbox.wake(self._pool)
            except Exception as exc:  # the relay's poll finds the records all the same
                log.debug("audit.relay_not_woken", error=type(exc).__name__)
                return
            # The relay gathers records for a moment after each batch anyway: a NOTIFY
            # (a commit that takes a database-wide lock) per publish would only cost.
            await asyncio.sleep(self._wake_gap)

    async def close(self) -> None:
        self._closed = True
        waker, self._waker = self._waker, None
        if waker is not None:
            waker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waker


class KafkaAuditSink:
    """A producer to care.audit, started on first use and again after any failure, so
    a broker that comes back (even empty) is used again without a restart."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.audit_topic
        self._timeout = settings.audit_produce_timeout_seconds
        self._lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._keys: PipelineKeys | None = None
        self._closed = False

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        if not records:
            return
        if self._closed:  # a late publisher must not start a producer nobody will stop
            raise AuditUnavailable("the audit sink is closed")
        error: BaseException | None = None
        try:
            # A broker that has just come back may refuse the first try (topic metadata
            # still settling): try again with a new producer while the time allows.
            async with asyncio.timeout(self._timeout):
                while True:
                    try:
                        await self._send(records)
                        return
                    except (KafkaError, OSError, kafka.BrokerUnavailable, BadPipelineKeys) as exc:
                        error = exc
                        if isinstance(exc, (MessageSizeTooLargeError, BadPipelineKeys)):
                            break  # the same records will never fit: no use trying again
                        await self._drop()
                        await asyncio.sleep(0.1)
        except TimeoutError as exc:
            error = error or exc
        log.warning("audit.unpublished", records=len(records), error=type(error).__name__)
        await self._drop()
        raise AuditUnavailable(type(error).__name__) from error

    async def _send(self, records: Sequence[AccessRecorded]) -> None:
        if self._keys is None:
            self._keys = pipeline_keys(self._settings)  # only the services can sign
        producer = await self._started()
        sent = []
        for r in records:
            key, value = key_of(r), encode_access(r)
            headers = self._keys.sign(self._topic, key, value)
            sent.append(await producer.send(self._topic, value, key=key, headers=headers))
        await asyncio.gather(*sent)

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                self._producer = await kafka.started_producer(
                    self._settings, [self._topic], linger_ms=0
                )
            return self._producer

    async def _drop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        await kafka.stop_quietly(producer)

    async def close(self) -> None:
        self._closed = True
        await self._drop()
