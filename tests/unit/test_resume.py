"""A board subscription resuming after a position: the changes the log holds after it
first, then the live ones past them, a change in both given once; consent notices reach
board subscribers; a reader waiting for a team's read model wakes on the team's update."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import TaskStatus
from services.api.fanout import Hub, wants
from services.api.graphql import live
from services.settings import Settings

AT = datetime(2026, 11, 22, 9, tzinfo=UTC)


def _update(seq: int, position: int | None, team: str = "t-1") -> BoardUpdate:
    card = TaskCard(
        task_id=f"task-{seq}",
        team_id=team,
        title="Check INR",
        source="manual",
        status=TaskStatus.TODO,
        created_at=AT,
        updated_at=AT,
    )
    return BoardUpdate(
        seq=seq, team_id=team, kind="task", change=BoardChange.CREATED, task=card, position=position
    )


class _Context:
    """What `live.updates` asks of the GraphQL context."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.response = None
        self.teams: dict[str, Any] = {}

    def require_actor(self) -> None:
        return None


async def _resumed(
    monkeypatch: pytest.MonkeyPatch, logged: list[BoardUpdate], live_ones: list[BoardUpdate]
) -> list[int | None]:
    hub = Hub(Settings(_env_file=None))  # type: ignore[call-arg]

    async def missed(_ctx: Any, _team: str, _after: int, _huddle: str | None) -> list[BoardUpdate]:
        # The hub hears of these while the log is read: some of them are in the log too.
        for update in live_ones:
            hub.dispatch(update)
        return logged

    monkeypatch.setattr(live, "missed", missed)
    stream = live.updates(_Context(hub), "t-1", "board", access=None, after=10)  # type: ignore[arg-type]
    got = []
    for _ in range(len({u.position for u in [*logged, *live_ones]})):
        update, _access = await asyncio.wait_for(anext(stream), 1)
        got.append(update.position)
    await stream.aclose()
    return got


async def test_a_change_both_in_the_log_and_live_is_given_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged = [_update(101, 11), _update(102, 12)]
    live_ones = [_update(2, 12), _update(3, 13), _update(4, 14)]
    assert await _resumed(monkeypatch, logged, live_ones) == [11, 12, 13, 14]


async def test_a_change_no_event_made_is_always_given_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A task that became overdue as the days passed has no position: never a repeat.
    got = await _resumed(monkeypatch, [_update(101, 11)], [_update(2, 11), _update(3, None)])
    assert got == [11, None]


def test_consent_notices_reach_board_subscribers_not_huddle_ones() -> None:
    consent = BoardUpdate(seq=1, team_id="t-1", kind="consent", patient_id="p-1", position=5)
    assert wants(None, consent)
    assert not wants("h-1", consent)


async def test_a_reader_waiting_for_a_team_wakes_on_its_next_update_only() -> None:
    hub = Hub(Settings(_env_file=None))  # type: ignore[call-arg]
    waiting = asyncio.ensure_future(hub.moved("t-1", 5))
    await asyncio.sleep(0)
    hub.dispatch(_update(1, 3, team="t-2"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    hub.dispatch(_update(2, 4, team="t-1"))
    await asyncio.wait_for(waiting, 1)
