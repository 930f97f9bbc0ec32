"""The in-memory event store keeps the contract the PostgreSQL one does, without I/O."""

from __future__ import annotations

import pytest

from services.common.event_store import EventStorePort
from services.common.memory_store import InMemoryEventStore
from tests.event_store_contract import EventStoreContract, Ticking


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, clock: Ticking) -> EventStorePort:
        return InMemoryEventStore(clock=clock)
