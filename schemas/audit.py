"""Access records (what the API sends to care.audit for every touch of patient data) and
the events of the audit review workflow (compliance dispositions of break-glass accesses)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Event
from schemas.common import AccessOutcome, Discipline, Id, Instant, NonEmptyStr, Purpose, Sensitivity


class AccessAction(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    SUBSCRIBE_PUSH = "subscribe-push"
    # A refused sign-in: a request whose token was refused (or, naming patient data,
    # missing). Always with outcome SignInOutcome.UNAUTHENTICATED; a security event.
    SIGN_IN = "sign-in"


class SignInOutcome(StrEnum):
    """The outcome of a refused sign-in: no caller, nothing released. Apart from the
    policy's AccessOutcome, which decides access and which the API's enum serves; the
    API shows it as DENY, with the action "sign-in"."""

    UNAUTHENTICATED = "UNAUTHENTICATED"


# The actor of a refused sign-in: nobody was signed in. Parentheses keep it apart from
# every user id (services.common.text.check_user_id allows none).
UNAUTHENTICATED_ACTOR = "(unauthenticated)"
# The claimed subject of a token whose `sub` could not be read or is no user id.
UNREADABLE_SUBJECT = "(unreadable)"


class AccessRecorded(BaseModel):
    """One operation's access to one patient's data (or, patient_id None, an access that
    touched no patient: a refusal before anything was read, or a read of the audit log).

    It names ids, never names, MRNs or clinical text: the audit writer encrypts it anyway.

    Version 2 adds refused sign-ins (action "sign-in", outcome UNAUTHENTICATED): the
    subject the refused token claimed (unverified) and how many refusals the record
    counts. A version 1 record is read as version 2 without them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = 2
    # Unique per record: a redelivered record is recognised by it and not appended twice.
    record_id: Id
    at: Instant
    actor_id: Id
    actor_name: str
    actor_roles: tuple[str, ...] = ()
    # The actor's disciplines on the team that holds the data (empty for non-members).
    actor_disciplines: tuple[Discipline, ...] = ()
    patient_id: str | None = None
    action: AccessAction
    resource_type: NonEmptyStr
    resource_id: str | None = None
    purpose: Purpose
    outcome: AccessOutcome | SignInOutcome
    reason: str = Field(max_length=2000)
    sensitivity: tuple[Sensitivity, ...] = ()
    request_id: str | None = None
    correlation_id: str | None = None
    client_addr: str | None = None
    user_agent: str | None = Field(default=None, max_length=512)
    # Refused sign-ins only: the `sub` the token claimed, unverified (UNREADABLE_SUBJECT
    # when it was no user id; None when no token was sent), never the token itself.
    claimed_subject: str | None = Field(default=None, max_length=128)
    # Refused sign-ins only: how many refusals this record stands for (a flood is
    # recorded as counts, services.audit.sign_ins).
    refusals: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _upcast(cls, data: Any) -> Any:
        # Version 1 had no sign-in fields: it reads as version 2 without them.
        if isinstance(data, dict) and data.get("schema_version") == 1:
            return {**data, "schema_version": 2}
        return data

    @model_validator(mode="after")
    def _sign_in_fields_go_together(self) -> AccessRecorded:
        sign_in = self.action is AccessAction.SIGN_IN
        if sign_in != (self.outcome is SignInOutcome.UNAUTHENTICATED):
            raise ValueError("a sign-in record, and only one, has the outcome UNAUTHENTICATED")
        if not sign_in and (self.claimed_subject is not None or self.refusals is not None):
            raise ValueError("only a sign-in record names a claimed subject or refusals")
        return self


# The most records one care.audit message packs.
PACKED_MAX = 500


class AccessRecords(BaseModel):
    """Several access records in one care.audit message: the audit relay packs the records
    of one key (a patient) that are due together, so a change pushed to a team's ten
    subscribers is one message, not ten. Each record is appended to the log as it would be
    on its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    records: tuple[AccessRecorded, ...] = Field(min_length=1, max_length=PACKED_MAX)


class BreakGlassReviewed(Event):
    """A compliance officer reviewed a break-glass access and recorded a disposition."""

    event_type: ClassVar[str] = "BreakGlassReviewed"

    seq: Id
    disposition: NonEmptyStr
    reviewer_id: Id
