"""The demo's clinical content as plain data: a primary-care team, its patient, the care
plan's goals, the huddle and the consent. The interventions are in `interventions.py`.

Everyone here is fictional. The patient is 58, works night shifts, and has type 2
diabetes, hypertension and mild CKD, G2 A2. The baseline numbers below are used everywhere
the content mentions them, so the goals, doses and monitoring agree with one another:
eGFR 68 is stage G2 (60-89): metformin at its full dose (KDIGO 2022); the
albuminuria (A2) is what makes it CKD, and what the SGLT2 inhibitor is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from schemas.common import Discipline, Purpose, Sensitivity
from services.common.dates import years_later

TEAM_NAME = "Demo — Riverside Primary Care"

# --- the team --------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A team member; `key` names them in the user id and in who does what below."""

    key: str
    name: str
    discipline: Discipline


PHYSICIAN = Person("physician", "Dr. Lena Marsh", Discipline.PHYSICIAN)
NURSE_PRACTITIONER = Person("np", "Sam Ortega, NP", Discipline.NURSE_PRACTITIONER)
PHARMACIST = Person("pharmacist", "Ravi Lindqvist, PharmD", Discipline.PHARMACIST)
GENETIC_COUNSELOR = Person("counselor", "Mei Tanaka-Ross, CGC", Discipline.GENETIC_COUNSELOR)
SOCIAL_WORKER = Person("social-worker", "Tomás Brennan, MSW", Discipline.SOCIAL_WORKER)
DIETITIAN = Person("dietitian", "Ada Kowalczyk, RD", Discipline.DIETITIAN)
NURSE = Person("nurse", "Grace Okafor, RN", Discipline.NURSE)

# The physician creates the team (and so leads it); the roster lists the others in this order.
TEAM: tuple[Person, ...] = (
    PHYSICIAN,
    NURSE_PRACTITIONER,
    PHARMACIST,
    GENETIC_COUNSELOR,
    SOCIAL_WORKER,
    DIETITIAN,
    NURSE,
)

# --- the patient -----------------------------------------------------------------------

PATIENT_NAME = "Raymond Ashby"
PATIENT_AGE = 58
MRN_PREFIX = "DEMO-"
# Days since the last birthday: any day that keeps the age at PATIENT_AGE will do.
DAYS_SINCE_BIRTHDAY = 97

BASELINE_HBA1C = "8.2% (66 mmol/mol)"
BASELINE_HOME_BP = "146/90 mmHg"
BASELINE_EGFR = 68  # mL/min/1.73 m², stage G2
BASELINE_UACR = "85 mg/g (9.6 mg/mmol)"  # stage A2
BASELINE_POTASSIUM = "4.6 mmol/L"


def birth_date(today: date) -> date:
    """A birth date that makes the patient PATIENT_AGE on `today`."""
    return years_later(today, -PATIENT_AGE) - timedelta(days=DAYS_SINCE_BIRTHDAY)


# --- the care plan ---------------------------------------------------------------------

PLAN_TITLE = "Type 2 diabetes, hypertension and mild CKD (G2 A2) — night-shift worker"


@dataclass(frozen=True)
class GoalSpec:
    description: str
    target: str
    due_in_days: int


GOALS: tuple[GoalSpec, ...] = (
    GoalSpec(
        description=f"HbA1c below 7.0% (53 mmol/mol) without hypoglycaemia; "
        f"baseline {BASELINE_HBA1C}",
        target="HbA1c < 7.0%",
        due_in_days=182,  # six months
    ),
    GoalSpec(
        description=f"Average home blood pressure below 130/80 mmHg; baseline {BASELINE_HOME_BP}",
        target="< 130/80 mmHg, mean of a 7-day home series",
        due_in_days=91,  # three months
    ),
    GoalSpec(
        description=f"Kidney function stable; baseline eGFR {BASELINE_EGFR} mL/min/1.73 m² "
        f"(G2), UACR {BASELINE_UACR} (A2)",
        target="eGFR decline < 3 mL/min/1.73 m² per year; UACR tracked every 6 months, "
        "aiming for ≥ 30% lower",
        due_in_days=365,  # a decline per year needs a year of readings
    ),
)

# --- monitoring and measurable goals ----------------------------------------------------

GLUCOSE = "2339-0"  # LOINC: glucose, mass/volume, in blood
HBA1C = "4548-4"  # LOINC: HbA1c, % of total haemoglobin


@dataclass(frozen=True)
class MonitoringSpec:
    measure_code: str
    every_days: int
    unit: str
    low: float | None
    high: float | None
    critical_high: float | None
    responsible: Person


# Weekly home glucose logs reviewed by the nurse, with a call when readings are out of range.
GLUCOSE_MONITORING = MonitoringSpec(GLUCOSE, 7, "mg/dL", 70, 180, 300, NURSE)


@dataclass(frozen=True)
class TargetSpec:
    goal_index: int  # which of GOALS it makes measurable
    measure_code: str
    comparator: str
    value: float
    unit: str


HBA1C_TARGET = TargetSpec(0, HBA1C, "LT", 7.0, "%")

# A week of readings from the patient's home meter, entered from the portal by the nurse:
# (days ago, hours past midnight UTC, mg/dL). Two, after skipped pre-shift meals, are
# above 250 mg/dL: over the 180 threshold, short of the critical 300.
GLUCOSE_WEEK: tuple[tuple[int, int, float], ...] = (
    (6, 7, 148),
    (5, 7, 162),
    (4, 8, 263),
    (3, 7, 139),
    (2, 7, 171),
    (1, 8, 272),
    (0, 0, 151),
)
READINGS_BY = NURSE
HIGH_READINGS = sum(1 for *_, value in GLUCOSE_WEEK if value > 180)

REVIEW_IN_DAYS = 42
REVIEW_SUMMARY = (
    "Initial plan agreed with the patient and the team. Metformin moves to XR once daily "
    "with the pre-shift meal and is titrated; lisinopril starts now and empagliflozin after "
    "the 2-week potassium/creatinine check; atorvastatin 40 mg continues. Pharmacist blister "
    "pack with rota-based reminders, dietitian night-shift meal plan, community transport "
    "for labs. Review in 6 weeks: home BP series, potassium and creatinine, tolerance, "
    "missed doses."
)

# --- consent ---------------------------------------------------------------------------

# Documented by the team's lead: the genetic counselor, who discussed the results with the
# patient, is named by the consent, so may not document it (it would widen their access).
CONSENT_BY = PHYSICIAN
# The id of the patient's signed consent form in the hospital's records.
CONSENT_EVIDENCE = "HIM-CONSENT-GEN-0417"
CONSENT_CATEGORIES = (Sensitivity.GENETIC,)
CONSENT_PURPOSES = (Purpose.TREATMENT, Purpose.CARE_COORDINATION)
CONSENT_DISCIPLINES = (Discipline.PHARMACIST, Discipline.GENETIC_COUNSELOR)

# --- the huddle ------------------------------------------------------------------------

# Chaired by the team's lead, who opens, closes and raises the action items.
HUDDLE_CHAIR = PHYSICIAN
# The huddle was held this long before the demo is seeded (a huddle may be scheduled up
# to a day in the past, so a meeting held earlier today can be written up afterwards).
HUDDLE_MINUTES_AGO = 30


@dataclass(frozen=True)
class NoteSpec:
    author: Person
    text: str
    sensitivity: tuple[Sensitivity, ...] = ()


NOTES: tuple[NoteSpec, ...] = (
    NoteSpec(
        NURSE_PRACTITIONER,
        f"Home BP 7-day mean {BASELINE_HOME_BP}, higher on waking after day sleep. The "
        "twice-daily metformin is missed about twice a week when the pre-shift meal is "
        "skipped; the switch to once-daily XR and the blister pack should cover it. "
        f"Potassium {BASELINE_POTASSIUM} before lisinopril.",
    ),
    NoteSpec(
        GENETIC_COUNSELOR,
        "Genetic findings: CYP2C9 *1/*3 (intermediate metabolizer), so no sulfonylurea as "
        "the next add-on and no NSAIDs; the pharmacist adds the alert. Family history of "
        "type 2 diabetes, CKD and early coronary disease on both sides: lipids and "
        "lipoprotein(a) ordered, screening letter for the brother and sister. The patient "
        "agrees to share these results with the pharmacist and the genetic counselor only.",
        (Sensitivity.GENETIC,),
    ),
    NoteSpec(
        SOCIAL_WORKER,
        "Transport: does not drive after night shifts and the lab is two buses away. "
        "Community transport approved; labs to be booked straight after a shift ends.",
    ),
)


@dataclass(frozen=True)
class ActionSpec:
    title: str
    assignee: Person
    due_in_days: int


ACTION_ITEMS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "Blister pack and rota-based reminders ready before lisinopril starts",
        PHARMACIST,
        due_in_days=7,
    ),
    ActionSpec(
        "Book a post-shift lab slot for potassium and creatinine, with community transport",
        SOCIAL_WORKER,
        due_in_days=14,
    ),
)
