"""Refused sign-ins to the audit log: which ones services.audit.sign_ins decides; this
finds the patients of the record a request named and hands the records to the audit
sink, off the request's path (the refusal answers UNAUTHENTICATED at once; nothing is
released, so nothing waits for the log)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from schemas.audit import AccessRecorded
from services.audit import sign_ins
from services.audit.sign_ins import Refusal, SignInTally, Summary
from services.audit.sink import AuditSink
from services.common import dates
from services.common.aggregates import Repository
from services.common.domain import AggregateType
from services.common.log import get_logger
from services.settings import Settings

_log = get_logger(__name__)

Named = tuple[AggregateType[Any], str]


class SignInMonitor:
    """One per API process: counts refused sign-ins and records them (bounded)."""

    def __init__(
        self,
        *,
        tally: SignInTally,
        audit: AuditSink,
        repository: Repository,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = dates.utcnow,
    ) -> None:
        self._tally = tally
        self._audit = audit
        self._repository = repository
        self._clock = clock
        self._now = now
        self._sweeper: asyncio.Task[None] | None = None
        # Recordings in flight (the event loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, audit: AuditSink, repository: Repository
    ) -> SignInMonitor:
        tally = SignInTally(
            window_seconds=settings.sign_in_failure_window_seconds,
            max_keys=settings.sign_in_failure_keys_per_window,
        )
        return cls(tally=tally, audit=audit, repository=repository)

    def refused(self, refusal: Refusal) -> None:
        """Note a refused sign-in; recorded now, or counted into its window's record."""
        if self._tally.refused(refusal, self._clock()):
            self._spawn(self._record([(refusal, 1, "")]))
        if self._tally.next_end() is not None and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def drain(self) -> None:
        """Wait for the records in flight (tests; a shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """At shutdown, before the audit sink closes: record the counts of windows still
        open now rather than never, and stop the sweeper that would record them later."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._summarise(self._tally.due(math.inf))
        await self.drain()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while (end := self._tally.next_end()) is not None:
            await asyncio.sleep(max(0.0, end - self._clock()))
            self._summarise(self._tally.due(self._clock()))

    def _summarise(self, summaries: list[Summary]) -> None:
        if summaries:
            self._spawn(
                self._record(
                    [
                        (sign_ins.overflowed(s), s.count, sign_ins.summary_reason(s))
                        for s in summaries
                    ]
                )
            )

    async def _record(self, refusals: list[tuple[Refusal, int, str]]) -> None:
        at = self._now()
        batch: list[AccessRecorded] = []
        for refusal, count, reason in refusals:
            patients: list[str | None] = [*await self._patients(refusal.locator)] or [None]
            for patient_id in patients:
                batch.append(
                    sign_ins.record(
                        refusal, at=at, patient_id=patient_id, refusals=count, reason=reason
                    )
                )
        try:
            await self._audit.publish(batch)
        except Exception as exc:  # the refusal stands; the operators must hear of it
            _log.warning(
                "sign_in.unrecorded",
                refusals=sum(count for _, count, _ in refusals),
                error=type(exc).__name__,
            )

    async def _patients(self, locator: object) -> list[str]:
        """The patients whose data the named record holds (none when it does not exist)."""
        if not isinstance(locator, tuple) or len(locator) != 2:
            return []
        kind, aggregate_id = locator
        if not isinstance(kind, AggregateType) or not isinstance(aggregate_id, str):
            return []
        try:
            state = (await self._repository.load(kind, aggregate_id)).state
        except Exception as exc:  # recorded without the patient rather than not at all
            _log.warning("sign_in.patient_unresolved", error=type(exc).__name__)
            return []
        patients = getattr(state, "patients", None)
        return [p for p in patients() if p] if callable(patients) else []
