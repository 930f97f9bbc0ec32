"""The measures catalogue (LOINC codes, UCUM units) that monitoring plans, goal targets and
observations are about: the same for every caller, and no patient data."""

from __future__ import annotations

import strawberry

from services.api.graphql.context import Info
from services.plans.domain import measures


@strawberry.type(
    description="A measure of the catalogue: its LOINC code, name and the UCUM units it "
    "takes (the first is the one thresholds are kept in; values convert between them)."
)
class Measure:
    code: str
    name: str
    units: list[str]

    @classmethod
    def from_domain(cls, m: measures.Measure) -> Measure:
        return cls(code=m.code, name=m.name, units=list(m.units))


def resolve_measures(info: Info) -> list[Measure]:
    info.context.require_actor()
    return [Measure.from_domain(m) for m in measures.CATALOGUE]


@strawberry.type
class MeasuresQuery:
    measures: list[Measure] = strawberry.field(
        resolver=resolve_measures,
        description="The measures a monitoring plan, a goal target or an observation may be "
        "about (signed-in callers).",
    )
