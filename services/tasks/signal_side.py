"""Raising signals on the write side: RaiseSignal decided on the Signal aggregate and its
current task, both streams appended in one transaction with their expected versions (a
racing worker's write makes this one decide again on what it left); and the drain that
sends what the processor queued in signal_outbox."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg

from services.common.aggregates import NEW, Loaded, Repository
from services.common.errors import StateConflict
from services.common.event_store import NewEvent, StreamWrite, WrongExpectedVersion
from services.common.log import get_logger
from services.tasks import monitoring_store
from services.tasks.domain import TASK, Task
from services.tasks.signal_aggregate import SIGNAL, RaiseSignal, decide

log = get_logger(__name__)

# The actor of what the signal processor and its timers write.
SIGNALS_ACTOR = "carecoord-signals"
_RETRIES = 25
# Plans whose signals one drain sends at once.
_CONCURRENCY = 8


async def raise_signal(repository: Repository, command: RaiseSignal) -> int | None:
    """Decide and append; the position of the last event written, None when nothing was
    new (every reading already signalled, the silence already told)."""
    correlation = str(uuid.uuid4())
    for attempt in range(_RETRIES):
        signal = await repository.load(SIGNAL, command.monitoring_id)
        task: Loaded[Task] = NEW
        if signal.state is not None and signal.state.task_id:
            task = await repository.load(TASK, signal.state.task_id)
        decided = decide(command, signal.state, task.state)
        if not decided.signal_events or decided.task_id is None:
            return None

        def new(event: Any, cause: str | None) -> NewEvent:
            return NewEvent(
                event=event,
                team_id=command.team_id,
                patient_id=command.patient_id,
                actor_id=SIGNALS_ACTOR,
                correlation_id=correlation,
                causation_id=cause,
                event_id=uuid.uuid4(),
            )

        raised = [new(e, cause) for e, cause in decided.signal_events]
        last = str(raised[-1].event_id)
        writes = [
            StreamWrite(SIGNAL.stream_id(command.monitoring_id), signal.version, raised),
            StreamWrite(
                TASK.stream_id(decided.task_id),
                0 if decided.new_task else task.version,
                [new(e, last) for e in decided.task_events],
            ),
        ]
        try:
            recorded = await repository.store.append_many(writes)
        except WrongExpectedVersion:
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
            continue
        log.info(
            "signal_raised",
            monitoring_id=command.monitoring_id,
            task_id=decided.task_id,
            signals=len(raised),
            position=recorded[-1][-1].position,
        )
        return recorded[-1][-1].position
    raise StateConflict(f"The monitoring plan {command.monitoring_id} is too busy to signal.")


async def drain(pool: asyncpg.Pool[Any], repository: Repository, *, limit: int = 1000) -> int:
    """Send queued signals (one worker at a time, in store order per plan), then drop them
    from the queue; a crash between the two sends them again, to no effect. A plan whose
    signals could not be sent keeps its rows for the next drain and holds up no other.
    Returns how many queued rows were sent."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1)", monitoring_store.DRAIN_LOCK
        ):
            return 0  # another worker is draining; it picks these up too
        owed = await monitoring_store.take_owed(conn, limit)
        if not owed.seqs:
            return 0
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def send(command: RaiseSignal) -> list[int]:
            async with gate:
                try:
                    await raise_signal(repository, command)
                except Exception as exc:  # kept queued; its error's text may quote a value
                    log.error(
                        "signal_unsent",
                        monitoring_id=command.monitoring_id,
                        error=type(exc).__name__,
                    )
                    return []
                return owed.rows[command.monitoring_id]

        sent = [seq for seqs in await asyncio.gather(*map(send, owed.commands)) for seq in seqs]
        await monitoring_store.drop_owed(conn, sent)
        return len(sent)
