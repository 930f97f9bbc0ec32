"""Building access records, and collecting one operation's records: one per patient
touched (or per refused resource, when no patient was reached)."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from schemas.audit import AccessAction, AccessRecorded, SignInOutcome
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.common.actor import Actor
from services.common.domain import Touched

# When one operation releases a patient's data with different outcomes, the record keeps
# the one a compliance officer most needs to see.
_WEIGHT: dict[AccessOutcome | SignInOutcome, int] = {
    SignInOutcome.UNAUTHENTICATED: 4,
    AccessOutcome.DENY: 3,
    AccessOutcome.BREAK_GLASS: 2,
    AccessOutcome.PERMIT_REDACTED: 1,
    AccessOutcome.PERMIT: 0,
}


@dataclass(frozen=True)
class Requester:
    """Who asked, why, and from where: the same for every record of one request."""

    actor: Actor
    purpose: Purpose
    request_id: str | None = None
    correlation_id: str | None = None
    client_addr: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class Touch:
    """What was done to which resource, with the policy's outcome and reason."""

    action: AccessAction
    resource_type: str
    resource_id: str | None
    outcome: AccessOutcome
    reason: str
    disciplines: frozenset[Discipline] = frozenset()
    # Recorded even when it reached no patient (a read of the audit log as a whole).
    standalone: bool = False


def operator() -> str:
    """Who runs a command-line export, as its access record names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli:unknown"


def build(
    requester: Requester,
    access: Touch,
    *,
    patient_id: str | None,
    sensitivity: Iterable[Sensitivity],
    at: datetime,
) -> AccessRecorded:
    actor = requester.actor
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=at,
        actor_id=actor.user_id,
        actor_name=actor.name,
        actor_roles=tuple(sorted(actor.roles)),
        actor_disciplines=tuple(sorted(access.disciplines)),
        patient_id=patient_id,
        action=access.action,
        resource_type=access.resource_type,
        # An id the caller typed may be anything: the record keeps enough to name it.
        resource_id=access.resource_id[:200] if access.resource_id else None,
        purpose=requester.purpose,
        outcome=access.outcome,
        reason=access.reason[:2000],
        sensitivity=tuple(sorted(set(sensitivity))),
        request_id=requester.request_id,
        correlation_id=requester.correlation_id,
        client_addr=requester.client_addr,
        user_agent=(requester.user_agent or None) and requester.user_agent[:512],
    )


def records_for(
    requester: Requester, access: Touch, patients: Touched, *, at: datetime
) -> list[AccessRecorded]:
    """One record per patient; a refusal (or a standalone access) that reached no patient
    still gets one."""
    if not patients:
        if access.outcome is not AccessOutcome.DENY and not access.standalone:
            return []
        return [build(requester, access, patient_id=None, sensitivity=(), at=at)]
    return [
        build(requester, access, patient_id=p, sensitivity=s, at=at) for p, s in patients.items()
    ]


class AccessLog:
    """The records of one GraphQL operation, merged so each patient appears once."""

    def __init__(self) -> None:
        self._records: dict[tuple[str | None, ...], AccessRecorded] = {}

    def add(self, records: Iterable[AccessRecorded]) -> None:
        for record in records:
            # A refusal never hides a release of the same patient's data (nor the other
            # way round): they are separate records.
            denied = "denied" if record.outcome is AccessOutcome.DENY else "released"
            key: tuple[str | None, ...] = (
                (record.patient_id, denied)
                if record.patient_id is not None
                else (None, record.resource_type, record.resource_id, record.outcome)
            )
            earlier = self._records.get(key)
            self._records[key] = record if earlier is None else _merge(earlier, record)

    def drain(self) -> list[AccessRecorded]:
        records, self._records = list(self._records.values()), {}
        return records

    def __len__(self) -> int:
        return len(self._records)


def _merge(first: AccessRecorded, later: AccessRecorded) -> AccessRecorded:
    keep, other = (
        (later, first) if _WEIGHT[later.outcome] > _WEIGHT[first.outcome] else (first, later)
    )
    reasons = keep.reason.split("; ")
    # Each item's reason stays readable: a redaction beside the consent that released
    # another item of the same patient.
    reasons += [r for r in other.reason.split("; ") if r not in reasons]
    return keep.model_copy(
        update={
            "sensitivity": tuple(sorted(set(first.sensitivity) | set(later.sensitivity))),
            "reason": "; ".join(reasons)[:2000],
        }
    )
