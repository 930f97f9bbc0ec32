"""carecoord's event models, their envelope, the type registry and the codec (pure, no I/O)."""

from schemas.base import Event
from schemas.codec import decode, encode, from_mapping, payload_to_mapping, to_mapping
from schemas.envelope import Envelope
from schemas.errors import CodecError, InvalidEvent, MalformedMessage, UnknownEventType
from schemas.registry import REGISTRY, Registry

__all__ = [
    "REGISTRY",
    "CodecError",
    "Envelope",
    "Event",
    "InvalidEvent",
    "MalformedMessage",
    "Registry",
    "UnknownEventType",
    "decode",
    "encode",
    "from_mapping",
    "payload_to_mapping",
    "to_mapping",
]
