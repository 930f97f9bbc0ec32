"""Observations: readings of the measures catalogue about a patient (a glucose, a blood
pressure, a PHQ-9 total), `observations` and recordObservation.

Recording one is a change to the patient's data, by a member of the patient's team; the
reading carries its measure's own sensitivity (a PHQ-9 is MENTAL_HEALTH), so, like any
tagged item, nobody records one they could only see redacted, and each reader sees each
reading in full, redacted (no value, no note) or not at all, as the patient's consents
decide. Every read and write is on the access record, per patient.

`observations` pages in the order readings were recorded (the event store's position),
so a page never moves under a reader: `nextCursor` resumes after the last reading the
page looked at. A filter is applied while scanning the patient's readings, at most
SCAN_BATCHES * SCAN_BATCH of them per request: a page may then hold fewer than `first`
items (even none) and still have a `nextCursor`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

import strawberry

from schemas.audit import AccessAction
from schemas.common import Sensitivity as SensitivityTag
from schemas.observation import ObservationRecorded
from schemas.observation import ObservationSource as Source
from services.api.graphql import care_signals, guard
from services.api.graphql.access import RESTRICTED, View, may_change, view, withheld
from services.api.graphql.care_signals import Monitors
from services.api.graphql.context import Context, Info
from services.api.graphql.measures import Measure
from services.api.graphql.scalars import Sensitivity
from services.common import dates
from services.common.aggregates import NEW, Scope, fold, new_id
from services.common.commands import build
from services.common.errors import InvalidInput
from services.common.policy import Action
from services.plans.domain import measures, observation
from services.plans.domain.observation import OBSERVATION
from services.plans.domain.patient import PATIENT

ObservationSource = strawberry.enum(Source, description="Who took the reading.")

MAX_PAGE = 1000
SCAN_BATCH = 1000
SCAN_BATCHES = 5
_CURSOR_PREFIX = "obs|"


@strawberry.type(
    description="A reading of a measure about a patient. A reading the patient's consents "
    "withhold from you is shown redacted: no value and no note."
)
class Observation:
    id: strawberry.ID
    patient_id: strawberry.ID
    measure: Measure
    value: float | None = strawberry.field(
        description="As recorded, in `unit`; null when redacted."
    )
    unit: str = strawberry.field(description="The UCUM unit the reading was recorded in.")
    canonical_value: float | None = strawberry.field(
        description="The value in the measure's first unit (the one thresholds and targets "
        "are kept in); null when redacted."
    )
    at: datetime = strawberry.field(description="When the reading was taken.")
    source: Source
    recorded_by: strawberry.ID
    recorded_at: datetime
    note: str | None = strawberry.field(description=f"{RESTRICTED} when redacted.")
    sensitivity: list[Sensitivity]
    redacted: bool = strawberry.field(
        description="True when value and note are withheld by the consent policy."
    )
    out_of_range: bool = strawberry.field(
        description="True when the reading is outside low..high, or beyond a critical limit, "
        "of any of the patient's monitoring plans of its measure (active or not); false "
        "with none, and when redacted."
    )

    @classmethod
    def seen(
        cls, item: observation.Observation, view: View, monitors: Monitors = ()
    ) -> Observation | None:
        """The reading as the viewer may see it (tagged with its measure's tags and those
        its patient's monitoring plans of the measure lend it); None when the policy
        refuses it."""
        tags = tags_of(item, monitors)
        decision = view.item(item.patient_id, tags)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            id=strawberry.ID(item.id),
            patient_id=strawberry.ID(item.patient_id),
            measure=Measure.from_domain(measures.measure(item.measure_code)),
            value=None if hide else item.value,
            unit=item.unit,
            canonical_value=None if hide else item.canonical_value,
            at=item.at,
            source=item.source,
            recorded_by=strawberry.ID(item.recorded_by),
            recorded_at=item.recorded_at,
            note=withheld(item.note, hide),
            sensitivity=[s for s in SensitivityTag if s in tags],
            redacted=hide,
            out_of_range=False if hide else care_signals.out_of_range(monitors, item),
        )


def tags_of(item: observation.Observation, monitors: Monitors) -> frozenset[SensitivityTag]:
    """A reading's tags: its measure's, and those of the patient's monitoring plans of it."""
    return frozenset(item.sensitivity) | care_signals.lent_tags(monitors, item.measure_code)


async def reading_shown(
    ctx: Context, item: observation.Observation, view: View
) -> Observation | None:
    """One reading shown through a view made for something else (a monitoring plan's or a
    goal's latest reading): its own tags may need consents the view has not read yet."""
    monitors = await care_signals.patient_monitors(ctx, item.patient_id)
    await view.include(ctx, {item.patient_id: tags_of(item, monitors)})
    return Observation.seen(item, view, monitors)


@strawberry.type
class ObservationPage:
    items: list[Observation]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


def _encode(position: int) -> str:
    raw = f"{_CURSOR_PREFIX}{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError("not ours")
        position = int(raw.removeprefix(_CURSOR_PREFIX))
        if position < 0:
            raise ValueError("negative")
        return position
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("'after' is not a cursor this API gave out.") from None


Since = Annotated[datetime | None, strawberry.argument(name="from")]


def _window(since: datetime | None, until: datetime | None) -> None:
    for value, name in ((since, "from"), (until, "to")):
        if value is not None:
            dates.aware(value, argument=name)
    if since is not None and until is not None and since > until:
        raise InvalidInput("'from' must not be after 'to'.")


def _wanted(
    item: observation.Observation,
    measure_code: str | None,
    since: datetime | None,
    until: datetime | None,
) -> bool:
    if measure_code is not None and item.measure_code != measure_code:
        return False
    if since is not None and item.at < since:
        return False
    return until is None or item.at <= until


async def resolve_observations(
    info: Info,
    patient_id: strawberry.ID,
    measure_code: str | None = None,
    from_: Since = None,
    to: datetime | None = None,
    first: int | None = 100,
    after: str | None = None,
) -> ObservationPage:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    size = 100 if first is None else first
    if not 1 <= size <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}.")
    if measure_code is not None:
        measure_code = measures.measure(measure_code).code
    _window(from_, to)
    position = _decode(after) if after else 0
    found: list[tuple[int, observation.Observation]] = []
    more = False
    for _ in range(SCAN_BATCHES):
        batch = await ctx.repository.store.patient_events(
            patient_id,
            ObservationRecorded.event_type,
            after_position=position,
            limit=SCAN_BATCH,
        )
        for recorded in batch:
            state = fold(OBSERVATION, [recorded.envelope], NEW).state
            assert state is not None
            if _wanted(state, measure_code, from_, to):
                if len(found) == size:
                    more = True
                    break
                found.append((recorded.position, state))
            position = recorded.position
        if more or len(batch) < SCAN_BATCH:
            break
    else:
        more = True  # the scan stopped short of the end: resume where it did
    monitors = await care_signals.patient_monitors(ctx, patient_id)
    tags: frozenset[SensitivityTag] = frozenset().union(*(tags_of(s, monitors) for _, s in found))
    shown = await view(ctx, access, AccessAction.READ, "Observation", None, {patient_id: tags})
    items = [o for _, state in found if (o := Observation.seen(state, shown, monitors)) is not None]
    return ObservationPage(items=items, next_cursor=_encode(position) if more else None)


async def record_observation(
    info: Info,
    patient_id: strawberry.ID,
    measure_code: str,
    value: float,
    unit: str,
    at: datetime,
    source: Source,
    note: str | None = None,
) -> Observation:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    dates.aware(at, argument="at")
    observation_id = new_id()
    command = build(
        observation.RecordObservation,
        observation_id=observation_id,
        patient_id=patient_id,
        measure_code=measure_code,
        value=value,
        unit=unit,
        at=at,
        source=source,
        recorded_by=access.actor.user_id,
        note=note,
    )
    # A reading that cannot be is refused as such before who may record it is asked.
    m = measures.measure(command.measure_code)
    measures.canonical(m, command.value, command.unit)
    # The reading's tags are its measure's and those the patient's monitoring plans of the
    # measure lend it: nobody records what they could only see redacted.
    monitors = await care_signals.patient_monitors(ctx, patient_id)
    tags = frozenset(m.sensitivity) | care_signals.lent_tags(monitors, m.code)
    await may_change(
        ctx,
        access,
        resource="observation",
        patient_id=patient_id,
        items=[(observation_id, tags)],
        refusal="A reading of this measure is one you may only see redacted "
        f"({RESTRICTED}), so you cannot record it. A teammate whom the patient's consent "
        "covers can.",
    )
    loaded = await ctx.handler.execute(
        OBSERVATION,
        observation_id,
        command,
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    answer = await guard.changed(ctx, access, OBSERVATION, observation_id, loaded, created=True)
    await answer.include(ctx, {patient_id: tags})
    recorded = Observation.seen(guard.present(loaded), answer, monitors)
    if recorded is None:  # may_change let the caller write it, so they may see it
        raise RuntimeError("a reading its recorder may not see")
    return recorded


@strawberry.type
class ObservationsQuery:
    observations: ObservationPage = strawberry.field(
        resolver=resolve_observations,
        description="The patient's readings in the order they were recorded, oldest first, "
        "in pages; optionally of one measure and taken within [from, to]. Readings the "
        "patient's consents withhold from you are redacted or left out.",
    )


@strawberry.type
class ObservationsMutation:
    record_observation: Observation = strawberry.mutation(
        resolver=record_observation,
        description="Record a reading of a measure of the catalogue (see `measures`) about a "
        "patient of your team, in one of the units the measure takes. An unknown measure, "
        "a unit it does not take, an impossible value, or a time in the future or before "
        "2000 is BAD_USER_INPUT and nothing is written.",
    )
