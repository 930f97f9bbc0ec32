"""The event store's contract: tests every EventStorePort must pass, run once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.event_store import (
    Claim,
    ClaimTaken,
    EventStorePort,
    NewEvent,
    StreamWrite,
    WrongExpectedVersion,
)
from tests.factories import goal_added, task_created

# Any fixed instant: the store only records times, it never compares them with today.
START = datetime(2031, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)


class Ticking:
    """A clock that starts at START and moves on a second each time the store reads it."""

    def __init__(self) -> None:
        self.readings: list[datetime] = []

    def __call__(self) -> datetime:
        self.readings.append(START + timedelta(seconds=len(self.readings)))
        return self.readings[-1]


def goal(plan_id: str, n: int, *, patient_id: str | None = "p-1") -> NewEvent:
    return goal_added(
        plan_id, team_id=f"team-{n % 5}", description=f"goal {n}", patient_id=patient_id
    )


class EventStoreContract:
    """Subclass it with a `store` fixture: an empty store whose clock is the `clock` fixture."""

    @pytest.fixture
    def clock(self) -> Ticking:
        return Ticking()

    @pytest.fixture
    def store(self, clock: Ticking) -> EventStorePort:
        raise NotImplementedError("each backend's test class provides the store")

    async def test_appended_events_read_back_in_stream_order_with_versions(
        self, store: EventStorePort
    ) -> None:
        recorded = await store.append("plan-a", 0, [goal("plan-a", i) for i in range(3)])
        more = await store.append("plan-a", 3, [goal("plan-a", 3)])

        stream = await store.read_stream("plan-a")

        assert [e.stream_version for e in stream] == [1, 2, 3, 4]
        assert [e.event_id for e in stream] == [r.envelope.event_id for r in recorded + more]
        assert [r.position for r in recorded + more] == [1, 2, 3, 4]
        assert await store.stream_version("plan-a") == 4
        assert await store.stream_version("never-written") == 0

    async def test_the_streams_that_exist_are_those_holding_an_event(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-a", 0, [goal("plan-a", 1)])
        await store.append("plan-b", 0, [goal("plan-b", 2)])
        await store.append_many([StreamWrite("mrn-holder", 0, [], [Claim("mrn", "k")])])

        found = await store.existing_streams(["plan-b", "plan-c", "mrn-holder", "plan-a", "plan-a"])

        assert found == {"plan-a", "plan-b"}
        assert await store.existing_streams([]) == set()

    async def test_a_store_never_written_to_is_empty_at_position_zero(
        self, store: EventStorePort
    ) -> None:
        assert await store.head() == 0
        assert await store.read_all(0) == []
        assert await store.read_stream("plan-0") == []
        assert await store.stream_version("plan-0") == 0
        assert await store.read_streams(["plan-0"]) == {}
        assert await store.streams_started_for_patient("p-1", "GoalAdded") == []
        assert await store.streams_of_patients(["p-1"], "GoalAdded") == {}
        assert await store.team_holds("team-1", "GoalAdded") is False

    async def test_reading_a_stream_after_a_version_returns_only_the_later_events(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-r", 0, [goal("plan-r", i) for i in range(4)])

        later = await store.read_stream("plan-r", after_version=2)

        assert [e.stream_version for e in later] == [3, 4]
        assert [e.payload for e in later] == [
            e.payload for e in (await store.read_stream("plan-r"))[2:]
        ]
        assert await store.read_stream("plan-r", after_version=4) == []
        assert await store.read_stream("never-written", after_version=0) == []

    async def test_several_streams_read_after_their_own_versions_at_once(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-s", 0, [goal("plan-s", i) for i in range(3)])
        await store.append("plan-t", 0, [goal("plan-t", 9)])
        await store.append("plan-u", 0, [goal("plan-u", i) for i in range(2)])

        news = await store.read_streams_after({"plan-s": 1, "plan-t": 1, "plan-u": 0, "none": 0})

        assert news == {
            "plan-s": (await store.read_stream("plan-s"))[1:],
            "plan-u": await store.read_stream("plan-u"),
        }
        assert await store.read_streams_after({}) == {}

    async def test_an_envelope_carries_what_the_new_event_brings_and_reads_back_equal(
        self, store: EventStorePort
    ) -> None:
        event_id = uuid.uuid4()
        new = dataclasses.replace(
            goal("plan-e", 0, patient_id="p-e"),
            actor_id="user-9",
            correlation_id="request-1",
            causation_id="event-0",
            occurred_at=START - timedelta(days=3),
            event_id=event_id,
        )

        [recorded] = await store.append("plan-e", 0, [new])

        env = recorded.envelope
        assert (env.event_id, env.type, env.schema_version) == (event_id, "GoalAdded", 1)
        assert (env.stream_id, env.stream_version, env.team_id) == ("plan-e", 1, "team-0")
        assert (env.patient_id, env.actor_id) == ("p-e", "user-9")
        assert (env.correlation_id, env.causation_id) == ("request-1", "event-0")
        assert env.occurred_at == START - timedelta(days=3)
        assert env.payload == new.event
        assert await store.read_stream("plan-e") == [env]
        assert await store.read_all(0) == [recorded]
        assert await store.read_streams(["plan-e"]) == {"plan-e": [env]}

    async def test_missing_ids_and_times_default_to_a_new_id_the_clocks_time_and_the_event_id(
        self, store: EventStorePort, clock: Ticking
    ) -> None:
        recorded = await store.append("plan-f", 0, [goal("plan-f", 0), goal("plan-f", 1)])

        envelopes = [r.envelope for r in recorded]
        assert [e.occurred_at for e in envelopes] == clock.readings
        assert [e.correlation_id for e in envelopes] == [str(e.event_id) for e in envelopes]
        assert [e.causation_id for e in envelopes] == [None, None]
        assert len({e.event_id for e in envelopes}) == 2
        assert await store.read_stream("plan-f") == envelopes

    async def test_a_time_given_with_an_offset_reads_back_as_the_same_instant_in_utc(
        self, store: EventStorePort
    ) -> None:
        india = timezone(timedelta(hours=5, minutes=30))
        at = datetime(2031, 3, 4, 12, 0, tzinfo=india)
        await store.append("plan-z", 0, [dataclasses.replace(goal("plan-z", 0), occurred_at=at)])

        [env] = await store.read_stream("plan-z")

        assert env.occurred_at == at
        assert env.occurred_at.utcoffset() == timedelta(0)

    async def test_read_all_returns_at_most_limit_events_after_the_position_in_commit_order(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-l1", 0, [goal("plan-l1", 0), goal("plan-l1", 1)])
        await store.append("plan-l2", 0, [goal("plan-l2", 2)])
        await store.append("plan-l1", 2, [goal("plan-l1", 3), goal("plan-l1", 4)])

        pages = [await store.read_all(after, 2) for after in (0, 2, 4)]

        assert [[r.position for r in page] for page in pages] == [[1, 2], [3, 4], [5]]
        assert [(r.envelope.stream_id, r.envelope.stream_version) for p in pages for r in p] == [
            ("plan-l1", 1),
            ("plan-l1", 2),
            ("plan-l2", 1),
            ("plan-l1", 3),
            ("plan-l1", 4),
        ]
        assert await store.read_all(5) == []
        assert await store.read_all(1, 0) == []
        assert await store.head() == 5

    async def test_a_stale_expected_version_raises_a_conflict_and_writes_nothing(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-b", 0, [goal("plan-b", 0)])

        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("plan-b", 0, [goal("plan-b", 1), goal("plan-b", 2)])

        assert info.value.actual == 1
        assert len(await store.read_stream("plan-b")) == 1
        assert await store.head() == 1

    async def test_a_conflict_names_the_stale_stream_the_version_expected_and_the_one_found(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-v", 0, [goal("plan-v", 0)])

        with pytest.raises(WrongExpectedVersion) as ahead:
            await store.append("plan-v", 5, [goal("plan-v", 1)])
        with pytest.raises(WrongExpectedVersion) as behind:
            await store.append_many(
                [
                    StreamWrite("plan-w", 0, [goal("plan-w", 2)]),
                    StreamWrite("plan-v", 0, [goal("plan-v", 3)]),
                ]
            )

        assert (ahead.value.stream_id, ahead.value.expected, ahead.value.actual) == ("plan-v", 5, 1)
        assert (behind.value.stream_id, behind.value.expected, behind.value.actual) == (
            "plan-v",
            0,
            1,
        )
        assert await store.stream_version("plan-w") == 0
        assert await store.head() == 1

    async def test_no_expected_version_appends_after_whatever_the_stream_holds(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-n", 0, [goal("plan-n", 0)])

        recorded = await store.append("plan-n", None, [goal("plan-n", 1), goal("plan-n", 2)])
        fresh = await store.append("plan-o", None, [goal("plan-o", 3)])

        assert [r.envelope.stream_version for r in recorded + fresh] == [2, 3, 1]
        assert [r.position for r in recorded + fresh] == [2, 3, 4]

    async def test_fifty_concurrent_appends_with_one_expected_version_let_exactly_one_through(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-c", 0, [goal("plan-c", 0)])

        async def attempt(n: int) -> str:
            try:
                await store.append("plan-c", 1, [goal("plan-c", n), goal("plan-c", n + 100)])
            except WrongExpectedVersion:
                return "conflict"
            return "ok"

        outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))

        assert outcomes.count("ok") == 1
        assert outcomes.count("conflict") == 49
        stream = await store.read_stream("plan-c")
        assert [e.stream_version for e in stream] == [1, 2, 3]  # nothing partial
        assert await store.head() == 3

    async def test_a_reader_tailing_read_all_sees_every_position_once_in_order_under_load(
        self, store: EventStorePort
    ) -> None:
        writers, per_writer = 8, 500
        total = writers * per_writer
        done = asyncio.Event()

        async def writer(w: int) -> None:
            stream = f"writer-{w}"
            for version in range(per_writer):
                await store.append(stream, version, [goal(stream, version)])

        seen: list[int] = []

        async def reader() -> None:
            after = 0
            while len(seen) < total:
                batch = await store.read_all(after, limit=97)
                if not batch:
                    if done.is_set() and await store.head() == after:
                        break
                    await asyncio.sleep(0)
                    continue
                seen.extend(r.position for r in batch)
                after = batch[-1].position

        async def write_all() -> None:
            await asyncio.gather(*(writer(w) for w in range(writers)))
            done.set()

        await asyncio.gather(reader(), write_all())

        assert seen == list(range(1, total + 1))
        for w in range(writers):
            versions = [e.stream_version for e in await store.read_stream(f"writer-{w}")]
            assert versions == list(range(1, per_writer + 1))

    async def test_a_write_to_several_streams_lands_whole_or_not_at_all(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-m1", 0, [goal("plan-m1", 0)])

        recorded = await store.append_many(
            [
                StreamWrite("plan-m1", 1, [goal("plan-m1", 1)]),
                StreamWrite("plan-m2", 0, [goal("plan-m2", 2), goal("plan-m2", 3)]),
            ]
        )
        with pytest.raises(WrongExpectedVersion):
            await store.append_many(
                [
                    StreamWrite("plan-m3", 0, [goal("plan-m3", 4)]),
                    StreamWrite("plan-m2", 0, [goal("plan-m2", 5)]),  # stale: plan-m2 is at 2
                ]
            )

        assert [[r.position for r in rs] for rs in recorded] == [[2], [3, 4]]
        assert [[r.envelope.stream_version for r in rs] for rs in recorded] == [[2], [1, 2]]
        assert await store.stream_version("plan-m3") == 0
        assert await store.head() == 4

    async def test_a_stream_written_twice_in_one_call_goes_on_from_its_first_write(
        self, store: EventStorePort
    ) -> None:
        recorded = await store.append_many(
            [
                StreamWrite("plan-t", 0, [goal("plan-t", 0), goal("plan-t", 1)]),
                StreamWrite("plan-t", 2, [goal("plan-t", 2)]),
            ]
        )
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append_many(
                [
                    StreamWrite("plan-t", 3, [goal("plan-t", 3)]),
                    StreamWrite("plan-t", 3, [goal("plan-t", 4)]),
                ]
            )

        assert [[r.envelope.stream_version for r in rs] for rs in recorded] == [[1, 2], [3]]
        assert (info.value.expected, info.value.actual) == (3, 4)
        assert await store.stream_version("plan-t") == 3

    async def test_a_call_with_neither_events_nor_claims_writes_nothing_and_checks_no_version(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-x", 0, [goal("plan-x", 0)])

        nothing = await store.append_many(
            [StreamWrite("plan-x", 0, []), StreamWrite("plan-y", 7, [])]
        )

        assert nothing == [[], []]
        assert await store.append("plan-x", 9, []) == []
        assert await store.append_many([]) == []
        assert await store.head() == 1
        assert await store.stream_version("plan-y") == 0

    async def test_an_event_id_already_recorded_is_refused_and_the_call_writes_nothing(
        self, store: EventStorePort
    ) -> None:
        taken, twin = uuid.uuid4(), uuid.uuid4()
        await store.append("plan-u1", 0, [dataclasses.replace(goal("plan-u1", 0), event_id=taken)])

        with pytest.raises(WrongExpectedVersion):
            await store.append_many(
                [
                    StreamWrite("plan-u2", 0, [goal("plan-u2", 1)], [Claim("mrn", "t:U2")]),
                    StreamWrite(
                        "plan-u3", 0, [dataclasses.replace(goal("plan-u3", 2), event_id=taken)]
                    ),
                ]
            )
        with pytest.raises(WrongExpectedVersion):
            await store.append(
                "plan-u4",
                0,
                [dataclasses.replace(goal("plan-u4", n), event_id=twin) for n in (3, 4)],
            )

        assert await store.head() == 1
        assert [await store.stream_version(f"plan-u{n}") for n in (2, 3, 4)] == [0, 0, 0]
        await store.append("plan-u5", 0, [goal("plan-u5", 5)], claims=[Claim("mrn", "t:U2")])

    async def test_a_claimed_value_can_be_held_by_one_stream_only_even_under_concurrency(
        self, store: EventStorePort
    ) -> None:
        async def attempt(n: int) -> str:
            try:
                await store.append(
                    f"patient-{n}",
                    0,
                    [goal(f"patient-{n}", n)],
                    claims=[Claim("mrn", "team-1:A1")],
                )
            except ClaimTaken as exc:
                assert "A1" not in str(exc)  # the claimed value may be PHI: never in messages
                assert exc.scope == "mrn"
                return "taken"
            return "ok"

        outcomes = await asyncio.gather(*(attempt(n) for n in range(10)))
        await store.append(
            "patient-x", 0, [goal("patient-x", 99)], claims=[Claim("mrn", "team-2:A1")]
        )

        assert sorted(outcomes) == ["ok"] + ["taken"] * 9
        assert await store.head() == 2  # the winner and the other team's patient; nothing else

    async def test_the_same_key_may_be_claimed_once_in_each_scope(
        self, store: EventStorePort
    ) -> None:
        await store.append("patient-k", 0, [goal("patient-k", 0)], claims=[Claim("mrn", "t:K1")])
        await store.append("patient-l", 0, [goal("patient-l", 1)], claims=[Claim("ssn", "t:K1")])

        with pytest.raises(ClaimTaken) as info:
            await store.append(
                "patient-m", 0, [goal("patient-m", 2)], claims=[Claim("ssn", "t:K1")]
            )

        assert info.value.scope == "ssn"
        assert await store.head() == 2

    async def test_a_held_claim_is_refused_even_to_its_holder_and_to_one_call_claiming_it_twice(
        self, store: EventStorePort
    ) -> None:
        await store.append("patient-o", 0, [goal("patient-o", 0)], claims=[Claim("mrn", "t:O1")])

        with pytest.raises(ClaimTaken):
            await store.append(
                "patient-o", 1, [goal("patient-o", 1)], claims=[Claim("mrn", "t:O1")]
            )
        with pytest.raises(ClaimTaken):
            await store.append(
                "patient-p",
                0,
                [goal("patient-p", 2)],
                claims=[Claim("mrn", "t:P1"), Claim("mrn", "t:P1")],
            )

        assert await store.head() == 1
        await store.append("patient-q", 0, [goal("patient-q", 3)], claims=[Claim("mrn", "t:P1")])

    async def test_a_taken_claim_in_one_write_undoes_the_other_writes_and_their_claims(
        self, store: EventStorePort
    ) -> None:
        await store.append("patient-h", 0, [goal("patient-h", 0)], claims=[Claim("mrn", "t:H1")])

        with pytest.raises(ClaimTaken) as info:
            await store.append_many(
                [
                    StreamWrite("patient-a", 0, [goal("patient-a", 1)], [Claim("mrn", "t:A1")]),
                    StreamWrite("patient-b", 0, [goal("patient-b", 2)], [Claim("mrn", "t:H1")]),
                ]
            )

        assert info.value.scope == "mrn"
        assert "H1" not in str(info.value)
        assert await store.read_stream("patient-a") == []
        assert await store.head() == 1
        await store.append("patient-c", 0, [goal("patient-c", 3)], claims=[Claim("mrn", "t:A1")])

    async def test_a_stale_write_is_a_conflict_before_its_claims_are_tried_and_takes_none(
        self, store: EventStorePort
    ) -> None:
        await store.append("patient-s", 0, [goal("patient-s", 0)])

        with pytest.raises(WrongExpectedVersion):
            await store.append(
                "patient-s", 0, [goal("patient-s", 1)], claims=[Claim("mrn", "t:S1")]
            )
        await store.append("patient-r", 0, [goal("patient-r", 2)], claims=[Claim("mrn", "t:S1")])
        with pytest.raises(WrongExpectedVersion):  # stale and its claim held: stale wins
            await store.append(
                "patient-s", 0, [goal("patient-s", 3)], claims=[Claim("mrn", "t:S1")]
            )

        assert await store.head() == 2

    async def test_a_write_of_claims_alone_holds_them_and_records_no_event(
        self, store: EventStorePort
    ) -> None:
        held = await store.append("patient-z", 0, [], claims=[Claim("mrn", "t:Z1")])

        with pytest.raises(ClaimTaken):
            await store.append(
                "patient-y", 0, [goal("patient-y", 0)], claims=[Claim("mrn", "t:Z1")]
            )
        with pytest.raises(WrongExpectedVersion):  # versions are checked all the same
            await store.append("patient-z", 3, [], claims=[Claim("mrn", "t:Z2")])

        assert held == []
        assert await store.head() == 0
        assert await store.stream_version("patient-z") == 0
        await store.append("patient-w", 0, [], claims=[Claim("mrn", "t:Z2")])

    async def test_a_patients_streams_are_found_by_the_event_that_started_them(
        self, store: EventStorePort
    ) -> None:
        for n, patient in enumerate(["p-7", "p-8", "p-7"]):
            await store.append(
                f"plan-{n}",
                0,
                [goal_added(f"plan-{n}", team_id="t", patient_id=patient) for _ in range(2)],
            )

        assert await store.streams_started_for_patient("p-7", "GoalAdded") == ["plan-0", "plan-2"]
        streams = await store.read_streams(["plan-2", "plan-1", "missing", "plan-2"])
        assert sorted(streams) == ["plan-1", "plan-2"]
        assert [e.stream_version for e in streams["plan-2"]] == [1, 2]

    async def test_patients_streams_are_whole_and_ordered_by_their_first_event_or_first_match(
        self, store: EventStorePort
    ) -> None:
        """streams_of_patients orders streams by their first event; streams_started_for_patient
        by their first event of the type naming the patient."""
        await store.append("plan-a", 0, [goal("plan-a", 0, patient_id="p-1")])
        await store.append("plan-b", 0, [goal("plan-b", 1, patient_id="p-2")])
        await store.append("task-c", 0, [task_created("c", team_id="t", patient_id="p-1")])
        await store.append("plan-a", 1, [goal("plan-a", 2, patient_id=None)])
        await store.append("plan-d", 0, [goal("plan-d", 3, patient_id=None)])
        await store.append("plan-g", 0, [goal("plan-g", 4, patient_id="p-2")])
        await store.append("plan-d", 1, [goal("plan-d", 5, patient_id="p-2")])
        await store.append("plan-e", 0, [goal("plan-e", 6, patient_id="p-9")])

        streams = await store.streams_of_patients(["p-2", "p-1", "p-1"], "GoalAdded")

        assert list(streams) == ["plan-a", "plan-b", "plan-d", "plan-g"]
        assert {s: [e.stream_version for e in es] for s, es in streams.items()} == {
            "plan-a": [1, 2],
            "plan-b": [1],
            "plan-d": [1, 2],
            "plan-g": [1],
        }
        assert streams["plan-a"] == await store.read_stream("plan-a")
        assert await store.streams_started_for_patient("p-2", "GoalAdded") == [
            "plan-b",
            "plan-g",
            "plan-d",
        ]
        assert await store.streams_started_for_patient("p-1", "TaskCreated") == ["task-c"]
        assert await store.streams_of_patients(["p-1"], "TaskCreated") == {
            "task-c": await store.read_stream("task-c")
        }
        assert await store.streams_of_patients(["p-5"], "GoalAdded") == {}

    async def test_a_patients_events_of_a_type_read_in_pages_by_position(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-a", 0, [goal("plan-a", 0, patient_id="p-1")])
        await store.append("plan-b", 0, [goal("plan-b", 1, patient_id="p-2")])
        await store.append("task-c", 0, [task_created("c", team_id="t", patient_id="p-1")])
        await store.append("plan-a", 1, [goal("plan-a", 2, patient_id="p-1")])
        await store.append("plan-d", 0, [goal("plan-d", 3, patient_id="p-1")])

        every = await store.patient_events("p-1", "GoalAdded")
        assert [(e.position, e.envelope.stream_id) for e in every] == [
            (1, "plan-a"),
            (4, "plan-a"),
            (5, "plan-d"),
        ]
        first = await store.patient_events("p-1", "GoalAdded", limit=2)
        assert [e.position for e in first] == [1, 4]
        rest = await store.patient_events("p-1", "GoalAdded", after_position=4, limit=2)
        assert [e.position for e in rest] == [5]
        assert rest[0].envelope == (await store.read_stream("plan-d"))[0]
        assert await store.patient_events("p-1", "GoalAdded", after_position=5) == []
        assert await store.patient_events("p-9", "GoalAdded") == []
        assert await store.patient_events("p-1", "TaskCreated", limit=0) == []

    async def test_a_team_holds_an_event_type_once_one_of_its_envelopes_names_the_team(
        self, store: EventStorePort
    ) -> None:
        await store.append("plan-a", 0, [goal_added("plan-a", team_id="t-1", patient_id="p-1")])
        await store.append("task-b", 0, [task_created("b", team_id="t-2")])
        await store.append("patient-c", 0, [], claims=[Claim("mrn", "t-3:C1")])

        assert await store.team_holds("t-1", "GoalAdded") is True
        assert await store.team_holds("t-1", "TaskCreated") is False
        assert await store.team_holds("t-2", "TaskCreated") is True
        assert await store.team_holds("t-2", "GoalAdded") is False
        assert await store.team_holds("t-3", "GoalAdded") is False
        assert await store.team_holds("t-", "GoalAdded") is False

    async def test_concurrent_commands_are_each_all_or_nothing_and_leave_no_gap(
        self, store: EventStorePort
    ) -> None:
        """A stale command, or one whose claim another holds, is refused alone."""
        await check_mixed_commands(store, await run_mixed_commands(store))


async def run_mixed_commands(store: EventStorePort) -> list[str]:
    """Twelve concurrent commands on a store holding nothing but what this writes: the
    third stale, the fifth and sixth claiming one value, the rest fine. Each one's outcome:
    "ok" or the exception's name."""
    await store.append("plan-g0", 0, [goal("plan-g0", 0)])

    async def command(n: int) -> str:
        stream = f"plan-g{n}"
        try:
            if n == 3:  # stale: plan-g0 is at version 1
                await store.append_many(
                    [
                        StreamWrite("plan-g3", 0, [goal(stream, n)]),
                        StreamWrite("plan-g0", 0, [goal("plan-g0", n)]),
                    ]
                )
            elif n in (5, 6):  # the same claim: the first of the two holds it
                await store.append(stream, 0, [goal(stream, n)], claims=[Claim("mrn", "t:B7")])
            else:
                await store.append(stream, 0, [goal(stream, n), goal(stream, n + 100)])
        except (WrongExpectedVersion, ClaimTaken) as exc:
            return type(exc).__name__
        return "ok"

    return list(await asyncio.gather(*(command(n) for n in range(1, 13))))


async def check_mixed_commands(store: EventStorePort, outcomes: list[str]) -> None:
    """Each of run_mixed_commands' commands was all or nothing, and no position is missing."""
    assert outcomes[2] == "WrongExpectedVersion"
    assert sorted(outcomes[4:6]) == ["ClaimTaken", "ok"]
    assert outcomes.count("ok") == 10
    assert await store.read_stream("plan-g3") == []  # nothing of the refused command
    assert len(await store.read_stream("plan-g0")) == 1
    everything = await store.read_all(0, 100)
    assert [r.position for r in everything] == list(range(1, len(everything) + 1))
    assert len(everything) == 1 + 9 * 2 + 1  # plan-g0, nine two-event commands, one claimer
    for n in range(1, 13):
        versions = [e.stream_version for e in await store.read_stream(f"plan-g{n}")]
        assert versions in ([], [1], [1, 2]), (n, versions)
