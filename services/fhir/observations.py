"""A patient's readings as FHIR R4B Observations, judged against the monitoring plans that
ran when each was taken, and a measurable goal's progress over them. Pure: plain domain
values in, validated models out.

A reading's interpretation (v3 ObservationInterpretation) comes from the thresholds of the
patient's monitoring plans of its measure that ran when it was recorded, converted to the
measure's canonical unit as the reading's canonical value is: HH or LL beyond a
critical limit, H or L outside low..high, N within them (services.tasks.signals.classify
and crossed). Where several such plans judge it differently, the most severe word wins
(HH, LL, H, L, N in that order); with none, the reading has no interpretation.

"Ran when recorded", not "when taken" (`at`): those are the plans the care-signal rules met
the reading with as it arrived, and a week of readings typed in after a plan was added
(a patient's diary) is judged by it, as the team was told of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.observation import Observation as FhirObservation

from schemas.careplan import MonitoringAdded, MonitoringStopped
from schemas.common import Sensitivity
from schemas.envelope import Envelope
from schemas.observation import ObservationSource
from schemas.signal import SignalStatus
from services.fhir import codes
from services.fhir.clinical import identifier, measure_concept, meta, quantity
from services.fhir.refs import ref, resource_id
from services.plans.domain import measures
from services.plans.domain.careplan import GoalTarget, Monitoring
from services.plans.domain.observation import Observation
from services.tasks import signals

# Most severe first: what wins when monitoring plans judge one reading differently.
SEVERITY = ("HH", "LL", "H", "L", "N")


@dataclass(frozen=True)
class Span:
    """When a monitoring plan ran: from `started` until `stopped` (None: not known to have
    started, or not stopped). A reading taken at `started` is judged; one at `stopped` not."""

    started: datetime | None = None
    stopped: datetime | None = None

    def covers(self, at: datetime) -> bool:
        return (self.started is None or self.started <= at) and (
            self.stopped is None or at < self.stopped
        )


def span_key(plan_id: str, monitoring_id: str) -> str:
    # Monitoring ids are unique on their plan only.
    return f"{plan_id}/{monitoring_id}"


def monitoring_spans(envelopes: Iterable[Envelope]) -> dict[str, Span]:
    """When each monitoring plan of these care-plan events ran, by span_key: from its
    MonitoringAdded to its MonitoringStopped, as the store recorded them."""
    spans: dict[str, Span] = {}
    for env in envelopes:
        event = env.payload
        if isinstance(event, MonitoringAdded):
            spans[span_key(event.plan_id, event.monitoring_id)] = Span(env.occurred_at)
        elif isinstance(event, MonitoringStopped):
            key = span_key(event.plan_id, event.monitoring_id)
            spans[key] = Span(spans.get(key, Span()).started, env.occurred_at)
    return spans


@dataclass(frozen=True)
class Watch:
    """A monitoring plan of the patient and when it ran (an unknown span covers all time)."""

    monitoring: Monitoring
    span: Span = Span()


def thresholds(m: Monitoring) -> signals.Thresholds:
    """A monitoring plan's limits in its measure's canonical unit (given in `m.unit`)."""
    measure = measures.measure(m.measure_code)

    def canonical(value: float | None, name: str) -> float | None:
        if value is None:
            return None
        return measures.canonical(measure, value, m.unit, argument=name)

    return signals.Thresholds(
        low=canonical(m.low, "low"),
        high=canonical(m.high, "high"),
        critical_low=canonical(m.critical_low, "criticalLow"),
        critical_high=canonical(m.critical_high, "criticalHigh"),
    )


def judge(limits: signals.Thresholds, value: float) -> str:
    """The interpretation code of a canonical value against canonical limits."""
    status = signals.classify(limits, value)
    beyond = signals.crossed(limits, value)
    if status is SignalStatus.IN_RANGE or beyond is None:
        return "N"
    above = beyond[0].endswith("above")
    if status is SignalStatus.CRITICAL:
        return "HH" if above else "LL"
    return "H" if above else "L"


def interpretation(reading: Observation, watches: Iterable[Watch]) -> str | None:
    """The most severe code among the monitoring plans of the reading's measure that ran
    when it was recorded; None when no such plan ran then."""
    judged = [
        judge(thresholds(w.monitoring), reading.canonical_value)
        for w in watches
        if w.monitoring.measure_code == reading.measure_code and w.span.covers(reading.recorded_at)
    ]
    return min(judged, key=SEVERITY.index) if judged else None


def reading_tags(reading: Observation, monitoring: Iterable[Monitoring]) -> frozenset[Sensitivity]:
    """A reading's sensitivity: its measure's own (PHQ-9: MENTAL_HEALTH) and that of every
    monitoring plan of its measure on the patient's plans (a plan's tags apply to its
    readings)."""
    tags = set(reading.sensitivity)
    for m in monitoring:
        if m.measure_code == reading.measure_code:
            tags.update(m.sensitivity)
    return frozenset(tags)


def observation(
    reading: Observation, *, tags: Iterable[Sensitivity], interpreted: str | None
) -> FhirObservation:
    """One reading: its LOINC measure, the value in the UCUM unit it was given in, when it
    was taken (`effectiveDateTime`) and recorded (`issued`), where it came from, and its
    interpretation code (None: no monitoring plan judged it). Its note goes out as an
    annotation, as other free text of the record does."""
    category = codes.MEASURE_CATEGORY.get(reading.measure_code)
    return FhirObservation(
        id=resource_id("Observation", reading.id),
        meta=meta(tags),
        extension=[
            Extension(
                url=codes.SOURCE_EXTENSION,
                valueCoding=codes.coding(
                    codes.SOURCE_SYSTEM, reading.source.value, codes.SOURCES[reading.source]
                ),
            )
        ],
        identifier=identifier("observation", reading.id),
        status="final",
        category=(
            [codes.concept(codes.coding(codes.OBSERVATION_CATEGORY, *category))]
            if category
            else None
        ),
        code=measure_concept(reading.measure_code),
        subject=ref("Patient", reading.patient_id),
        effectiveDateTime=reading.at,
        issued=reading.recorded_at,
        performer=(
            [ref("Patient", reading.patient_id)]
            if reading.source is ObservationSource.PATIENT_REPORTED
            else None
        ),
        valueQuantity=quantity(reading.value, reading.unit),
        interpretation=(
            [codes.concept(codes.coding(codes.INTERPRETATION, *codes.INTERPRETATIONS[interpreted]))]
            if interpreted
            else None
        ),
        note=[Annotation(text=reading.note)] if reading.note else None,
    )


def progress(
    target: GoalTarget, due: date | None, readings: Sequence[Observation], today: date
) -> signals.GoalProgress:
    """How far a measurable goal has come (signals.goal_progress) over the readings of its
    measure among `readings`, with its target converted to the measure's canonical unit."""
    measure = measures.measure(target.measure_code)
    value = measures.canonical(measure, target.value, target.unit)
    high = (
        measures.canonical(measure, target.high, target.unit, argument="high")
        if target.high is not None
        else None
    )
    values = [(r.at, r.canonical_value) for r in readings if r.measure_code == measure.code]
    return signals.goal_progress(target.comparator.value, value, high, values, due, today)
