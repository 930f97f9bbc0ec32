"""Audit-log entries as FHIR R4B AuditEvent resources. Pure.

The one reading of an access record as FHIR: the patient's events in `export fhir`, and
every event of `audit export --format fhir`, whose Bundle holds no Patient (so the patient
is named by identifier there, not referenced).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventAgentNetwork,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.reference import Reference

from schemas.audit import AccessRecorded, SignInOutcome
from schemas.common import AccessOutcome
from services.fhir import codes
from services.fhir.clinical import meta
from services.fhir.refs import full_url, user


@dataclass(frozen=True)
class Access:
    """An audit-log entry: its place in the log ('chain:seq') and its decrypted record."""

    label: str
    record: AccessRecorded


def audit_event(access: Access, *, patient_in_bundle: bool = True) -> AuditEvent:
    """The entry as an AuditEvent; `patient_in_bundle` says whether the Bundle it goes in
    holds the entry's Patient (under `refs.full_url("Patient", id)`) to reference."""
    r = access.record
    patient = [_patient(r.patient_id, patient_in_bundle)] if r.patient_id else []
    return AuditEvent(
        # FHIR ids allow letters, digits, '-' and '.', so 'chain:seq' becomes 'chain-seq'.
        id=access.label.replace(":", "-"),
        # The event says that sensitive data was touched, which is itself sensitive: it
        # carries the labels too, besides the entity's (judgement: over-labelling only
        # restricts a reader, under-labelling would leak).
        meta=meta(r.sensitivity),
        type=codes.PATIENT_RECORD_EVENT,
        subtype=[codes.coding(codes.ACTION_SYSTEM, r.action.value, r.action.value)],
        action=codes.AUDIT_ACTION[r.action],
        recorded=r.at,
        outcome=codes.MINOR_FAILURE
        if r.outcome in (AccessOutcome.DENY, SignInOutcome.UNAUTHENTICATED)
        else codes.SUCCESS,
        outcomeDesc=f"{r.outcome.value}: {r.reason}" if r.reason else r.outcome.value,
        # A break-glass access is emergency treatment, whatever purpose the actor gave.
        purposeOfEvent=[codes.purpose(r.purpose, emergency=r.outcome is AccessOutcome.BREAK_GLASS)],
        agent=[_agent(r)],
        source=AuditEventSource(
            observer=Reference(display="carecoord"), type=[codes.APPLICATION_SERVER]
        ),
        entity=[*patient, _resource(r)],
    )


def _agent(r: AccessRecorded) -> AuditEventAgent:
    roles = [codes.discipline(d) for d in r.actor_disciplines] + [
        codes.concept(text=role) for role in r.actor_roles if role
    ]
    return AuditEventAgent(
        who=user(r.actor_id, r.actor_name),
        name=r.actor_name or None,
        requestor=True,
        role=roles or None,
        # Network access point type 2 is an IP address.
        network=AuditEventAgentNetwork(address=r.client_addr, type="2") if r.client_addr else None,
    )


def _patient(patient_id: str, in_bundle: bool) -> AuditEventEntity:
    # The carecoord id always, so a reader can match the event back to the patient; the
    # reference only when it resolves inside the Bundle (one that does not is a dead link).
    what = Reference(
        reference=full_url("Patient", patient_id) if in_bundle else None,
        type="Patient",
        identifier=Identifier(system=codes.sid("patient"), value=patient_id),
    )
    return AuditEventEntity(
        what=what,
        type=codes.PERSON_ENTITY,
        role=codes.PATIENT_ROLE,
    )


def _resource(r: AccessRecorded) -> AuditEventEntity:
    # carecoord's resource types (Huddle, AuditLog, ...) are not all FHIR types, and the
    # records are not all in this Bundle: name them by identifier, never by reference.
    what = Reference(
        identifier=(
            Identifier(system=codes.sid(r.resource_type.lower()), value=r.resource_id)
            if r.resource_id
            else None
        ),
        display=f"{r.resource_type} {r.resource_id}" if r.resource_id else r.resource_type,
    )
    details = [
        AuditEventEntityDetail(type=kind, valueString=value)
        for kind, value in (
            ("record-id", r.record_id),
            ("request-id", r.request_id),
            ("correlation-id", r.correlation_id),
            ("user-agent", r.user_agent),
        )
        if value
    ]
    return AuditEventEntity(
        what=what,
        type=codes.SYSTEM_OBJECT_ENTITY,
        role=codes.DOMAIN_RESOURCE_ROLE,
        securityLabel=codes.security_labels(r.sensitivity) or None,
        detail=details or None,
    )
