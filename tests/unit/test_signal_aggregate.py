"""The Signal aggregate with plain values: a reading out of range raises one open signal
task per monitoring plan, later readings update it, a redelivered reading changes nothing,
a closed task is followed by a new one, a critical reading makes it urgent for good, and a
silence is told once. Property tests: any sequence of readings (closures in between) keeps
at most one open signal task per monitoring plan, and replaying the commands with any
duplicates gives the same tasks as one clean pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import Discipline, Sensitivity, TaskStatus
from schemas.signal import SignalRaised, SignalStatus
from schemas.task import TaskCreated, TaskMoved, TaskSignalled
from services.common.domain import Meta
from services.tasks import domain
from services.tasks.domain import Task
from services.tasks.signal_aggregate import (
    RaiseSignal,
    Reading,
    Signal,
    decide,
    evolve,
    signal_task_id,
)

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)  # only the order of times matters
META = Meta(actor_id="carecoord-signals", occurred_at=T0, team_id="team-1")


def reading(position: int, status: SignalStatus = SignalStatus.OUT_OF_RANGE) -> Reading:
    return Reading(
        observation_id=f"obs-{position}",
        position=position,
        event_id=f"event-{position}",
        status=status,
        title=f"Blood glucose {position} mg/dL above 180",
    )


def command(
    *readings: Reading, monitoring_id: str = "mon-1", silent_since: datetime | None = None
) -> RaiseSignal:
    return RaiseSignal(
        monitoring_id=monitoring_id,
        plan_id="plan-1",
        patient_id="patient-1",
        team_id="team-1",
        discipline=Discipline.NURSE,
        readings=readings,
        silent_since=silent_since,
        silence_title="No Blood glucose reading for 9 days (every 7 days)"
        if silent_since
        else None,
    )


@dataclass
class World:
    """The Signal aggregates and their tasks, as the write side would keep them."""

    signals: dict[str, Signal] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    clock: datetime = T0

    def send(self, c: RaiseSignal) -> bool:
        """Decide and evolve; whether anything was written."""
        signal = self.signals.get(c.monitoring_id)
        task = self.tasks.get(signal.task_id) if signal else None
        decided = decide(c, signal, task)
        if not decided.signal_events:
            assert decided.task_events == ()
            return False
        assert decided.task_id is not None
        self.clock += timedelta(seconds=1)
        meta = Meta(actor_id="carecoord-signals", occurred_at=self.clock, team_id=c.team_id)
        for event, _cause in decided.signal_events:
            signal = evolve(signal, event, meta)
        assert signal is not None
        self.signals[c.monitoring_id] = signal
        task = None if decided.new_task else self.tasks[decided.task_id]
        for e in decided.task_events:
            task = domain.evolve(task, e, meta)
        assert task is not None
        self.tasks[decided.task_id] = task
        return True

    def close(self, monitoring_id: str) -> None:
        signal = self.signals.get(monitoring_id)
        if signal is None:
            return
        task = self.tasks[signal.task_id]
        moved = domain.close(task, TaskStatus.DONE, "Called the patient.")
        if moved is not None:
            self.tasks[task.id] = domain.evolve(task, moved, META)

    def open_tasks(self, monitoring_id: str) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.open and t.id in {signal_task_id(monitoring_id, n) for n in range(1, 200)}
        ]

    def summary(self) -> dict[str, tuple[str, int, bool, TaskStatus]]:
        return {t.id: (t.title, t.signal_count, t.urgent, t.status) for t in self.tasks.values()}


def test_a_first_reading_out_of_range_opens_a_signal_task_for_the_responsible_discipline() -> None:
    decided = decide(command(reading(10)), None, None)
    task_id = signal_task_id("mon-1", 1)
    assert decided.task_id == task_id and decided.new_task
    [(raised, cause)] = decided.signal_events
    assert isinstance(raised, SignalRaised)
    assert (raised.count, raised.observation_position, raised.task_id) == (1, 10, task_id)
    assert cause == "event-10"  # the observation is the signal's causation
    created, signalled = decided.task_events
    assert isinstance(created, TaskCreated) and isinstance(signalled, TaskSignalled)
    assert (created.source, created.discipline, created.plan_id) == (
        "signal",
        Discipline.NURSE,
        "plan-1",
    )
    assert signalled.title == "Blood glucose 10 mg/dL above 180"
    assert (signalled.count, signalled.urgent) == (1, False)


def test_later_readings_update_the_open_task_with_a_count_rather_than_open_another() -> None:
    world = World()
    assert world.send(command(reading(10)))
    assert world.send(command(reading(12), reading(15)))
    [task] = world.tasks.values()
    assert task.id == signal_task_id("mon-1", 1)
    assert task.signal_count == 3
    assert task.title == "Blood glucose 15 mg/dL above 180 (3 signals)"
    assert world.signals["mon-1"].last_position == 15


def test_a_redelivered_or_older_reading_changes_nothing() -> None:
    world = World()
    world.send(command(reading(10), reading(20)))
    before = world.summary()
    assert not world.send(command(reading(20)))
    assert not world.send(command(reading(10)))
    assert world.summary() == before


def test_the_same_reading_twice_in_one_command_counts_once() -> None:
    world = World()
    world.send(command(reading(10), reading(10), reading(11), reading(10)))
    [task] = world.tasks.values()
    assert task.signal_count == 2


def test_readings_in_range_or_of_no_signal_status_are_not_signalled() -> None:
    assert decide(command(reading(10, SignalStatus.IN_RANGE)), None, None).signal_events == ()
    assert decide(command(reading(10, SignalStatus.NO_DATA)), None, None).signal_events == ()
    assert decide(command(), None, None).signal_events == ()


def test_a_closed_task_is_followed_by_a_new_episode_task() -> None:
    world = World()
    world.send(command(reading(10, SignalStatus.CRITICAL)))
    world.close("mon-1")
    world.send(command(reading(11)))
    first, second = signal_task_id("mon-1", 1), signal_task_id("mon-1", 2)
    assert set(world.tasks) == {first, second}
    assert world.tasks[first].status is TaskStatus.DONE
    fresh = world.tasks[second]
    assert (fresh.open, fresh.signal_count, fresh.urgent) == (True, 1, False)
    assert world.signals["mon-1"].episode == 2


def test_a_critical_reading_makes_the_task_urgent_and_it_stays_urgent() -> None:
    world = World()
    world.send(command(reading(10)))
    assert not world.tasks[signal_task_id("mon-1", 1)].urgent
    world.send(command(reading(11, SignalStatus.CRITICAL)))
    urgent_since = world.tasks[signal_task_id("mon-1", 1)].urgent_since
    assert urgent_since is not None
    world.send(command(reading(12)))
    task = world.tasks[signal_task_id("mon-1", 1)]
    assert task.urgent and task.urgent_since == urgent_since  # the escalation clock keeps
    assert task.signal_count == 3


def test_a_silence_is_signalled_once() -> None:
    world = World()
    since = T0 - timedelta(days=9)
    assert world.send(command(silent_since=since))
    assert not world.send(command(silent_since=since))
    [task] = world.tasks.values()
    assert task.title == "No Blood glucose reading for 9 days (every 7 days)"
    assert task.signal_count == 1
    assert world.signals["mon-1"].silent_since == since
    assert world.send(command(silent_since=since + timedelta(days=10)))  # a later silence
    assert task.id == next(iter(world.tasks)) and world.tasks[task.id].signal_count == 2


def test_a_silence_and_a_reading_together_count_twice_on_one_task() -> None:
    world = World()
    since = T0 - timedelta(days=9)
    world.send(command(reading(10), silent_since=since))
    [task] = world.tasks.values()
    assert task.signal_count == 2
    assert task.title.startswith("No Blood glucose reading")  # the silence is the latest news
    assert not world.send(command(reading(10), silent_since=since))


def test_escalation_is_due_only_for_an_urgent_task_still_to_do_after_the_set_time() -> None:
    task = Task(
        id="t", team_id="team-1", title="x", source="signal", updated_at=T0, urgent_since=T0
    )
    after = 1800
    assert not domain.escalation_due(task, T0 + timedelta(seconds=after - 1), after)
    assert domain.escalation_due(task, T0 + timedelta(seconds=after), after)
    later = T0 + timedelta(hours=2)
    assert not domain.escalation_due(
        Task(id="t", team_id="team-1", title="x", source="signal", updated_at=T0), later, after
    )
    for status in (TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED, TaskStatus.DONE):
        moved = domain.evolve(
            task, TaskMoved(task_id="t", status=status, previous=TaskStatus.TODO), META
        )
        assert not domain.escalation_due(moved, later, after)
    escalated = domain.decide(
        domain.EscalateTask(task_id="t", lead_ids=("lead-1",), after_seconds=after), task, later
    )
    assert len(escalated) == 1
    done = domain.evolve(task, escalated[0], META)
    assert not domain.escalation_due(done, later, after)
    assert (
        domain.decide(
            domain.EscalateTask(task_id="t", lead_ids=("lead-1",), after_seconds=after),
            done,
            later,
        )
        == []
    )


# --- properties ----------------------------------------------------------------------

PLANS = ("mon-a", "mon-b", "mon-c")
STATUSES = st.sampled_from(
    [SignalStatus.OUT_OF_RANGE, SignalStatus.CRITICAL, SignalStatus.IN_RANGE]
)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, object]]:
    """Steps: ("read", command) with readings at rising positions across plans, or
    ("close", monitoring id) as a clinician finishing a plan's open task."""
    position = 0
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 4)) == 0:
            steps.append(("close", draw(st.sampled_from(PLANS))))
            continue
        plan = draw(st.sampled_from(PLANS))
        readings = []
        for _ in range(draw(st.integers(1, 3))):
            position += draw(st.integers(1, 5))
            readings.append(reading(position, draw(STATUSES)))
        silence = draw(st.one_of(st.none(), st.integers(0, 3)))
        since = None if silence is None else T0 + timedelta(days=silence)
        steps.append(("read", command(*readings, monitoring_id=plan, silent_since=since)))
    return steps


def run(steps: list[tuple[str, object]]) -> World:
    world = World()
    for kind, what in steps:
        if kind == "close":
            assert isinstance(what, str)
            world.close(what)
        else:
            assert isinstance(what, RaiseSignal)
            world.send(what)
    return world


@settings(max_examples=100, deadline=None)
@given(histories())
def test_any_reading_sequence_keeps_at_most_one_open_signal_task_per_monitoring_plan(
    steps: list[tuple[str, object]],
) -> None:
    world = World()
    for kind, what in steps:
        if kind == "close":
            assert isinstance(what, str)
            world.close(what)
        else:
            assert isinstance(what, RaiseSignal)
            world.send(what)
        for plan in PLANS:
            assert len(world.open_tasks(plan)) <= 1


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_replaying_the_commands_with_duplicates_gives_the_same_tasks_as_one_clean_pass(
    steps: list[tuple[str, object]], data: st.DataObject
) -> None:
    clean = run(steps)
    replayed: list[tuple[str, object]] = []
    sent: list[RaiseSignal] = []
    for kind, what in steps:
        # Before each step, any earlier command may come again (a redelivery, a replay
        # after a rebuild, a drain that crashed before dropping its rows).
        for again in data.draw(st.lists(st.sampled_from(sent), max_size=3)) if sent else []:
            replayed.append(("read", again))
        replayed.append((kind, what))
        if kind == "read":
            assert isinstance(what, RaiseSignal)
            sent.append(what)
            replayed.append(("read", what)) if data.draw(st.booleans()) else None
    again = run(replayed)
    assert again.summary() == clean.summary()
    assert {k: (s.task_id, s.count, s.last_position) for k, s in again.signals.items()} == {
        k: (s.task_id, s.count, s.last_position) for k, s in clean.signals.items()
    }


def lent(position: int) -> Reading:
    """A reading a monitoring plan of the measure lends SUBSTANCE_USE."""
    update = {
        "bare_title": "Blood glucose: above 180 mg/dL",
        "sensitivity": (Sensitivity.SUBSTANCE_USE,),
    }
    return reading(position).model_copy(update=update)


def test_an_open_task_tagged_with_less_than_a_reading_never_quotes_its_value() -> None:
    world = World()
    # A silence opened the task before a monitoring plan of the measure lent its tags.
    assert world.send(command(silent_since=T0))
    assert world.send(command(lent(20)))
    [task] = world.tasks.values()
    assert task.sensitivity == ()
    assert task.title == "Blood glucose: above 180 mg/dL (2 signals)"


def test_a_new_task_carries_the_tags_of_the_reading_it_quotes_however_rows_are_merged() -> None:
    one_by_one, merged = World(), World()
    assert one_by_one.send(command(reading(10)))
    one_by_one.close("mon-1")
    assert not one_by_one.send(command(reading(10)))  # a redelivered row: nothing new
    assert one_by_one.send(command(lent(20)))
    assert merged.send(command(reading(10)))
    merged.close("mon-1")
    assert merged.send(command(reading(10), lent(20)))

    assert one_by_one.summary() == merged.summary()
    second = one_by_one.tasks[signal_task_id("mon-1", 2)]
    assert second.sensitivity == (Sensitivity.SUBSTANCE_USE,)
    assert second.title == "Blood glucose 20 mg/dL above 180"
