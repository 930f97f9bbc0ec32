"""Enumerations (values equal names, as in API.md) and constrained field types of the events."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field
from pydantic_core import PydanticCustomError

# An empty id or title is always a bug on the command side; catching it here keeps it out
# of the log, where events can never be changed again.
Id = Annotated[str, Field(min_length=1)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _iso_datetime(value: object) -> object:
    # pydantic alone would also read numbers (and digit strings) as Unix time; the log has
    # one encoding, ISO 8601, so anything else is refused rather than guessed at.
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError("iso_datetime", "Input should be an ISO 8601 date-time")


def _iso_date(value: object) -> object:
    # As above; and a date-time is not a date, so it is not silently truncated either.
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and "T" not in value.upper():
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError("iso_date", "Input should be an ISO 8601 date")


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]
"""A point in time with its UTC offset; naive date-times are refused."""

Day = Annotated[dt.date, BeforeValidator(_iso_date)]
"""A calendar date."""


class Discipline(StrEnum):
    PHYSICIAN = "PHYSICIAN"
    NURSE_PRACTITIONER = "NURSE_PRACTITIONER"
    NURSE = "NURSE"
    PHARMACIST = "PHARMACIST"
    GENETIC_COUNSELOR = "GENETIC_COUNSELOR"
    SOCIAL_WORKER = "SOCIAL_WORKER"
    DIETITIAN = "DIETITIAN"
    HEALTH_COACH = "HEALTH_COACH"
    MENTAL_HEALTH = "MENTAL_HEALTH"
    CARE_COORDINATOR = "CARE_COORDINATOR"


class Sensitivity(StrEnum):
    GENETIC = "GENETIC"
    SUBSTANCE_USE = "SUBSTANCE_USE"
    MENTAL_HEALTH = "MENTAL_HEALTH"


class Comparator(StrEnum):
    """How a goal's target compares a reading with its value (BETWEEN: value to high)."""

    LT = "LT"
    LE = "LE"
    GT = "GT"
    GE = "GE"
    BETWEEN = "BETWEEN"


class Purpose(StrEnum):
    TREATMENT = "TREATMENT"
    CARE_COORDINATION = "CARE_COORDINATION"
    OPERATIONS = "OPERATIONS"
    PAYMENT = "PAYMENT"
    RESEARCH = "RESEARCH"
    UNDERWRITING = "UNDERWRITING"
    EMPLOYMENT = "EMPLOYMENT"


class PlanStatus(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    COMPLETED = "COMPLETED"
    REVOKED = "REVOKED"


class GoalStatus(StrEnum):
    PROPOSED = "PROPOSED"
    IN_PROGRESS = "IN_PROGRESS"
    ACHIEVED = "ACHIEVED"
    NOT_ACHIEVED = "NOT_ACHIEVED"
    CANCELLED = "CANCELLED"


class InterventionKind(StrEnum):
    MEDICATION = "MEDICATION"
    THERAPY = "THERAPY"
    LIFESTYLE = "LIFESTYLE"
    REFERRAL = "REFERRAL"
    MONITORING = "MONITORING"
    EDUCATION = "EDUCATION"
    SOCIAL_SUPPORT = "SOCIAL_SUPPORT"


class Tier(StrEnum):
    FIRST_LINE = "FIRST_LINE"
    SECOND_LINE = "SECOND_LINE"
    RESCUE = "RESCUE"


class TaskStatus(StrEnum):
    TODO = "TODO"
    IN_PROGRESS = "IN_PROGRESS"
    BLOCKED = "BLOCKED"
    DONE = "DONE"
    CANCELLED = "CANCELLED"


class AccessOutcome(StrEnum):
    PERMIT = "PERMIT"
    PERMIT_REDACTED = "PERMIT_REDACTED"
    DENY = "DENY"
    BREAK_GLASS = "BREAK_GLASS"
