"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.settings import Settings
from tests.integration.api import in_process_api
from tests.integration.workers import Workers


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def api(pool: asyncpg.Pool[Any], settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(pool, settings) as client:
        yield client
