"""The base class of every event model: frozen, closed to unknown fields, typed by class."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """A fact that happened; subclasses name it in the past tense and set `event_type`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Class-level, not fields: the envelope carries type and version, the payload only facts.
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
