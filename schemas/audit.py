"""Access records (what the API sends to care.audit for every touch of patient data) and
the events of the audit review workflow (compliance dispositions of break-glass accesses)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Event
from schemas.common import AccessOutcome, Discipline, Id, Instant, NonEmptyStr, Purpose, Sensitivity


class AccessAction(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    SUBSCRIBE_PUSH = "subscribe-push"


class AccessRecorded(BaseModel):
    """One operation's access to one patient's data (or, patient_id None, an access that
    touched no patient: a refusal before anything was read, or a read of the audit log).

    It names ids, never names, MRNs or clinical text: the audit writer encrypts it anyway.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
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
    outcome: AccessOutcome
    reason: str = Field(max_length=2000)
    sensitivity: tuple[Sensitivity, ...] = ()
    request_id: str | None = None
    correlation_id: str | None = None
    client_addr: str | None = None
    user_agent: str | None = Field(default=None, max_length=512)


class BreakGlassReviewed(Event):
    """A compliance officer reviewed a break-glass access and recorded a disposition."""

    event_type: ClassVar[str] = "BreakGlassReviewed"

    seq: Id
    disposition: NonEmptyStr
    reviewer_id: Id
