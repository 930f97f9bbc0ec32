"""The worker's care-signal timers: sending the signals the processor queued (also right
after each batch), READING_OVERDUE for monitoring plans gone silent, and escalating urgent
signal tasks left in TODO. Each acts through the write side, whose version checks (and the
aggregates' own memory of what they did) keep two workers from acting twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import faust

from services.common import dates
from services.common.aggregates import Caller, Handler, Scope
from services.common.event_store import EventStore
from services.common.log import get_logger
from services.common.worker import (
    ESCALATIONS,
    SIGNALS_SENT,
    SILENCES_SIGNALLED,
    TIMER_FAILURES,
    TRANSIENT,
)
from services.plans.domain.team import TEAM
from services.settings import Settings
from services.tasks import monitoring, monitoring_store, signal_side
from services.tasks.domain import TASK, EscalateTask
from services.tasks.signal_side import SIGNALS_ACTOR
from services.tasks.write_side import build_handler

log = get_logger(__name__)
_SCAN = 500
_REMEMBER = 10_000


class SignalTimers:
    """The drain, the silence check and the escalation check, on the worker's pool."""

    def __init__(self, settings: Settings, pool: Callable[[], Awaitable[asyncpg.Pool[Any]]]):
        self._settings = settings
        self._pool = pool
        self._handler: Handler | None = None
        self._asked = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    async def handler(self) -> Handler:
        if self._handler is None:
            # Remembering recent Signal and task aggregates, each send reads only their new
            # events instead of a busy plan's whole history (still one current read).
            self._handler = build_handler(EventStore(await self._pool()), remember=_REMEMBER)
        return self._handler

    def kick(self) -> None:
        """Have queued signals sent soon, without waiting for it."""
        self._asked.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain_when_asked(), name="signal-drainer")

    async def _drain_when_asked(self) -> None:
        while True:
            await self._asked.wait()
            self._asked.clear()
            await self.drain()

    async def drain(self) -> None:
        try:
            handler = await self.handler()
            while sent := await signal_side.drain(await self._pool(), handler.repository):
                SIGNALS_SENT.inc(sent)
        except TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__)
        except Exception:  # the next tick sends what this left queued
            log.exception("worker.signal_drain_failed")

    async def silences(self) -> int:
        """READING_OVERDUE for each live monitoring plan silent too long, once a silence."""
        now = dates.utcnow()
        grace = timedelta(hours=self._settings.reading_overdue_grace_hours)
        pool = await self._pool()
        async with pool.acquire() as conn:
            silent = await monitoring_store.silent_watches(conn, now, grace, _SCAN)
        handler = await self.handler()
        told = 0
        for watch, since in silent:
            command = monitoring.command_for(
                watch,
                silent_since=since,
                silence_title=monitoring.silence_title(watch, since, now),
            )
            told += await _one(
                "silence",
                watch.monitoring_id,
                signal_side.raise_signal(handler.repository, command),
            )
        SILENCES_SIGNALLED.inc(told)
        if silent:
            log.info("worker.readings_overdue", count=told, failed=len(silent) - told)
        return told

    async def escalations(self) -> int:
        """Escalate each urgent task still in TODO past the set time to its team's leads."""
        after = self._settings.signal_escalate_after_seconds
        now = dates.utcnow()
        pool = await self._pool()
        async with pool.acquire() as conn:
            due = await monitoring_store.escalation_due(conn, now - timedelta(seconds=after), _SCAN)
        handler = await self.handler()
        caller = Caller(actor_id=SIGNALS_ACTOR, correlation_id=str(uuid.uuid4()))
        escalated = 0
        for task in due:
            team = await handler.repository.load(TEAM, task.team_id)
            leads = tuple(m.user_id for m in team.state.leads) if team.state else ()
            command = EscalateTask(task_id=task.id, lead_ids=leads, after_seconds=after)
            scope = Scope(task.team_id, task.patient_id)
            escalated += await _one(
                "escalation",
                task.id,
                handler.execute(TASK, task.id, command, caller=caller, scope=scope),
            )
        ESCALATIONS.inc(escalated)
        if due:
            log.info("worker.signal_tasks_escalated", count=escalated, failed=len(due) - escalated)
        return escalated

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer


async def _one(what: str, key: str, call: Awaitable[object]) -> int:
    """Run one timer action: 1 when done; 0, logged by id and error type (an error's text
    may quote a value), when it failed for a reason of its own, so one bad item holds up
    no other. The database or broker being away ends the tick (TRANSIENT)."""
    try:
        await call
    except TRANSIENT:
        raise
    except Exception as exc:
        log.error(f"worker.{what}_failed", id=key, error=type(exc).__name__)
        TIMER_FAILURES.labels(what).inc()
        return 0
    return 1


def install(app: faust.App, settings: Settings, timers: SignalTimers) -> None:
    """The timers on the worker app."""

    @app.timer(interval=settings.signal_check_seconds)  # type: ignore[untyped-decorator]
    async def check_signals() -> None:
        await timers.drain()
        for check in (timers.silences, timers.escalations):
            try:
                await check()
            except TRANSIENT as exc:
                log.warning("worker.database_unavailable", error=type(exc).__name__)
            except Exception:  # the next tick tries again; the worker goes on
                log.error("worker.signal_check_failed", check=check.__name__)
