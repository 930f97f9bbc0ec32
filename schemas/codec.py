"""The only way between bytes, mappings and event models; every failure is a typed CodecError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.audit import AccessRecorded, AccessRecords
from schemas.base import Event
from schemas.board import BoardUpdate
from schemas.envelope import Envelope
from schemas.errors import CodecError, InvalidEvent, MalformedMessage, UnknownEventType
from schemas.registry import REGISTRY, Registry

__all__ = [
    "CodecError",
    "InvalidEvent",
    "MalformedMessage",
    "UnknownEventType",
    "decode",
    "decode_access",
    "decode_access_records",
    "decode_board_update",
    "encode",
    "encode_access",
    "encode_board_update",
    "from_mapping",
    "pack_access",
    "payload_to_mapping",
    "publish_queued_board_update",
    "to_mapping",
]


class _Head(BaseModel):
    """What must be read before the payload's model can be chosen."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(min_length=1)
    schema_version: int = Field(ge=1, strict=True)
    payload: dict[str, Any]


def encode(envelope: Envelope) -> bytes:
    """Compact UTF-8 JSON of an envelope, payload included."""
    return orjson.dumps(to_mapping(envelope))


def decode(data: bytes, *, registry: Registry = REGISTRY) -> Envelope:
    """Read an envelope from bytes, upcasting its payload to the latest schema version."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson's message may quote the input, which can hold PHI: say only where it broke.
        raise MalformedMessage(f"not UTF-8 JSON (at byte {exc.pos})") from None
    return from_mapping(obj, registry=registry)


def encode_board_update(update: BoardUpdate) -> bytes:
    return orjson.dumps(update.model_dump(mode="json", exclude_none=True))


def publish_queued_board_update(seq: int, body: str) -> bytes:
    """A board update the projector queued as JSON text without its seq (a JSON object
    written by orjson, nulls left out at the top), as published: the seq put first, the
    rest as it is, with no model built. The hub, its one reader, validates each update it
    receives (decode_board_update) and drops one that is not a BoardUpdate."""
    if not body.startswith('{"'):
        raise MalformedMessage("a queued board update is not a JSON object with fields")
    return b'{"seq":%d,' % seq + body[1:].encode()


def decode_board_update(data: bytes) -> BoardUpdate:
    """Read a board update; MalformedMessage or InvalidEvent (never quoting content)."""
    return _read(BoardUpdate, data)


def encode_access(record: AccessRecorded) -> bytes:
    # pydantic's own JSON writer: one pass, no intermediate dict (the audit hot path).
    return record.model_dump_json(exclude_none=True).encode()


def decode_access(data: bytes) -> AccessRecorded:
    """Read an access record; MalformedMessage or InvalidEvent (never quoting content)."""
    return _read(AccessRecorded, data)


_PACK_HEAD = b'{"schema_version":1,"records":['


def pack_access(encoded: list[bytes]) -> bytes:
    """An AccessRecords message of records already encoded (encode_access), as they are,
    with no decoding on the way."""
    return _PACK_HEAD + b",".join(encoded) + b"]}"


def decode_access_records(data: bytes) -> list[AccessRecorded]:
    """The records of a care.audit message: an AccessRecords pack, or one AccessRecorded
    (what a process with no outbox sends); MalformedMessage or InvalidEvent."""
    obj = _loads(data)
    # A record has no `records` field (it forbids unknown ones): the shapes cannot mix.
    if isinstance(obj, dict) and "records" in obj:
        return list(_validated(AccessRecords, obj).records)
    return [_validated(AccessRecorded, obj)]


_M = TypeVar("_M", bound=BaseModel)


def _read(model: type[_M], data: bytes) -> _M:
    return _validated(model, _loads(data))


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not UTF-8 JSON (at byte {exc.pos})") from None


def _validated(model: type[_M], obj: Any) -> _M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


def from_mapping(obj: Mapping[str, Any], *, registry: Registry = REGISTRY) -> Envelope:
    """Read an envelope from an already-parsed JSON object (e.g. an event store row).

    The payload's model depends on `type` and `schema_version`, so those (and the payload's
    shape) are checked first, then the payload's fields, then the rest of the envelope;
    the error names the first failing field in that order.
    """
    if not isinstance(obj, Mapping):
        raise MalformedMessage(f"expected a JSON object, got {_json_kind(obj)}")
    head = _head(obj)
    latest, payload = _upcast(registry, head)
    model = registry.model_for(head.type, latest)
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(exc, prefix="payload") from None

    try:
        return Envelope.model_validate({**obj, "schema_version": latest, "payload": event})
    except ValidationError as exc:
        raise _invalid(exc) from None


class _Read(NamedTuple):
    type: str
    schema_version: int
    payload: dict[str, Any]


def _head(obj: Mapping[str, Any]) -> _Read:
    """The head of `obj`, as _Head validates it. What every stored or published event has
    (a non-empty str type, an int version from 1, a dict payload with str keys) is checked
    here, in a tenth of the time; anything else is left to _Head, which also names what is
    wrong."""
    kind, version, payload = obj.get("type"), obj.get("schema_version"), obj.get("payload")
    if (
        type(kind) is str
        and kind
        and type(version) is int
        and version >= 1
        and type(payload) is dict
        and all(type(key) is str for key in payload)
    ):
        return _Read(kind, version, payload)
    try:
        head = _Head.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return _Read(head.type, head.schema_version, head.payload)


def to_mapping(envelope: Envelope) -> dict[str, Any]:
    """A JSON-compatible dict of an envelope (ids, dates and enums as strings)."""
    return envelope.model_dump(mode="json")


def payload_to_mapping(event: Event) -> dict[str, Any]:
    """A JSON-compatible dict of an event's fields, as stored in the envelope's payload."""
    return event.model_dump(mode="json")


def _upcast(registry: Registry, head: _Read) -> tuple[int, dict[str, Any]]:
    try:
        return registry.upcast(head.type, head.schema_version, head.payload)
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # An upcaster met a payload too broken to lift; that is the payload's fault.
        raise InvalidEvent(
            f"payload: cannot be upcast from {head.type} v{head.schema_version} "
            f"({type(exc).__name__})",
            field="payload",
        ) from None


def _invalid(exc: ValidationError, *, prefix: str | None = None) -> InvalidEvent:
    """The first failure of a ValidationError, named by its dotted field path.

    Only pydantic's `msg` is used, never the offending input, which may be PHI.
    """
    first = exc.errors(include_url=False, include_input=False)[0]
    parts = [prefix] if prefix else []
    parts.extend(str(part) for part in first["loc"])
    field = ".".join(parts) or None
    where = field or "envelope"
    return InvalidEvent(f"{where}: {first['msg']}", field=field)


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
