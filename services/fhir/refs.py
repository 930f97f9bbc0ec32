"""Ids, fullUrls and references of the exported resources.

Every entry's fullUrl is `urn:uuid:` + a UUID derived from its type and carecoord id, and
every reference between exported resources is that urn, so references resolve inside
the Bundle without a server. A resource keeps its carecoord id as its FHIR id when that
is a valid FHIR id ([A-Za-z0-9-.]{1,64}), else it takes the derived UUID.
"""

from __future__ import annotations

import re
import uuid

from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.reference import Reference

from services.fhir.codes import NAMESPACE, USER_SYSTEM

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _derived(resource_type: str, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{resource_type}/{key}"))


def full_url(resource_type: str, key: str) -> str:
    """The entry's fullUrl; `key` is whatever makes the record unique (a goal's is its
    plan's id and its own, since goal ids are unique per plan only)."""
    return f"urn:uuid:{_derived(resource_type, key)}"


def resource_id(resource_type: str, carecoord_id: str, key: str | None = None) -> str:
    if _FHIR_ID.fullmatch(carecoord_id):
        return carecoord_id
    return _derived(resource_type, key or carecoord_id)


def ref(resource_type: str, key: str, display: str | None = None) -> Reference:
    """A reference to an entry of this Bundle."""
    return Reference(reference=full_url(resource_type, key), type=resource_type, display=display)


def user(user_id: str, name: str | None = None) -> Reference:
    """A carecoord user: a logical reference (there is no Practitioner resource of them)."""
    return Reference(identifier=Identifier(system=USER_SYSTEM, value=user_id), display=name or None)
