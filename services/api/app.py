"""The ASGI app: /graphql (HTTP and graphql-transport-ws), /healthz, /metrics, request ids."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from services.api import board_page
from services.api.context import CORRELATION_ID_KEY, REQUEST_ID_KEY, Context
from services.api.fanout import Hub
from services.api.schema import build_schema
from services.audit.keys import Keyring
from services.audit.sink import AuditSink, KafkaAuditSink, NoAuditLog
from services.common import db
from services.common.auth import Authenticator
from services.common.event_store import EventStore
from services.common.log import configure_logging, get_logger
from services.common.oidc import build_authenticator
from services.common.outbox import relay_positions
from services.plans.handlers import Repository
from services.settings import Settings, get_settings

_log = get_logger("services.api.access")
_HEALTH_TIMEOUT = 2.0
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_SANE_OPERATION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Operation names are client-chosen: past this many distinct ones, count the rest as "other".
_MAX_OPERATION_NAMES = 500
# Probes would drown the access log at info; they still log at debug.
_QUIET_PATHS = frozenset({"/healthz", "/metrics"})
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "WEBSOCKET"})

DbCheck = Callable[[Any], Awaitable[None]]
KafkaPing = Callable[[], Awaitable[None]]


class _Metrics:
    def __init__(self) -> None:
        # One registry per app, so several apps (tests, workers) never collide.
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "carecoord_http_requests", "HTTP requests", labels, registry=self.registry
        )
        self.latency = Histogram(
            "carecoord_http_request_duration_seconds",
            "HTTP request latency",
            labels,
            registry=self.registry,
        )
        self.operations = Counter(
            "carecoord_graphql_operations",
            "GraphQL operations by type, name and outcome",
            ("type", "name", "outcome"),
            registry=self.registry,
        )
        self._names: set[str] = set()
        # The event pipeline, read from PostgreSQL at scrape time: head - relay = relay lag.
        self.store_head = Gauge(
            "carecoord_event_store_head_position",
            "Highest global position committed to the event store",
            registry=self.registry,
        )
        self.relay_position = Gauge(
            "carecoord_relay_position",
            "Highest event-store position Kafka has acknowledged, per topic",
            ("topic",),
            registry=self.registry,
        )
        self.subscriptions = Gauge(
            "carecoord_subscriptions",
            "Live GraphQL subscriptions in this API process",
            registry=self.registry,
        )
        self.subscription_deliveries = Gauge(
            "carecoord_subscription_deliveries",
            "Board updates handed to subscriptions since the process started",
            registry=self.registry,
        )
        self.subscription_overflows = Gauge(
            "carecoord_subscription_overflows",
            "Subscriptions cut off because their queue overflowed, since the process started",
            registry=self.registry,
        )

    def operation_name_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if not _SANE_OPERATION.fullmatch(name):
            return "invalid"
        if name not in self._names:
            if len(self._names) >= _MAX_OPERATION_NAMES:
                return "other"
            self._names.add(name)
        return name


class _CountOperations(SchemaExtension):
    def __init__(self, *, metrics: _Metrics) -> None:
        self.metrics = metrics

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        try:
            op_type = ctx.operation_type.value if ctx.graphql_document else "invalid"
        except RuntimeError:  # the named operation is not in the document
            op_type = "invalid"
        result = ctx.result
        outcome = "error" if result is not None and result.errors else "ok"
        name = self.metrics.operation_name_label(ctx.operation_name)
        self.metrics.operations.labels(op_type, name, outcome).inc()


@dataclass
class _Runtime:
    """What handlers need at request time; the pool arrives with the lifespan."""

    settings: Settings
    pool: asyncpg.Pool[Any] | None
    db_check: DbCheck
    kafka_ping: KafkaPing
    metrics: _Metrics
    audit: AuditSink
    keyring: Keyring
    # One per app: the OpenID provider's key cache and HTTP session live in it.
    authenticator: Authenticator
    hub: Hub | None = None
    _repository: tuple[asyncpg.Pool[Any], Repository] | None = None

    @property
    def repository(self) -> Repository | None:
        """One per pool: its appends share group commits, and it keeps recent aggregates."""
        if self.pool is None:
            return None
        if self._repository is None or self._repository[0] is not self.pool:
            self._repository = (self.pool, Repository(EventStore(self.pool), remember=10_000))
        return self._repository[1]


class _GraphQLView(GraphQL[Context, None]):
    def __init__(self, runtime: _Runtime, **kwargs: Any) -> None:
        self.runtime = runtime
        metrics = runtime.metrics
        schema = build_schema(extensions=[lambda: _CountOperations(metrics=metrics)])
        super().__init__(schema, **kwargs)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        # For a WebSocket this runs once per connection, before connection_init.
        runtime = self.runtime
        return await Context.from_connection(
            request,
            settings=runtime.settings,
            pool=runtime.pool,
            authenticator=runtime.authenticator,
            response=response,
            hub=runtime.hub,
            audit=runtime.audit,
            keyring=runtime.keyring,
            shared=runtime.repository,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        # Refused tokens do not close the socket: operations then fail UNAUTHENTICATED with
        # the reason, as over HTTP, which clients handle better than a bare 4403.
        await context.accept_connection_init(context.connection_params or {})
        return await super().on_ws_connect(context)


class RequestIdMiddleware:
    """Request/correlation ids in log context and X-Request-Id; one access line; metrics."""

    def __init__(self, app: ASGIApp, *, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = _sane(headers.get("x-request-id")) or str(uuid.uuid4())
        correlation_id = _sane(headers.get("x-correlation-id")) or request_id
        state = scope.setdefault("state", {})
        state[REQUEST_ID_KEY], state[CORRELATION_ID_KEY] = request_id, correlation_id
        # Each request starts from a clean log context; the id vars are its first members.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                echo = (b"x-request-id", request_id.encode("latin-1"))
                message["headers"] = [*message.get("headers", []), echo]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        path: str = scope["path"]
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope.get("method", "WEBSOCKET")
        method = method if method in _METHODS else "OTHER"  # bounded metric labels
        if scope["type"] == "http":
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route, str(status)).observe(seconds)
        quiet = path in _QUIET_PATHS and status < 400
        # Path only: the query string of GET /graphql carries the query and variables.
        (_log.debug if quiet else _log.info)(
            "request",
            method=method,
            path=path,
            status=status if scope["type"] == "http" else None,
            duration_ms=round(seconds * 1000, 2),
        )


def _sane(value: str | None) -> str | None:
    return value if value and _SANE_ID.fullmatch(value) else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"unreachable: no answer within {_HEALTH_TIMEOUT:g} s"
    return f"unreachable: {type(exc).__name__}: {exc}"[:200]


async def _probe(check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT):
            await check()
    except Exception as exc:  # any failure means "not healthy", with the reason shown
        return _reason(exc)
    return "ok"


def _healthz(runtime: _Runtime) -> Callable[[Request], Awaitable[Response]]:
    async def db_probe() -> None:
        if runtime.pool is None:
            raise db.DatabaseUnavailable("no connection pool (the app has not started)")
        await runtime.db_check(runtime.pool)

    async def healthz(_: Request) -> Response:
        postgres, kafka = await asyncio.gather(_probe(db_probe), _probe(runtime.kafka_ping))
        healthy = postgres == "ok" and kafka == "ok"
        body = {"status": "ok" if healthy else "unavailable", "postgres": postgres, "kafka": kafka}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return healthz


def _metrics_endpoint(runtime: _Runtime) -> Callable[[Request], Awaitable[Response]]:
    metrics = runtime.metrics

    async def refresh_pipeline() -> None:
        assert runtime.pool is not None
        metrics.store_head.set(await EventStore(runtime.pool).head())
        for topic, position in (await relay_positions(runtime.pool)).items():
            metrics.relay_position.labels(topic).set(position)

    async def endpoint(_: Request) -> Response:
        if runtime.hub is not None:
            metrics.subscriptions.set(runtime.hub.subscribers)
            metrics.subscription_deliveries.set(runtime.hub.delivered)
            metrics.subscription_overflows.set(runtime.hub.overflows)
        if runtime.pool is not None:
            try:
                async with asyncio.timeout(_HEALTH_TIMEOUT):
                    await refresh_pipeline()
            except Exception as exc:  # a scrape still answers; the gauges keep their last values
                _log.warning("metrics.pipeline_unavailable", error=type(exc).__name__)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint


async def _forget_pool(runtime: _Runtime, pool: asyncpg.Pool[Any]) -> None:
    runtime.pool = None
    await pool.close()


@asynccontextmanager
async def _fanout(runtime: _Runtime) -> AsyncIterator[Hub]:
    """The subscriptions hub, reading care.board-updates while the app runs."""
    hub = Hub(runtime.settings)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop), name="fanout")
    runtime.hub = hub
    try:
        yield hub
    finally:
        runtime.hub = None
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5)


def _default_kafka_ping(settings: Settings) -> KafkaPing:
    async def ping() -> None:
        # Imported here so the API (and its tests) load without the Kafka plumbing.
        from services.common import kafka

        await kafka.ping(settings)

    return ping


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool[Any] | None = None,
    kafka_ping: KafkaPing | None = None,
    db_check: DbCheck | None = None,
    live_updates: bool = True,
    audit: AuditSink | None = None,
) -> Starlette:
    """The API app. Without a pool, the lifespan opens one from settings and closes it.
    With a broker configured (and live_updates), it reads care.board-updates for
    subscriptions. Access records go to `audit`, by default care.audit on the configured
    broker; with no broker, nothing touching patient data is answered."""
    if audit is None:
        audit = KafkaAuditSink(settings) if settings.kafka_bootstrap else NoAuditLog()
    metrics = _Metrics()
    runtime = _Runtime(
        settings=settings,
        pool=pool,
        db_check=db_check or db.check,
        kafka_ping=kafka_ping or _default_kafka_ping(settings),
        metrics=metrics,
        audit=audit,
        keyring=Keyring(settings),  # development keys are generated by `carecoord up` only
        authenticator=build_authenticator(settings),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(runtime.audit.close)
            stack.push_async_callback(runtime.authenticator.close)
            if runtime.pool is None:
                if not settings.database_url:
                    raise RuntimeError(
                        "CARECOORD_DATABASE_URL is not set; the API needs PostgreSQL"
                    )
                pool = await db.create_pool(
                    settings.database_url,
                    min_size=settings.db_pool_min,
                    max_size=settings.db_pool_max,
                )
                runtime.pool = pool
                stack.push_async_callback(_forget_pool, runtime, pool)
            if live_updates and settings.kafka_bootstrap:
                await stack.enter_async_context(_fanout(runtime))
            yield

    graphql = _GraphQLView(
        runtime,
        graphql_ide="graphiql",
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
    return Starlette(
        routes=[
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", _healthz(runtime), methods=["GET"]),
            Route("/metrics", _metrics_endpoint(runtime), methods=["GET"]),
            *board_page.routes(),
        ],
        middleware=[Middleware(RequestIdMiddleware, metrics=metrics)],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """uvicorn --factory services.api.app:app_from_env"""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
