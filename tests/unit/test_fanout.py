"""The subscriptions hub: routing, repeats dropped by seq, and slow subscribers cut off
without holding up the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from schemas import codec
from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import TaskStatus
from services.api.fanout import Hub, Overflowed
from services.settings import Settings

AT = datetime(2026, 11, 22, 9, tzinfo=UTC)


def _settings(queue: int) -> Settings:
    return Settings(subscriber_queue_size=queue, _env_file=None)  # type: ignore[call-arg]


def _task_update(seq: int, team: str = "t-1", status: TaskStatus = TaskStatus.TODO) -> BoardUpdate:
    card = TaskCard(
        task_id="task-1",
        team_id=team,
        title="Check INR",
        source="manual",
        status=status,
        created_at=AT,
        updated_at=AT,
    )
    return BoardUpdate(seq=seq, team_id=team, kind="task", change=BoardChange.MOVED, task=card)


def _drain(queue: asyncio.Queue[BoardUpdate]) -> list[BoardUpdate]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_task_updates_reach_the_teams_board_subscribers_only() -> None:
    hub = Hub(_settings(8))
    with (
        hub.subscribe("t-1", on_overflow=lambda: None) as board,
        hub.subscribe("t-1", huddle_id="h-1", on_overflow=lambda: None) as huddle,
        hub.subscribe("t-2", on_overflow=lambda: None) as other_team,
    ):
        hub.dispatch(_task_update(1))
        assert [u.seq for u in _drain(board.queue)] == [1]
        assert _drain(huddle.queue) == []
        assert _drain(other_team.queue) == []


async def test_huddle_updates_reach_that_huddles_subscribers_and_roster_updates_everyone() -> None:
    hub = Hub(_settings(8))
    with (
        hub.subscribe("t-1", on_overflow=lambda: None) as board,
        hub.subscribe("t-1", huddle_id="h-1", on_overflow=lambda: None) as h1,
        hub.subscribe("t-1", huddle_id="h-2", on_overflow=lambda: None) as h2,
    ):
        hub.dispatch(BoardUpdate(seq=1, team_id="t-1", kind="huddle", huddle_id="h-1"))
        hub.dispatch(BoardUpdate(seq=2, team_id="t-1", kind="roster"))
        assert [u.kind for u in _drain(board.queue)] == ["roster"]
        assert [u.kind for u in _drain(h1.queue)] == ["huddle", "roster"]
        assert [u.kind for u in _drain(h2.queue)] == ["roster"]


async def test_goal_progress_updates_reach_the_teams_board_subscribers_only() -> None:
    hub = Hub(_settings(8))
    with (
        hub.subscribe("t-1", on_overflow=lambda: None) as board,
        hub.subscribe("t-1", huddle_id="h-1", on_overflow=lambda: None) as huddle,
        hub.subscribe("t-2", on_overflow=lambda: None) as other_team,
    ):
        hub.dispatch(
            BoardUpdate(seq=1, team_id="t-1", kind="goal", plan_id="plan-1", goal_id="goal-1")
        )
        assert [(u.kind, u.goal_id) for u in _drain(board.queue)] == [("goal", "goal-1")]
        assert _drain(huddle.queue) == []
        assert _drain(other_team.queue) == []


async def test_an_update_published_again_is_delivered_once() -> None:
    hub = Hub(_settings(8))
    with hub.subscribe("t-1", on_overflow=lambda: None) as board:
        for seq in (1, 2, 1, 2, 3, 3):
            hub.dispatch(_task_update(seq))
        assert [u.seq for u in _drain(board.queue)] == [1, 2, 3]


async def test_a_lower_seq_committed_late_is_still_delivered() -> None:
    hub = Hub(_settings(8))
    with hub.subscribe("t-1", on_overflow=lambda: None) as board:
        for seq in (4, 3, 4):
            hub.dispatch(_task_update(seq))
        assert [u.seq for u in _drain(board.queue)] == [4, 3]


async def test_a_slow_subscriber_is_cut_off_once_and_the_others_still_get_everything() -> None:
    hub = Hub(_settings(2))
    cut: list[str] = []
    with (
        hub.subscribe("t-1", on_overflow=lambda: cut.append("slow")) as slow,
        hub.subscribe("t-1", on_overflow=lambda: cut.append("fast")) as fast,
    ):
        received = []
        for seq in range(1, 6):
            hub.dispatch(_task_update(seq))
            received += _drain(fast.queue)  # the fast one keeps up
        assert cut == ["slow"]
        assert [u.seq for u in received] == [1, 2, 3, 4, 5]
        assert slow.overflowed
        with pytest.raises(Overflowed):
            await slow.next()
    assert hub.overflows == 1
    assert hub.subscribers == 0


async def test_an_undecodable_update_is_skipped_and_the_next_one_delivered() -> None:
    hub = Hub(_settings(8))
    with hub.subscribe("t-1", on_overflow=lambda: None) as board:
        hub._apply(b"{not json")
        hub._apply(codec.encode_board_update(_task_update(1)))
        assert [u.seq for u in _drain(board.queue)] == [1]
