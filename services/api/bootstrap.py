"""The composition root: what the API needs, built once at start-up and handed down.

The pool, the event store, the write side (repository and handler, with the follow-ups
every command causes), the authenticator, the audit keys and sink, the clock and the
subscriptions hub. The GraphQL context holds what was built here and builds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.api.fanout import Hub
from services.api.graphql.read_rate import ReadRate
from services.api.sign_ins import SignInMonitor
from services.audit.batch import BatchedAuditSink
from services.audit.keys import ReaderKeyring
from services.audit.sink import AuditSink, OutboxAuditSink
from services.common import dates, db
from services.common.aggregates import Handler, Repository
from services.common.auth import Authenticator
from services.common.dev_secrets import pipeline_keys
from services.common.event_store import EventStore, EventStorePort
from services.common.oidc import build_authenticator
from services.settings import Settings
from services.tasks.write_side import build_handler

# Aggregates the API keeps between requests (their states are immutable): a long-lived
# plan is then read from its last known version, not decoded from its first event.
REMEMBERED_AGGREGATES = 10_000


@dataclass(eq=False, kw_only=True)
class Services:
    """What the API was started with; one per app."""

    settings: Settings
    pool: asyncpg.Pool[Any]
    store: EventStorePort
    # One per pool: its appends share group commits, and it keeps recent aggregates.
    handler: Handler
    # One per app: the OpenID provider's key cache and HTTP session live in it.
    authenticator: Authenticator
    # The audit log's keys for reading it back (compliance queries): the record and index
    # keys and the checkpoints' public key, never the signing key (only the writer signs).
    keyring: ReaderKeyring
    # Where access records go before patient data leaves (the audit outbox).
    audit: AuditSink
    # The time commands are decided at and `active`/`overdue` are judged by.
    clock: Callable[[], datetime]
    # Board updates from care.board-updates, while live updates run (None: not running).
    hub: Hub | None = None
    # Refused sign-ins to the audit log, bounded (None: not recorded, e.g. in unit tests).
    sign_ins: SignInMonitor | None = None
    # Reads of patient data per actor, in this process; made from settings when not given.
    read_rate: ReadRate = field(init=False)
    # The access records of subscription pushes, handed to `audit` in shared batches.
    pushes: BatchedAuditSink = field(init=False)

    def __post_init__(self) -> None:
        self.read_rate = ReadRate(
            self.settings.read_rate_per_second, self.settings.read_rate_burst, time.monotonic
        )
        self.pushes = BatchedAuditSink(
            self.audit, max_records=self.settings.push_audit_batch_records
        )

    @property
    def repository(self) -> Repository:
        return self.handler.repository


def build(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    *,
    audit: AuditSink | None = None,
    clock: Callable[[], datetime] = dates.utcnow,
) -> Services:
    """Everything but the hub, on `pool`. Access records go to `audit`, by default the audit
    outbox on `pool` (committed before the data leaves; the relay takes them to care.audit)."""
    if audit is None:
        audit = OutboxAuditSink(pool, settings)
    store = EventStore(pool)
    handler = build_handler(store, clock=clock, remember=REMEMBERED_AGGREGATES)
    return Services(
        settings=settings,
        pool=pool,
        store=store,
        handler=handler,
        authenticator=build_authenticator(settings),
        keyring=ReaderKeyring(settings),  # development keys: made by `carecoord up` only
        audit=audit,
        clock=clock,
        sign_ins=SignInMonitor.from_settings(settings, audit=audit, repository=handler.repository),
    )


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    services: Services | None = None,
    audit: AuditSink | None = None,
    live_updates: bool = True,
) -> AsyncIterator[Services]:
    """The services while the app runs: built on a pool of its own unless given, with the
    hub reading care.board-updates when a broker is configured (and live_updates), and
    everything closed at the end."""
    async with contextlib.AsyncExitStack() as stack:
        if services is None:
            if not settings.database_url:
                raise RuntimeError("CARECOORD_DATABASE_URL is not set; the API needs PostgreSQL")
            pool = await db.create_pool(
                settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
            )
            stack.push_async_callback(pool.close)
            services = build(settings, pool, audit=audit)
        stack.push_async_callback(services.audit.close)
        # Closed before the sink it hands over to: batches under way go out first.
        stack.push_async_callback(services.pushes.close)
        if services.sign_ins is not None:
            # Closed before the sink: records still in flight go out first.
            stack.push_async_callback(services.sign_ins.close)
        stack.push_async_callback(services.authenticator.close)
        if live_updates and settings.kafka_bootstrap:
            await stack.enter_async_context(_fanout(services))
        yield services


@asynccontextmanager
async def _fanout(services: Services) -> AsyncIterator[Hub]:
    """The subscriptions hub, reading care.board-updates while the app runs."""
    # Loaded here, so an API without the pipeline keys fails at start, not silently.
    hub = Hub(services.settings, keys=pipeline_keys(services.settings))
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop), name="fanout")
    services.hub = hub
    try:
        yield hub
    finally:
        services.hub = None
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5)
