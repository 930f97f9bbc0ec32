"""The terminology of the FHIR export: code systems, carecoord's own systems, and the maps
from carecoord's enumerations to FHIR codes. Pure data and small constructors.

Every external code here was looked up, not guessed; where no standard code means what
carecoord means, carecoord's own code system carries it (and the comment says so).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import quote

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding

from schemas.audit import AccessAction
from schemas.common import (
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Purpose,
    Sensitivity,
    TaskStatus,
    Tier,
)
from schemas.observation import ObservationSource
from services.tasks.signals import GoalProgress

# carecoord's own systems live under one base.
BASE = "https://carecoord.example/fhir"
USER_SYSTEM = f"{BASE}/sid/user"
ACTION_SYSTEM = f"{BASE}/CodeSystem/access-action"
DISCIPLINE_SYSTEM = f"{BASE}/CodeSystem/discipline"
TEAM_ROLE_SYSTEM = f"{BASE}/CodeSystem/team-role"
PURPOSE_SYSTEM = f"{BASE}/CodeSystem/purpose"
KIND_SYSTEM = f"{BASE}/CodeSystem/intervention-kind"
TIER_SYSTEM = f"{BASE}/CodeSystem/intervention-tier"
TIER_EXTENSION = f"{BASE}/StructureDefinition/intervention-tier"
DISCIPLINE_EXTENSION = f"{BASE}/StructureDefinition/responsible-discipline"
NEXT_REVIEW_EXTENSION = f"{BASE}/StructureDefinition/next-review-date"
SOURCE_SYSTEM = f"{BASE}/CodeSystem/observation-source"
SOURCE_EXTENSION = f"{BASE}/StructureDefinition/observation-source"
# The rules a consent is read by (services/common/policy.py), named so that a Consent
# satisfies ppc-1 ("either a policy or a policyRule") without claiming a foreign code.
ACCESS_POLICY = f"{BASE}/policy/access"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

# Derives stable urn:uuid fullUrls (and ids, where a carecoord id is not a valid FHIR id).
NAMESPACE = uuid.UUID("0ceae7d3-8e6e-4d09-8b0b-64c55464dddd")


def sid(kind: str) -> str:
    """The identifier system of one kind of carecoord id (patient, careplan, ...)."""
    return f"{BASE}/sid/{quote(kind, safe='')}"


def mrn_system(team_id: str) -> str:
    # An MRN is unique on its team only (services.plans.domain.patient.mrn_key), so each
    # team is its own assigning authority: one system per team.
    return f"{BASE}/sid/team/{quote(team_id, safe='')}/mrn"


def coding(system: str, code: str, display: str | None = None) -> Coding:
    return Coding(system=system, code=code, display=display)


def concept(*codings: Coding, text: str | None = None) -> CodeableConcept:
    return CodeableConcept(coding=list(codings) or None, text=text)


MRN_TYPE = concept(coding(V2_0203, "MR", "Medical record number"))

# v3 ActCode information-sensitivity codes: the security labels of sensitive data.
SECURITY_LABELS: dict[Sensitivity, tuple[str, str]] = {
    Sensitivity.GENETIC: ("GDIS", "genetic disease information sensitivity"),
    Sensitivity.SUBSTANCE_USE: ("ETH", "substance abuse information sensitivity"),
    Sensitivity.MENTAL_HEALTH: ("BH", "behavioral health information sensitivity"),
}


def security_labels(tags: Iterable[Sensitivity]) -> list[Coding]:
    """The labels of some sensitivity tags, in a stable order (empty: none)."""
    wanted = set(tags)
    return [coding(ACT_CODE, *SECURITY_LABELS[s]) for s in Sensitivity if s in wanted]


# Disciplines: carecoord's code, plus the SNOMED CT occupation where one is certain
# (each checked against published value sets). Genetic counselor, health coach, mental
# health (a discipline, not one occupation) and care coordinator have no SNOMED code
# here: none was found that means exactly that, so only carecoord's code is sent.
DISCIPLINES: dict[Discipline, tuple[str, tuple[str, str] | None]] = {
    Discipline.PHYSICIAN: ("Physician", ("309343006", "Physician (occupation)")),
    Discipline.NURSE_PRACTITIONER: (
        "Nurse practitioner",
        ("224571005", "Nurse practitioner (occupation)"),
    ),
    Discipline.NURSE: ("Nurse", ("106292003", "Professional nurse (occupation)")),
    Discipline.PHARMACIST: ("Pharmacist", ("46255001", "Pharmacist (occupation)")),
    Discipline.GENETIC_COUNSELOR: ("Genetic counselor", None),
    Discipline.SOCIAL_WORKER: ("Social worker", ("106328005", "Social worker (occupation)")),
    Discipline.DIETITIAN: ("Dietitian", ("159033005", "Dietitian (occupation)")),
    Discipline.HEALTH_COACH: ("Health coach", None),
    Discipline.MENTAL_HEALTH: ("Mental health", None),
    Discipline.CARE_COORDINATOR: ("Care coordinator", None),
}


def discipline(d: Discipline) -> CodeableConcept:
    display, snomed = DISCIPLINES[d]
    codings = [coding(DISCIPLINE_SYSTEM, d.value, display)]
    if snomed is not None:
        codings.append(coding(SNOMED, *snomed))
    return concept(*codings, text=display)


LEAD = concept(coding(TEAM_ROLE_SYSTEM, "lead", "Team lead"), text="Team lead")

# HL7 v3 ActReason purpose-of-use codes (definitions checked in the v3 code system):
# TREAT "treatment", CAREMGT "care management" (health care coordination, under TREAT),
# HOPERAT "healthcare operations", HPAYMT "healthcare payment", HRESCH "healthcare
# research". UNDERWRITING and EMPLOYMENT have no exact code: the nearest, COVERAGE
# ("coverage under policy or program"), is broader than underwriting, and ActReason's
# EMPLOY is a coverage *eligibility* reason, not a purpose of use. A broader code on a
# Consent would grant more than the patient did, so those two carry carecoord's code
# and the plain text instead of a borrowed v3 code.
PURPOSES: dict[Purpose, tuple[str, str]] = {
    Purpose.TREATMENT: ("TREAT", "treatment"),
    Purpose.CARE_COORDINATION: ("CAREMGT", "care management"),
    Purpose.OPERATIONS: ("HOPERAT", "healthcare operations"),
    Purpose.PAYMENT: ("HPAYMT", "healthcare payment"),
    Purpose.RESEARCH: ("HRESCH", "healthcare research"),
}
EMERGENCY = coding(ACT_REASON, "ETREAT", "Emergency Treatment")


def purpose_coding(p: Purpose) -> Coding:
    known = PURPOSES.get(p)
    if known is None:
        return coding(PURPOSE_SYSTEM, p.value, p.value.capitalize())
    return coding(ACT_REASON, *known)


def purpose(p: Purpose, *, emergency: bool = False) -> CodeableConcept:
    codings = [purpose_coding(p)]
    if emergency:
        codings.append(EMERGENCY)
    return concept(*codings, text=p.value)


# Observation.category (observation-category, preferred binding) of each measure of the
# catalogue (services.plans.domain.measures), by LOINC code: blood pressure and weight are
# vital signs, glucose, HbA1c and eGFR laboratory results (a glucometer reading at home is
# still a blood glucose test), the PHQ-9 total a survey's score, and daily steps the
# category's "activity" (bodily activity that maintains fitness), which fits them better
# than vital signs. A measure missing here goes out without a category.
VITAL_SIGNS = ("vital-signs", "Vital Signs")
LABORATORY = ("laboratory", "Laboratory")
SURVEY = ("survey", "Survey")
ACTIVITY = ("activity", "Activity")
MEASURE_CATEGORY: dict[str, tuple[str, str]] = {
    "2339-0": LABORATORY,  # glucose in blood
    "8480-6": VITAL_SIGNS,  # systolic blood pressure
    "8462-4": VITAL_SIGNS,  # diastolic blood pressure
    "29463-7": VITAL_SIGNS,  # body weight
    "4548-4": LABORATORY,  # HbA1c
    "98979-8": LABORATORY,  # eGFR
    "44261-6": SURVEY,  # PHQ-9 total score
    "41950-7": ACTIVITY,  # steps in 24 hours
}

# Observation.interpretation: v3 ObservationInterpretation codes, by how far a reading is
# beyond a monitoring plan's limits (display as in the code system).
INTERPRETATIONS: dict[str, tuple[str, str]] = {
    "HH": ("HH", "Critical high"),
    "LL": ("LL", "Critical low"),
    "H": ("H", "High"),
    "L": ("L", "Low"),
    "N": ("N", "Normal"),
}

# Where a reading came from (carecoord's ObservationSource): R4B has no element for it, so
# carecoord's extension carries the code; a patient-reported reading also names the
# patient as its performer.
SOURCES: dict[ObservationSource, str] = {
    ObservationSource.CLINIC: "Measured in the clinic",
    ObservationSource.PATIENT_REPORTED: "Reported by the patient",
    ObservationSource.DEVICE: "Sent by a device",
}

# Goal.achievementStatus (goal-achievement) of a measurable goal's progress computed from
# the patient's readings (services.tasks.signals.goal_progress); NO_DATA has none.
PROGRESS_ACHIEVEMENT: dict[GoalProgress, tuple[str, str]] = {
    GoalProgress.ACHIEVED: ("achieved", "Achieved"),
    GoalProgress.ON_TRACK: ("in-progress", "In Progress"),
    GoalProgress.AT_RISK: ("worsening", "Worsening"),
}

# CarePlan.status (request-status) and Goal.lifecycleStatus / achievementStatus.
PLAN_STATUS: dict[PlanStatus, str] = {
    PlanStatus.DRAFT: "draft",
    PlanStatus.ACTIVE: "active",
    PlanStatus.ON_HOLD: "on-hold",
    PlanStatus.COMPLETED: "completed",
    PlanStatus.REVOKED: "revoked",
}
GOAL_STATUS: dict[GoalStatus, tuple[str, tuple[str, str] | None]] = {
    GoalStatus.PROPOSED: ("proposed", None),
    GoalStatus.IN_PROGRESS: ("active", None),
    GoalStatus.ACHIEVED: ("completed", ("achieved", "Achieved")),
    GoalStatus.NOT_ACHIEVED: ("completed", ("not-achieved", "Not Achieved")),
    GoalStatus.CANCELLED: ("cancelled", None),
}
# An intervention still on the plan follows the plan's own state (a draft plan's
# activities have not started; a revoked plan's were stopped); a discontinued one is
# "stopped" whatever the plan's status.
ACTIVITY_STATUS: dict[PlanStatus, str] = {
    PlanStatus.DRAFT: "not-started",
    PlanStatus.ACTIVE: "in-progress",
    PlanStatus.ON_HOLD: "on-hold",
    PlanStatus.COMPLETED: "completed",
    PlanStatus.REVOKED: "stopped",
}
DISCONTINUED = "stopped"
# CarePlan.activity.detail.kind names the resource type the in-line activity stands for.
# A medication is a MedicationRequest; every other kind (therapy, lifestyle, referral,
# monitoring, education, social support) is a service someone is asked to provide, a
# ServiceRequest. carecoord's own kind goes in detail.code, so nothing is lost.
ACTIVITY_KIND: dict[InterventionKind, str] = {
    k: "MedicationRequest" if k is InterventionKind.MEDICATION else "ServiceRequest"
    for k in InterventionKind
}
TIERS: dict[Tier, str] = {
    Tier.FIRST_LINE: "First line",
    Tier.SECOND_LINE: "Second line",
    Tier.RESCUE: "Rescue",
}
TASK_STATUS: dict[TaskStatus, str] = {
    TaskStatus.TODO: "ready",
    TaskStatus.IN_PROGRESS: "in-progress",
    TaskStatus.BLOCKED: "on-hold",
    TaskStatus.DONE: "completed",
    TaskStatus.CANCELLED: "cancelled",
}

# Consent: scope and category. LOINC 59284-0 ("Consent Document"; listed as "Patient
# Consent" in FHIR's consent-category value set) is the document category of a patient's
# consent; v3 ActCode INFA is an information-access *action*, not a kind of consent.
PRIVACY_SCOPE = concept(coding(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"))
CONSENT_CATEGORY = concept(coding(LOINC, "59284-0", "Consent Document"))

# AuditEvent: DICOM 110110 "Patient Record" is the event type of an access to a patient's
# record (the `rest` type is for FHIR REST interactions, which these are not).
PATIENT_RECORD_EVENT = coding(DICOM, "110110", "Patient Record")
APPLICATION_SERVER = coding(SOURCE_TYPE, "4", "Application Server")
PERSON_ENTITY = coding(ENTITY_TYPE, "1", "Person")
SYSTEM_OBJECT_ENTITY = coding(ENTITY_TYPE, "2", "System Object")
PATIENT_ROLE = coding(OBJECT_ROLE, "1", "Patient")
DOMAIN_RESOURCE_ROLE = coding(OBJECT_ROLE, "4", "Domain Resource")
# AuditEvent.action is only C/R/U/D/E: an export and a pushed subscription update both
# hand data out, which is a read of it.
AUDIT_ACTION: dict[AccessAction, str] = {
    AccessAction.READ: "R",
    AccessAction.CREATE: "C",
    AccessAction.UPDATE: "U",
    AccessAction.DELETE: "D",
    AccessAction.EXPORT: "R",
    AccessAction.SUBSCRIBE_PUSH: "R",
    # A sign-in is neither: "E" (execute) is what DICOM's user-authentication events use.
    AccessAction.SIGN_IN: "E",
}
# AuditEvent.outcome: 0 success for every release (permit, redacted, break-glass); a
# refusal is 4 "minor failure" -- the request failed and was told so, the system worked
# as designed; 8 and 12 mean the action broke off or the function became unavailable.
SUCCESS, MINOR_FAILURE = "0", "4"
