"""The request context's caller: a token that expired since it was accepted (a WebSocket
outlives a request) serves nothing more, pushes included (they name their requester)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.api.graphql.context import Context
from services.common.actor import Actor
from services.common.errors import Unauthenticated
from services.settings import Settings


def _context(expires_at: datetime | None) -> Context:
    services: Any = SimpleNamespace(sign_ins=None)
    actor = Actor(user_id="u-1", name="Dr A", roles=frozenset(), expires_at=expires_at)
    return Context(services=services, request_id="r", correlation_id="r", actor=actor)


def test_a_caller_whose_token_is_still_valid_is_served() -> None:
    ctx = _context(datetime.now(UTC) + timedelta(minutes=5))

    assert ctx.require_actor().user_id == "u-1"
    assert ctx.requester().actor.user_id == "u-1"


def test_a_caller_whose_token_has_expired_is_unauthenticated_for_operations_and_pushes() -> None:
    ctx = _context(datetime.now(UTC) - timedelta(seconds=1))

    with pytest.raises(Unauthenticated, match="expired"):
        ctx.require_actor()
    with pytest.raises(Unauthenticated, match="expired"):
        ctx.requester()  # what every push records itself under, before it is sent


@pytest.mark.parametrize(
    "sent", ["Angehörige".encode(), "Angehörige".encode("latin-1")], ids=["utf-8", "latin-1"]
)
def test_a_break_glass_reason_is_kept_as_the_text_its_sender_typed(sent: bytes) -> None:
    services: Any = SimpleNamespace(settings=Settings(_env_file=None))  # type: ignore[call-arg]
    ctx = Context(services=services, request_id="r", correlation_id="r")

    # ASGI servers hand header bytes over as latin-1.
    assert ctx._read_break_glass(sent.decode("latin-1")) is None
    assert ctx.break_glass == "Angehörige"
