"""Reading a patient's audit trail in end-to-end tests, once the writer has caught up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests import operations as op
from tests.graphql import gql

Entries = list[dict[str, Any]]


async def trail_until(
    api: httpx.AsyncClient,
    officer: str,
    patient: str,
    wanted: Callable[[Entries], Any],
    seconds: float = 20,
) -> Entries:
    """The patient's trail once `wanted(entries)` holds (the writer follows within moments)."""
    deadline = time.monotonic() + seconds
    entries: Entries = []
    while time.monotonic() < deadline:
        page = await gql(
            api, op.AUDIT_TRAIL, {"filter": {"patientId": patient}, "first": 1000}, token=officer
        )
        entries = page["auditTrail"]["entries"]
        if wanted(entries):
            return entries
        await asyncio.sleep(0.2)
    raise AssertionError(f"the trail never showed what was wanted; it holds {entries}")
