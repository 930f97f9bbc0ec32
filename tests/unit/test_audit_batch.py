"""Access records of pushes handed over in shared batches (services.audit.batch): one
hand-off for publishes made together, none returning before its hand-off is accepted,
all of a failed hand-off refused, batches bounded, order kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.audit.batch import BatchedAuditSink
from services.audit.sink import AuditUnavailable

AT = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)


def record(n: int) -> AccessRecorded:
    return AccessRecorded(
        record_id=f"rec-{n}",
        at=AT,
        actor_id=f"user-{n}",
        actor_name="Member",
        action=AccessAction.SUBSCRIBE_PUSH,
        resource_type="Task",
        resource_id="task-1",
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason="member",
    )


@dataclass
class Outbox:
    """The sink behind the batches: each hand-off kept; refused while `down`; held at
    `gate` until it is set."""

    handoffs: list[list[str]] = field(default_factory=list)
    down: bool = False
    gate: asyncio.Event | None = None

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise AuditUnavailable("the outbox is away")
        self.handoffs.append([r.record_id for r in records])

    async def close(self) -> None:
        return None


async def test_publishes_made_together_share_one_hand_off_in_the_order_they_came() -> None:
    outbox = Outbox()
    batched = BatchedAuditSink(outbox, max_records=100)

    await asyncio.gather(*(batched.publish([record(n)]) for n in range(10)))

    assert outbox.handoffs == [[f"rec-{n}" for n in range(10)]]
    assert (batched.publishes, batched.records, batched.handoffs) == (10, 10, 1)


async def test_no_publish_returns_before_the_hand_off_carrying_it_is_accepted() -> None:
    outbox = Outbox(gate=asyncio.Event())
    batched = BatchedAuditSink(outbox, max_records=100)

    waiting = [asyncio.create_task(batched.publish([record(n)])) for n in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    assert outbox.handoffs == []

    assert outbox.gate is not None
    outbox.gate.set()
    await asyncio.gather(*waiting)
    assert outbox.handoffs == [["rec-0", "rec-1", "rec-2"]]


async def test_every_publish_of_a_failed_hand_off_is_refused_and_later_ones_go_on() -> None:
    outbox = Outbox(down=True)
    batched = BatchedAuditSink(outbox, max_records=100)

    refused = await asyncio.gather(
        *(batched.publish([record(n)]) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, AuditUnavailable) for r in refused)
    assert outbox.handoffs == []

    outbox.down = False
    await batched.publish([record(9)])
    assert outbox.handoffs == [["rec-9"]]


async def test_a_batch_holds_at_most_its_bound_and_never_splits_a_publish() -> None:
    outbox = Outbox()
    batched = BatchedAuditSink(outbox, max_records=3)
    sizes = [2, 2, 1, 5, 1]
    made = iter(range(100))
    publishes = [[record(next(made)) for _ in range(size)] for size in sizes]

    await asyncio.gather(*(batched.publish(p) for p in publishes))

    assert [len(h) for h in outbox.handoffs] == [2, 3, 5, 1]
    assert [r for h in outbox.handoffs for r in h] == [f"rec-{n}" for n in range(11)]


async def test_publishes_made_while_a_hand_off_is_under_way_share_the_next() -> None:
    outbox = Outbox(gate=asyncio.Event())
    batched = BatchedAuditSink(outbox, max_records=100)
    first = asyncio.create_task(batched.publish([record(0)]))
    for _ in range(5):
        await asyncio.sleep(0)
    later = [asyncio.create_task(batched.publish([record(n)])) for n in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)

    assert outbox.gate is not None
    outbox.gate.set()
    await asyncio.gather(first, *later)
    assert outbox.handoffs == [["rec-0"], ["rec-1", "rec-2", "rec-3", "rec-4", "rec-5"]]


async def test_a_publisher_that_gives_up_still_has_its_records_handed_over() -> None:
    outbox = Outbox(gate=asyncio.Event())
    batched = BatchedAuditSink(outbox, max_records=100)
    gone = asyncio.create_task(batched.publish([record(0)]))
    stays = asyncio.create_task(batched.publish([record(1)]))
    await asyncio.sleep(0)
    gone.cancel()

    assert outbox.gate is not None
    outbox.gate.set()
    await stays
    assert outbox.handoffs == [["rec-0", "rec-1"]]


async def test_a_closed_batcher_refuses_further_publishes() -> None:
    batched = BatchedAuditSink(Outbox(), max_records=10)
    await batched.close()

    with pytest.raises(AuditUnavailable):
        await batched.publish([record(0)])
