"""Gathering one patient's record for the FHIR export: the patient, team, plans (with when
each monitoring plan ran), consents and readings from the event store, the patient's tasks
from the team's board, and the patient's own entries from the audit log (decrypted with
the audit keys)."""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.careplan import CarePlanCreated
from schemas.consent import ConsentGranted
from schemas.observation import ObservationRecorded
from services.audit.keys import LogKeys
from services.audit.reports import AuditReader
from services.common.aggregates import NEW, Repository, fold
from services.common.event_store import EventStore, EventStorePort
from services.fhir.audit_events import Access
from services.fhir.mapping import PatientRecord
from services.fhir.observations import monitoring_spans
from services.plans.domain.careplan import CARE_PLAN
from services.plans.domain.consent import CONSENT
from services.plans.domain.observation import OBSERVATION, Observation
from services.plans.domain.patient import PATIENT
from services.plans.domain.team import TEAM
from services.tasks.store import patient_tasks

# Readings are read from the store in pages of this many events.
READ_PAGE = 1000


class UnknownPatient(LookupError):
    """No patient has that id."""

    def __init__(self, patient_id: str) -> None:
        super().__init__(
            f"no patient has the id {patient_id!r}; give the id enrollPatient returned "
            "(the patient query shows it), not the MRN"
        )


async def gather(pool: asyncpg.Pool[Any], keys: LogKeys, patient_id: str) -> PatientRecord:
    repository = Repository(EventStore(pool))
    patient = (await repository.load(PATIENT, patient_id)).state
    if patient is None:
        raise UnknownPatient(patient_id)
    team = (await repository.load(TEAM, patient.team_id)).state
    plan_ids = await repository.ids_for_patient(CARE_PLAN, patient_id, CarePlanCreated)
    consent_ids = await repository.ids_for_patient(CONSENT, patient_id, ConsentGranted)
    streams = await repository.store.read_streams([CARE_PLAN.stream_id(i) for i in plan_ids])
    plans, spans = [], {}
    for plan_id in plan_ids:
        envelopes = streams.get(CARE_PLAN.stream_id(plan_id))
        if envelopes and (plan := fold(CARE_PLAN, envelopes, NEW).state) is not None:
            plans.append(plan)
            spans.update(monitoring_spans(envelopes))
    consents = [c.state for c in await repository.load_many(CONSENT, consent_ids) if c.state]
    async with pool.acquire() as conn:
        tasks = await patient_tasks(conn, team_id=patient.team_id, patient_id=patient_id)
    found = await AuditReader(pool, keys).access_report(patient_id, None, None)
    return PatientRecord(
        patient=patient,
        team=team,
        plans=plans,
        consents=consents,
        tasks=tasks,
        accesses=[Access(label=f.label, record=f.record) for f in found],
        observations=await _readings(repository.store, patient_id),
        monitoring_spans=spans,
    )


async def _readings(store: EventStorePort, patient_id: str) -> list[Observation]:
    """Every reading of the patient, in the order they were recorded (pages of READ_PAGE)."""
    found: list[Observation] = []
    position = 0
    while True:
        batch = await store.patient_events(
            patient_id, ObservationRecorded.event_type, after_position=position, limit=READ_PAGE
        )
        for recorded in batch:
            state = fold(OBSERVATION, [recorded.envelope], NEW).state
            if state is not None:
                found.append(state)
        if len(batch) < READ_PAGE:
            return found
        position = batch[-1].position
