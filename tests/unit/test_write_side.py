"""The write side without a database: Handler.execute on the in-memory event store (which
passes the event store's contract tests), called directly, not through GraphQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.careplan import GoalAdded, InterventionAdded, InterventionDiscontinued
from schemas.common import Discipline, InterventionKind, TaskStatus, Tier
from schemas.huddle import ActionItemRaised
from schemas.task import TaskCreated, TaskMoved
from schemas.team import RoleAssigned
from services.common.aggregates import (
    NEW,
    NO_FOLLOW_UPS,
    Handler,
    Loaded,
    Repository,
    Scope,
    StaleVersion,
    new_id,
)
from services.common.commands import Command, build
from services.common.errors import InvalidInput, StateConflict
from services.common.event_store import Claim, NewEvent, StreamWrite
from services.common.memory_store import InMemoryEventStore
from services.plans.domain import careplan, huddle, team
from services.plans.domain.careplan import CARE_PLAN, CarePlan
from services.plans.domain.huddle import HUDDLE
from services.plans.domain.patient import PATIENT
from services.plans.domain.team import TEAM
from services.tasks import domain as tasks
from services.tasks.domain import TASK
from services.tasks.write_side import build_handler
from tests.write_side import CALLER, assign, create_team, enroll, enrollment

# A fixed clock: what the domain judges dates by. Dates below are derived from it.
NOW = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
TODAY = NOW.date()


def clock() -> datetime:
    return NOW


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore(clock=clock)


@pytest.fixture
def handler(store: InMemoryEventStore) -> Handler:
    return build_handler(store, clock=clock)


async def _plan(handler: Handler) -> tuple[str, Scope]:
    """A team, a patient and a care plan; the plan's id and scope."""
    team_id = await create_team(handler)
    patient_id = await enroll(handler, enrollment(team_id))
    plan_id = new_id()
    scope = Scope(team_id, patient_id)
    create = build(
        careplan.CreateCarePlan,
        plan_id=plan_id,
        patient_id=patient_id,
        team_id=team_id,
        title="Diabetes",
    )
    await handler.execute(CARE_PLAN, plan_id, create, caller=CALLER, scope=scope, known=NEW)
    return plan_id, scope


def _goal(plan_id: str, description: str = "HbA1c below 7%") -> Command:
    return build(careplan.AddGoal, plan_id=plan_id, goal_id=new_id(), description=description)


def _intervention(plan_id: str, intervention_id: str) -> Command:
    return build(
        careplan.AddIntervention,
        plan_id=plan_id,
        intervention_id=intervention_id,
        kind=InterventionKind.MEDICATION,
        tier=Tier.FIRST_LINE,
        title="Metformin 500 mg",
        responsible_discipline=Discipline.PHYSICIAN,
        due_date=TODAY + timedelta(days=7),
    )


async def _events(store: InMemoryEventStore, stream_id: str) -> list[Any]:
    return [env.payload for env in await store.read_stream(stream_id)]


# --- one command -----------------------------------------------------------------------


async def test_a_command_appends_its_events_and_answers_the_record_as_it_left_it(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)

    after = await handler.execute(CARE_PLAN, plan_id, _goal(plan_id), caller=CALLER, scope=scope)

    assert after.version == 2
    assert isinstance(after.state, CarePlan)
    assert [g.description for g in after.state.goals] == ["HbA1c below 7%"]
    events = await store.read_stream(CARE_PLAN.stream_id(plan_id))
    assert isinstance(events[-1].payload, GoalAdded)
    assert (events[-1].actor_id, events[-1].correlation_id) == ("dr-1", "c-1")
    assert (events[-1].team_id, events[-1].patient_id) == (scope.team_id, scope.patient_id)


async def test_a_refused_command_writes_nothing(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)
    head = await store.head()
    past = build(
        careplan.AddGoal,
        plan_id=plan_id,
        goal_id=new_id(),
        description="Too late",
        due_date=TODAY - timedelta(days=30),
    )

    with pytest.raises(InvalidInput):
        await handler.execute(CARE_PLAN, plan_id, past, caller=CALLER, scope=scope)

    assert await store.head() == head


async def test_a_command_that_changes_nothing_writes_nothing(
    handler: Handler, store: InMemoryEventStore
) -> None:
    team_id = await create_team(handler)
    first = await assign(handler, team_id, "rn-1", Discipline.NURSE)
    head = await store.head()

    again = await assign(handler, team_id, "rn-1", Discipline.NURSE)

    assert again.version == first.version
    assert await store.head() == head


# --- versions and concurrent writers ---------------------------------------------------


async def test_a_stale_expected_version_is_a_conflict_naming_the_current_one(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)
    await handler.execute(CARE_PLAN, plan_id, _goal(plan_id), caller=CALLER, scope=scope)
    head = await store.head()

    with pytest.raises(StaleVersion) as refused:
        await handler.execute(
            CARE_PLAN, plan_id, _goal(plan_id), caller=CALLER, scope=scope, expected_version=1
        )

    assert refused.value.extensions == {"currentVersion": 2, "code": "CONFLICT"}
    assert "changed by someone else" in refused.value.message
    assert await store.head() == head


async def test_an_expected_version_ahead_of_the_record_is_refused_too(handler: Handler) -> None:
    plan_id, scope = await _plan(handler)

    with pytest.raises(StaleVersion) as refused:
        await handler.execute(
            CARE_PLAN, plan_id, _goal(plan_id), caller=CALLER, scope=scope, expected_version=5
        )

    assert "ahead of it" in refused.value.message


async def test_without_an_expected_version_a_command_is_redecided_on_what_a_rival_wrote(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)
    seen = await handler.repository.load(CARE_PLAN, plan_id)
    # Another writer adds a goal after this caller read the plan.
    await handler.execute(CARE_PLAN, plan_id, _goal(plan_id, "first"), caller=CALLER, scope=scope)

    after = await handler.execute(
        CARE_PLAN, plan_id, _goal(plan_id, "second"), caller=CALLER, scope=scope, known=seen
    )

    assert after.version == 3
    assert after.state is not None
    assert [g.description for g in after.state.goals] == ["first", "second"]


async def test_an_expected_version_is_not_retried_when_a_rival_wrote_first(
    handler: Handler,
) -> None:
    plan_id, scope = await _plan(handler)
    seen = await handler.repository.load(CARE_PLAN, plan_id)
    await handler.execute(CARE_PLAN, plan_id, _goal(plan_id, "first"), caller=CALLER, scope=scope)

    with pytest.raises(StaleVersion) as refused:
        await handler.execute(
            CARE_PLAN,
            plan_id,
            _goal(plan_id, "second"),
            caller=CALLER,
            scope=scope,
            expected_version=seen.version,
            known=seen,
        )

    assert refused.value.extensions["currentVersion"] == 2


async def test_concurrent_commands_on_one_record_all_land_in_some_order(
    handler: Handler,
) -> None:
    plan_id, scope = await _plan(handler)
    commands = [_goal(plan_id, f"goal {n}") for n in range(12)]

    await asyncio.gather(
        *(handler.execute(CARE_PLAN, plan_id, c, caller=CALLER, scope=scope) for c in commands)
    )

    after = await handler.repository.load(CARE_PLAN, plan_id)
    assert after.version == 13
    assert after.state is not None
    assert sorted(g.description for g in after.state.goals) == sorted(
        f"goal {n}" for n in range(12)
    )


class _Crowded(InMemoryEventStore):
    """The real store, with a rival who adds a member to the team just before each of this
    caller's next `times` appends to it: a record too busy to ever write to."""

    def __init__(self, team_id: str) -> None:
        super().__init__(clock=clock)
        self.team_id, self.times, self.rivals = team_id, 0, 0

    async def append_many(self, writes: Sequence[StreamWrite]) -> list[list[Any]]:
        stream_id = TEAM.stream_id(self.team_id)
        if self.times and any(w.stream_id == stream_id for w in writes):
            self.times -= 1
            self.rivals += 1
            joined = RoleAssigned(
                team_id=self.team_id,
                user_id=f"rival-{self.rivals}",
                name="Rival",
                discipline=Discipline.NURSE,
                lead=False,
            )
            version = await self.stream_version(stream_id)
            rival = NewEvent(event=joined, team_id=self.team_id, actor_id="rival")
            await super().append_many([StreamWrite(stream_id, version, [rival])])
        return await super().append_many(writes)


async def test_a_record_changed_before_every_attempt_is_given_up_with_a_conflict() -> None:
    team_id = new_id()
    store = _Crowded(team_id)
    handler = Handler(Repository(store), follow_ups=NO_FOLLOW_UPS, clock=clock)
    create = build(team.CreateTeam, team_id=team_id, name="C", actor_id="dr-1", actor_name="D")
    await handler.execute(TEAM, team_id, create, caller=CALLER, scope=Scope(team_id), known=NEW)
    store.times = 1000

    with pytest.raises(StateConflict) as refused:
        await assign(handler, team_id, "rn-1", Discipline.NURSE)

    assert "being changed by others right now" in refused.value.message
    # One rival write before each attempt; after 25 attempts it gave up, writing nothing.
    assert store.rivals == 25
    members = (await handler.repository.load(TEAM, team_id)).state
    assert members is not None and members.member("rn-1") is None


# --- claims ----------------------------------------------------------------------------


async def test_a_taken_claim_is_refused_in_the_domains_words_and_writes_nothing(
    handler: Handler, store: InMemoryEventStore
) -> None:
    _, scope = await _plan(handler)
    again = enrollment(scope.team_id, "mrn- 1")  # the same MRN, typed differently
    head = await store.head()

    with pytest.raises(StateConflict) as refused:
        await enroll(handler, again)

    assert refused.value.message == "A patient with this MRN is already enrolled on this team."
    assert await store.head() == head
    assert await store.read_stream(PATIENT.stream_id(again.patient_id)) == []


async def test_a_claim_the_domain_gave_no_words_for_is_refused_in_general_ones(
    store: InMemoryEventStore,
) -> None:
    handler = Handler(Repository(store), follow_ups=NO_FOLLOW_UPS, clock=clock)
    ids = [new_id(), new_id()]
    for n, team_id in enumerate(ids):
        create = build(team.CreateTeam, team_id=team_id, name="C", actor_id="a", actor_name="A")
        run = handler.execute(
            TEAM,
            team_id,
            create,
            caller=CALLER,
            scope=Scope(team_id),
            claims=[Claim("team_name", "C")],
            known=NEW,
        )
        if n == 0:
            await run
        else:
            with pytest.raises(StateConflict, match=r"That value is already taken\."):
                await run


# --- follow-ups: the invariants every caller keeps --------------------------------------


async def test_an_intervention_added_through_the_write_side_starts_its_task_atomically(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)
    intervention_id = new_id()

    await handler.execute(
        CARE_PLAN, plan_id, _intervention(plan_id, intervention_id), caller=CALLER, scope=scope
    )

    (added,) = (await store.read_stream(CARE_PLAN.stream_id(plan_id)))[-1:]
    task_id = tasks.intervention_task_id(intervention_id)
    (created,) = await store.read_stream(TASK.stream_id(task_id))
    assert isinstance(added.payload, InterventionAdded)
    assert isinstance(created.payload, TaskCreated)
    assert created.payload.patient_id == scope.patient_id
    assert created.payload.due_date == TODAY + timedelta(days=7)
    assert created.causation_id == str(added.event_id)
    assert (await store.head()) == (await store.read_all())[-1].position  # one append


async def test_a_discontinued_interventions_task_is_cancelled_even_after_it_moved_meanwhile(
    handler: Handler, store: InMemoryEventStore
) -> None:
    plan_id, scope = await _plan(handler)
    intervention_id = new_id()
    await handler.execute(
        CARE_PLAN, plan_id, _intervention(plan_id, intervention_id), caller=CALLER, scope=scope
    )
    task_id = tasks.intervention_task_id(intervention_id)
    move = build(tasks.MoveTask, task_id=task_id, status=TaskStatus.IN_PROGRESS)
    await handler.execute(TASK, task_id, move, caller=CALLER, scope=scope)
    stop = build(
        careplan.DiscontinueIntervention,
        plan_id=plan_id,
        intervention_id=intervention_id,
        reason="Side effects",
    )

    await handler.execute(CARE_PLAN, plan_id, stop, caller=CALLER, scope=scope)

    plan_events = await _events(store, CARE_PLAN.stream_id(plan_id))
    task_events = await _events(store, TASK.stream_id(task_id))
    assert isinstance(plan_events[-1], InterventionDiscontinued)
    assert isinstance(task_events[-1], TaskMoved)
    assert task_events[-1].status is TaskStatus.CANCELLED


async def test_an_action_item_raised_through_the_write_side_starts_its_task(
    handler: Handler, store: InMemoryEventStore
) -> None:
    _, scope = await _plan(handler)
    huddle_id, task_id = new_id(), new_id()
    schedule = build(
        huddle.ScheduleHuddle, huddle_id=huddle_id, team_id=scope.team_id, at=NOW + timedelta(1)
    )
    team_scope = Scope(scope.team_id)
    await handler.execute(HUDDLE, huddle_id, schedule, caller=CALLER, scope=team_scope, known=NEW)
    raise_item = build(
        huddle.RaiseActionItem, huddle_id=huddle_id, task_id=task_id, title="Adherence call"
    )

    await handler.execute(HUDDLE, huddle_id, raise_item, caller=CALLER, scope=team_scope)

    raised = (await _events(store, HUDDLE.stream_id(huddle_id)))[-1]
    (created,) = await _events(store, TASK.stream_id(task_id))
    assert isinstance(raised, ActionItemRaised)
    assert isinstance(created, TaskCreated)
    assert (created.team_id, created.title) == (scope.team_id, "Adherence call")


async def test_a_handler_built_without_the_registry_would_leave_an_intervention_taskless(
    store: InMemoryEventStore,
) -> None:
    # Why the registry is built into the one write side every caller uses.
    bare = Handler(Repository(store), follow_ups=NO_FOLLOW_UPS, clock=clock)
    plan_id, scope = await _plan(bare)
    intervention_id = new_id()

    await bare.execute(
        CARE_PLAN, plan_id, _intervention(plan_id, intervention_id), caller=CALLER, scope=scope
    )

    task_id = tasks.intervention_task_id(intervention_id)
    assert await store.read_stream(TASK.stream_id(task_id)) == []


def test_the_loaded_record_of_a_new_id_is_empty() -> None:
    assert Loaded(None, 0) == NEW
