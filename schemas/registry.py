"""Which model reads which event type and version, and how old payload shapes are upcast."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from schemas.audit import BreakGlassReviewed
from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    CarePlanReviewed,
    GoalAdded,
    GoalStatusChanged,
    GoalTargetSet,
    InterventionAdded,
    InterventionDiscontinued,
    MonitoringAdded,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.consent import (
    ConsentGranted,
    ConsentGrantedV1,
    ConsentRevoked,
    ConsentRevokedV1,
    without_evidence,
)
from schemas.errors import UnknownEventType
from schemas.huddle import (
    ActionItemRaised,
    HuddleClosed,
    HuddleNoteRecorded,
    HuddleOpened,
    HuddleScheduled,
)
from schemas.observation import ObservationRecorded
from schemas.patient import PatientEnrolled
from schemas.signal import SignalRaised, SignalsStopped
from schemas.task import TaskAssigned, TaskCreated, TaskEscalated, TaskMoved, TaskSignalled
from schemas.team import MemberRemoved, RoleAssigned, RoleRevoked, TeamCreated

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload dict of version N into one of version N + 1; must not mutate its input."""

E = TypeVar("E", bound=type[Event])


class Registry:
    """Event type -> models by schema version, plus upcasters between consecutive versions.

    Stored events are never rewritten: a new payload shape is a new model with a higher
    `schema_version` and an upcaster from the previous one, applied whenever an old
    event is read.
    """

    def __init__(self) -> None:
        self._models: dict[str, dict[int, type[Event]]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, model_cls: E) -> E:
        """Register an event model under its `event_type` and `schema_version`.

        Returns the class, so that this also works as a class decorator.
        """
        event_type = getattr(model_cls, "event_type", None)
        if not isinstance(event_type, str) or not event_type:
            raise TypeError(f"{model_cls.__name__} does not set a ClassVar event_type")
        version = model_cls.schema_version
        versions = self._models.setdefault(event_type, {})
        if version in versions:
            raise ValueError(f"{event_type} v{version} is already registered")
        versions[version] = model_cls
        return model_cls

    def model_for(self, type: str, schema_version: int) -> type[Event]:
        """The model registered for exactly this type and version."""
        model = self._versions(type).get(schema_version)
        if model is None:
            raise UnknownEventType(
                f"event type {type} has no schema version {schema_version}",
                field="schema_version",
            )
        return model

    def latest_version(self, type: str) -> int:
        """The highest registered schema version of a type: the one events are read as."""
        return max(self._versions(type))

    def register_upcaster(self, type: str, from_version: int, fn: Upcaster) -> None:
        """Register how to lift a `type` payload from `from_version` to `from_version + 1`."""
        if from_version < 1:
            raise ValueError(f"schema versions start at 1, not {from_version}")
        key = (type, from_version)
        if key in self._upcasters:
            raise ValueError(f"{type} already has an upcaster from v{from_version}")
        self._upcasters[key] = fn

    def upcast(
        self, type: str, version: int, payload: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Lift a payload of `version` to the latest version; returns (latest, payload)."""
        latest = self.latest_version(type)
        if not 1 <= version <= latest:
            raise UnknownEventType(
                f"event type {type} has no schema version {version} (latest is {latest})",
                field="schema_version",
            )
        current = dict(payload)
        while version < latest:
            fn = self._upcasters.get((type, version))
            if fn is None:
                raise UnknownEventType(
                    f"event type {type} v{version} cannot be read: no upcaster to v{version + 1}",
                    field="schema_version",
                )
            current = fn(current)
            version += 1
        return latest, current

    def all_models(self) -> tuple[type[Event], ...]:
        """Every registered model, ordered by type then version."""
        models: list[type[Event]] = []
        for event_type in sorted(self._models):
            versions = self._models[event_type]
            models.extend(versions[version] for version in sorted(versions))
        return tuple(models)

    def _versions(self, type: str) -> dict[int, type[Event]]:
        versions = self._models.get(type)
        if not versions:
            raise UnknownEventType(f"unknown event type {type!r}", field="type")
        return versions


def _default_registry() -> Registry:
    registry = Registry()
    for model in (
        TeamCreated,
        RoleAssigned,
        RoleRevoked,
        MemberRemoved,
        PatientEnrolled,
        CarePlanCreated,
        GoalAdded,
        GoalStatusChanged,
        InterventionAdded,
        InterventionDiscontinued,
        PlanStatusChanged,
        CarePlanReviewed,
        MonitoringAdded,
        MonitoringStopped,
        GoalTargetSet,
        TaskCreated,
        TaskMoved,
        TaskAssigned,
        HuddleScheduled,
        HuddleOpened,
        HuddleNoteRecorded,
        ActionItemRaised,
        HuddleClosed,
        ConsentGrantedV1,
        ConsentGranted,
        ConsentRevokedV1,
        ConsentRevoked,
        BreakGlassReviewed,
        ObservationRecorded,
        SignalRaised,
        SignalsStopped,
        TaskSignalled,
        TaskEscalated,
    ):
        registry.register(model)
    registry.register_upcaster("ConsentGranted", 1, without_evidence)
    registry.register_upcaster("ConsentRevoked", 1, without_evidence)
    return registry


REGISTRY = _default_registry()
"""Every event model of carecoord; upcasters for old shapes are registered here too."""
