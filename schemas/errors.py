"""The typed errors of decoding events; kept apart so the registry and the codec can share them."""

from __future__ import annotations


class CodecError(ValueError):
    """An event could not be read; `field` is the dotted path at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MalformedMessage(CodecError):
    """The bytes are not UTF-8 JSON, or the JSON is not an object."""


class UnknownEventType(CodecError):
    """The event type, or its schema version, is not known to the registry."""


class InvalidEvent(CodecError):
    """The envelope or its payload failed validation."""
