"""Reading FHIR JSON in tests: every reference a document makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document, depth first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key, inner
            yield from _walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner)


def references_in(document: Any) -> list[str]:
    """The `reference` strings anywhere in a parsed FHIR document, in document order."""
    return [v for k, v in _walk(document) if k == "reference" and isinstance(v, str)]
