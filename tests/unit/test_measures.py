"""The measures catalogue: LOINC codes and UCUM units, conversion through pint, and the
values no patient can have refused with a message naming what is allowed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import Sensitivity
from services.common.errors import InvalidInput
from services.plans.domain import measures
from services.plans.domain.measures import measure

GLUCOSE, WEIGHT, PHQ9, STEPS = "2339-0", "29463-7", "44261-6", "41950-7"


def test_the_catalogue_holds_the_measures_a_care_plan_monitors_with_their_loinc_and_ucum() -> None:
    wanted = {
        "2339-0": ("mg/dL", "mmol/L"),  # blood glucose
        "8480-6": ("mm[Hg]",),  # systolic blood pressure
        "8462-4": ("mm[Hg]",),  # diastolic blood pressure
        "29463-7": ("kg", "[lb_av]", "g"),  # body weight
        "4548-4": ("%",),  # HbA1c
        "98979-8": ("mL/min/{1.73_m2}",),  # eGFR
        "44261-6": ("{score}",),  # PHQ-9 total
        "41950-7": ("/d",),  # daily steps
    }
    assert {m.code: m.units for m in measures.CATALOGUE} == wanted
    assert measure(PHQ9).sensitivity == (Sensitivity.MENTAL_HEALTH,)


def test_glucose_converts_between_mg_per_dl_and_mmol_per_l_through_its_molar_mass() -> None:
    glucose = measure(GLUCOSE)
    assert measures.convert(glucose, 180.156, "mg/dL", "mmol/L") == pytest.approx(10.0)
    assert measures.convert(glucose, 5.55, "mmol/L", "mg/dL") == pytest.approx(99.99, abs=0.01)
    assert measures.canonical(glucose, 10.0, "mmol/L") == pytest.approx(180.156)


def test_weight_converts_between_kg_lb_and_g() -> None:
    weight = measure(WEIGHT)
    assert measures.convert(weight, 1, "[lb_av]", "kg") == pytest.approx(0.45359237)
    assert measures.canonical(weight, 154.3235835, "[lb_av]") == pytest.approx(70.0)
    assert measures.canonical(weight, 70_000, "g") == pytest.approx(70.0)


@pytest.mark.parametrize(
    ("code", "value", "unit", "says"),
    [
        (WEIGHT, -1, "kg", "more than 0 to 700 kg"),
        (WEIGHT, 0, "kg", "more than 0 to 700 kg"),
        (WEIGHT, 2000, "[lb_av]", "more than 0 to 700 kg"),  # 907 kg
        (GLUCOSE, 0, "mg/dL", "more than 0 to 3,000 mg/dL"),
        (GLUCOSE, 5000, "mg/dL", "more than 0 to 3,000 mg/dL"),
        (GLUCOSE, 300, "mmol/L", "more than 0 to 3,000 mg/dL"),  # 5,405 mg/dL
        (PHQ9, 28, "{score}", "from 0 to 27 {score}"),
        (PHQ9, -1, "{score}", "from 0 to 27 {score}"),
        (PHQ9, 3.5, "{score}", "whole number"),
        (STEPS, 12.5, "/d", "whole number"),
        (GLUCOSE, math.nan, "mg/dL", "finite number"),
        (GLUCOSE, math.inf, "mg/dL", "finite number"),
        (GLUCOSE, 100, "mg/dl", "one of mg/dL, mmol/L"),  # UCUM is case-sensitive
        (WEIGHT, 70, "lb", r"one of kg, \[lb_av\], g"),
    ],
)
def test_an_impossible_value_or_a_unit_the_measure_does_not_take_is_bad_input(
    code: str, value: float, unit: str, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        measures.canonical(measure(code), value, unit)


def test_an_unknown_measure_names_the_ones_known() -> None:
    with pytest.raises(InvalidInput, match="2339-0 \\(Glucose") as refused:
        measure("1234-5")
    assert "1234-5" not in str(refused.value)


def test_possible_values_pass_and_come_back_in_the_canonical_unit() -> None:
    assert measures.canonical(measure(PHQ9), 27, "{score}") == 27
    assert measures.canonical(measure(STEPS), 0, "/d") == 0
    assert measures.canonical(measure("8480-6"), 120, "mm[Hg]") == 120
    assert measures.canonical(measure("4548-4"), 6.8, "%") == 6.8


@given(st.floats(min_value=1, max_value=2999))
def test_glucose_survives_a_round_trip_through_mmol_per_l(value: float) -> None:
    glucose = measure(GLUCOSE)
    there = measures.convert(glucose, value, "mg/dL", "mmol/L")
    assert measures.convert(glucose, there, "mmol/L", "mg/dL") == pytest.approx(value)


def test_every_measure_has_a_short_label_for_board_titles() -> None:
    labels = [m.label for m in measures.CATALOGUE]
    assert all(labels) and len(set(labels)) == len(labels)
    assert measures.measure("2339-0").label == "Blood glucose"


@settings(deadline=None)
@given(st.floats(min_value=0.001, max_value=5000, allow_nan=False))
def test_a_conversion_agrees_with_pint_converting_the_value_itself(value: float) -> None:
    ureg = measures._registry()
    glucose = measure("2339-0")
    with ureg.context("chemistry", mw=glucose.molar_mass * ureg("g/mol")):  # type: ignore[operator]
        direct = ureg.Quantity(value, "milligram / deciliter").to("millimole / liter").magnitude
    assert math.isclose(measures.convert(glucose, value, "mg/dL", "mmol/L"), direct, rel_tol=1e-12)
    pounds = ureg.Quantity(value, "kilogram").to("avoirdupois_pound").magnitude
    weight = measure("29463-7")
    assert math.isclose(measures.convert(weight, value, "kg", "[lb_av]"), pounds, rel_tol=1e-12)
