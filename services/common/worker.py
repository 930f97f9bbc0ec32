"""What every Faust agent of the worker shares: the app itself, the dead-letter topic,
and waiting out a database outage."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol

import asyncpg
import faust
import mode.loop
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.auth import CredentialsT
from prometheus_client import CollectorRegistry, Counter, start_http_server

from services.common import kafka
from services.common.log import get_logger
from services.common.projection import ERROR_HEADER, SOURCE_HEADER
from services.settings import Settings

log = get_logger("services.worker")

# Errors that say the database is away, not that the message is bad: retry, never DLQ.
TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # Concurrency, not content: the same batch succeeds when tried again.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    TimeoutError,
)

# The worker's own metrics, served on CARECOORD_WORKER_METRICS_PORT when set.
REGISTRY = CollectorRegistry()
# Messages refused because they do not carry the services' MAC (forged, or signed by a
# key no longer listed): dead-lettered, never applied.
PIPELINE_REFUSED = Counter(
    "carecoord_pipeline_refused",
    "Messages refused because their MAC did not verify, by topic and reason",
    ("topic", "reason"),
    registry=REGISTRY,
)
# What a message was dead-lettered for, as a bounded set of label values: it could not be
# read (no position, not our codec's), it could not be applied (a projection or the audit
# writer refused it), or it did not carry the services' MAC.
DeadLetterKind = Literal["undecodable", "unappliable", "refused-mac"]
DEAD_LETTERED = Counter(
    "carecoord_dead_lettered",
    "Messages sent to the dead-letter topic, by the topic they came from and why (kind: "
    "undecodable, unappliable, refused-mac)",
    ("topic", "kind"),
    registry=REGISTRY,
)
EVENTS_APPLIED = Counter(
    "carecoord_projection_events_applied",
    "Events this worker applied to a read model (repeats skipped), by projection",
    ("projection",),
    registry=REGISTRY,
)
AUDIT_APPENDED = Counter(
    "carecoord_audit_records_appended",
    "Access records this worker took off care.audit for the audit log",
    registry=REGISTRY,
)
# The timers' work.
OVERDUE_ANNOUNCED = Counter(
    "carecoord_overdue_announced",
    "Tasks announced to subscribers as newly overdue",
    registry=REGISTRY,
)
SIGNALS_SENT = Counter(
    "carecoord_signals_drained",
    "Queued care signals sent to the write side (the signal outbox drained)",
    registry=REGISTRY,
)
SILENCES_SIGNALLED = Counter(
    "carecoord_silences_signalled",
    "READING_OVERDUE signals raised for monitoring plans gone silent",
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "carecoord_escalations",
    "Urgent signal tasks escalated to their team's leads",
    registry=REGISTRY,
)
TIMER_FAILURES = Counter(
    "carecoord_timer_failures",
    "Timer actions that failed for a reason of their own (logged by id), by action",
    ("action",),
    registry=REGISTRY,
)


def serve_metrics(settings: Settings) -> None:
    """Serve the worker's metrics at http://host:port/metrics (a thread), when a port is set."""
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, settings.api_host, registry=REGISTRY)


class DeadLetter(Protocol):
    """Sends a message that could not be handled to care.events.dlq, with the reason
    (which may quote the error) and its kind (a metrics label)."""

    async def __call__(
        self, message: Any, reason: str, *, kind: DeadLetterKind = "unappliable"
    ) -> None: ...


def lower_fetch_wait(ms: int) -> None:
    """Faust hard-codes fetch_max_wait_ms=1500 for its consumer; the embedded broker
    answers a fetch only when that wait runs out, which would hold every board update
    back by up to 1.5 s. Set the consumer's wait before it starts."""
    original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_carecoord_patched", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create._carecoord_patched = True  # type: ignore[attr-defined]
    # Faust has no setting for this wait; replacing its consumer factory is the only hook.
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's form of the broker settings (its driver turns them into the same aiokafka
    arguments kafka.security_options builds): SASL over the shared TLS context, TLS
    alone, or None for PLAINTEXT."""
    kafka.warn_if_insecure(settings)
    context = kafka.ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        # Settings refuse a SASL protocol without both (a startup error).
        assert settings.kafka_sasl_username and settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def make_app(settings: Settings, *, name: str = "carecoord-worker") -> faust.App:
    assert settings.kafka_bootstrap and settings.database_url
    lower_fetch_wait(settings.kafka_fetch_max_wait_ms)
    session = settings.worker_session_timeout
    datadir = settings.data_dir.resolve() / name.removeprefix("carecoord-")
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return faust.App(
        f"{settings.topic_prefix}{name}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 6, 0.5),
        broker_request_timeout=max(90.0, session * 2),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=False,
        store="memory://",
        # Faust keeps a folder even without tables; keep it with the stack's data.
        datadir=str(datadir),
    )


# Faust's own chatter stays at warning; the services' lines keep the level and format
# configure_logging gave them (info: progress lines).
_QUIET_LIBRARIES = ("faust", "mode", "aiokafka", "kafka")


def run_worker(app: faust.App) -> None:
    """Run the app's agents in this process until SIGTERM, on libuv's event loop (as the
    API runs): its transports are in C, and a worker keeping up with the commands spent a
    tenth less CPU on them (1.76 against 1.92 ms an event, measured)."""
    # The loop policy, before Faust makes its loops (its consumer thread makes its own).
    mode.loop.use("uvloop")
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    runner = faust.Worker(
        app,
        loglevel="WARN",
        quiet=True,
        redirect_stdouts=False,
        # Faust would replace the root handler (its own format, at warning): the services'
        # progress lines would go, and the rest lose their JSON.
        override_logging=False,
    )
    runner.spinner = None  # a terminal spinner only garbles a supervised process's output
    runner.execute_from_commandline()


async def gathered(stream: Any, most: int) -> AsyncGenerator[list[Any], None]:
    """A stream's events in batches of up to `most`, each batch what arrived while the one
    before it was handled: the first event on a quiet stream goes alone at once, and a
    backlog goes in full batches. Each batch's events are acked once the caller asks for
    the next batch (so a crash mid-batch leaves its offsets uncommitted); holding `most`
    events unasked for, the stream waits.

    Faust's take_events(most, within) stops reading the stream while the caller handles a
    batch, and then gathers for `within`: under a backlog the board projector took batches
    of 35 events (median) where 500 were waiting, a round of its transaction each."""
    manual = stream.noack()
    waiting: deque[Any] = deque()
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def read() -> None:
        async for event in manual.events():
            waiting.append(event)
            arrived.set()
            if len(waiting) >= most:
                room.clear()
                await room.wait()

    reader = asyncio.create_task(read())
    try:
        while True:
            ready = asyncio.ensure_future(arrived.wait())
            await asyncio.wait((ready, reader), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not waiting:
                reader.result()  # the stream ended or failed: so does this
                return
            batch = [waiting.popleft() for _ in range(min(most, len(waiting)))]
            if not waiting:
                arrived.clear()
            room.set()
            yield batch
            for event in batch:
                await manual.ack(event)
    finally:
        reader.cancel()
        await asyncio.wait((reader,))


def raw_topic(app: faust.App, name: str) -> Any:
    """A topic of bytes: our codec, not Faust's, reads and writes the values."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def dead_letters(app: faust.App, settings: Settings) -> DeadLetter:
    dlq = raw_topic(app, settings.dlq_topic)

    async def to_dlq(message: Any, reason: str, *, kind: DeadLetterKind = "unappliable") -> None:
        headers = [(k, v) for k, v in headers_of(message).items() if k != ERROR_HEADER]
        headers += [
            (ERROR_HEADER, reason.encode()[:4000]),
            (SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
        ]
        await dlq.send(key=message.key, value=message.value, headers=headers)
        DEAD_LETTERED.labels(message.topic, kind).inc()
        log.warning(
            "worker.dead_lettered",
            kind=kind,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason=reason[:200],
        )

    return to_dlq


def header_items(message: Any) -> list[tuple[str, bytes]]:
    """Every header of a message, repeats included (a MAC check must see them all)."""
    raw = message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v)) for k, v in items]


def headers_of(message: Any) -> dict[str, bytes]:
    raw = message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {str(k): bytes(v) for k, v in items}


async def retrying(call: Any) -> Any:
    """Wait out a database outage instead of dead-lettering good messages."""
    delay = 0.2
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
