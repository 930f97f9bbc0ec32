"""One patient's record as a FHIR R4B Bundle (type collection): what goes in, what the
purpose of the export keeps out, and the security labels it carries. Pure: no I/O.

The export is an operator's (compliance) tool, so sensitive items go out with their
labels, except that genetic information never goes out for UNDERWRITING or EMPLOYMENT
(GINA; services.common.policy): every GENETIC-tagged item is left out entirely then --
interventions, monitoring plans, readings, tasks, audit events, and consents that cover
genetic information (a consent to share genetic data tells of genetic services, which GINA
counts as genetic information; it is left out whole rather than altered to say less than
it did).

Readings go out as Observations (services.fhir.observations), each labelled with its
measure's sensitivity and that of the monitoring plans of its measure, so a reading
carries a GENETIC tag, and is left out, exactly when such a plan does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.domainresource import DomainResource

from schemas.common import Purpose, Sensitivity
from services.common.policy import GINA_BARRED
from services.fhir import clinical
from services.fhir import observations as readings
from services.fhir.audit_events import Access, audit_event
from services.fhir.codes import SECURITY_LABELS
from services.fhir.observations import Span, Watch, span_key
from services.fhir.refs import full_url
from services.plans.domain.careplan import CarePlan, Goal
from services.plans.domain.consent import Consent
from services.plans.domain.observation import Observation
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
    # The patient's readings, and when each monitoring plan ran (by
    # observations.span_key; a plan missing here counts as running all along).
    observations: Sequence[Observation] = ()
    monitoring_spans: Mapping[str, Span] = field(default_factory=dict)


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
    every_monitoring = [m for plan in record.plans for m in plan.monitoring]
    watches = [
        Watch(m, record.monitoring_spans.get(span_key(plan.id, m.id), Span()))
        for plan in record.plans
        for m in plan.monitoring
    ]
    # A reading goes out, and counts towards a goal's achievement, only where its tags may.
    tagged = [
        (o, readings.reading_tags(o, every_monitoring))
        for o in record.observations
        if o.patient_id == p.id
    ]
    sent = [(o, tags) for o, tags in tagged if kept(tags)]
    left_out["observation"] += len(tagged) - len(sent)
    plan_ids = set()
    for plan in record.plans:
        interventions = [i for i in plan.interventions if kept(i.sensitivity)]
        monitoring = [m for m in plan.monitoring if kept(m.sensitivity)]
        left_out["care plan activity"] += len(plan.interventions) - len(interventions)
        left_out["care plan activity"] += len(plan.monitoring) - len(monitoring)
        resource = clinical.care_plan(plan, interventions, team_id=team_id, monitoring=monitoring)
        entries.append(("CarePlan", plan.id, resource))
        for g in plan.goals:
            entries.append(("Goal", f"{plan.id}/{g.id}", _goal(g, plan, sent, now)))
        plan_ids.add(plan.id)
    for o, labels in sent:
        interpreted = readings.interpretation(o, watches)
        entries.append(
            ("Observation", o.id, readings.observation(o, tags=labels, interpreted=interpreted))
        )
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


def _goal(
    g: Goal,
    plan: CarePlan,
    sent: Sequence[tuple[Observation, frozenset[Sensitivity]]],
    now: datetime,
) -> DomainResource:
    """A goal with its progress over the readings of its measure that go out (today is
    the export's day, in UTC)."""
    if g.measurable is None:
        return clinical.goal(g, plan)
    code = g.measurable.measure_code
    used = [(o, tags) for o, tags in sent if o.measure_code == code]
    progress = readings.progress(
        g.measurable, g.due_date, [o for o, _ in used], now.astimezone(UTC).date()
    )
    judged_on = {t for _, tags in used for t in tags}
    return clinical.goal(g, plan, progress=progress, judged_on=judged_on)
