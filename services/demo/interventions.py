"""The demo care plan's tiered interventions, each entered by the member responsible for it.

Medicines are timed to the patient's sleep-wake cycle rather than the clock: "on waking"
is the start of the waking day (afternoon, before the night shift) and "the pre-shift
meal" is the main meal before leaving for work. Only the items tagged GENETIC mention
genetic results: an untagged item is shown to the whole team in full.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.common import InterventionKind, Sensitivity, Tier
from services.demo.scenario import (
    BASELINE_EGFR,
    BASELINE_HBA1C,
    BASELINE_POTASSIUM,
    BASELINE_UACR,
    DIETITIAN,
    GENETIC_COUNSELOR,
    NURSE_PRACTITIONER,
    PHARMACIST,
    PHYSICIAN,
    SOCIAL_WORKER,
    Person,
)

Kind = InterventionKind


@dataclass(frozen=True)
class InterventionSpec:
    responsible: Person
    kind: InterventionKind
    tier: Tier
    title: str
    detail: str
    due_in_days: int
    sensitivity: tuple[Sensitivity, ...] = ()


GENETIC = (Sensitivity.GENETIC,)

INTERVENTIONS: tuple[InterventionSpec, ...] = (
    # --- medicines ---------------------------------------------------------------------
    InterventionSpec(
        PHYSICIAN,
        Kind.MEDICATION,
        Tier.FIRST_LINE,
        "Metformin XR 1000 mg once daily with the pre-shift evening meal; titrate to 2000 mg",
        "Replaces metformin 500 mg twice daily, taken irregularly around night shifts. XR "
        "is taken once daily with the evening meal; for this patient "
        "that is the main meal before the night shift, on work nights and days off alike. "
        "Increase by 500 mg every 1-2 weeks as tolerated to 2000 mg/day. "
        f"eGFR {BASELINE_EGFR} (G2): full dose is appropriate (KDIGO 2022: no change at eGFR "
        "60 or more; at 45-59 keep the dose and check eGFR every 3-6 months; at 30-44 at "
        "most 1000 mg/day; stop below 30). Hold on sick days and around iodinated contrast "
        "(label: at eGFR 30-60). Vitamin B12 yearly.",
        due_in_days=7,
    ),
    InterventionSpec(
        NURSE_PRACTITIONER,
        Kind.MEDICATION,
        Tier.FIRST_LINE,
        "Lisinopril 10 mg once daily on waking; titrate to the maximum tolerated dose",
        "ACE inhibitor for hypertension with diabetes and albuminuria "
        f"(A2, UACR {BASELINE_UACR}): lowers blood pressure and albuminuria (KDIGO 2022, "
        "ADA). Morning or bedtime dosing makes no difference to outcomes (TIME trial), so "
        "it goes with the waking dose, in the same blister slot as empagliflozin. Increase "
        "to 20 mg, then 40 mg, every 2-4 weeks towards the home BP target. A creatinine "
        "rise of up to 30% is expected. No NSAIDs, potassium supplements or potassium-based "
        "salt substitutes.",
        due_in_days=7,
    ),
    InterventionSpec(
        PHYSICIAN,
        Kind.MEDICATION,
        Tier.SECOND_LINE,
        "Add empagliflozin 10 mg once daily on waking, for kidney and heart protection",
        "SGLT2 inhibitor added to metformin for type 2 diabetes with CKD (KDIGO 2022 and "
        "ADA: recommended down to eGFR 20 whatever the HbA1c; EMPA-KIDNEY). Started after "
        "the potassium/creatinine check on lisinopril, so each early eGFR dip is read on "
        "its own; a dip of a few mL/min in the first weeks is expected and no reason to "
        "stop. Taken on waking, before the shift, so its diuresis falls in waking hours "
        "rather than in daytime sleep. Pause on sick days and before surgery or a prolonged "
        "fast (euglycaemic ketoacidosis). Genital hygiene advice.",
        due_in_days=28,
    ),
    InterventionSpec(
        NURSE_PRACTITIONER,
        Kind.EDUCATION,
        Tier.RESCUE,
        "Sick-day rules: pause metformin, empagliflozin and lisinopril when not eating or drinking",
        "With vomiting, diarrhoea, fever, or when fluids will not stay down: stop metformin, "
        "empagliflozin and lisinopril, keep drinking, check glucose more often and call "
        "the clinic; restart 24-48 h after eating and drinking normally again. Written "
        "card given; hypoglycaemia symptoms and treatment reviewed.",
        due_in_days=14,
    ),
    # --- pharmacist ----------------------------------------------------------------------
    InterventionSpec(
        PHARMACIST,
        Kind.EDUCATION,
        Tier.FIRST_LINE,
        "Adherence: weekly blister pack with 'on waking' and 'pre-shift meal' slots, "
        "reminders set from the rota",
        "Two slots a day keyed to the sleep-wake cycle, not the clock: 'on waking' "
        "(lisinopril, later empagliflozin) and 'with the pre-shift meal' (metformin XR). "
        "Phone reminders set from the shift rota, with a days-off pattern. Refills "
        "synchronised to one monthly pickup. Missed doses checked at the 4-week medication "
        "review.",
        due_in_days=7,
    ),
    InterventionSpec(
        PHARMACIST,
        Kind.MEDICATION,
        Tier.FIRST_LINE,
        "CYP2C9 *1/*3, intermediate metabolizer: avoid sulfonylureas and NSAIDs",
        "Pharmacogenomic result: CYP2C9 *1/*3, activity score 1.0, intermediate "
        "metabolizer. Sulfonylureas (glimepiride, glipizide, glibenclamide) are cleared "
        "more slowly, raising exposure and the risk of hypoglycaemia, made worse by "
        "irregular shift meals and the drive home: if HbA1c stays above target, prefer "
        "another add-on such as a GLP-1 receptor agonist; if a sulfonylurea is ever used, "
        "start at the lowest dose. NSAIDs are avoided anyway with CKD, lisinopril and "
        "empagliflozin; if one is unavoidable, CPIC: lowest starting dose of ibuprofen or "
        "celecoxib, half the lowest meloxicam dose, an alternative to piroxicam. Fluvastatin, "
        "phenytoin and warfarin doses are affected too; atorvastatin and lisinopril are "
        "not. Losartan is activated partly by CYP2C9: if an ARB is needed, valsartan or "
        "telmisartan. Alert added to the medication record.",
        due_in_days=7,
        sensitivity=GENETIC,
    ),
    # --- genetic counselor ---------------------------------------------------------------
    InterventionSpec(
        GENETIC_COUNSELOR,
        Kind.EDUCATION,
        Tier.FIRST_LINE,
        "Three-generation family history: diabetes, CKD, early heart disease; letter for siblings",
        "Grandparents: paternal grandfather type 2 diabetes, myocardial infarction, died at "
        "61; paternal grandmother hypertension, stroke at 79; maternal grandfather died at "
        "70 (cause not known); maternal grandmother type 2 diabetes, kidney failure on "
        "dialysis from 71. Parents: father type 2 diabetes from 49, myocardial infarction "
        "at 53 (premature: a man under 55); mother hypertension, CKD stage 3 at 74, alive "
        "at 82. Siblings: brother, 61, type 2 diabetes, coronary stent at 54; sister, 55, "
        "hypertension and prediabetes. Reading: a heavy family load of type 2 diabetes, "
        "CKD and premature coronary disease, consistent with polygenic and shared risk; "
        "onset after 45 and no pattern suggesting monogenic diabetes (MODY), so no "
        "diabetes gene panel now. Actions: lipid profile and lipoprotein(a) once; a letter "
        "for the brother and sister recommending HbA1c, blood pressure, eGFR, urine "
        "albumin and lipid checks.",
        due_in_days=28,
        sensitivity=GENETIC,
    ),
    # --- social worker and dietitian -----------------------------------------------------
    InterventionSpec(
        SOCIAL_WORKER,
        Kind.SOCIAL_SUPPORT,
        Tier.FIRST_LINE,
        "Transport to labs and visits: community transport, appointments right after a shift",
        "Does not drive after night shifts, the lab is two buses away, and daytime "
        "appointments fall in sleep hours. Enrolled in the community transport scheme; "
        "labs and visits booked straight after a shift ends (07:30-09:30) or on days off. "
        "Prescription costs and sick-pay entitlements checked.",
        due_in_days=14,
    ),
    InterventionSpec(
        DIETITIAN,
        Kind.LIFESTYLE,
        Tier.FIRST_LINE,
        "Night-shift meal plan: main meal before the shift, one planned meal mid-shift, "
        "light meal before sleep",
        "Eating anchored to the shift, not the clock: the main meal before leaving (with "
        "metformin XR); one planned, carbohydrate-controlled meal around 01:00-02:00 "
        "instead of vending-machine snacks; a small breakfast before daytime sleep rather "
        "than a large meal. Water or unsweetened drinks on shift, caffeine only in its "
        "first half. For CKD and blood pressure: sodium under 2 g a day (about 5 g salt), "
        "protein about 0.8 g/kg a day, no potassium-based salt substitutes with "
        "lisinopril. 7-day food and shift diary reviewed at 4 weeks.",
        due_in_days=28,
    ),
    # --- monitoring ----------------------------------------------------------------------
    InterventionSpec(
        NURSE_PRACTITIONER,
        Kind.MONITORING,
        Tier.FIRST_LINE,
        "Home blood pressure: a 7-day series reviewed weekly for the first 6 weeks",
        "Validated upper-arm cuff: two readings on waking and two before daytime sleep, "
        "7 days in a row, reviewed each week until the 6-week review, then one 7-day series "
        "a month. Target mean < 130/80 mmHg. Call the same day if 180/110 or higher, or "
        "systolic under 100 with dizziness.",
        due_in_days=7,
    ),
    InterventionSpec(
        NURSE_PRACTITIONER,
        Kind.MONITORING,
        Tier.FIRST_LINE,
        "Potassium and creatinine 1-2 weeks after starting lisinopril and after each increase",
        f"Baseline potassium {BASELINE_POTASSIUM}. Call the prescriber the same day if "
        "potassium is above 5.5 mmol/L or creatinine has risen more than 30%. Repeat after "
        "empagliflozin starts.",
        due_in_days=21,
    ),
    InterventionSpec(
        NURSE_PRACTITIONER,
        Kind.MONITORING,
        Tier.FIRST_LINE,
        "HbA1c every 3 months until at target, then every 6 months",
        f"Baseline {BASELINE_HBA1C}; target < 7.0%. Drawn in a post-shift lab slot.",
        due_in_days=91,
    ),
    InterventionSpec(
        PHYSICIAN,
        Kind.MONITORING,
        Tier.FIRST_LINE,
        "eGFR and urine albumin-to-creatinine ratio every 6 months",
        f"CKD G2 A2 (baseline eGFR {BASELINE_EGFR} mL/min/1.73 m², UACR {BASELINE_UACR}): "
        "KDIGO suggests at least twice a year. Expect a small early dip after lisinopril "
        "and empagliflozin; judge the trend from month 3. Refer to nephrology if eGFR falls "
        "more than 25% with a change of stage or below 30, or if UACR reaches 300 mg/g.",
        due_in_days=182,
    ),
)
