"""The demo's content as data: consistent, within the API's limits, genetic results only
where tagged; and what `carecoord demo` prints from it."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from schemas.common import Discipline, Sensitivity, Tier
from services.common.commands import LONG_TEXT_MAX, NOTE_MAX, SHORT_TEXT_MAX, TITLE_MAX
from services.common.dates import MAX_REVIEW_DAYS_AHEAD, MAX_YEARS_AHEAD
from services.demo import Demo, DemoError, Member
from services.demo import scenario as s
from services.demo.client import base_url_of
from services.demo.interventions import INTERVENTIONS
from services.demo.report import report

# Words that give a genetic result away: none may appear in an untagged text.
GENETIC_WORDS = (
    "cyp2c9",
    "*1/*3",
    "genetic",
    "genotype",
    "metabolizer",
    "pharmacogen",
    "family history",
    "pedigree",
    "grandfather",
    "grandmother",
    "brother",
    "sister",
)


def untagged_texts() -> list[str]:
    texts = [s.PLAN_TITLE, s.REVIEW_SUMMARY, s.TEAM_NAME]
    texts += [t for g in s.GOALS for t in (g.description, g.target)]
    texts += [t for i in INTERVENTIONS if not i.sensitivity for t in (i.title, i.detail)]
    texts += [n.text for n in s.NOTES if not n.sensitivity]
    texts += [a.title for a in s.ACTION_ITEMS]
    return texts


def test_the_team_has_seven_disciplines_with_the_physician_first() -> None:
    assert [p.discipline for p in s.TEAM] == [
        Discipline.PHYSICIAN,
        Discipline.NURSE_PRACTITIONER,
        Discipline.PHARMACIST,
        Discipline.GENETIC_COUNSELOR,
        Discipline.SOCIAL_WORKER,
        Discipline.DIETITIAN,
        Discipline.NURSE,
    ]
    assert len({p.key for p in s.TEAM}) == 7


@pytest.mark.parametrize(
    "today",
    [date(2026, 11, 23), date(2028, 2, 29), date(2027, 3, 1), date(2027, 1, 1), date(2026, 12, 31)],
)
def test_the_patient_is_58_on_any_day(today: date) -> None:
    born = s.birth_date(today)
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    assert age == 58


def test_only_the_items_tagged_genetic_mention_genetic_results() -> None:
    for text in untagged_texts():
        assert not [w for w in GENETIC_WORDS if w in text.lower()], text
    tagged = [i.title + i.detail for i in INTERVENTIONS if Sensitivity.GENETIC in i.sensitivity]
    tagged += [n.text for n in s.NOTES if Sensitivity.GENETIC in n.sensitivity]
    assert len(tagged) == 3
    assert sum("CYP2C9" in t for t in tagged) == 2  # the result, and the huddle note on it
    [history] = [i for i in INTERVENTIONS if "family history" in i.title.lower()]
    for relative in ("grandfather", "grandmother", "father", "mother", "brother", "sister"):
        assert relative in history.detail


def test_every_text_fits_the_apis_limits() -> None:
    assert all(0 < len(i.title) <= TITLE_MAX for i in INTERVENTIONS)
    assert all(0 < len(i.detail) <= LONG_TEXT_MAX for i in INTERVENTIONS)
    assert all(len(g.description) <= SHORT_TEXT_MAX for g in s.GOALS)
    assert all(len(n.text) <= NOTE_MAX for n in s.NOTES)
    assert all(len(a.title) <= TITLE_MAX for a in s.ACTION_ITEMS)
    assert len(s.PLAN_TITLE) <= TITLE_MAX and len(s.REVIEW_SUMMARY) <= LONG_TEXT_MAX


def test_due_dates_and_the_review_fall_where_the_api_accepts_them() -> None:
    days = [g.due_in_days for g in s.GOALS] + [i.due_in_days for i in INTERVENTIONS]
    days += [a.due_in_days for a in s.ACTION_ITEMS]
    assert all(0 <= d <= 365 * MAX_YEARS_AHEAD for d in days)
    assert s.REVIEW_IN_DAYS == 42 <= MAX_REVIEW_DAYS_AHEAD
    # The huddle may be entered up to a day after it was held.
    assert timedelta(minutes=s.HUDDLE_MINUTES_AGO) < timedelta(days=1)


def test_the_goals_are_hba1c_in_six_months_home_bp_in_three_and_a_stable_egfr() -> None:
    hba1c, bp, kidney = s.GOALS
    assert (hba1c.target, hba1c.due_in_days) == ("HbA1c < 7.0%", 182)
    assert bp.target.startswith("< 130/80 mmHg") and bp.due_in_days == 91
    assert "eGFR decline < 3 mL/min/1.73 m² per year" in kidney.target
    assert "UACR" in kidney.target


def test_the_metformin_dose_is_the_kdigo_ceiling_for_the_baseline_egfr() -> None:
    # KDIGO 2022: full dose (2000 mg/day) down to eGFR 45, half from 30 to 44, none below.
    # "Mild CKD": stage G2 (60-89) with albuminuria.
    assert 60 <= s.BASELINE_EGFR < 90, "the scenario is CKD G2"
    assert "mild CKD (G2 A2)" in s.PLAN_TITLE
    [metformin] = [i for i in INTERVENTIONS if i.title.startswith("Metformin")]
    assert metformin.tier is Tier.FIRST_LINE
    assert "titrate to 2000 mg" in metformin.title
    [sglt2] = [i for i in INTERVENTIONS if "empagliflozin 10 mg" in i.title]
    assert sglt2.tier is Tier.SECOND_LINE


def test_each_discipline_owns_an_intervention_or_monitoring_and_consent_skips_social_work() -> None:
    owners = {i.responsible.discipline for i in INTERVENTIONS}
    assert owners | {s.GLUCOSE_MONITORING.responsible.discipline} == {p.discipline for p in s.TEAM}
    assert s.NURSE.discipline not in owners  # the nurse answers the glucose readings
    assert set(s.CONSENT_DISCIPLINES) == {Discipline.PHARMACIST, Discipline.GENETIC_COUNSELOR}
    assert s.CONSENT_CATEGORIES == (Sensitivity.GENETIC,)
    assert {i.responsible.discipline for i in INTERVENTIONS if i.sensitivity} <= set(
        s.CONSENT_DISCIPLINES
    )


def test_the_consent_is_documented_by_the_lead_whose_own_access_it_does_not_widen() -> None:
    # The physician creates the team, and so leads it.
    assert s.CONSENT_BY is s.PHYSICIAN
    assert s.CONSENT_BY.discipline not in s.CONSENT_DISCIPLINES
    assert s.CONSENT_EVIDENCE.strip()


def _demo() -> Demo:
    members = tuple(
        Member(
            user_id=f"demo-abc123-{p.key}",
            name=p.name,
            discipline=p.discipline.value,
            lead=p is s.PHYSICIAN,
            token=f"token-{p.key}",
            sees_genetic=p.discipline in s.CONSENT_DISCIPLINES,
        )
        for p in s.TEAM
    )
    return Demo("http://127.0.0.1:8000", "team-1", "patient-1", "plan-1", "huddle-1", members)


def test_the_viewers_are_the_pharmacist_and_the_social_worker_with_board_urls() -> None:
    demo = _demo()
    pharmacist, social_worker = demo.viewers
    assert (pharmacist.discipline, pharmacist.sees_genetic) == ("PHARMACIST", True)
    assert (social_worker.discipline, social_worker.sees_genetic) == ("SOCIAL_WORKER", False)
    assert demo.board_url(pharmacist) == "http://127.0.0.1:8000/board/team-1#token=token-pharmacist"
    assert demo.member("dietitian").name == s.DIETITIAN.name
    assert demo.member("nurse").name == s.NURSE.name
    with pytest.raises(KeyError, match="no HEALTH_COACH; it has PHYSICIAN"):
        demo.member("HEALTH_COACH")


def test_the_report_labels_both_boards_and_names_no_patient() -> None:
    printed = report(_demo())

    assert "DEV ONLY" in printed
    assert "Pharmacist (Ravi Lindqvist, PharmD): sees the GENETIC items in full" in printed
    assert "Social worker (Tomás Brennan, MSW): sees the GENETIC items as [restricted]" in printed
    assert printed.count("/board/team-1#token=") == 2
    assert s.PATIENT_NAME not in printed and s.MRN_PREFIX not in printed
    assert len(printed.splitlines()) <= 12


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        (" http://localhost:8000/graphql ", "http://localhost:8000"),
    ],
)
def test_the_api_url_may_end_in_a_slash_or_graphql(given: str, base: str) -> None:
    assert base_url_of(given) == base


@pytest.mark.parametrize("given", ["localhost:8000", "ftp://127.0.0.1", "http://", ""])
def test_an_api_url_that_is_not_http_is_refused_with_an_example(given: str) -> None:
    with pytest.raises(DemoError, match=r"not an http\(s\) URL .* like http://127\.0\.0\.1:8000"):
        base_url_of(given)


def test_the_week_of_glucose_readings_has_two_above_250_none_critical_and_is_in_the_past() -> None:
    m = s.GLUCOSE_MONITORING
    assert (m.measure_code, m.every_days, m.unit, m.low, m.high, m.critical_high) == (
        "2339-0",
        7,
        "mg/dL",
        70,
        180,
        300,
    )
    assert m.responsible is s.NURSE
    values = [v for *_, v in s.GLUCOSE_WEEK]
    assert len(values) == 7 and s.HIGH_READINGS == 2
    assert sorted(v for v in values if v > 250) == [263, 272]
    assert all(v < m.critical_high and v > m.low for v in values)
    assert [d for d, *_ in s.GLUCOSE_WEEK] == [6, 5, 4, 3, 2, 1, 0]  # oldest first
    assert values[-1] <= m.high  # the latest reading is back in range
    assert s.TargetSpec(0, "4548-4", "LT", 7.0, "%") == s.HBA1C_TARGET
    assert "HbA1c" in s.GOALS[s.HBA1C_TARGET.goal_index].target
