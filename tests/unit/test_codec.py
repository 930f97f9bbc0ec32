"""The codec: every event type round-trips, and every bad input fails with a typed error."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import ValidationError

import schemas
from schemas.base import Event
from schemas.codec import (
    CodecError,
    InvalidEvent,
    MalformedMessage,
    UnknownEventType,
    _Head,
    _head,
    _invalid,
    decode,
    encode,
    from_mapping,
    payload_to_mapping,
    to_mapping,
)
from schemas.common import (
    Comparator,
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    TaskStatus,
    Tier,
)
from schemas.envelope import Envelope
from schemas.registry import REGISTRY, Registry
from schemas.team import TeamCreated

WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)

# One valid payload per registered event type, filling optional fields where there are any
# so that every field goes through the round trip.
SAMPLES: dict[str, dict[str, Any]] = {
    "TeamCreated": {"team_id": "t1", "name": "Oncology", "lead_user_id": "u1", "lead_name": "Ada"},
    "RoleAssigned": {
        "team_id": "t1",
        "user_id": "u2",
        "name": "Grace",
        "discipline": Discipline.GENETIC_COUNSELOR,
        "lead": False,
    },
    "RoleRevoked": {"team_id": "t1", "user_id": "u2", "discipline": Discipline.NURSE},
    "MemberRemoved": {"team_id": "t1", "user_id": "u2"},
    "PatientEnrolled": {
        "patient_id": "p1",
        "team_id": "t1",
        "mrn": "MRN-0001",
        "name": "Pat Doe",
        "birth_date": dt.date(1970, 2, 3),
    },
    "CarePlanCreated": {"plan_id": "c1", "patient_id": "p1", "team_id": "t1", "title": "Plan"},
    "GoalAdded": {
        "plan_id": "c1",
        "goal_id": "g1",
        "description": "Lower HbA1c",
        "target": "< 7%",
        "due_date": dt.date(2024, 9, 1),
    },
    "GoalStatusChanged": {"plan_id": "c1", "goal_id": "g1", "status": GoalStatus.ACHIEVED},
    "InterventionAdded": {
        "plan_id": "c1",
        "intervention_id": "i1",
        "kind": InterventionKind.MEDICATION,
        "tier": Tier.SECOND_LINE,
        "title": "Start metformin",
        "detail": "500 mg twice daily",
        "responsible_discipline": Discipline.PHYSICIAN,
        "sensitivity": (Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH),
        "due_date": dt.date(2024, 6, 1),
    },
    "InterventionDiscontinued": {"plan_id": "c1", "intervention_id": "i1", "reason": "Nausea"},
    "PlanStatusChanged": {
        "plan_id": "c1",
        "status": PlanStatus.ACTIVE,
        "previous": PlanStatus.DRAFT,
    },
    "CarePlanReviewed": {
        "plan_id": "c1",
        "summary": "On track",
        "next_review_date": dt.date(2024, 8, 1),
    },
    "MonitoringAdded": {
        "plan_id": "c1",
        "monitoring_id": "m1",
        "measure_code": "2339-0",
        "every_days": 7,
        "unit": "mg/dL",
        "low": 70.0,
        "high": 180.0,
        "critical_low": None,
        "critical_high": 300.0,
        "responsible_discipline": Discipline.NURSE,
        "sensitivity": (),
    },
    "MonitoringStopped": {"plan_id": "c1", "monitoring_id": "m1", "reason": "Switched to CGM"},
    "GoalTargetSet": {
        "plan_id": "c1",
        "goal_id": "g1",
        "measure_code": "4548-4",
        "comparator": Comparator.LT,
        "value": 7.0,
        "high": None,
        "unit": "%",
    },
    "TaskCreated": {
        "task_id": "k1",
        "team_id": "t1",
        "title": "Order labs",
        "patient_id": "p1",
        "plan_id": "c1",
        "intervention_id": "i1",
        "huddle_id": "h1",
        "discipline": Discipline.NURSE,
        "assignee_id": "u2",
        "due_date": dt.date(2024, 5, 8),
        "sensitivity": (Sensitivity.SUBSTANCE_USE,),
        "source": "intervention",
    },
    "TaskMoved": {
        "task_id": "k1",
        "status": TaskStatus.BLOCKED,
        "previous": TaskStatus.TODO,
        "reason": "Waiting for insurer",
    },
    "TaskAssigned": {"task_id": "k1", "assignee_id": "u3", "previous_assignee_id": "u2"},
    "HuddleScheduled": {
        "huddle_id": "h1",
        "team_id": "t1",
        "scheduled_for": dt.datetime(2024, 5, 2, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    },
    "HuddleOpened": {"huddle_id": "h1"},
    "HuddleNoteRecorded": {
        "huddle_id": "h1",
        "note_id": "n1",
        "text": "Discussed results",
        "patient_id": "p1",
        "sensitivity": (Sensitivity.GENETIC,),
    },
    "ActionItemRaised": {
        "huddle_id": "h1",
        "task_id": "k2",
        "title": "Call patient",
        "patient_id": "p1",
        "discipline": Discipline.SOCIAL_WORKER,
        "assignee_id": "u4",
        "due_date": dt.date(2024, 5, 3),
    },
    "HuddleClosed": {"huddle_id": "h1"},
    "ConsentGranted": {
        "consent_id": "s1",
        "patient_id": "p1",
        "categories": (Sensitivity.GENETIC,),
        "purposes": (Purpose.TREATMENT, Purpose.CARE_COORDINATION),
        "disciplines": (Discipline.GENETIC_COUNSELOR, Discipline.PHYSICIAN),
        "valid_until": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        "evidence": "form-7",
    },
    "ConsentRevoked": {"consent_id": "s1", "patient_id": "p1", "evidence": "form-8"},
    "BreakGlassReviewed": {"seq": "42", "disposition": "justified", "reviewer_id": "u9"},
    "ObservationRecorded": {
        "observation_id": "o1",
        "patient_id": "p1",
        "measure_code": "2339-0",
        "value": 7.5,
        "unit": "mmol/L",
        "canonical_value": 135.117,
        "canonical_unit": "mg/dL",
        "at": dt.datetime(2024, 5, 2, 7, 30, tzinfo=dt.UTC),
        "source": "PATIENT_REPORTED",
        "recorded_by": "u2",
        "note": "Before breakfast",
        "sensitivity": (Sensitivity.MENTAL_HEALTH,),
    },
    "SignalRaised": {
        "monitoring_id": "m1",
        "plan_id": "c1",
        "patient_id": "p1",
        "task_id": "k9",
        "status": "CRITICAL",
        "count": 2,
        "observation_id": "o1",
        "observation_position": 41,
    },
    "SignalsStopped": {
        "monitoring_id": "m1",
        "plan_id": "c1",
        "patient_id": "p1",
        "reason": "Monitoring stopped.",
    },
    "TaskSignalled": {
        "task_id": "k9",
        "title": "Blood glucose 312 mg/dL: critical at or above 300 mg/dL",
        "count": 2,
        "urgent": True,
    },
    "TaskEscalated": {"task_id": "k9", "lead_ids": ("u1", "u7"), "waited_minutes": 31},
}


def wrap(payload: Event, **overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "stream_id": "stream-1",
        "stream_version": 3,
        "team_id": "t1",
        "patient_id": "p1",
        "actor_id": "u1",
        "occurred_at": WHEN,
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
    }
    fields.update(overrides)
    return Envelope.wrap(payload, **fields)


def valid_mapping() -> dict[str, Any]:
    return to_mapping(wrap(TeamCreated(**SAMPLES["TeamCreated"])))


def as_bytes(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def test_every_registered_event_type_has_a_sample_and_every_sample_a_type() -> None:
    registered = {model.event_type for model in REGISTRY.all_models()}
    assert registered - SAMPLES.keys() == set(), "add a sample for each new event type"
    assert SAMPLES.keys() - registered == set(), "samples for types that are not registered"


def test_every_event_model_in_the_schemas_package_is_registered() -> None:
    def subclasses(cls: type[Event]) -> set[type[Event]]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(sub) for sub in found))

    ours = {cls for cls in subclasses(Event) if cls.__module__.startswith("schemas.")}
    assert ours - set(REGISTRY.all_models()) == set()


LATEST = [
    m for m in REGISTRY.all_models() if m.schema_version == REGISTRY.latest_version(m.event_type)
]


@pytest.mark.parametrize("model", LATEST, ids=lambda m: f"{m.event_type}.v{m.schema_version}")
def test_codec_round_trips_every_registered_event_type(model: type[Event]) -> None:
    sample = SAMPLES.get(model.event_type)
    if sample is None:
        pytest.fail(f"no sample payload for {model.event_type}")
    envelope = wrap(model(**sample))

    data = encode(envelope)

    assert decode(data) == envelope
    assert from_mapping(orjson.loads(data)) == envelope
    assert encode(decode(data)) == data
    assert to_mapping(envelope)["payload"] == payload_to_mapping(envelope.payload)


def test_encode_writes_compact_json_with_the_payload_fields() -> None:
    envelope = wrap(TeamCreated(**SAMPLES["TeamCreated"]))

    data = encode(envelope)

    assert b" " not in data.replace(b"Ada", b"").replace(b"Oncology", b"")
    assert orjson.loads(data)["payload"] == SAMPLES["TeamCreated"]
    assert orjson.loads(data)["type"] == "TeamCreated"


def test_the_package_reexports_the_codec() -> None:
    assert schemas.decode is decode
    assert schemas.REGISTRY is REGISTRY


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b"[1, 2]", b'"a string"', b"42", b"null", b'{"type": "\xff"}'],
    ids=["not-json", "empty", "array", "string", "number", "null", "invalid-utf8"],
)
def test_decode_rejects_bytes_that_are_not_a_json_object_as_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(data)
    assert caught.value.field is None


def test_from_mapping_rejects_a_non_mapping_as_malformed() -> None:
    with pytest.raises(MalformedMessage, match="array"):
        from_mapping([1, 2])  # type: ignore[arg-type]  # the point is a wrong type at runtime


def test_decode_rejects_an_unknown_event_type_and_names_it() -> None:
    obj = valid_mapping() | {"type": "PatientTeleported"}

    with pytest.raises(UnknownEventType, match="PatientTeleported") as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "type"


def test_decode_rejects_an_unknown_schema_version_of_a_known_type() -> None:
    obj = valid_mapping() | {"schema_version": 7}

    with pytest.raises(UnknownEventType, match="TeamCreated") as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "schema_version"


@pytest.mark.parametrize(
    "field",
    [
        "event_id",
        "type",
        "schema_version",
        "stream_id",
        "stream_version",
        "team_id",
        "actor_id",
        "occurred_at",
        "correlation_id",
        "payload",
    ],
)
def test_decode_names_a_missing_envelope_field(field: str) -> None:
    obj = valid_mapping()
    del obj[field]

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: Field required"


def test_optional_envelope_fields_may_be_left_out() -> None:
    obj = valid_mapping()
    del obj["patient_id"], obj["causation_id"]

    envelope = decode(as_bytes(obj))

    assert envelope.patient_id is None
    assert envelope.causation_id is None


@pytest.mark.parametrize("field", ["team_id", "name", "lead_user_id", "lead_name"])
def test_decode_names_a_missing_payload_field(field: str) -> None:
    obj = valid_mapping()
    del obj["payload"][field]

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == f"payload.{field}"
    assert str(caught.value) == f"payload.{field}: Field required"


def test_decode_rejects_an_empty_title_in_the_payload() -> None:
    obj = valid_mapping()
    obj["payload"]["name"] = ""

    with pytest.raises(InvalidEvent, match=r"^payload\.name: String should have at least 1"):
        decode(as_bytes(obj))


@pytest.mark.parametrize("event_type", ["ConsentGranted", "ConsentRevoked"])
def test_a_consent_event_stored_as_v1_is_read_as_v2_with_no_evidence(event_type: str) -> None:
    v1 = {k: v for k, v in SAMPLES[event_type].items() if k != "evidence"}
    stored = to_mapping(wrap(REGISTRY.model_for(event_type, 1)(**v1)))

    read = from_mapping(stored)

    assert read.schema_version == 2
    assert read.payload == REGISTRY.model_for(event_type, 2)(**v1, evidence=None)


def test_a_consent_event_of_v2_must_say_what_its_evidence_is() -> None:
    payload = dict(SAMPLES["ConsentGranted"])
    del payload["evidence"]
    obj = valid_mapping() | {"type": "ConsentGranted", "schema_version": 2, "payload": payload}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.evidence"


def test_decode_names_the_list_item_that_is_not_a_known_enum_value() -> None:
    payload = payload_to_mapping(
        REGISTRY.model_for("ConsentGranted", 2)(**SAMPLES["ConsentGranted"])
    )
    payload["categories"] = ["GENETIC", "ASTROLOGY"]
    obj = valid_mapping() | {"type": "ConsentGranted", "schema_version": 2, "payload": payload}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.categories.1"


def test_decode_rejects_a_consent_that_covers_no_category() -> None:
    payload = payload_to_mapping(
        REGISTRY.model_for("ConsentGranted", 2)(**SAMPLES["ConsentGranted"])
    )
    payload["categories"] = []
    obj = valid_mapping() | {"type": "ConsentGranted", "schema_version": 2, "payload": payload}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.categories"


def test_decode_rejects_a_naive_occurred_at() -> None:
    obj = valid_mapping() | {"occurred_at": "2024-05-01T09:30:00"}

    with pytest.raises(InvalidEvent, match=r"^occurred_at: ") as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "occurred_at"


def test_decode_rejects_a_naive_datetime_in_the_payload() -> None:
    payload = {"huddle_id": "h1", "team_id": "t1", "scheduled_for": "2024-05-02T08:00:00"}
    obj = valid_mapping() | {"type": "HuddleScheduled", "payload": payload}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.scheduled_for"


@pytest.mark.parametrize("value", [1714555800, "1714555800", "May 1st"])
def test_decode_reads_date_times_only_as_iso_8601_never_as_unix_time(value: Any) -> None:
    obj = valid_mapping() | {"occurred_at": value}

    with pytest.raises(InvalidEvent, match=r"^occurred_at: Input should be an ISO 8601"):
        decode(as_bytes(obj))


@pytest.mark.parametrize("value", ["1970-02-03T00:00:00", 86400, "03/02/1970", "1970-02-30"])
def test_decode_reads_dates_only_as_iso_8601_dates(value: Any) -> None:
    payload = payload_to_mapping(
        REGISTRY.model_for("PatientEnrolled", 1)(**SAMPLES["PatientEnrolled"])
    )
    payload["birth_date"] = value
    obj = valid_mapping() | {"type": "PatientEnrolled", "payload": payload}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.birth_date"
    assert str(caught.value) == "payload.birth_date: Input should be an ISO 8601 date"


def test_a_naive_datetime_cannot_even_be_put_in_an_envelope() -> None:
    with pytest.raises(ValueError, match="timezone"):
        wrap(TeamCreated(**SAMPLES["TeamCreated"]), occurred_at=dt.datetime(2024, 5, 1, 9, 30))


def test_decode_rejects_an_extra_envelope_field() -> None:
    obj = valid_mapping() | {"tenant": "other"}

    with pytest.raises(InvalidEvent, match=r"^tenant: Extra inputs are not permitted") as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "tenant"


def test_decode_rejects_an_extra_payload_field() -> None:
    obj = valid_mapping()
    obj["payload"]["ssn"] = "000-00-0000"

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert caught.value.field == "payload.ssn"
    assert "000-00-0000" not in str(caught.value)


def test_error_messages_do_not_echo_the_offending_value() -> None:
    obj = valid_mapping()
    obj["payload"]["name"] = {"diagnosis": "secret-value"}

    with pytest.raises(InvalidEvent) as caught:
        decode(as_bytes(obj))
    assert "secret-value" not in str(caught.value)


@pytest.mark.parametrize("value", [None, "x", 1.5, True, [], {}, -1, 0])
@pytest.mark.parametrize(
    "field", ["event_id", "type", "schema_version", "stream_version", "occurred_at", "payload"]
)
def test_a_wrongly_typed_envelope_field_is_always_a_codec_error(field: str, value: Any) -> None:
    obj = valid_mapping() | {field: value}

    with pytest.raises(CodecError) as caught:
        decode(as_bytes(obj))
    assert caught.value.field is not None
    assert caught.value.field.split(".")[0] == field


def test_codec_errors_are_value_errors_for_callers_that_catch_broadly() -> None:
    assert issubclass(CodecError, ValueError)
    assert all(
        issubclass(cls, CodecError) for cls in (MalformedMessage, UnknownEventType, InvalidEvent)
    )


def test_an_envelope_whose_type_disagrees_with_its_payload_is_refused() -> None:
    fields = to_mapping(wrap(TeamCreated(**SAMPLES["TeamCreated"])))
    fields["payload"] = TeamCreated(**SAMPLES["TeamCreated"])
    fields["type"] = "RoleRevoked"

    with pytest.raises(ValueError, match="RoleRevoked"):
        Envelope.model_validate(fields)


class NoteTaken(Event):
    """Version 2 of a test-only event: v1 called `text` `body` and had no discipline."""

    event_type: ClassVar[str] = "NoteTaken"
    schema_version: ClassVar[int] = 2

    note_id: str
    text: str
    author_discipline: Discipline


def note_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    lifted = {key: value for key, value in payload.items() if key != "body"}
    return lifted | {"text": payload["body"], "author_discipline": "CARE_COORDINATOR"}


def v1_note_bytes(payload: dict[str, Any]) -> bytes:
    obj = valid_mapping() | {"type": "NoteTaken", "schema_version": 1, "payload": payload}
    return as_bytes(obj)


def test_an_upcaster_lifts_a_v1_payload_to_v2_on_decode() -> None:
    registry = Registry()
    registry.register(NoteTaken)
    registry.register_upcaster("NoteTaken", 1, note_v1_to_v2)

    envelope = decode(v1_note_bytes({"note_id": "n1", "body": "hello"}), registry=registry)

    assert envelope.schema_version == 2
    assert envelope.payload == NoteTaken(
        note_id="n1", text="hello", author_discipline=Discipline.CARE_COORDINATOR
    )
    assert orjson.loads(encode(envelope))["schema_version"] == 2


def test_an_old_version_without_an_upcaster_is_an_unknown_version() -> None:
    registry = Registry()
    registry.register(NoteTaken)

    with pytest.raises(UnknownEventType, match="NoteTaken") as caught:
        decode(v1_note_bytes({"note_id": "n1", "body": "hello"}), registry=registry)
    assert caught.value.field == "schema_version"


def test_a_payload_too_broken_to_upcast_is_an_invalid_event() -> None:
    registry = Registry()
    registry.register(NoteTaken)
    registry.register_upcaster("NoteTaken", 1, note_v1_to_v2)

    with pytest.raises(InvalidEvent) as caught:
        decode(v1_note_bytes({"note_id": "n1"}), registry=registry)
    assert caught.value.field == "payload"


def test_upcasting_does_not_change_the_callers_mapping() -> None:
    registry = Registry()
    registry.register(NoteTaken)
    registry.register_upcaster("NoteTaken", 1, note_v1_to_v2)
    obj = orjson.loads(v1_note_bytes({"note_id": "n1", "body": "hello"}))

    from_mapping(obj, registry=registry)

    assert obj["payload"] == {"note_id": "n1", "body": "hello"}
    assert obj["schema_version"] == 1


def test_a_type_and_version_can_only_be_registered_once() -> None:
    registry = Registry()
    registry.register(NoteTaken)
    registry.register_upcaster("NoteTaken", 1, note_v1_to_v2)

    with pytest.raises(ValueError, match="already registered"):
        registry.register(NoteTaken)
    with pytest.raises(ValueError, match="already has an upcaster"):
        registry.register_upcaster("NoteTaken", 1, note_v1_to_v2)


def test_the_registry_reports_the_latest_version_and_the_model_for_each() -> None:
    assert REGISTRY.latest_version("TeamCreated") == 1
    assert REGISTRY.model_for("TeamCreated", 1) is TeamCreated
    with pytest.raises(UnknownEventType, match="Nope"):
        REGISTRY.latest_version("Nope")


@pytest.mark.parametrize(
    "head",
    [
        {"type": "TaskMoved", "schema_version": 1, "payload": {"task_id": "t"}},
        {"type": "TaskMoved", "schema_version": 2, "payload": {}, "extra": "ignored"},
        {"type": "TaskMoved", "schema_version": True, "payload": {}},
        {"type": "TaskMoved", "schema_version": "1", "payload": {}},
        {"type": "TaskMoved", "schema_version": 1.0, "payload": {}},
        {"type": "TaskMoved", "schema_version": 0, "payload": {}},
        {"type": "", "schema_version": 1, "payload": {}},
        {"type": 7, "schema_version": 1, "payload": {}},
        {"type": "TaskMoved", "schema_version": 1, "payload": []},
        {"type": "TaskMoved", "schema_version": 1, "payload": {1: "x"}},
        {"type": "TaskMoved", "schema_version": 1, "payload": OrderedDict(task_id="t")},
        {"schema_version": 1, "payload": {}},
    ],
)
def test_the_head_is_read_as_its_model_validates_it(head: dict[str, Any]) -> None:
    """What the envelope's head says (type, version, payload) is checked without pydantic
    when it has the shape every stored event has; it must agree with _Head on any head."""

    def read(how: Callable[[], Any]) -> Any:
        try:
            found = how()
        except ValidationError as exc:
            return "refused", str(_invalid(exc))
        except InvalidEvent as exc:
            return "refused", str(exc)
        return found.type, found.schema_version, found.payload

    assert read(lambda: _head(head)) == read(lambda: _Head.model_validate(head))
