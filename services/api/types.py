"""GraphQL types shared by every service's part of the schema (never the event models)."""

from __future__ import annotations

from enum import Enum

import strawberry

from services.common.auth import Actor


@strawberry.enum
class Discipline(Enum):
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


@strawberry.enum
class Sensitivity(Enum):
    GENETIC = "GENETIC"
    SUBSTANCE_USE = "SUBSTANCE_USE"
    MENTAL_HEALTH = "MENTAL_HEALTH"


@strawberry.enum
class Purpose(Enum):
    TREATMENT = "TREATMENT"
    CARE_COORDINATION = "CARE_COORDINATION"
    OPERATIONS = "OPERATIONS"
    PAYMENT = "PAYMENT"
    RESEARCH = "RESEARCH"
    UNDERWRITING = "UNDERWRITING"
    EMPLOYMENT = "EMPLOYMENT"


@strawberry.type(description="A person on a care team, or the caller (`me`).")
class Member:
    user_id: strawberry.ID
    name: str
    disciplines: list[Discipline]
    lead: bool

    @classmethod
    def from_actor(
        cls, actor: Actor, *, disciplines: list[Discipline] | None = None, lead: bool = False
    ) -> Member:
        return cls(
            user_id=strawberry.ID(actor.user_id),
            name=actor.name,
            disciplines=list(disciplines or []),
            lead=lead,
        )
