"""A consent change whose cards come in several updates (services.tasks.projector
CONSENT_CARDS at a time) says the subscription is complete up to its position only with
the last card of its last part: a client cut off between parts resumes before it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.board import BoardChange, BoardUpdate
from services.api.graphql import board
from services.tasks.projector import CONSENT_MORE


def _consent(change: BoardChange | None) -> BoardUpdate:
    return BoardUpdate(
        seq=1, team_id="t-1", kind="consent", patient_id="p-1", position=40, change=change
    )


async def test_only_the_last_card_of_the_last_part_completes_the_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def authorize(*_args: Any, **_kwargs: Any) -> str:
        return "access"

    async def updates(*_args: Any, **_kwargs: Any) -> AsyncIterator[tuple[BoardUpdate, str]]:
        yield _consent(CONSENT_MORE), "access"
        yield _consent(None), "access"

    async def redecided(*_args: Any) -> list[tuple[object, str]]:
        return [(object(), "UPDATED"), (object(), "UPDATED")]

    async def flush(_ctx: Any) -> None:
        return None

    monkeypatch.setattr(board, "authorize", authorize)
    monkeypatch.setattr(board, "updates", updates)
    monkeypatch.setattr(board, "_redecided", redecided)
    monkeypatch.setattr(board, "flush", flush)
    info: Any = SimpleNamespace(context=SimpleNamespace())
    positions = [e.position async for e in board.board_changed(info, "t-1", after=30)]  # type: ignore[arg-type]

    assert positions == [39, 39, 39, 40]
