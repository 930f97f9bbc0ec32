"""The per-request (or per-WebSocket) GraphQL context: the services the API was started with
(services.api.bootstrap), and who is calling, why and from where."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import strawberry
import structlog
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from schemas.common import Purpose
from services.api.bootstrap import Services
from services.api.fanout import Hub
from services.audit.records import Requester
from services.audit.reports import AuditReader
from services.audit.sign_ins import SIGN_IN, Refusal
from services.audit.sink import AuditSink
from services.common.actor import Actor
from services.common.aggregates import Caller, Handler, Repository
from services.common.auth import UNREADABLE, AuthError, claimed_subject
from services.common.domain import AggregateType
from services.common.errors import InvalidInput, Unauthenticated
from services.common.text import TextProblem, clean
from services.plans.domain.team import Team
from services.settings import Settings

DEFAULT_PURPOSE = "TREATMENT"
EXPIRED = "the access token has expired; sign in again"
# Headers that decide access: sent twice, which one counts would be a guess (proxies and
# clients disagree), so the request is refused instead.
_SINGLE_HEADERS = {"x-purpose-of-use": "X-Purpose-Of-Use", "x-break-glass": "X-Break-Glass"}
# Where the request-id middleware leaves its ids for the context to pick up.
REQUEST_ID_KEY = "request_id"
CORRELATION_ID_KEY = "correlation_id"


# strawberry.fastapi.BaseContext would need FastAPI installed; this class has the one
# attribute strawberry's WebSocket handlers look for (`connection_params`) plus the
# request/response pair BaseContext carries.
@dataclass(eq=False, kw_only=True, slots=True)
class Context:
    services: Services = field(repr=False)
    request_id: str
    correlation_id: str
    actor: Actor | None = None
    # Why the presented credentials were refused; None when none were presented.
    auth_error: str | None = None
    # The refused token's unverified `sub`, for the audit record of the refusal.
    claimed_subject: str | None = None
    # Refused sign-ins already noted for this context (one per record named).
    refusals_noted: set[tuple[str | None, ...]] | None = field(default=None, repr=False)
    # Raw X-Purpose-Of-Use; checked against Purpose where access is decided.
    purpose: str = DEFAULT_PURPOSE
    # X-Break-Glass reason. Free text a clinician typed: never log it.
    break_glass: str | None = None
    # What is wrong with the request's access headers (BAD_USER_INPUT before anything runs).
    header_problem: str | None = None
    client_addr: str | None = None
    user_agent: str | None = None
    request: HTTPConnection | None = None
    response: Response | WebSocket | None = None
    # Set by strawberry from the graphql-transport-ws connection_init payload.
    connection_params: dict[str, Any] | None = field(default=None, repr=False)
    # Rosters read during this request (None: no such team).
    teams: dict[str, Team | None] = field(default_factory=dict, repr=False)
    # Per-operation DataLoaders by name (services.api.graphql.signals), dropped with the rosters.
    loaders: dict[str, Any] = field(default_factory=dict, repr=False)
    # A WebSocket's close when its token expires (services.api.graphql.live.close_at_expiry).
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def handler(self) -> Handler:
        return self.services.handler

    @property
    def repository(self) -> Repository:
        return self.services.repository

    @property
    def database(self) -> asyncpg.Pool[Any]:
        """The pool, for read-model queries."""
        return self.services.pool

    @property
    def audit(self) -> AuditSink:
        return self.services.audit

    @property
    def hub(self) -> Hub | None:
        return self.services.hub

    def audit_reader(self) -> AuditReader:
        return AuditReader.of(self.database, self.services.keyring.get(), self.settings)

    def now(self) -> datetime:
        """The time commands are decided at and `active`/`overdue` are judged by."""
        return self.services.clock()

    def caller(self) -> Caller:
        """The authenticated caller as command metadata (UNAUTHENTICATED if none)."""
        return Caller(actor_id=self.require_actor().user_id, correlation_id=self.correlation_id)

    @classmethod
    async def from_connection(
        cls,
        conn: HTTPConnection,
        *,
        services: Services,
        response: Response | WebSocket | None = None,
    ) -> Context:
        """Build the context of an HTTP request or a WebSocket handshake, caller resolved."""
        state: Mapping[str, Any] = conn.scope.get("state") or {}
        request_id = str(state.get(REQUEST_ID_KEY) or uuid.uuid4())
        headers = conn.headers
        context = cls(
            services=services,
            request_id=request_id,
            correlation_id=str(state.get(CORRELATION_ID_KEY) or request_id),
            purpose=headers.get("x-purpose-of-use", "").strip() or DEFAULT_PURPOSE,
            client_addr=conn.client.host if conn.client else None,
            user_agent=headers.get("user-agent"),
            request=conn,
            response=response,
        )
        context.header_problem = context._read_break_glass(headers.get("x-break-glass"))
        for name, shown in _SINGLE_HEADERS.items():
            if len(headers.getlist(name)) > 1:
                context.header_problem = f"Send the {shown} header once, not several times."
        authorizations = headers.getlist("authorization")
        if len(authorizations) > 1:
            context.auth_error = "the request has more than one Authorization header; send one"
            context.claimed_subject = claimed_subject(authorizations[0])
        else:
            await context.authenticate(headers.get("authorization"))
        return context

    def _read_break_glass(self, value: str | None) -> str | None:
        """Keep the X-Break-Glass reason if it is clean text of a bounded length; else the
        problem with it (the reason itself is never quoted)."""
        reason = _utf8(value or "").strip()
        if not reason:
            return None
        limit = self.settings.break_glass_reason_max_chars
        try:
            reason = clean(reason)
        except TextProblem as problem:
            return f"The X-Break-Glass reason {problem}."
        if len(reason) > limit:
            return f"The X-Break-Glass reason must be at most {limit} characters."
        self.break_glass = reason
        return None

    async def authenticate(self, authorization: str | None) -> None:
        """Resolve the caller from an Authorization value, remembering why when refused."""
        try:
            self.actor = await self.services.authenticator.actor(authorization)
            self.auth_error = None
            self.claimed_subject = None
        except AuthError as exc:
            self.actor = None
            self.auth_error = exc.message
            self.claimed_subject = claimed_subject(authorization)
        if self.actor is not None:
            # Every later log line of this request (and the access line) names the caller.
            structlog.contextvars.bind_contextvars(user_id=self.actor.user_id)

    async def accept_connection_init(self, payload: Mapping[str, Any]) -> None:
        """Authenticate a WebSocket from its connection_init payload {"Authorization": ...}.

        A payload without the key keeps whatever the handshake headers established.
        """
        for key in ("Authorization", "authorization"):
            if key in payload:
                value = payload[key]
                if isinstance(value, str):
                    await self.authenticate(value)
                else:
                    self.actor = None
                    self.claimed_subject = UNREADABLE
                    self.auth_error = (
                        "connection_init 'Authorization' must be a string 'Bearer <token>'"
                    )
                return

    def sign_in_refused(
        self,
        reason: str,
        named: tuple[AggregateType[Any], str] | None = None,
        *,
        subject: str | None,
    ) -> None:
        """Hand a refused sign-in to the audit log's monitor (once per record named)."""
        monitor = self.services.sign_ins
        kind, named_id = named if named is not None else (None, None)
        resource_type = kind.name.title().replace(" ", "") if kind is not None else SIGN_IN
        key = (resource_type, named_id)
        if monitor is None or key in (self.refusals_noted or ()):
            return
        if self.refusals_noted is None:
            self.refusals_noted = set()
        self.refusals_noted.add(key)
        try:
            purpose = Purpose(self.purpose)
        except ValueError:
            purpose = Purpose(DEFAULT_PURPOSE)
        monitor.refused(
            Refusal(
                client_addr=self.client_addr,
                reason=reason,
                resource_type=resource_type,
                resource_id=named_id,
                claimed_subject=subject,
                purpose=purpose,
                request_id=self.request_id,
                correlation_id=self.correlation_id,
                user_agent=self.user_agent,
                locator=named,
            )
        )

    def purpose_of_use(self) -> Purpose:
        """The request's purpose of use; BAD_USER_INPUT for a value that is not one, or when
        the access headers are unusable (sent twice, a break-glass reason refused)."""
        if self.header_problem is not None:
            raise InvalidInput(self.header_problem)
        try:
            return Purpose(self.purpose)
        except ValueError:
            allowed = ", ".join(p.value for p in Purpose)
            raise InvalidInput(
                f"The X-Purpose-Of-Use header must be one of {allowed} (or absent: TREATMENT)."
            ) from None

    def requester(self) -> Requester:
        """Who is asking, why and from where, as access records name it."""
        return Requester(
            actor=self.require_actor(),
            purpose=self.purpose_of_use(),
            request_id=self.request_id,
            correlation_id=self.correlation_id,
            client_addr=self.client_addr,
            user_agent=self.user_agent,
        )

    def token_expired(self) -> bool:
        """True when the caller's token has expired since it was accepted (a WebSocket
        outlives a request). Judged by the real clock, as the token's `exp` is."""
        return self.actor is not None and self.actor.expired(datetime.now(UTC))

    def require_actor(self, named: tuple[AggregateType[Any], str] | None = None) -> Actor:
        """The authenticated caller, or an UNAUTHENTICATED error saying what is missing.

        `named` is the record the request reached for (a patient, a care plan): a refused
        token is recorded in the audit log as a failed sign-in against it, and so is a
        missing one (someone reached for patient data without signing in). A missing
        token that named no record is not: every client starts unsigned.
        """
        if self.actor is not None and not self.token_expired():
            return self.actor
        if self.actor is not None:
            self.sign_in_refused(EXPIRED, named, subject=self.actor.user_id)
            raise Unauthenticated(f"Your sign-in was not accepted: {EXPIRED}.")
        if self.auth_error is not None:
            self.sign_in_refused(self.auth_error, named, subject=self.claimed_subject)
            raise Unauthenticated(f"Your sign-in was not accepted: {self.auth_error}.")
        if named is not None:
            self.sign_in_refused("no access token was sent", named, subject=None)
        raise Unauthenticated(
            "You are not signed in: send an 'Authorization: Bearer <token>' header "
            "(for WebSockets, put it in the connection_init payload)."
        )


def _utf8(value: str) -> str:
    """A header value as the text its sender meant: ASGI hands header bytes over as
    latin-1, but clients send typed text as UTF-8 (read as latin-1 when it is not)."""
    raw = value.encode("latin-1", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


Info = strawberry.Info[Context, None]
