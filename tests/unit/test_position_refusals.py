"""A position past the event store's head is refused without saying where the head is:
positions are global, so the head would tell a member of one team how busy every other
team has been."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from services.api.graphql import freshness, live
from services.common.errors import InvalidInput

HEAD = 987_654_321


class _Conn:
    async def fetchrow(self, _sql: str, *_args: Any) -> dict[str, Any]:
        return {"head": HEAD, "behind_at": None}

    async def fetchval(self, _sql: str, *_args: Any) -> int:
        return HEAD


class _Store:
    async def head(self) -> int:
        return HEAD


class _Database:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield _Conn()


def _ctx() -> Any:
    return SimpleNamespace(
        database=_Database(),
        repository=SimpleNamespace(store=_Store()),
        settings=SimpleNamespace(read_wait_seconds=1.0),
        hub=None,
    )


async def test_at_least_past_the_head_does_not_name_the_head() -> None:
    with pytest.raises(InvalidInput) as refused:
        await freshness.caught_up(_ctx(), "t-1", HEAD + 5, (freshness.BOARD,))
    assert "past the last position committed" in str(refused.value)
    assert str(HEAD) not in str(refused.value)
    assert str(HEAD) not in repr(getattr(refused.value, "extensions", None))


async def test_a_resume_after_the_head_does_not_name_the_head() -> None:
    with pytest.raises(InvalidInput) as refused:
        await live.missed(_ctx(), "t-1", HEAD + 5, None)
    assert "past the last position committed" in str(refused.value)
    assert str(HEAD) not in str(refused.value)
    assert str(HEAD) not in repr(getattr(refused.value, "extensions", None))
