"""The Signal aggregate: what a monitoring plan has told the care team (`signal-<id>`), and
the one open board task that carries it.

The signal processor sends RaiseSignal for readings out of range (or a silence); `decide`
is pure and sees both the signal and its current task: a reading already signalled (its
store position at or below the last one) changes nothing, so a redelivered or replayed
observation is harmless; an open task is updated (title, count, urgency), a closed one is
followed by a new task. Both streams are appended in one transaction with their expected
versions, so two workers racing on one plan cannot both act.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from schemas.base import Event
from schemas.common import Discipline, Sensitivity, TaskStatus
from schemas.signal import SignalRaised, SignalsStopped, SignalStatus
from schemas.task import TaskCreated, TaskMoved, TaskSignalled
from services.common.domain import AggregateType, Meta
from services.tasks import domain
from services.tasks.domain import Task

_SIGNAL_TASKS = uuid.UUID("2b7c9e31-5a4d-4c8e-8f60-1d3e9a7b5c24")
RAISING = frozenset({SignalStatus.OUT_OF_RANGE, SignalStatus.CRITICAL})


def signal_task_id(monitoring_id: str, episode: int) -> str:
    """The id of a monitoring plan's `episode`-th signal task (a new one after each close)."""
    return str(uuid.uuid5(_SIGNAL_TASKS, f"signal/{monitoring_id}/{episode}"))


@dataclass(frozen=True)
class Signal:
    monitoring_id: str
    task_id: str
    episode: int
    count: int  # signals the current task carries
    last_position: int = 0  # the highest observation position signalled
    silent_since: datetime | None = None  # the silence last signalled
    stopped: bool = False  # its monitoring plan (or care plan) ended: no more signals


class Reading(BaseModel):
    """A reading out of range, as the processor judged it against the plan's thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    observation_id: str
    position: int
    event_id: str  # the ObservationRecorded envelope's id: the signal's causation
    status: SignalStatus
    title: str
    # The title without the reading's value (the measure and the limit crossed): what a
    # task tagged with less than the reading is titled with.
    bare_title: str | None = None
    # The tags the reading carries (its monitoring plans'); a task quotes it only if its
    # own tags cover them.
    sensitivity: tuple[Sensitivity, ...] = ()


class RaiseSignal(BaseModel):
    """Signal these readings (store order) and/or a silence since `silent_since`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitoring_id: str
    plan_id: str
    patient_id: str
    team_id: str
    discipline: Discipline
    sensitivity: tuple[Sensitivity, ...] = ()
    readings: tuple[Reading, ...] = ()
    silent_since: datetime | None = None
    silence_title: str | None = None


@dataclass(frozen=True)
class Decided:
    """What a RaiseSignal writes: signal events (each with its causation), and the task
    events for `task_id` (`new_task`: the stream starts with them)."""

    signal_events: tuple[tuple[Event, str | None], ...] = ()
    task_id: str | None = None
    new_task: bool = False
    task_events: tuple[Event, ...] = ()


def _counted(n: int) -> str:
    return "" if n == 1 else f" ({n} signals)"


def decide(command: RaiseSignal, signal: Signal | None, task: Task | None) -> Decided:
    """The events the command makes, given the signal and its current task (None: none yet)."""
    if signal is not None and signal.stopped:
        return Decided()  # queued before the plan ended: nobody watches any more
    last = signal.last_position if signal else 0
    # One signal per observation position, however often it comes (a queue that was sent
    # twice, readings merged from several rows).
    unique = {r.position: r for r in command.readings if r.position > last and r.status in RAISING}
    readings = [unique[p] for p in sorted(unique)]
    # A silence is told once, and only one that began after the last told: a timer's
    # stale scan (or a replay) of an earlier silence is old news.
    told = signal.silent_since if signal else None
    silence = (
        command.silent_since
        if command.silent_since is not None and (told is None or command.silent_since > told)
        else None
    )
    if not readings and silence is None:
        return Decided()
    if signal is not None and task is not None and task.open:
        task_id, count, episode, new = signal.task_id, signal.count, signal.episode, False
    else:
        episode = signal.episode + 1 if signal else 1
        task_id, count, new = signal_task_id(command.monitoring_id, episode), 0, True
    raised: list[tuple[Event, str | None]] = []
    urgent = bool(task and not new and task.urgent)
    # A task tagged with less than a reading carries (opened by a silence, or before a
    # monitoring plan of the measure lent its tags) never quotes its value. Judged per
    # reading, so queued rows merged or sent one by one title the task alike.
    opened_with = command.sensitivity
    if readings and not set(readings[0].sensitivity) <= set(opened_with):
        # A new task carries the tags of the first reading it quotes (rows queued before a
        # redelivery may carry fewer).
        wider = {*opened_with, *readings[0].sensitivity}
        opened_with = tuple(t for t in Sensitivity if t in wider)
    tags = set(opened_with) if new or task is None else set(task.sensitivity)
    title = ""
    base = {
        "monitoring_id": command.monitoring_id,
        "plan_id": command.plan_id,
        "patient_id": command.patient_id,
        "task_id": task_id,
    }
    for r in readings:
        count += 1
        urgent = urgent or r.status is SignalStatus.CRITICAL
        title = r.title if set(r.sensitivity) <= tags else (r.bare_title or "Out of range")
        event = SignalRaised(
            **base,
            status=r.status,
            count=count,
            observation_id=r.observation_id,
            observation_position=r.position,
        )
        raised.append((event, r.event_id))
    if silence is not None:
        count += 1
        title = command.silence_title or "No reading"
        raised.append(
            (
                SignalRaised(
                    **base, status=SignalStatus.READING_OVERDUE, count=count, silent_since=silence
                ),
                None,
            )
        )
    task_events: list[Event] = []
    if new:
        task_events.append(
            TaskCreated(
                task_id=task_id,
                team_id=command.team_id,
                title=title,
                patient_id=command.patient_id,
                plan_id=command.plan_id,
                discipline=command.discipline,
                sensitivity=opened_with,
                source="signal",
            )
        )
    task_events.append(
        TaskSignalled(task_id=task_id, title=title + _counted(count), count=count, urgent=urgent)
    )
    return Decided(tuple(raised), task_id, new, tuple(task_events))


def stop(
    signal: Signal | None,
    task: Task | None,
    *,
    monitoring_id: str,
    plan_id: str,
    patient_id: str,
    reason: str,
) -> tuple[list[Event], TaskMoved | None]:
    """Ending a monitoring plan's signals: SignalsStopped for its Signal stream (nothing
    when already stopped) and the cancelling of its open signal task, if any."""
    if signal is not None and signal.stopped:
        return [], None
    stopped = SignalsStopped(
        monitoring_id=monitoring_id, plan_id=plan_id, patient_id=patient_id, reason=reason
    )
    return [stopped], domain.close(task, TaskStatus.CANCELLED, reason)


def evolve(signal: Signal | None, event: Event, meta: Meta) -> Signal:
    if isinstance(event, SignalsStopped):
        if signal is None:
            return Signal(event.monitoring_id, task_id="", episode=0, count=0, stopped=True)
        return replace(signal, stopped=True)
    if not isinstance(event, SignalRaised):
        raise ValueError(f"a signal has no {event.event_type} events")
    if signal is None:
        signal = Signal(event.monitoring_id, event.task_id, episode=1, count=0)
    elif signal.task_id != event.task_id:  # the last task closed: a new one carries it
        signal = replace(signal, task_id=event.task_id, episode=signal.episode + 1, count=0)
    return _recorded(signal, event)


def _recorded(signal: Signal, event: SignalRaised) -> Signal:
    signal = replace(signal, count=event.count)
    if event.observation_position is not None:
        signal = replace(
            signal, last_position=max(signal.last_position, event.observation_position)
        )
    if event.silent_since is not None:
        signal = replace(signal, silent_since=event.silent_since)
    return signal


SIGNAL = AggregateType[Signal](name="signal", stream_prefix="signal-", evolve=evolve)
