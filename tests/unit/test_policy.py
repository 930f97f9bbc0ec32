"""The access policy rule by rule, in scenarios: who may see an item about a patient, in
full or redacted, and why (the reason is what a compliance officer reads in the log)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.common.actor import Actor
from services.common.policy import (
    CARE_PURPOSES,
    GINA_BARRED,
    RANK,
    Action,
    Decision,
    Membership,
    break_glass_review,
    consent_entry,
    decide,
    needs_consents,
    role_assignment,
)
from services.plans.domain.consent import Consent

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ADA = Actor("u-ada", "Ada Lovelace", roles=frozenset())
DIETITIAN = Membership(disciplines=frozenset({Discipline.DIETITIAN}), lead=False)
LEAD_PHYSICIAN = Membership(disciplines=frozenset({Discipline.PHYSICIAN}), lead=True)
PATIENT = "p-1"
G, S, M = Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE, Sensitivity.MENTAL_HEALTH
PERMIT = AccessOutcome.PERMIT
REDACTED = AccessOutcome.PERMIT_REDACTED
DENY = AccessOutcome.DENY
BREAK_GLASS = AccessOutcome.BREAK_GLASS


def consent(
    consent_id: str = "c-1",
    *,
    categories: tuple[Sensitivity, ...] = (G,),
    purposes: tuple[Purpose, ...] = (Purpose.TREATMENT,),
    disciplines: tuple[Discipline, ...] = (Discipline.DIETITIAN,),
    patient_id: str = PATIENT,
    valid_until: datetime | None = None,
    revoked_at: datetime | None = None,
    granted_by: str = "u-patient",
) -> Consent:
    return Consent(
        id=consent_id,
        patient_id=patient_id,
        team_id="t-1",
        categories=categories,
        purposes=purposes,
        disciplines=disciplines,
        valid_until=valid_until,
        granted_at=NOW - timedelta(days=30),
        granted_by=granted_by,
        revoked_at=revoked_at,
    )


def check(
    *,
    membership: Membership | None = DIETITIAN,
    sensitivity: tuple[Sensitivity, ...] = (),
    purpose: Purpose = Purpose.TREATMENT,
    consents: Iterable[Consent] = (),
    **overrides: Any,
) -> Decision:
    """Ada's decision on one item about PATIENT, read for TREATMENT unless told otherwise."""
    arguments: dict[str, Any] = {
        "actor": ADA,
        "membership": membership,
        "patient_id": PATIENT,
        "sensitivity": sensitivity,
        "purpose": purpose,
        "consents": consents,
        "break_glass": None,
        "now": NOW,
        "action": Action.READ,
    }
    arguments.update(overrides)
    return decide(**arguments)


# --- rule 4: members, untagged items ---------------------------------------------------


@pytest.mark.parametrize("purpose", sorted(CARE_PURPOSES))
@pytest.mark.parametrize("action", [Action.READ, Action.WRITE])
def test_a_member_reads_and_changes_untagged_items_for_care_without_any_consent(
    purpose: Purpose, action: Action
) -> None:
    decision = check(purpose=purpose, action=action)

    assert decision.outcome is PERMIT
    assert "u-ada is a team member (DIETITIAN)" in decision.reason
    assert purpose.value in decision.reason


@pytest.mark.parametrize("purpose", [Purpose.PAYMENT, Purpose.RESEARCH])
def test_a_member_is_refused_an_untagged_item_for_a_purpose_beyond_care_without_consent(
    purpose: Purpose,
) -> None:
    decision = check(purpose=purpose)

    assert decision.outcome is DENY
    assert purpose.value in decision.reason
    assert "no active consent" in decision.reason
    assert "DIETITIAN" in decision.reason


@pytest.mark.parametrize("purpose", [Purpose.PAYMENT, Purpose.RESEARCH])
def test_a_consent_naming_the_purpose_and_the_discipline_opens_an_untagged_item(
    purpose: Purpose,
) -> None:
    decision = check(purpose=purpose, consents=(consent("c-42", purposes=(purpose,)),))

    assert decision.outcome is PERMIT
    assert "c-42" in decision.reason
    assert purpose.value in decision.reason


def test_a_consent_for_the_purpose_but_another_discipline_does_not_open_an_untagged_item() -> None:
    other = consent(purposes=(Purpose.RESEARCH,), disciplines=(Discipline.PHARMACIST,))

    assert check(purpose=Purpose.RESEARCH, consents=(other,)).outcome is DENY


def test_a_consent_for_another_purpose_does_not_open_an_untagged_item_for_research() -> None:
    other = consent(purposes=(Purpose.PAYMENT,))

    assert check(purpose=Purpose.RESEARCH, consents=(other,)).outcome is DENY


def test_a_team_wide_item_is_refused_for_research_whatever_the_consents() -> None:
    research = consent(purposes=(Purpose.RESEARCH,))

    decision = check(patient_id=None, purpose=Purpose.RESEARCH, consents=(research,))

    assert decision.outcome is DENY
    assert "whole team" in decision.reason
    assert "RESEARCH" in decision.reason


def test_a_team_wide_item_is_open_to_members_for_treatment() -> None:
    assert check(patient_id=None).outcome is PERMIT


# --- rule 5: tagged items --------------------------------------------------------------


def test_a_genetic_item_is_shown_redacted_to_a_dietitian_without_consent() -> None:
    decision = check(sensitivity=(G,))

    assert decision.outcome is REDACTED
    assert decision.redacted
    assert "GENETIC" in decision.reason
    assert "DIETITIAN" in decision.reason
    assert "redacted" in decision.reason


def test_a_consent_covering_the_tag_the_purpose_and_the_discipline_releases_the_item() -> None:
    decision = check(sensitivity=(G,), consents=(consent("c-7"),))

    assert decision.outcome is PERMIT
    assert not decision.redacted
    assert "c-7" in decision.reason
    assert "GENETIC" in decision.reason


@pytest.mark.parametrize(
    "near_miss",
    [
        pytest.param(consent(disciplines=(Discipline.PHARMACIST,)), id="another discipline"),
        pytest.param(consent(purposes=(Purpose.OPERATIONS,)), id="another purpose"),
        pytest.param(consent(categories=(S,)), id="another category"),
        pytest.param(consent(patient_id="p-2"), id="another patient"),
    ],
)
def test_a_consent_that_misses_one_of_tag_purpose_discipline_or_patient_leaves_it_redacted(
    near_miss: Consent,
) -> None:
    assert check(sensitivity=(G,), consents=(near_miss,)).outcome is REDACTED


def test_a_member_with_several_disciplines_is_covered_by_a_consent_naming_any_of_them() -> None:
    both = Membership(frozenset({Discipline.NURSE, Discipline.DIETITIAN}), lead=False)

    assert check(membership=both, sensitivity=(G,), consents=(consent(),)).outcome is PERMIT


def test_a_member_without_a_discipline_is_never_covered_by_a_consent() -> None:
    nobody = Membership(frozenset(), lead=False)

    decision = check(membership=nobody, sensitivity=(G,), consents=(consent(),))

    assert decision.outcome is REDACTED
    assert "no discipline" in decision.reason


def test_an_item_with_two_tags_is_released_by_one_consent_for_each_tag() -> None:
    genetic, substance = consent("c-g", categories=(G,)), consent("c-s", categories=(S,))

    decision = check(sensitivity=(G, S), consents=(genetic, substance))

    assert decision.outcome is PERMIT
    assert "c-g" in decision.reason
    assert "c-s" in decision.reason


def test_an_item_with_two_tags_is_released_by_one_consent_naming_both() -> None:
    assert check(sensitivity=(G, S), consents=(consent(categories=(G, S)),)).outcome is PERMIT


def test_an_item_with_two_tags_stays_redacted_when_consent_covers_only_one() -> None:
    decision = check(sensitivity=(G, S), consents=(consent(categories=(G,)),))

    assert decision.outcome is REDACTED
    assert "SUBSTANCE_USE" in decision.reason
    assert "covers GENETIC" not in decision.reason


@pytest.mark.parametrize(
    "lapsed",
    [
        pytest.param(consent(valid_until=NOW - timedelta(days=1)), id="expired yesterday"),
        pytest.param(consent(valid_until=NOW), id="expiring this instant"),
        pytest.param(consent(revoked_at=NOW - timedelta(hours=1)), id="revoked"),
        pytest.param(
            consent(valid_until=NOW + timedelta(days=1), revoked_at=NOW - timedelta(hours=1)),
            id="revoked before its end",
        ),
    ],
)
def test_an_expired_or_revoked_consent_leaves_the_item_redacted(lapsed: Consent) -> None:
    decision = check(sensitivity=(G,), consents=(lapsed,))

    assert decision.outcome is REDACTED
    assert "no active consent" in decision.reason


def test_a_consent_valid_until_a_future_time_releases_the_item() -> None:
    current = consent(valid_until=NOW + timedelta(seconds=1))

    assert check(sensitivity=(G,), consents=(current,)).outcome is PERMIT


def test_a_tagged_item_for_a_purpose_beyond_care_needs_the_consent_to_name_that_purpose() -> None:
    for_payment = consent(categories=(M,), purposes=(Purpose.PAYMENT,))

    with_consent = check(sensitivity=(M,), purpose=Purpose.PAYMENT, consents=(for_payment,))
    without = check(sensitivity=(M,), purpose=Purpose.PAYMENT)

    assert with_consent.outcome is PERMIT
    assert without.outcome is DENY


# --- rule 3: GINA ----------------------------------------------------------------------


@pytest.mark.parametrize("purpose", sorted(GINA_BARRED))
def test_genetic_information_is_refused_for_underwriting_and_employment_even_with_consent(
    purpose: Purpose,
) -> None:
    explicit = consent(categories=(G,), purposes=(purpose,))

    decision = check(sensitivity=(G,), purpose=purpose, consents=(explicit,))

    assert decision.outcome is DENY
    assert "GINA" in decision.reason
    assert purpose.value in decision.reason


@pytest.mark.parametrize("purpose", sorted(GINA_BARRED))
def test_gina_refuses_an_item_carrying_a_genetic_tag_among_others(purpose: Purpose) -> None:
    everything = consent(categories=(G, S, M), purposes=(purpose,))

    decision = check(sensitivity=(S, G), purpose=purpose, consents=(everything,))

    assert decision.outcome is DENY
    assert "GINA" in decision.reason


def test_gina_bars_only_genetic_data_so_consent_opens_substance_use_to_underwriting() -> None:
    underwriting = consent(categories=(S,), purposes=(Purpose.UNDERWRITING,))

    decision = check(sensitivity=(S,), purpose=Purpose.UNDERWRITING, consents=(underwriting,))

    assert decision.outcome is PERMIT
    assert "GINA" not in decision.reason


# --- rule 2: outsiders and break-glass -------------------------------------------------


def test_a_non_member_is_refused() -> None:
    decision = check(membership=None)

    assert decision.outcome is DENY
    assert not decision.permitted
    assert "u-ada is not a member" in decision.reason


def test_a_non_member_is_refused_even_when_the_patient_consented_to_their_discipline() -> None:
    decision = check(membership=None, sensitivity=(G,), consents=(consent(),))

    assert decision.outcome is DENY


@pytest.mark.parametrize(
    "roles", [{"compliance_officer"}, {"admin"}, {"admin", "compliance_officer"}]
)
def test_global_roles_give_a_non_member_no_access(roles: set[str]) -> None:
    officer = Actor("u-co", "Grace Hopper", roles=frozenset(roles))

    decision = check(actor=officer, membership=None)

    assert decision.outcome is DENY
    assert "u-co is not a member" in decision.reason


def test_a_non_member_breaking_the_glass_reads_one_patients_records_for_treatment() -> None:
    decision = check(
        membership=None, sensitivity=(G, S, M), break_glass="unconscious in the ED, no ID"
    )

    assert decision.outcome is BREAK_GLASS
    assert decision.permitted
    assert not decision.redacted
    assert "unconscious in the ED, no ID" in decision.reason
    assert "review" in decision.reason
    assert "42 CFR 2.51" in decision.reason


@pytest.mark.parametrize(
    "roles", [{"compliance_officer"}, {"admin"}, {"admin", "compliance_officer"}]
)
def test_global_roles_never_break_the_glass(roles: set[str]) -> None:
    officer = Actor("u-co", "Grace Hopper", roles=frozenset(roles))

    decision = check(
        actor=officer, membership=None, sensitivity=(G,), break_glass="unconscious in the ED"
    )

    assert decision.outcome is DENY
    assert "global role" in decision.reason
    assert "separation of duties" in decision.reason


def test_a_member_holding_a_global_role_is_decided_as_a_member() -> None:
    officer = Actor("u-co", "Grace Hopper", roles=frozenset({"compliance_officer"}))

    decision = check(actor=officer, break_glass="emergency")

    assert decision.outcome is PERMIT
    assert "team member" in decision.reason


def test_break_glass_never_opens_a_team_wide_item() -> None:
    decision = check(membership=None, patient_id=None, break_glass="emergency")

    assert decision.outcome is DENY
    assert "one patient" in decision.reason


def test_break_glass_never_changes_anything() -> None:
    decision = check(membership=None, action=Action.WRITE, break_glass="emergency")

    assert decision.outcome is DENY
    assert "changes nothing" in decision.reason


@pytest.mark.parametrize("purpose", sorted(set(Purpose) - {Purpose.TREATMENT}))
def test_break_glass_serves_no_purpose_but_treatment(purpose: Purpose) -> None:
    decision = check(membership=None, purpose=purpose, break_glass="emergency")

    assert decision.outcome is DENY
    assert purpose.value in decision.reason


def test_a_member_who_breaks_the_glass_is_decided_as_a_member() -> None:
    decision = check(sensitivity=(M,), break_glass="emergency")

    assert decision.outcome is REDACTED
    assert "team member" in decision.reason


def test_break_glass_does_not_lift_gina_for_a_member() -> None:
    decision = check(sensitivity=(G,), purpose=Purpose.EMPLOYMENT, break_glass="emergency")

    assert decision.outcome is DENY
    assert "GINA" in decision.reason


# --- rule 6: no change to what one may only see redacted --------------------------------


def test_a_member_may_not_change_an_item_they_may_only_see_redacted() -> None:
    read = check(sensitivity=(G,))
    change = check(sensitivity=(G,), action=Action.WRITE)

    assert read.outcome is REDACTED
    assert change.outcome is DENY
    assert change.unseen
    assert "only see redacted" in change.reason
    assert "may not change it" in change.reason


def test_a_member_the_consent_covers_changes_the_tagged_item() -> None:
    change = check(sensitivity=(G,), consents=(consent(),), action=Action.WRITE)

    assert change.outcome is PERMIT
    assert not change.unseen


def test_a_change_to_an_item_with_one_uncovered_tag_of_two_is_refused() -> None:
    change = check(sensitivity=(G, M), consents=(consent(),), action=Action.WRITE)

    assert change.outcome is DENY
    assert change.unseen
    assert "MENTAL_HEALTH" in change.reason


def test_a_change_refused_by_gina_is_not_called_redacted() -> None:
    change = check(sensitivity=(G,), purpose=Purpose.EMPLOYMENT, action=Action.WRITE)

    assert change.outcome is DENY
    assert not change.unseen
    assert "GINA" in change.reason


# --- rule 7: who documents a patient's consent -----------------------------------------

NURSE = Membership(disciplines=frozenset({Discipline.NURSE}), lead=False)
SOCIAL_WORKER = Membership(disciplines=frozenset({Discipline.SOCIAL_WORKER}), lead=False)
LEAD_NO_DISCIPLINE = Membership(disciplines=frozenset(), lead=True)


def entry(
    membership: Membership | None,
    disciplines: tuple[Discipline, ...] = (Discipline.PHARMACIST,),
    recorders: tuple[Discipline, ...] = (),
    *,
    revoking: bool = False,
) -> Decision:
    return consent_entry(
        actor=ADA,
        membership=membership,
        disciplines=disciplines,
        recorders=recorders,
        revoking=revoking,
    )


@pytest.mark.parametrize("revoking", [False, True])
def test_a_lead_documents_and_revokes_a_consent_naming_other_disciplines(revoking: bool) -> None:
    for lead in (LEAD_PHYSICIAN, LEAD_NO_DISCIPLINE):
        decision = entry(lead, revoking=revoking)

        assert decision.outcome is PERMIT
        assert "as a lead" in decision.reason


@pytest.mark.parametrize("action", [Action.READ, Action.WRITE])
@pytest.mark.parametrize("purpose", [Purpose.TREATMENT, Purpose.RESEARCH])
def test_a_consent_never_covers_the_member_who_documented_it(
    action: Action, purpose: Purpose
) -> None:
    # Ada documented it holding no dietitian role, then took one: it still does not count
    # for her, though it does for every other dietitian.
    own = consent(purposes=(purpose,), granted_by="u-ada")

    mine = check(sensitivity=(G,), purpose=purpose, consents=(own,), action=action)
    untagged = check(purpose=purpose, consents=(own,), action=action)
    with_another = check(
        sensitivity=(G,),
        purpose=purpose,
        consents=(own, consent("c-2", purposes=(purpose,))),
        action=action,
    )

    expected = REDACTED if action is Action.READ and purpose is Purpose.TREATMENT else DENY
    assert mine.outcome is expected
    assert "a consent they documented themselves never covers them" in mine.reason
    assert untagged.outcome is (PERMIT if purpose is Purpose.TREATMENT else DENY)
    assert with_another.outcome is PERMIT
    assert "c-2" in with_another.reason and "c-1" not in with_another.reason


@pytest.mark.parametrize("revoking", [False, True])
def test_a_member_of_no_entitled_discipline_may_neither_document_nor_revoke(
    revoking: bool,
) -> None:
    decision = entry(NURSE, recorders=(Discipline.SOCIAL_WORKER,), revoking=revoking)

    assert decision.outcome is DENY
    assert "neither a lead nor of a discipline entitled" in decision.reason
    assert "SOCIAL_WORKER" in decision.reason


def test_by_default_only_leads_are_entitled() -> None:
    decision = entry(SOCIAL_WORKER)

    assert decision.outcome is DENY
    assert "leads only" in decision.reason


def test_a_member_of_an_entitled_discipline_documents_a_consent() -> None:
    decision = entry(SOCIAL_WORKER, recorders=(Discipline.SOCIAL_WORKER,))

    assert decision.outcome is PERMIT
    assert "by their discipline" in decision.reason


@pytest.mark.parametrize(
    ("membership", "recorders"),
    [(LEAD_PHYSICIAN, ()), (SOCIAL_WORKER, (Discipline.SOCIAL_WORKER,))],
    ids=["lead", "entitled-discipline"],
)
def test_nobody_documents_a_consent_that_widens_their_own_access(
    membership: Membership, recorders: tuple[Discipline, ...]
) -> None:
    own = sorted(membership.disciplines)
    decision = entry(membership, (Discipline.PHARMACIST, *own), recorders)

    assert decision.outcome is DENY
    assert f"names {own[0].value}, which they hold" in decision.reason
    assert "another entitled member" in decision.reason


def test_revoking_a_consent_naming_ones_own_discipline_is_allowed_as_it_only_narrows() -> None:
    decision = entry(LEAD_PHYSICIAN, (Discipline.PHYSICIAN,), revoking=True)

    assert decision.outcome is PERMIT


@pytest.mark.parametrize("roles", [frozenset(), frozenset({"compliance_officer", "admin"})])
def test_a_non_member_never_documents_a_consent(roles: frozenset[str]) -> None:
    decision = consent_entry(
        actor=Actor("u-co", "Grace Hopper", roles=roles),
        membership=None,
        disciplines=(Discipline.PHARMACIST,),
        recorders=tuple(Discipline),
    )

    assert decision.outcome is DENY
    assert "not a member" in decision.reason


# --- rule 8: nobody reviews their own break-glass access -------------------------------


def test_nobody_reviews_their_own_break_glass_access() -> None:
    officer = Actor("u-co", "Grace Hopper", roles=frozenset({"compliance_officer"}))

    own = break_glass_review(actor=officer, accessor_id="u-co")
    other = break_glass_review(actor=officer, accessor_id="u-er")

    assert own.outcome is DENY
    assert "separation of duties" in own.reason
    assert other.outcome is PERMIT


def test_a_lead_gives_themselves_a_discipline_only_while_the_team_has_no_patient() -> None:
    setting_up = role_assignment(actor=ADA, user_id="u-ada", patients_enrolled=False)
    own = role_assignment(actor=ADA, user_id="u-ada", patients_enrolled=True)
    other = role_assignment(actor=ADA, user_id="u-bob", patients_enrolled=True)

    assert setting_up.outcome is PERMIT and "no patient enrolled" in setting_up.reason
    assert own.outcome is DENY
    assert "widen their own access" in own.reason and "another lead must" in own.reason
    assert other.outcome is PERMIT


# --- rule 1: the roster ----------------------------------------------------------------


def test_a_non_member_cannot_change_the_roster_even_breaking_the_glass() -> None:
    decision = check(membership=None, action=Action.MANAGE_ROSTER, break_glass="emergency")

    assert decision.outcome is DENY
    assert "not a member" in decision.reason


def test_a_member_who_is_not_a_lead_cannot_change_the_roster() -> None:
    decision = check(action=Action.MANAGE_ROSTER)

    assert decision.outcome is DENY
    assert "not a lead" in decision.reason


def test_a_lead_changes_the_roster() -> None:
    decision = check(membership=LEAD_PHYSICIAN, action=Action.MANAGE_ROSTER)

    assert decision.outcome is PERMIT
    assert "lead" in decision.reason


def test_a_lead_changes_the_roster_whatever_the_purpose_or_item() -> None:
    decision = check(
        membership=LEAD_PHYSICIAN,
        action=Action.MANAGE_ROSTER,
        patient_id=None,
        sensitivity=(G,),
        purpose=Purpose.EMPLOYMENT,
    )

    assert decision.outcome is PERMIT


@pytest.mark.parametrize("roles", [{"compliance_officer"}, {"admin"}])
def test_global_roles_do_not_make_a_member_a_lead(roles: set[str]) -> None:
    admin = Actor("u-adm", "Root", roles=frozenset(roles))

    assert check(actor=admin, action=Action.MANAGE_ROSTER).outcome is DENY


# --- Decision, needs_consents, RANK ----------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "permitted", "redacted"),
    [
        (PERMIT, True, False),
        (REDACTED, True, True),
        (DENY, False, False),
        (BREAK_GLASS, True, False),
    ],
)
def test_a_decision_says_whether_the_item_is_shown_and_whether_redacted(
    outcome: AccessOutcome, permitted: bool, redacted: bool
) -> None:
    decision = Decision(outcome, "because")

    assert decision.permitted is permitted
    assert decision.redacted is redacted


def test_outcomes_rank_deny_below_redacted_below_full_release() -> None:
    assert RANK[DENY] < RANK[REDACTED] < RANK[PERMIT] == RANK[BREAK_GLASS]
    assert set(RANK) == set(AccessOutcome)


@pytest.mark.parametrize(
    ("purpose", "sensitivity", "needed"),
    [
        (Purpose.TREATMENT, (), False),
        (Purpose.CARE_COORDINATION, (), False),
        (Purpose.OPERATIONS, (), False),
        (Purpose.TREATMENT, (M,), True),
        (Purpose.PAYMENT, (), True),
        (Purpose.RESEARCH, (S,), True),
    ],
)
def test_consents_are_needed_for_tagged_items_or_purposes_beyond_care(
    purpose: Purpose, sensitivity: tuple[Sensitivity, ...], needed: bool
) -> None:
    assert needs_consents(purpose, sensitivity) is needed


def test_the_consents_given_may_be_any_iterable_read_once() -> None:
    decision = check(sensitivity=(G,), consents=iter([consent("c-it")]))

    assert decision.outcome is PERMIT
    assert "c-it" in decision.reason


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_break_glass_reason_is_no_break_glass(blank: str) -> None:
    decision = check(membership=None, break_glass=blank)

    assert decision.outcome is DENY
    assert "broke the glass" not in decision.reason
