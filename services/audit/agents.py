"""The audit writer: a Faust agent that appends care.audit's access records to the audit
log, one hash chain per partition, and a timer that signs checkpoints of chain heads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from math import inf
from typing import Any

import asyncpg
import faust

from schemas.audit import AccessRecorded
from schemas.codec import CodecError, decode_access_records
from services.audit import store
from services.audit.keys import Keyring
from services.common import db
from services.common.dev_secrets import pipeline_keys
from services.common.log import get_logger
from services.common.pipeline_mac import Refused
from services.common.progress import Progress
from services.common.worker import (
    AUDIT_APPENDED,
    PIPELINE_REFUSED,
    TRANSIENT,
    DeadLetter,
    header_items,
    raw_topic,
)
from services.settings import Settings

log = get_logger(__name__)

BATCH = 1000
# How long the writer lets records gather before it appends them: an append costs about
# the same for one record as for a hundred (a transaction, a COPY, the tree's frontier), so
# at a thousand records a second a record waits a fifth of a second for less than a tenth
# of the work. The outbox holds each record until its append commits.
GATHER_SECONDS = 0.2
# Access times outside these bounds are a broken clock, not an access: dead-lettered.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=300)


def install(app: faust.App, settings: Settings, to_dlq: DeadLetter) -> None:
    writer = AuditWriter(settings)
    # Loaded at start: a worker without the pipeline keys cannot tell genuine records
    # from forged ones, so it refuses to start rather than append either.
    keys = pipeline_keys(settings)
    log.info("audit.pipeline_keys_loaded", source=keys.source, current=keys.current)
    progress = Progress()

    @app.agent(raw_topic(app, settings.audit_topic), name="audit")
    async def write_audit(stream: Any) -> None:
        async for batch in stream.take_events(BATCH, within=GATHER_SECONDS):
            by_chain: dict[int, list[tuple[Any, AccessRecorded]]] = {}
            for event in batch:
                message = event.message
                try:
                    # Only the services hold the key: anything else on care.audit is forged.
                    keys.verify(message.topic, message.key, message.value, header_items(message))
                except Refused as exc:
                    PIPELINE_REFUSED.labels(message.topic, str(exc)).inc()
                    await to_dlq(
                        message,
                        f"audit: refused, not signed by the services: {exc}",
                        kind="refused-mac",
                    )
                    continue
                try:
                    records = decode_access_records(message.value)
                except CodecError as exc:
                    await to_dlq(message, f"audit: not an access record: {exc}", kind="undecodable")
                    continue
                latest = datetime.now(UTC) + LATEST_AHEAD
                broken = [r for r in records if not EARLIEST <= r.at <= latest]
                if broken:
                    # The message goes as it came; the reason names the records it held
                    # back (ids only), and the others are appended all the same.
                    named = "" if len(records) == 1 else f" ({_ids(broken)})"
                    await to_dlq(
                        message, f"audit: access time out of range{named} (a broken clock?)"
                    )
                held = {r.record_id for r in broken}
                if kept := [(message, r) for r in records if r.record_id not in held]:
                    by_chain.setdefault(message.partition, []).extend(kept)
            # Chains are independent (a lock each): append them side by side, so one
            # chain's encryption overlaps another's COPY.
            await asyncio.gather(*(writer.append(c, items) for c, items in by_chain.items()))
            taken = sum(len(items) for items in by_chain.values())
            AUDIT_APPENDED.inc(taken)
            if (done := progress.add(taken)) is not None:
                log.info("audit.progress", appended=done, chains=sorted(by_chain))

    # Every entry is covered by a signed checkpoint within about audit_checkpoint_seconds:
    # this timer signs the heads that moved since their last checkpoint. Should it fall
    # behind (a busy event loop), an append signs its chain once the last checkpoint is
    # twice that old, so a loaded chain is never left unsigned for long.
    @app.timer(interval=settings.audit_checkpoint_seconds)  # type: ignore[untyped-decorator]
    async def sign_checkpoints() -> None:
        await writer.checkpoint_heads()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_writer(_app: Any, **_: Any) -> None:
        await writer.close()


def _ids(records: Sequence[AccessRecorded]) -> str:
    shown = ", ".join(r.record_id for r in records[:10])
    return f"records {shown}" + (f" and {len(records) - 10} more" if len(records) > 10 else "")


class AuditWriter:
    """Appends batches per chain; remembers which chains moved since their checkpoint."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._pool: asyncpg.Pool[Any] | None = None
        self._keyring: Keyring | None = None
        # Every chain may hold unsigned entries when the writer starts (or, written before
        # the tree existed, lack its tree: the first checkpoint builds it).
        self._unsigned: set[int] = set(range(settings.topic_partitions))
        # When this writer last signed each chain (time.monotonic()): the timer leaves a
        # chain signed less than half an interval ago to the next tick, so a chain gets at
        # most two checkpoints per interval (one, unless the timer falls behind).
        self._signed: dict[int, float] = {}
        self._interval = timedelta(seconds=settings.audit_checkpoint_seconds)
        # An append signs its chain when the last checkpoint is older than this.
        self._overdue = 2 * self._interval

    async def append(self, chain: int, items: Sequence[tuple[Any, AccessRecorded]]) -> None:
        """Append until it works. A record that decoded is never dead-lettered: whatever
        stops it (keys, role, disk, database) is the system's, so the writer waits, says
        why, and keeps its place (care.audit holds the records meanwhile)."""
        records = [r for _, r in items]
        delay = 0.2
        while True:
            try:
                await self._append(chain, records)
                return
            except Exception as exc:
                transient = isinstance(exc, TRANSIENT)
                (log.warning if transient else log.error)(
                    "audit.append_failed", chain=chain, error=type(exc).__name__, retry_in_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _append(self, chain: int, records: Sequence[AccessRecorded]) -> None:
        pool, keyring = await self._open()
        async with pool.acquire() as conn:
            appended = await store.append(
                conn,
                chain,
                records,
                keyring.get(),
                role=self._settings.audit_db_role,
                checkpoint_every=self._settings.audit_checkpoint_entries,
                now=datetime.now(UTC),
                checkpoint_after=self._overdue,
                log_name=self._settings.audit_log_name,
            )
        if appended.written:
            self._unsigned.add(chain)
        if appended.checkpointed:
            self._unsigned.discard(chain)
            self._signed[chain] = time.monotonic()
        if appended.duplicates:
            log.info("audit.redelivered_skipped", chain=chain, records=appended.duplicates)

    async def checkpoint_heads(self) -> None:
        """Sign the head of every chain that moved since its last checkpoint (side by
        side: each waits for its own chain's lock only)."""
        try:
            pool, keyring = await self._open()
            recent = time.monotonic() - self._interval.total_seconds() / 2
            due = [c for c in sorted(self._unsigned) if self._signed.get(c, -inf) <= recent]
            await asyncio.gather(*(self._checkpoint(pool, keyring, c) for c in due))
        except TRANSIENT as exc:
            log.warning("audit.checkpoint_postponed", error=type(exc).__name__)

    async def _checkpoint(self, pool: asyncpg.Pool[Any], keyring: Keyring, chain: int) -> None:
        # Taken off first: an append that lands meanwhile puts it back.
        self._unsigned.discard(chain)
        try:
            async with pool.acquire() as conn:
                signed = await store.checkpoint(
                    conn,
                    chain,
                    keyring.get(),
                    role=self._settings.audit_db_role,
                    now=datetime.now(UTC),
                    log_name=self._settings.audit_log_name,
                )
        except BaseException:
            self._unsigned.add(chain)
            raise
        if signed:
            self._signed[chain] = time.monotonic()

    async def _open(self) -> tuple[asyncpg.Pool[Any], Keyring]:
        async with self._lock:
            if self._keyring is None:
                # Only `carecoord up` generates development keys; elsewhere missing keys
                # are an error, or each worker of a cluster would make its own.
                self._keyring = Keyring(self._settings)
                log.info("audit.keys_loaded", source=self._keyring.get().source)
            if self._pool is None:
                assert self._settings.database_url
                self._pool = await db.create_pool(
                    self._settings.database_url,
                    min_size=1,
                    max_size=max(2, self._settings.topic_partitions),
                )
            return self._pool, self._keyring

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
