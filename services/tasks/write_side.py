"""The write side every caller uses (the API, the demo, a command line): the generic handler
built with the task follow-ups and the plans' claim messages, so no caller can forget them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.common import dates
from services.common.aggregates import Handler, Repository
from services.common.event_store import EventStorePort
from services.plans.domain.patient import CLAIM_MESSAGES
from services.tasks.follow_ups import FOLLOW_UPS


def build_handler(
    store: EventStorePort, *, clock: Callable[[], datetime] = dates.utcnow, remember: int = 0
) -> Handler:
    """A handler on `store` whose commands write their tasks with them. `remember` keeps
    that many recently used aggregates (see Repository)."""
    return Handler(
        Repository(store, remember=remember),
        follow_ups=FOLLOW_UPS,
        claim_messages=CLAIM_MESSAGES,
        clock=clock,
    )
