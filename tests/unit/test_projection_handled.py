"""Each read model is handed only the events it does something for: any other event
leaves it as it is, so its projection skips them before any work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from schemas.base import Event
from schemas.envelope import Envelope
from schemas.registry import REGISTRY
from services.common.projection import Positioned
from services.tasks import monitoring, monitoring_store, projector, store
from services.tasks.monitoring import Signals
from services.tasks.projector import Board

AT = datetime(2026, 3, 2, 9, tzinfo=UTC)


def _bare(model: type[Event]) -> Envelope:
    """An event of `model`'s type with none of its fields set: an `apply` that handles the
    type reads its fields (and fails); one that leaves it alone never looks at them."""
    return Envelope.model_construct(
        event_id=uuid4(),
        type=model.event_type,
        schema_version=model.schema_version,
        stream_id="stream-1",
        stream_version=1,
        team_id="team-1",
        patient_id="patient-1",
        actor_id="u-1",
        occurred_at=AT,
        correlation_id="c-1",
        payload=model.model_construct(),
    )


def _others(handled: tuple[type[Event], ...]) -> list[Any]:
    models = [m for m in REGISTRY.all_models() if not issubclass(m, handled)]
    return [pytest.param(m, id=f"{m.event_type}-v{m.schema_version}") for m in models]


@pytest.mark.parametrize("model", _others(projector.HANDLED))
def test_the_board_is_left_as_it_is_by_every_event_it_does_not_handle(
    model: type[Event],
) -> None:
    assert projector.apply(Board(), _bare(model), position=1) == projector.Applied()


@pytest.mark.parametrize("model", _others(monitoring.HANDLED))
def test_the_signals_model_is_left_as_it_is_by_every_event_it_does_not_handle(
    model: type[Event],
) -> None:
    assert monitoring.apply(Signals(), _bare(model), 1) == monitoring.Applied()


class _NoStatements:
    """A connection that refuses every statement."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a statement was sent ({name})")


async def test_a_batch_of_events_the_read_models_do_not_handle_is_skipped_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Neither projection's `apply` runs, nor any statement, for events neither handles.
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("apply ran for an event it does not handle")

    monkeypatch.setattr(projector, "apply", refuse)
    monkeypatch.setattr(monitoring, "apply", refuse)
    neither = [
        m
        for m in REGISTRY.all_models()
        if not issubclass(m, projector.HANDLED) and not issubclass(m, monitoring.HANDLED)
    ]
    assert neither  # readings-free events exist (a team created, a huddle note...)
    batch = [Positioned(n + 1, _bare(m)) for n, m in enumerate(neither)]
    conn: Any = _NoStatements()
    await store.BoardProjection().apply(conn, batch)
    await monitoring_store.SignalsProjection().apply(conn, batch)
