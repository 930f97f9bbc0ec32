"""Group commit of access records: publishes made while one hand-off is under way (or in
the same turn of the event loop) share the next, so a board change pushed to a team's ten
subscribers costs one outbox statement, not ten.

Fail-closed as the sink it wraps: `publish` returns only once the hand-off carrying its
records was durably accepted, and raises AuditUnavailable for every publish of a hand-off
that was not, so none of those pushes is sent. A publish is never split across hand-offs,
and hand-offs go one at a time, in the order their publishes came.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.audit import AccessRecorded
from services.audit.sink import AuditSink, AuditUnavailable


@dataclass
class _Waiting:
    records: Sequence[AccessRecorded]
    done: asyncio.Future[None]


class BatchedAuditSink:
    """Publishes to `sink` in batches of at most `max_records` records (a larger publish
    goes alone). Not closed with the sink it wraps: its owner closes that."""

    def __init__(self, sink: AuditSink, *, max_records: int) -> None:
        if max_records < 1:
            raise ValueError("a batch holds at least one record")
        self._sink = sink
        self._max = max_records
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Since the process started, for /metrics and the bench.
        self.publishes = 0
        self.records = 0
        self.handoffs = 0

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        if not records:
            return
        if self._closed:
            raise AuditUnavailable("the audit sink is closed")
        waiting = _Waiting(records, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-batch")
        # A publisher that gives up (its socket closed) leaves its records in the batch:
        # a record of a push never sent is harmless, a push never recorded is not.
        await waiting.done

    async def _flush(self) -> None:
        while self._waiting:
            # One turn of the loop first: the other subscribers woken by the same update
            # join this hand-off rather than the next.
            await asyncio.sleep(0)
            batch = self._take()
            records = [r for w in batch for r in w.records]
            self.publishes += len(batch)
            self.records += len(records)
            self.handoffs += 1
            try:
                await self._sink.publish(records)
            except BaseException as exc:
                failure = (
                    exc
                    if isinstance(exc, AuditUnavailable)
                    else AuditUnavailable(type(exc).__name__)
                )
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(failure)
                if not isinstance(exc, Exception):  # cancelled: the rest fail with it
                    self._fail_waiting(failure)
                    raise
                continue
            for w in batch:
                if not w.done.done():
                    w.done.set_result(None)

    def _take(self) -> list[_Waiting]:
        """The oldest publishes whose records fit one batch (at least one publish)."""
        count, size = 0, 0
        for w in self._waiting:
            if count and size + len(w.records) > self._max:
                break
            count, size = count + 1, size + len(w.records)
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch

    def _fail_waiting(self, failure: AuditUnavailable) -> None:
        waiting, self._waiting = self._waiting, []
        for w in waiting:
            if not w.done.done():
                w.done.set_exception(failure)

    async def close(self) -> None:
        """Hand over what is waiting, then refuse further publishes."""
        self._closed = True
        flusher = self._flusher
        if flusher is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher
        self._fail_waiting(AuditUnavailable("the audit sink is closed"))
