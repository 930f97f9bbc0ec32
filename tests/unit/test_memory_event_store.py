"""The in-memory event store keeps the contract the PostgreSQL one does, without I/O."""

from __future__ import annotations

import pytest

from services.common.event_store import EventStorePort
from services.common.memory_store import InMemoryEventStore

# Before the import: pytest explains a failing assert only in modules it rewrites, and it
# rewrites only test_*.py files unless told.
pytest.register_assert_rewrite("tests.event_store_contract")
from tests.event_store_contract import EventStoreContract, Ticking  # noqa: E402 - registered above


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, clock: Ticking) -> EventStorePort:
        return InMemoryEventStore(clock=clock)
