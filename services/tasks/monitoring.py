"""The care-signals read model as pure functions: each care plan's status, each monitoring
plan (a watch) and goal, and the two latest readings of each measure of each patient; and
what a reading makes of them: the signals owed to the write side and the notices of goals
whose progress moved.

A reading signals a watch when the watch is active on an ACTIVE plan, the reading was
taken no earlier than one interval before the watch started (older readings entered late
are history, not news), and it is out of range or critical against the watch's thresholds.
The store loads the records of the patients a batch touches; `apply` says what each event
makes of them; the store writes the result and the owed commands in the transaction that
records the position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import TypeVar

from schemas.careplan import (
    CarePlanCreated,
    GoalAdded,
    GoalStatusChanged,
    GoalTargetSet,
    MonitoringAdded,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.common import Discipline, GoalStatus, PlanStatus, Sensitivity
from schemas.envelope import Envelope
from schemas.observation import ObservationRecorded
from schemas.signal import SignalRaised, SignalStatus
from services.plans.domain import measures
from services.tasks import signals
from services.tasks.signal_aggregate import RaiseSignal, Reading
from services.tasks.signals import GoalProgress, Thresholds

R = TypeVar("R")
FINAL_GOALS = frozenset({GoalStatus.ACHIEVED, GoalStatus.CANCELLED, GoalStatus.NOT_ACHIEVED})


@dataclass(frozen=True)
class PlanState:
    plan_id: str
    team_id: str
    patient_id: str
    status: PlanStatus
    active_since: datetime | None = None


@dataclass(frozen=True)
class Watch:
    """A monitoring plan as the signal processor follows it."""

    monitoring_id: str
    plan_id: str
    team_id: str
    patient_id: str
    measure_code: str
    every_days: int
    unit: str
    low: float | None
    high: float | None
    critical_low: float | None
    critical_high: float | None
    discipline: Discipline
    sensitivity: tuple[Sensitivity, ...]
    active: bool
    started_at: datetime
    signal_task_id: str | None = None
    signals: int = 0
    silence_signalled: datetime | None = None

    @property
    def limits(self) -> Thresholds:
        return Thresholds(self.low, self.high, self.critical_low, self.critical_high)

    def value_of(self, canonical_value: float) -> float:
        """A canonical reading in this watch's unit."""
        m = measures.measure(self.measure_code)
        return measures.convert(m, canonical_value, m.unit, self.unit)


@dataclass(frozen=True)
class GoalState:
    goal_id: str
    plan_id: str
    team_id: str
    patient_id: str
    status: GoalStatus
    due_date: date | None = None
    measure_code: str | None = None
    comparator: str | None = None
    value: float | None = None
    high: float | None = None
    unit: str | None = None

    @property
    def open(self) -> bool:
        return self.status not in FINAL_GOALS


@dataclass(frozen=True)
class Latest:
    """The two latest readings of a measure of a patient (by when taken; canonical unit)."""

    patient_id: str
    measure_code: str
    team_id: str
    observation_id: str
    value: float
    at: datetime
    previous_observation_id: str | None = None
    previous_value: float | None = None
    previous_at: datetime | None = None

    def readings(self) -> list[tuple[datetime, float]]:
        out = [(self.at, self.value)]
        if self.previous_at is not None and self.previous_value is not None:
            out.append((self.previous_at, self.previous_value))
        return out


@dataclass
class Signals:
    """The records of the patients a batch touches."""

    plans: dict[str, PlanState] = field(default_factory=dict)
    watches: dict[str, Watch] = field(default_factory=dict)
    goals: dict[str, GoalState] = field(default_factory=dict)
    latest: dict[tuple[str, str], Latest] = field(default_factory=dict)


@dataclass(frozen=True)
class GoalMoved:
    """A goal whose progress a reading changed (its team's subscribers hear of it)."""

    team_id: str
    plan_id: str
    goal_id: str
    progress: GoalProgress


@dataclass(frozen=True)
class Applied:
    plans: tuple[PlanState, ...] = ()
    watches: tuple[Watch, ...] = ()
    goals: tuple[GoalState, ...] = ()
    latest: tuple[Latest, ...] = ()
    owed: tuple[RaiseSignal, ...] = ()
    moved: tuple[GoalMoved, ...] = ()


# The events `apply` does something for; it leaves the records as they are for any other
# (a task, a huddle, a roster change), so a batch's other events need not reach it.
HANDLED = (
    CarePlanCreated,
    PlanStatusChanged,
    MonitoringAdded,
    MonitoringStopped,
    GoalAdded,
    GoalStatusChanged,
    GoalTargetSet,
    ObservationRecorded,
    SignalRaised,
)
# The same, to match a payload's own type (an event model is never subclassed): a set
# lookup, where isinstance asks each class's metaclass in turn.
HANDLED_TYPES = frozenset(HANDLED)


def wanted(envelopes: Iterable[Envelope]) -> frozenset[str]:
    """The patients whose records a batch touches."""
    return frozenset(
        env.patient_id
        for env in envelopes
        if isinstance(env.payload, HANDLED) and env.patient_id is not None
    )


def apply(board: Signals, env: Envelope, position: int) -> Applied:
    """What `env` (at store `position`) does to the records. Raises ValueError when it
    changes a record the read model lacks (it belongs on the dead-letter topic)."""
    event, team, at = env.payload, env.team_id, env.occurred_at
    match event:
        case CarePlanCreated():
            return Applied(
                plans=(PlanState(event.plan_id, team, event.patient_id, PlanStatus.DRAFT),)
            )
        case PlanStatusChanged():
            plan = _get(board.plans, event.plan_id, "care plan")
            since = plan.active_since
            if event.status is PlanStatus.ACTIVE and plan.status is not PlanStatus.ACTIVE:
                since = at
            return Applied(plans=(replace(plan, status=event.status, active_since=since),))
        case MonitoringAdded():
            patient = _patient(board, env, event.plan_id)
            if patient is None:
                return Applied()
            watch = Watch(
                monitoring_id=event.monitoring_id,
                plan_id=event.plan_id,
                team_id=team,
                patient_id=patient,
                measure_code=event.measure_code,
                every_days=event.every_days,
                unit=event.unit,
                low=event.low,
                high=event.high,
                critical_low=event.critical_low,
                critical_high=event.critical_high,
                discipline=event.responsible_discipline,
                sensitivity=event.sensitivity,
                active=True,
                started_at=at,
            )
            return Applied(watches=(watch,))
        case MonitoringStopped():
            watch = _get(board.watches, event.monitoring_id, "monitoring plan")
            return Applied(watches=(replace(watch, active=False),))
        case GoalAdded():
            patient = _patient(board, env, event.plan_id)
            if patient is None:
                return Applied()
            goal = GoalState(
                event.goal_id,
                event.plan_id,
                team,
                patient,
                GoalStatus.PROPOSED,
                due_date=event.due_date,
            )
            return Applied(goals=(goal,))
        case GoalStatusChanged():
            known = board.goals.get(event.goal_id)
            if known is None:  # a goal of no patient (see _patient): nothing to follow
                return Applied()
            return Applied(goals=(replace(known, status=event.status),))
        case GoalTargetSet():
            goal = replace(
                _get(board.goals, event.goal_id, "goal"),
                measure_code=event.measure_code,
                comparator=event.comparator.value,
                value=event.value,
                high=event.high,
                unit=event.unit,
            )
            return Applied(goals=(goal,))
        case ObservationRecorded():
            return _observed(board, env, event, position)
        case SignalRaised():
            watch = _get(board.watches, event.monitoring_id, "monitoring plan")
            silence = event.silent_since or watch.silence_signalled
            watch = replace(
                watch, signal_task_id=event.task_id, signals=event.count, silence_signalled=silence
            )
            return Applied(watches=(watch,))
    return Applied()


def _patient(board: Signals, env: Envelope, plan_id: str) -> str | None:
    """The patient a plan's event is about: the envelope says so (the plan's state too,
    when it is in the read model). A plan's event about no patient concerns no signal."""
    plan = board.plans.get(plan_id)
    return env.patient_id or (plan.patient_id if plan else None)


def merge(board: Signals, applied: Applied) -> None:
    board.plans.update((p.plan_id, p) for p in applied.plans)
    board.watches.update((w.monitoring_id, w) for w in applied.watches)
    board.goals.update((g.goal_id, g) for g in applied.goals)
    board.latest.update(((r.patient_id, r.measure_code), r) for r in applied.latest)


def live(watch: Watch, plans: dict[str, PlanState]) -> bool:
    """Whether the watch signals: active, on an ACTIVE plan."""
    plan = plans.get(watch.plan_id)
    return watch.active and plan is not None and plan.status is PlanStatus.ACTIVE


def _observed(board: Signals, env: Envelope, event: ObservationRecorded, position: int) -> Applied:
    key = (event.patient_id, event.measure_code)
    before = board.latest.get(key)
    latest = _newer(before, env.team_id, event)
    lent = lent_tags(board, event.patient_id, event.measure_code)
    owed = []
    for watch in board.watches.values():
        if watch.patient_id != event.patient_id or watch.measure_code != event.measure_code:
            continue
        if not live(watch, board.plans):
            continue
        if event.at < watch.started_at - timedelta(days=watch.every_days):
            continue
        value = event.value if event.unit == watch.unit else watch.value_of(event.canonical_value)
        status = signals.classify(watch.limits, value)
        if status not in (SignalStatus.OUT_OF_RANGE, SignalStatus.CRITICAL):
            continue
        m = measures.measure(watch.measure_code)
        reading = Reading(
            observation_id=event.observation_id,
            position=position,
            event_id=str(env.event_id),
            status=status,
            title=signals.signal_title(
                m.label,
                value,
                measures.display_unit(watch.unit),
                watch.limits,
                given=None
                if event.unit == watch.unit
                else (event.value, measures.display_unit(event.unit)),
            ),
            sensitivity=command_for(watch, sensitivity=lent).sensitivity,
            bare_title=signals.bare_title(
                m.label, value, measures.display_unit(watch.unit), watch.limits
            ),
        )
        # The task quotes the reading: it carries the tags every monitoring plan of the
        # patient's measure lends the reading (the API redacts the reading by them too).
        owed.append(command_for(watch, readings=(reading,), sensitivity=lent))
    moved = []
    if latest is not before:
        for goal in board.goals.values():
            if goal.patient_id != event.patient_id or goal.measure_code != event.measure_code:
                continue
            was = goal_progress(goal, before, env.occurred_at.date())
            now = goal_progress(goal, latest, env.occurred_at.date())
            if was is not now:
                moved.append(GoalMoved(goal.team_id, goal.plan_id, goal.goal_id, now))
    return Applied(
        latest=(latest,) if latest is not before else (), owed=tuple(owed), moved=tuple(moved)
    )


def _newer(before: Latest | None, team_id: str, event: ObservationRecorded) -> Latest:
    new = Latest(
        event.patient_id,
        event.measure_code,
        team_id,
        event.observation_id,
        event.canonical_value,
        event.at,
    )
    if before is None:
        return new
    if event.at > before.at:
        return replace(
            new,
            previous_observation_id=before.observation_id,
            previous_value=before.value,
            previous_at=before.at,
        )
    if before.previous_at is None or event.at > before.previous_at:
        return replace(
            before,
            previous_observation_id=event.observation_id,
            previous_value=event.canonical_value,
            previous_at=event.at,
        )
    return before


def lent_tags(board: Signals, patient_id: str, measure_code: str) -> tuple[Sensitivity, ...]:
    """The tags the patient's monitoring plans of the measure (active or not) lend its
    readings, in a stable order."""
    tags = {
        t
        for w in board.watches.values()
        if w.patient_id == patient_id and w.measure_code == measure_code
        for t in w.sensitivity
    }
    return tuple(t for t in Sensitivity if t in tags)


def command_for(
    watch: Watch,
    *,
    readings: tuple[Reading, ...] = (),
    silent_since: datetime | None = None,
    silence_title: str | None = None,
    sensitivity: tuple[Sensitivity, ...] = (),
) -> RaiseSignal:
    tags = set(watch.sensitivity) | set(sensitivity)
    return RaiseSignal(
        monitoring_id=watch.monitoring_id,
        plan_id=watch.plan_id,
        patient_id=watch.patient_id,
        team_id=watch.team_id,
        discipline=watch.discipline,
        sensitivity=watch.sensitivity
        if tags == set(watch.sensitivity)
        else tuple(t for t in Sensitivity if t in tags),
        readings=readings,
        silent_since=silent_since,
        silence_title=silence_title,
    )


def goal_progress(goal: GoalState, latest: Latest | None, today: date) -> GoalProgress:
    """The goal's progress on its measure's latest readings (signals.goal_progress)."""
    if goal.measure_code is None or goal.comparator is None or goal.value is None:
        return GoalProgress.NO_DATA
    if latest is None:
        return GoalProgress.NO_DATA
    m = measures.measure(goal.measure_code)
    unit = goal.unit or m.unit
    readings = [(at, measures.convert(m, v, m.unit, unit)) for at, v in latest.readings()]
    return signals.goal_progress(
        goal.comparator, goal.value, goal.high, readings, goal.due_date, today
    )


def watch_status(
    watch: Watch, latest: Latest | None, plan: PlanState | None, now: datetime, grace: timedelta
) -> SignalStatus:
    """Where a monitoring plan stands now: overdue when live and silent too long, else its
    latest reading's place against the thresholds, NO_DATA with none."""
    if silent_since(watch, latest, plan, now, grace) is not None:
        return SignalStatus.READING_OVERDUE
    if latest is None:
        return SignalStatus.NO_DATA
    return signals.classify(watch.limits, watch.value_of(latest.value))


def silent_since(
    watch: Watch, latest: Latest | None, plan: PlanState | None, now: datetime, grace: timedelta
) -> datetime | None:
    """When the silence of a live watch began (its last reading, or when it or its plan
    started), if it has lasted every_days plus grace by `now`; None otherwise."""
    if not watch.active or plan is None or plan.status is not PlanStatus.ACTIVE:
        return None
    since = max(watch.started_at, plan.active_since or watch.started_at)
    if latest is not None:
        since = max(since, latest.at)
    if signals.reading_overdue(since, since, watch.every_days, grace, now):
        return since
    return None


def silence_title(watch: Watch, since: datetime, now: datetime) -> str:
    m = measures.measure(watch.measure_code)
    days = max(1, (now - since).days)
    return f"No {m.label} reading for {days} days (every {watch.every_days} days)"


def _get(records: dict[str, R], key: str, what: str) -> R:
    found = records.get(key)
    if found is None:
        raise ValueError(f"{what} {key} is not in the signals read model")
    return found
