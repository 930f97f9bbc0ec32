"""The ASGI app: /graphql (HTTP and graphql-transport-ws), /healthz, /metrics, request ids."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog
from cross_web import AsyncHTTPRequestAdapter, HTTPException
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
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from services.api import board_page, bootstrap, edge, known_operations, pipeline_gauges
from services.api.bootstrap import Services
from services.api.graphql import live
from services.api.graphql.context import CORRELATION_ID_KEY, REQUEST_ID_KEY, Context
from services.api.graphql.errors import MASKED_MESSAGE
from services.api.graphql.limits import Limits
from services.api.graphql.schema import build_schema
from services.api.transport_ws import TransportWSHandler
from services.audit import outbox as audit_outbox
from services.audit.sink import AuditSink
from services.common import db
from services.common.errors import ErrorCode
from services.common.log import configure_logging, get_logger
from services.common.outbox import relay_positions
from services.settings import Settings, get_settings

# The request log keeps the logger name log pipelines already filter on.
_log = get_logger("services.api.access")
_HEALTH_TIMEOUT = 2.0
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
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
        self.pipeline_refused = Gauge(
            "carecoord_pipeline_refused",
            "Board updates refused because their MAC did not verify (dead-lettered, never "
            "pushed), by topic and reason, since the process started",
            ("topic", "reason"),
            registry=self.registry,
        )
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
        # The audit outbox, read at scrape time: records committed, not yet in the log.
        self.audit_outbox_depth = Gauge(
            "carecoord_audit_outbox_depth",
            "Access records in the audit outbox, not yet appended to the audit log",
            registry=self.registry,
        )
        self.audit_outbox_oldest = Gauge(
            "carecoord_audit_outbox_oldest_seconds",
            "How long the oldest record in the audit outbox has waited (0 when empty)",
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

        self.push_access_records = Gauge(
            "carecoord_push_access_records",
            "Access records of subscription pushes handed to the audit outbox since the "
            "process started",
            registry=self.registry,
        )
        self.push_audit_handoffs = Gauge(
            "carecoord_push_audit_handoffs",
            "Hand-offs (outbox statements) that carried them: pushes made meanwhile share one",
            registry=self.registry,
        )
        self.subscription_outcomes = Gauge(
            "carecoord_subscription_outcomes",
            "GraphQL subscriptions since the process started, by outcome: started (served), "
            "ended (for any reason), overflowed (cut off, queue full), refused (answered "
            "with an error, or its socket refused at connection_init)",
            ("outcome",),
            registry=self.registry,
        )
        # Refused subscriptions, counted here (the hub never sees them).
        self.subscriptions_refused = 0
        # Read models, the audit writer and the outboxes, read at scrape time.
        self.projection_position = Gauge(
            "carecoord_projection_position",
            "Highest event-store position a read model has applied (over teams)",
            ("projection",),
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "carecoord_projection_lag_events",
            "Events in the store a read model has not applied yet",
            ("projection",),
            registry=self.registry,
        )
        self.audit_last_append = Gauge(
            "carecoord_audit_last_append_seconds",
            "Seconds since the audit writer appended the newest entry of a chain",
            ("chain",),
            registry=self.registry,
        )
        self.audit_checkpoint_age = Gauge(
            "carecoord_audit_checkpoint_age_seconds",
            "Age of the newest signed checkpoint of a chain (+Inf: none yet)",
            ("chain",),
            registry=self.registry,
        )
        self.audit_unsigned = Gauge(
            "carecoord_audit_unsigned_entries",
            "Entries of a chain after its newest signed checkpoint",
            ("chain",),
            registry=self.registry,
        )
        self.signal_outbox_depth = Gauge(
            "carecoord_signal_outbox_depth",
            "Care signals queued for the write side, not sent yet",
            registry=self.registry,
        )
        self.signal_outbox_oldest = Gauge(
            "carecoord_signal_outbox_oldest_seconds",
            "How long the oldest queued care signal has waited (0 when empty)",
            registry=self.registry,
        )
        self.board_outbox_depth = Gauge(
            "carecoord_board_outbox_depth",
            "Board changes committed, not yet published to care.board-updates",
            registry=self.registry,
        )
        self.board_outbox_oldest = Gauge(
            "carecoord_board_outbox_oldest_seconds",
            "How long the oldest unpublished board change has waited (0 when empty)",
            registry=self.registry,
        )

    def operation_name_label(self, name: str | None) -> str:
        # Client-chosen names would mint label values: only shipped names are kept.
        return known_operations.label(name)


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
        if op_type == "subscription" and outcome == "error":
            self.metrics.subscriptions_refused += 1


@dataclass
class _Runtime:
    """What handlers need at request time; the services arrive with the lifespan (or at
    once, when the app is given a pool)."""

    settings: Settings
    db_check: DbCheck
    kafka_ping: KafkaPing
    metrics: _Metrics
    services: Services | None = None

    def started(self) -> Services:
        if self.services is None:
            # Requests reach the app only once its lifespan has started.
            raise RuntimeError("the API has not started (no database pool yet)")
        return self.services


# What a refusal at the HTTP edge (strawberry's HTTPException) is coded as.
_EDGE_CODES = {404: ErrorCode.NOT_FOUND}
# strawberry's reasons that quote what the client sent, and what is said instead.
_UNQUOTED_REASONS = (("Unknown operation named", "operationName names no operation in the query."),)


# Enough to keep the event loop busy with subscriptions starting (each waits on the
# database a moment), few enough that a crowd of them holds little half-run state.
_STARTING_AT_ONCE = 32


class _GraphQLView(GraphQL[Context, None]):
    """strawberry's view, with every refusal a coded GraphQL error, JSON decoded strictly
    (orjson: no invalid UTF-8, no lone surrogates), and GraphiQL only where turned on."""

    # Live subscriptions are pushed by the hub, not held in a task each (transport_ws).
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, runtime: _Runtime, **kwargs: Any) -> None:
        self.runtime = runtime
        # WebSocket operations starting at once, before each is live or done (transport_ws).
        self.starting = asyncio.Semaphore(_STARTING_AT_ONCE)
        metrics = runtime.metrics
        settings = runtime.settings
        schema = build_schema(
            limits=Limits.from_settings(settings),
            introspection=settings.introspection or settings.graphiql,
            extensions=[lambda: _CountOperations(metrics=metrics)],
        )
        super().__init__(schema, graphql_ide="graphiql" if settings.graphiql else None, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            response = _edge_error(exc.status_code, exc.reason)
        except Exception:
            # A fault of ours, not the client's: logged with the request id, masked.
            _log.exception("graphql_request_failed")
            response = _edge_error(500, MASKED_MESSAGE, "INTERNAL_SERVER_ERROR")
        await response(scope, receive, send)

    def encode_json(self, data: object) -> str:
        # Every answer and every push (one per subscriber) is encoded here: orjson, at a
        # fraction of json.dumps's cost. Text, as graphql-transport-ws sends text frames.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        # orjson.JSONDecodeError is a json.JSONDecodeError: strawberry answers 400.
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        # The body, and GET's variables and extensions: JSON objects (a list is a batch,
        # which strawberry refuses on its own).
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request must be a JSON object.")
        return parsed

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        parsed = await super().parse_http_body(request)
        for one in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(one.operation_name, str | None):
                raise HTTPException(400, "operationName must be a string or null.")
        return parsed

    async def render_graphql_ide(self, request: Request) -> Response:
        page, policy = edge.graphiql_page(self.graphql_ide_html)
        return HTMLResponse(page, headers={"Content-Security-Policy": policy})

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        # For a WebSocket this runs once per connection, before connection_init.
        return await Context.from_connection(
            request, services=self.runtime.started(), response=response
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        # A socket is signed in for its whole life: without a valid token it is refused at
        # connection_init (4403), and it is closed when the token expires (4401).
        await context.accept_connection_init(context.connection_params or {})
        context.connection_params = None  # read: the socket need not hold the token
        if context.actor is None:
            if context.auth_error is not None:  # a refused token is a failed sign-in
                context.sign_in_refused(context.auth_error, subject=context.claimed_subject)
            self.runtime.metrics.subscriptions_refused += 1
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        live.close_at_expiry(context)
        return await super().on_ws_connect(context)


def _edge_error(status: int, reason: str, code: str | None = None) -> Response:
    for quoting, instead in _UNQUOTED_REASONS:
        if reason.startswith(quoting):
            reason = instead
    code = code or str(_EDGE_CODES.get(status, ErrorCode.BAD_USER_INPUT))
    return Response(
        edge.error_body(reason, code), status_code=status, media_type="application/json"
    )


class RequestIdMiddleware:
    """Request/correlation ids in log context and X-Request-Id; one access line; metrics."""

    def __init__(self, app: ASGIApp, *, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id, correlation_id = _ids(scope)
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


def _ids(scope: Scope) -> tuple[str, str]:
    """The request's id and correlation id. A function of its own, so the decoded headers
    are not held for a WebSocket's life in the frame of the middleware's call."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = _sane(headers.get("x-request-id")) or str(uuid.uuid4())
    return request_id, _sane(headers.get("x-correlation-id")) or request_id


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
        if runtime.services is None:
            raise db.DatabaseUnavailable("no connection pool (the app has not started)")
        await runtime.db_check(runtime.services.pool)

    async def healthz(_: Request) -> Response:
        postgres, kafka = await asyncio.gather(_probe(db_probe), _probe(runtime.kafka_ping))
        healthy = postgres == "ok" and kafka == "ok"
        body = {"status": "ok" if healthy else "unavailable", "postgres": postgres, "kafka": kafka}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return healthz


def _metrics_endpoint(runtime: _Runtime) -> Callable[[Request], Awaitable[Response]]:
    metrics = runtime.metrics

    async def refresh_pipeline(services: Services) -> None:
        metrics.store_head.set(await services.store.head())
        for topic, position in (await relay_positions(services.pool)).items():
            metrics.relay_position.labels(topic).set(position)
        waiting = await audit_outbox.depth(services.pool)
        metrics.audit_outbox_depth.set(waiting.rows)
        metrics.audit_outbox_oldest.set(waiting.oldest_seconds)
        for chain in await pipeline_gauges.audit_chains(services.pool):
            label = str(chain.chain)
            metrics.audit_last_append.labels(label).set(chain.last_append_seconds)
            metrics.audit_checkpoint_age.labels(label).set(chain.checkpoint_seconds)
            metrics.audit_unsigned.labels(label).set(chain.unsigned)
        signals = await pipeline_gauges.signal_outbox(services.pool)
        metrics.signal_outbox_depth.set(signals.rows)
        metrics.signal_outbox_oldest.set(signals.oldest_seconds)
        board = await pipeline_gauges.board_outbox(services.pool)
        metrics.board_outbox_depth.set(board.rows)
        metrics.board_outbox_oldest.set(board.oldest_seconds)
        # Last: the one query whose cost grows with a backlog (counting unapplied events).
        for lag in await pipeline_gauges.projection_lags(services.pool):
            metrics.projection_position.labels(lag.projection).set(lag.position)
            metrics.projection_lag.labels(lag.projection).set(lag.unapplied)

    async def endpoint(_: Request) -> Response:
        services = runtime.services
        hub = services.hub if services is not None else None
        if hub is not None:
            metrics.subscriptions.set(hub.subscribers)
            metrics.subscription_deliveries.set(hub.delivered)
            metrics.subscription_overflows.set(hub.overflows)
            for (topic, reason), count in list(hub.refused.items()):
                metrics.pipeline_refused.labels(topic, reason).set(count)
            outcomes = {"started": hub.started, "ended": hub.ended, "overflowed": hub.overflows}
            for outcome, count in outcomes.items():
                metrics.subscription_outcomes.labels(outcome).set(count)
        metrics.subscription_outcomes.labels("refused").set(metrics.subscriptions_refused)
        if services is not None:
            metrics.push_access_records.set(services.pushes.records)
            metrics.push_audit_handoffs.set(services.pushes.handoffs)
            try:
                async with asyncio.timeout(_HEALTH_TIMEOUT):
                    await refresh_pipeline(services)
            except Exception as exc:  # a scrape still answers; the gauges keep their last values
                _log.warning("metrics.pipeline_unavailable", error=type(exc).__name__)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint


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
    subscriptions. Access records go to `audit`, by default the audit outbox in the
    database (the relay takes them on to care.audit). What the app runs
    on is built once (services.api.bootstrap): at once when given a pool, else at start-up."""
    metrics = _Metrics()
    runtime = _Runtime(
        settings=settings,
        db_check=db_check or db.check,
        kafka_ping=kafka_ping or _default_kafka_ping(settings),
        metrics=metrics,
        services=bootstrap.build(settings, pool, audit=audit) if pool is not None else None,
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        running = bootstrap.running(
            settings, services=runtime.services, audit=audit, live_updates=live_updates
        )
        async with running as services:
            runtime.services = services
            try:
                yield
            finally:
                runtime.services = None if pool is None else services

    graphql = _GraphQLView(
        runtime,
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
        middleware=[
            Middleware(RequestIdMiddleware, metrics=metrics),
            Middleware(
                edge.EdgeMiddleware,
                max_body_bytes=settings.max_body_bytes,
                max_query_string_bytes=settings.max_query_string_bytes,
            ),
        ],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """uvicorn --factory services.api.app:app_from_env"""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    _collect_rarely(settings)
    return app


def _collect_rarely(settings: Settings) -> None:
    """The API process's cycle collector: run less often (settings.api_gc_thresholds), and
    never over what start-up built (modules, the schema), which lives as long as the
    process. A full collection stops the event loop for as long as it walks the heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.api_gc_thresholds)
