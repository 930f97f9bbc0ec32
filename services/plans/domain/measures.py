"""The measures catalogue: what a monitoring plan, a goal target or an observation may be
about, each with its LOINC code, the UCUM units it takes, and the values that are
possible at all (a reading outside them is a typing slip or a broken device, never a
patient). Values convert between a measure's units with pint (a well-kept units library),
not a table of factors: mg/dL and mmol/L of glucose through its molar mass, kg and lb.

Pure: no I/O; errors are InvalidInput naming what is allowed, never the value typed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import pint

from schemas.common import Sensitivity
from services.common.errors import InvalidInput

# Glucose (C6H12O6), g/mol: what converts mg/dL to mmol/L (100 mg/dL = 5.55 mmol/L).
GLUCOSE_MOLAR_MASS = 180.156


@dataclass(frozen=True)
class Measure:
    """A measure of the catalogue. `units` are UCUM codes, the first the canonical one
    that thresholds are kept in; `low` and `high` bound the possible values in it (`low`
    excluded when `low_open`); `whole` measures count (steps, a questionnaire's score)."""

    code: str
    name: str
    units: tuple[str, ...]
    low: float
    high: float
    low_open: bool = False
    whole: bool = False
    # Sensitivity the measure's readings carry whatever the plan says (PHQ-9: mental health).
    sensitivity: tuple[Sensitivity, ...] = ()
    # The substance's molar mass (g/mol), for mass <-> amount concentrations.
    molar_mass: float | None = None
    # What clinicians call it, for titles on the board (the LOINC name is `name`).
    label: str = ""

    @property
    def unit(self) -> str:
        return self.units[0]

    def possible(self) -> str:
        """The possible values in words, for an error message."""
        low = f"more than {_num(self.low)}" if self.low_open else f"from {_num(self.low)}"
        return f"{low} to {_num(self.high)} {self.unit}"


def _num(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


CATALOGUE: tuple[Measure, ...] = (
    Measure(
        "2339-0",
        "Glucose [Mass/volume] in Blood",
        ("mg/dL", "mmol/L"),
        0,
        3000,
        low_open=True,
        molar_mass=GLUCOSE_MOLAR_MASS,
        label="Blood glucose",
    ),
    Measure("8480-6", "Systolic blood pressure", ("mm[Hg]",), 40, 300, label="Systolic BP"),
    Measure("8462-4", "Diastolic blood pressure", ("mm[Hg]",), 20, 200, label="Diastolic BP"),
    Measure(
        "29463-7", "Body weight", ("kg", "[lb_av]", "g"), 0, 700, low_open=True, label="Weight"
    ),
    Measure("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", ("%",), 2, 25, label="HbA1c"),
    Measure(
        "98979-8",
        "Glomerular filtration rate/1.73 sq M.predicted (CKD-EPI 2021)",
        ("mL/min/{1.73_m2}",),
        0,
        200,
        low_open=True,
        label="eGFR",
    ),
    Measure(
        "44261-6",
        "Patient Health Questionnaire 9 item (PHQ-9) total score",
        ("{score}",),
        0,
        27,
        whole=True,
        sensitivity=(Sensitivity.MENTAL_HEALTH,),
        label="PHQ-9",
    ),
    Measure(
        "41950-7",
        "Number of steps in 24 hour Measured",
        ("/d",),
        0,
        100_000,
        whole=True,
        label="Daily steps",
    ),
)
BY_CODE = {m.code: m for m in CATALOGUE}

# UCUM codes as pint reads them. Units without a physical dimension (a score, a count a
# day, eGFR's normalised rate) take no conversion: each of those measures has one unit.
_PINT = {
    "mg/dL": "milligram / deciliter",
    "mmol/L": "millimole / liter",
    "kg": "kilogram",
    "g": "gram",
    "[lb_av]": "avoirdupois_pound",
}


# UCUM codes as people read them (a score and a count a day need no unit next to them).
_SHOWN = {
    "mm[Hg]": "mmHg",
    "[lb_av]": "lb",
    "{score}": "",
    "/d": "",
    "mL/min/{1.73_m2}": "mL/min/1.73 m²",
}


def display_unit(unit: str) -> str:
    """A UCUM unit as a title on the board shows it ('' for a score or a daily count)."""
    return _SHOWN.get(unit, unit)


@functools.cache
def _registry() -> Any:  # pint.UnitRegistry: made once, on first use (0.1 s)
    return pint.UnitRegistry()


def measure(code: str) -> Measure:
    """The catalogue's measure of this LOINC code; InvalidInput naming the codes known."""
    found = BY_CODE.get(code)
    if found is None:
        known = ", ".join(f"{m.code} ({m.name})" for m in CATALOGUE)
        raise InvalidInput(f"measureCode is not a measure of the catalogue; known: {known}")
    return found


def check_unit(m: Measure, unit: str) -> str:
    """The unit, if the measure takes it; InvalidInput naming the ones it takes."""
    if unit not in m.units:
        raise InvalidInput(f"unit must be one of {', '.join(m.units)} for {m.name} ({m.code})")
    return unit


def convert(m: Measure, value: float, unit: str, to: str) -> float:
    """`value` in `unit` as a value in `to`, both units of the measure."""
    check_unit(m, unit)
    check_unit(m, to)
    if unit == to:
        return value
    return value * _factor(m.code, unit, to)


@functools.cache
def _factor(code: str, unit: str, to: str) -> float:
    """How many `to` one `unit` of the measure is, as pint works it out (once: every
    conversion of the catalogue is a plain ratio, and pint's chemistry context alone cost
    about 1.7 ms a reading). A unit with an offset (degrees Celsius) would be refused."""
    m = BY_CODE[code]
    ureg = _registry()

    def pint_convert(value: float) -> float:
        quantity = ureg.Quantity(value, _PINT[unit])
        if m.molar_mass is not None:
            with ureg.context("chemistry", mw=m.molar_mass * ureg("g/mol")):
                return float(quantity.to(_PINT[to]).magnitude)
        return float(quantity.to(_PINT[to]).magnitude)

    if pint_convert(0.0) != 0.0:
        raise ValueError(f"{unit} -> {to} is not a plain ratio")
    return pint_convert(1.0)


def canonical(m: Measure, value: float, unit: str, *, argument: str = "value") -> float:
    """A reading in the measure's canonical unit, once it is known to be possible:
    InvalidInput for a unit the measure does not take, a value that is not a finite
    number, a fraction of a count, or a value no patient can have (naming what can be,
    and the `argument` that held the value, such as a threshold's name)."""
    check_unit(m, unit)
    if not math.isfinite(value):
        raise InvalidInput(f"{argument} must be a finite number")
    if m.whole and value != int(value):
        raise InvalidInput(f"{argument} must be a whole number for {m.name}")
    value = convert(m, value, unit, m.unit)
    below = value <= m.low if m.low_open else value < m.low
    if below or value > m.high:
        raise InvalidInput(f"{argument} is not possible for {m.name}: {m.possible()}")
    return value
