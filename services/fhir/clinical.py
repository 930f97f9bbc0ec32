"""carecoord's clinical records as FHIR R4B resources: Patient, CareTeam, CarePlan with its
Goals, Task and Consent. Pure: plain domain values in, validated models out.

FHIR forbids empty arrays and empty strings, so optional lists and texts are None when
there is nothing to say.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.careplan import CarePlanActivity, CarePlanActivityDetail
from fhir.resources.R4B.careteam import CareTeam as FhirCareTeam
from fhir.resources.R4B.careteam import CareTeamParticipant
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.consent import Consent as FhirConsent
from fhir.resources.R4B.consent import ConsentPolicy, ConsentProvision, ConsentProvisionActor
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.goal import Goal as FhirGoal
from fhir.resources.R4B.goal import GoalTarget
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.range import Range
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.task import Task as FhirTask
from fhir.resources.R4B.task import TaskRestriction
from fhir.resources.R4B.timing import Timing, TimingRepeat

from schemas.common import Comparator, GoalStatus, Sensitivity, TaskStatus
from services.fhir import codes
from services.fhir.refs import ref, resource_id, user
from services.plans.domain import measures
from services.plans.domain.careplan import CarePlan, Goal, Intervention, Monitoring
from services.plans.domain.consent import Consent
from services.plans.domain.patient import Patient
from services.plans.domain.team import Team
from services.tasks.domain import Task
from services.tasks.signals import GoalProgress


def meta(tags: Iterable[Sensitivity]) -> Meta | None:
    """The security labels of a resource that carries sensitive content (None: none)."""
    labels = codes.security_labels(tags)
    return Meta(security=labels) if labels else None


def identifier(kind: str, value: str) -> list[Identifier]:
    # The carecoord id, kept even when it is the resource id too: a FHIR id may have had
    # to be derived, and the identifier is what a reader matches back to carecoord.
    return [Identifier(system=codes.sid(kind), value=value)]


def patient(p: Patient) -> FhirPatient:
    mrn = Identifier(
        use="usual", type=codes.MRN_TYPE, system=codes.mrn_system(p.team_id), value=p.mrn
    )
    return FhirPatient(
        id=resource_id("Patient", p.id),
        identifier=[mrn, *identifier("patient", p.id)],
        # carecoord keeps a name as one string: it goes out as the name's text, not split
        # into given and family names by a guess.
        name=[HumanName(text=p.name)],
        birthDate=p.birth_date,
    )


def care_team(team: Team, patient_id: str) -> FhirCareTeam:
    participants = []
    for member in team.members.values():
        roles = [codes.discipline(d) for d in sorted(member.disciplines)]
        if member.lead:
            roles.append(codes.LEAD)
        participants.append(
            CareTeamParticipant(role=roles or None, member=user(member.user_id, member.name))
        )
    return FhirCareTeam(
        id=resource_id("CareTeam", team.id),
        identifier=identifier("team", team.id),
        status="active",
        name=team.name,
        # The team serves many patients; in this Bundle it is the patient's care team.
        subject=ref("Patient", patient_id),
        participant=participants or None,
    )


# Quantity.comparator of a measurable goal's target (BETWEEN is a Range instead).
_COMPARATORS = {Comparator.LT: "<", Comparator.LE: "<=", Comparator.GT: ">", Comparator.GE: ">="}


def measure_concept(code: str) -> CodeableConcept:
    m = measures.measure(code)
    return codes.concept(codes.coding(codes.LOINC, m.code, m.name), text=m.name)


def quantity(value: float, unit: str, comparator: str | None = None) -> Quantity:
    return Quantity(value=value, comparator=comparator, unit=unit, system=codes.UCUM, code=unit)


def goal(
    g: Goal,
    plan: CarePlan,
    *,
    progress: GoalProgress | None = None,
    judged_on: Iterable[Sensitivity] = (),
) -> FhirGoal:
    """The goal, its targets (a measurable goal's LOINC measure and UCUM quantity or range,
    a free-text target, each with the goal's due date) and its achievement.

    Achievement: what the team recorded (ACHIEVED, NOT_ACHIEVED) stands. Otherwise, for a
    measurable goal neither achieved nor cancelled, `progress` computed from the patient's
    readings (services.tasks.signals.goal_progress) gives it: ACHIEVED achieved, ON_TRACK
    in-progress, AT_RISK worsening; NO_DATA (no reading yet) leaves the element out.
    `judged_on` are the tags of the readings that progress was computed from: the goal
    tells of them, so it carries their labels too."""
    lifecycle, achievement = codes.GOAL_STATUS[g.status]
    tags = set(g.measurable.sensitivity) if g.measurable else set()
    if (
        achievement is None
        and g.measurable is not None
        and g.status is not GoalStatus.CANCELLED
        and progress in codes.PROGRESS_ACHIEVEMENT
    ):
        assert progress is not None
        achievement = codes.PROGRESS_ACHIEVEMENT[progress]
        tags.update(judged_on)
    target = []
    if (t := g.measurable) is not None:
        # A measurable goal: its LOINC measure and a UCUM quantity (a range for BETWEEN).
        high = quantity(t.high, t.unit) if t.high is not None else None
        between = t.comparator is Comparator.BETWEEN
        target.append(
            GoalTarget(
                measure=measure_concept(t.measure_code),
                detailQuantity=(
                    None if between else quantity(t.value, t.unit, _COMPARATORS[t.comparator])
                ),
                detailRange=Range(low=quantity(t.value, t.unit), high=high) if between else None,
                dueDate=g.due_date,
            )
        )
    if g.target is not None or (g.due_date is not None and not target):
        # gol-1: a target's detail needs a measure. carecoord's free-text target has no
        # coded measure, so the goal's own description names what the target is a value of.
        target.append(
            GoalTarget(
                measure=codes.concept(text=g.description) if g.target is not None else None,
                detailString=g.target,
                dueDate=g.due_date,
            )
        )
    return FhirGoal(
        id=resource_id("Goal", g.id, key=f"{plan.id}/{g.id}"),
        meta=meta(tags),
        identifier=identifier("goal", g.id),
        lifecycleStatus=lifecycle,
        achievementStatus=(
            codes.concept(codes.coding(codes.GOAL_ACHIEVEMENT, *achievement))
            if achievement
            else None
        ),
        description=codes.concept(text=g.description),
        subject=ref("Patient", plan.patient_id),
        target=target or None,
    )


def _activity(i: Intervention, plan: CarePlan) -> CarePlanActivity:
    status = codes.ACTIVITY_STATUS[plan.status] if i.active else codes.DISCONTINUED
    # Tier and responsible discipline have no element in CarePlan.activity.detail (its
    # performer would be a Practitioner or CareTeam reference, not a discipline):
    # carecoord's extensions carry them as codes.
    extensions = [
        Extension(
            url=codes.TIER_EXTENSION,
            valueCoding=codes.coding(codes.TIER_SYSTEM, i.tier.value, codes.TIERS[i.tier]),
        ),
        Extension(
            url=codes.DISCIPLINE_EXTENSION,
            valueCodeableConcept=codes.discipline(i.responsible_discipline),
        ),
    ]
    return CarePlanActivity(
        detail=CarePlanActivityDetail(
            extension=extensions,
            kind=codes.ACTIVITY_KIND[i.kind],
            code=codes.concept(
                codes.coding(codes.KIND_SYSTEM, i.kind.value, i.kind.value.capitalize()),
                text=i.title,
            ),
            status=status,
            statusReason=(
                codes.concept(text=i.discontinued_reason) if i.discontinued_reason else None
            ),
            scheduledPeriod=Period(end=i.due_date) if i.due_date else None,
            description=i.detail,
        )
    )


def _threshold_words(m: Monitoring) -> str:
    named = (
        ("critical low", m.critical_low),
        ("low", m.low),
        ("high", m.high),
        ("critical high", m.critical_high),
    )
    return "Thresholds: " + ", ".join(
        f"{name} {value:g} {m.unit}" for name, value in named if value is not None
    )


def _monitoring(m: Monitoring, plan: CarePlan) -> CarePlanActivity:
    """A monitoring plan as an activity: its LOINC measure read every `every_days` days,
    thresholds in words (R4B's activity has no element for them), the discipline in
    carecoord's extension as for interventions."""
    status = codes.ACTIVITY_STATUS[plan.status] if m.active else codes.DISCONTINUED
    every = TimingRepeat(frequency=1, period=m.every_days, periodUnit="d")
    return CarePlanActivity(
        detail=CarePlanActivityDetail(
            extension=[
                Extension(
                    url=codes.DISCIPLINE_EXTENSION,
                    valueCodeableConcept=codes.discipline(m.responsible_discipline),
                )
            ],
            code=measure_concept(m.measure_code),
            status=status,
            statusReason=codes.concept(text=m.stopped_reason) if m.stopped_reason else None,
            scheduledTiming=Timing(repeat=every),
            description=_threshold_words(m),
        )
    )


def care_plan(
    plan: CarePlan,
    interventions: Sequence[Intervention],
    *,
    team_id: str | None,
    monitoring: Sequence[Monitoring] = (),
) -> FhirCarePlan:
    """The plan with the interventions and monitoring plans given (the caller leaves out
    what may not go)."""
    # R4B CarePlan has no element for a scheduled review (period.end would say the plan
    # ends then): the date goes in an extension, the last review's summary in a note.
    extensions = (
        [Extension(url=codes.NEXT_REVIEW_EXTENSION, valueDate=plan.next_review_date)]
        if plan.next_review_date
        else None
    )
    notes = (
        [Annotation(text=f"Last review: {plan.last_review_summary}")]
        if plan.last_review_summary
        else None
    )
    return FhirCarePlan(
        id=resource_id("CarePlan", plan.id),
        meta=meta(
            [*(s for i in interventions for s in i.sensitivity)]
            + [s for m in monitoring for s in m.sensitivity]
        ),
        extension=extensions,
        identifier=identifier("careplan", plan.id),
        status=codes.PLAN_STATUS[plan.status],
        intent="plan",
        title=plan.title,
        subject=ref("Patient", plan.patient_id),
        careTeam=[ref("CareTeam", team_id)] if team_id else None,
        goal=[ref("Goal", f"{plan.id}/{g.id}") for g in plan.goals] or None,
        activity=[
            *(_activity(i, plan) for i in interventions),
            *(_monitoring(m, plan) for m in monitoring),
        ]
        or None,
        note=notes,
    )


def task(t: Task, *, names: Mapping[str, str], plan_ids: Collection[str]) -> FhirTask:
    """A board task of the patient; `names` are the roster's display names by user id,
    `plan_ids` the plans in this Bundle (a task is based on one of them)."""
    assert t.patient_id is not None
    return FhirTask(
        id=resource_id("Task", t.id),
        meta=meta(t.sensitivity),
        identifier=identifier("task", t.id),
        basedOn=(
            [ref("CarePlan", t.plan_id)]
            if t.plan_id is not None and t.plan_id in plan_ids
            else None
        ),
        status=codes.TASK_STATUS[t.status],
        statusReason=(
            codes.concept(text=t.blocked_reason)
            if t.status is TaskStatus.BLOCKED and t.blocked_reason
            else None
        ),
        intent="order",
        description=t.title,
        for_fhir=ref("Patient", t.patient_id),
        authoredOn=t.created_at,
        lastModified=t.updated_at,
        performerType=[codes.discipline(t.discipline)] if t.discipline else None,
        owner=user(t.assignee_id, names.get(t.assignee_id)) if t.assignee_id else None,
        restriction=TaskRestriction(period=Period(end=t.due_date)) if t.due_date else None,
    )


def consent(c: Consent, *, now: datetime, team_id: str | None) -> FhirConsent:
    # Who the permit is for: the team's members holding each named discipline. A
    # provision actor needs a reference, and the team is the group they are found in.
    actors = (
        [
            ConsentProvisionActor(role=codes.discipline(d), reference=ref("CareTeam", team_id))
            for d in c.disciplines
        ]
        if team_id
        else None
    )
    # The permit applied from the grant until its end or its revocation, whichever came
    # first: after a revocation the rule no longer applies, whatever validUntil said.
    ends = [t for t in (c.valid_until, c.revoked_at) if t is not None]
    provision = ConsentProvision(
        type="permit",
        period=Period(start=c.granted_at, end=min(ends) if ends else None),
        actor=actors,
        purpose=[codes.purpose_coding(p) for p in c.purposes],
        securityLabel=codes.security_labels(c.categories) or None,
    )
    return FhirConsent(
        id=resource_id("Consent", c.id),
        identifier=identifier("consent", c.id),
        status="active" if c.active(now) else "inactive",
        scope=codes.PRIVACY_SCOPE,
        category=[codes.CONSENT_CATEGORY],
        patient=ref("Patient", c.patient_id),
        dateTime=c.granted_at,
        policy=[ConsentPolicy(uri=codes.ACCESS_POLICY)],
        provision=provision,
        # The patient's signed form the consent was documented on (None: documented before
        # evidence was asked for). A withdrawal's form has no place in R4B's Consent.
        sourceReference=(
            Reference(identifier=Identifier(system=codes.sid("consent-form"), value=c.evidence))
            if c.evidence
            else None
        ),
    )
