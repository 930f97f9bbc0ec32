"""One patient's record as a FHIR R4B Bundle (type collection): what goes in, what the
purpose of the export keeps out, and the security labels it carries. Pure: no I/O.

The export is an operator's (compliance) tool, so sensitive items go out with their
labels, except that genetic information never goes out for UNDERWRITING or EMPLOYMENT
(GINA; services.common.policy): every GENETIC-tagged item is left out entirely then --
interventions, tasks, audit events, and consents that cover genetic information (a
consent to share genetic data tells of genetic services, which GINA counts as genetic
information; it is left out whole rather than altered to say less than it did).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.domainresource import DomainResource

from schemas.common import Purpose, Sensitivity
from services.common.policy import GINA_BARRED
from services.fhir import clinical
from services.fhir.audit_events import Access, audit_event
from services.fhir.codes import SECURITY_LABELS
from services.fhir.refs import full_url
from services.plans.domain.careplan import CarePlan
from services.plans.domain.consent import Consent
from services.plans.domain.patient import Patient
from services.plans.domain.team import Team
from services.tasks.domain import Task

_BY_LABEL = {code: tag for tag, (code, _display) in SECURITY_LABELS.items()}


@dataclass(frozen=True)
class PatientRecord:
    """Everything of one patient that the export reads."""

    patient: Patient
    team: Team | None
    plans: Sequence[CarePlan] = ()
    consents: Sequence[Consent] = ()
    tasks: Sequence[Task] = ()
    accesses: Sequence[Access] = ()


@dataclass(frozen=True)
class Exported:
    bundle: Bundle
    purpose: Purpose
    # What the purpose kept out, counted by kind ("task": 2); empty when nothing was.
    left_out: Mapping[str, int] = field(default_factory=dict)

    @property
    def withheld(self) -> frozenset[Sensitivity]:
        """The tags this export's purpose keeps out, whether or not anything had them."""
        return withheld(self.purpose)

    @property
    def sensitivity(self) -> frozenset[Sensitivity]:
        """The tags of what went out: the Bundle's own labels."""
        meta = self.bundle.meta
        labels = meta.security if meta and meta.security else []
        return frozenset(_BY_LABEL[c.code] for c in labels if c.code in _BY_LABEL)

    @property
    def counts(self) -> dict[str, int]:
        """How many resources of each type went out."""
        found = Counter(
            e.resource.get_resource_type() for e in self.bundle.entry or [] if e.resource
        )
        return dict(sorted(found.items()))


def withheld(purpose: Purpose) -> frozenset[Sensitivity]:
    return frozenset({Sensitivity.GENETIC}) if purpose in GINA_BARRED else frozenset()


def build_bundle(
    record: PatientRecord, *, purpose: Purpose, now: datetime, bundle_id: str
) -> Exported:
    """The Bundle of `record` as an export for `purpose`, generated at `now`."""
    barred = withheld(purpose)

    def kept(tags: Iterable[Sensitivity]) -> bool:
        return barred.isdisjoint(tags)

    left_out: Counter[str] = Counter()
    p = record.patient
    team_id = record.team.id if record.team else None
    entries: list[tuple[str, str, DomainResource]] = [("Patient", p.id, clinical.patient(p))]
    if record.team is not None:
        entries.append(("CareTeam", record.team.id, clinical.care_team(record.team, p.id)))
    plan_ids = set()
    for plan in record.plans:
        interventions = [i for i in plan.interventions if kept(i.sensitivity)]
        monitoring = [m for m in plan.monitoring if kept(m.sensitivity)]
        left_out["care plan activity"] += len(plan.interventions) - len(interventions)
        left_out["care plan activity"] += len(plan.monitoring) - len(monitoring)
        resource = clinical.care_plan(plan, interventions, team_id=team_id, monitoring=monitoring)
        entries.append(("CarePlan", plan.id, resource))
        entries += [("Goal", f"{plan.id}/{g.id}", clinical.goal(g, plan)) for g in plan.goals]
        plan_ids.add(plan.id)
    names = {m.user_id: m.name for m in record.team.members.values()} if record.team else {}
    for t in record.tasks:
        if t.patient_id != p.id:
            continue
        if not kept(t.sensitivity):
            left_out["task"] += 1
            continue
        entries.append(("Task", t.id, clinical.task(t, names=names, plan_ids=plan_ids)))
    for c in record.consents:
        if c.patient_id != p.id:
            continue
        if not kept(c.categories):
            left_out["consent"] += 1
            continue
        entries.append(("Consent", c.id, clinical.consent(c, now=now, team_id=team_id)))
    for a in record.accesses:
        if a.record.patient_id != p.id:  # only the patient's own entries
            continue
        if not kept(a.record.sensitivity):
            left_out["audit event"] += 1
            continue
        entries.append(("AuditEvent", a.label, audit_event(a)))

    # The Bundle carries the union of its resources' labels ("high-water mark"), so a
    # reader who looks no deeper still knows what it holds.
    tags = {
        _BY_LABEL[c.code]
        for _, _, resource in entries
        if resource.meta and resource.meta.security
        for c in resource.meta.security
        if c.code in _BY_LABEL
    }
    bundle = Bundle(
        id=bundle_id,
        meta=clinical.meta(tags),
        type="collection",
        timestamp=now,
        entry=[
            BundleEntry(fullUrl=full_url(kind, key), resource=resource)
            for kind, key, resource in entries
        ],
    )
    return Exported(
        bundle=bundle, purpose=purpose, left_out={k: n for k, n in left_out.items() if n}
    )
