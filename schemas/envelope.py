"""The envelope around every event: stream position, team/patient scope, causality and payload."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    WithJsonSchema,
    model_validator,
)

from schemas.base import Event
from schemas.common import Instant

# The declared type is the base class, whose own schema is an empty object; the exported
# per-type files describe the real payloads.
_PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The event's fields, described by <type>.v<schema_version>.json.",
}


class Envelope(BaseModel):
    """One event as stored and published: metadata plus the typed payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    type: str = Field(min_length=1)
    schema_version: int = Field(ge=1, strict=True)
    stream_id: str = Field(min_length=1)
    stream_version: int = Field(ge=1, strict=True)
    team_id: str = Field(min_length=1)
    patient_id: str | None = None
    actor_id: str
    occurred_at: Instant
    correlation_id: str
    causation_id: str | None = None
    # SerializeAsAny: dump the subclass's fields, not the (empty) base class's.
    payload: Annotated[SerializeAsAny[Event], WithJsonSchema(_PAYLOAD_SCHEMA)]

    @model_validator(mode="after")
    def _type_matches_payload(self) -> Envelope:
        event_type = getattr(type(self.payload), "event_type", None)
        if event_type is None:
            raise ValueError("payload must be a concrete event model, not the Event base class")
        if self.type != event_type or self.schema_version != self.payload.schema_version:
            raise ValueError(
                f"envelope says {self.type} v{self.schema_version} but the payload is "
                f"{event_type} v{self.payload.schema_version}"
            )
        return self

    @classmethod
    def wrap(
        cls,
        payload: Event,
        *,
        event_id: UUID,
        stream_id: str,
        stream_version: int,
        team_id: str,
        actor_id: str,
        occurred_at: datetime,
        correlation_id: str,
        patient_id: str | None = None,
        causation_id: str | None = None,
    ) -> Envelope:
        """Build an envelope whose type and schema_version are taken from the payload."""
        return cls(
            event_id=event_id,
            type=payload.event_type,
            schema_version=payload.schema_version,
            stream_id=stream_id,
            stream_version=stream_version,
            team_id=team_id,
            patient_id=patient_id,
            actor_id=actor_id,
            occurred_at=occurred_at,
            correlation_id=correlation_id,
            causation_id=causation_id,
            payload=payload,
        )
