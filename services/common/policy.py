"""The access policy: one pure function deciding what a caller may see of one item.

Every resolver reaches it through `services.api.graphql.access`, which gathers its inputs (the
caller's place on the team, the patient's consents, the purpose of use, a break-glass
reason) and applies its answer: the item in full, the item redacted, or nothing.

The rules, in the order they are applied:

1. Only a lead changes a team's roster.
2. A caller who is not on the patient's team is refused, unless they break the glass:
   an emergency read (`X-Break-Glass: reason`) of one patient's records for TREATMENT,
   which releases everything, sensitive items included (42 CFR 2.51, the medical
   emergency exception), and is queued for compliance review. Break-glass never opens a
   whole team's board or huddles, never changes anything, and never serves another
   purpose. Global roles (compliance officer, admin) never break the glass: those who
   audit clinical access do not take it (separation of duties).
3. GENETIC information is never released for UNDERWRITING or EMPLOYMENT, whatever the
   consent says (GINA; 45 CFR 164.502(a)(5)(i); 29 CFR 1635).
4. Members read and change untagged items for TREATMENT, CARE_COORDINATION and
   OPERATIONS. Any other purpose needs an active consent of the patient that names it
   and the member's discipline; without one the item is refused.
5. An item tagged GENETIC, SUBSTANCE_USE or MENTAL_HEALTH is released only when, for
   every tag, an active consent of the patient covers the tag, the member's discipline
   and the purpose; otherwise it is shown redacted (its id, status and dates only).
6. Nobody changes an item they may only see redacted: where a read would be
   PERMIT_REDACTED, a change (Action.WRITE) is DENY.

Beside `decide`, two rules about the records of the access itself:

7. A patient's consent is documented by a member entitled to (a lead, or a member of a
   discipline the deployment names), never to widen the documenter's own access: a
   consent naming a discipline the documenter holds on the team is refused, for another
   entitled member to document (`consent_entry`). Revoking needs the same entitlement.
   And a consent never covers the member who documented it (`decide`), so a lead who
   takes a discipline after documenting a consent naming it gains nothing by it.
8. Nobody reviews their own break-glass access (`break_glass_review`).
9. Nobody gives themselves a discipline once the team has a patient enrolled
   (`role_assignment`): a discipline is what consents release sensitive items to, so a
   lead taking one alone would widen their own access; another lead must assign it.
   While the team has no patient (a lead setting it up) there is nothing to widen, and
   taking a discipline away (revokeRole) only narrows.

More consent never gives less access, and less consent never gives more: the outcomes
rank DENY < PERMIT_REDACTED < PERMIT for members (tests/unit/test_policy_properties.py).
Global roles never widen a decision.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.common.actor import ADMIN, COMPLIANCE_OFFICER, Actor

# Uses of a care team's records that need no consent beyond the patient's care itself.
CARE_PURPOSES = frozenset({Purpose.TREATMENT, Purpose.CARE_COORDINATION, Purpose.OPERATIONS})
# Purposes genetic information is never released for (GINA).
GINA_BARRED = frozenset({Purpose.UNDERWRITING, Purpose.EMPLOYMENT})
# Roles held across every team; their holders audit and administer, they do not treat.
GLOBAL_ROLES = frozenset({COMPLIANCE_OFFICER, ADMIN})
# How much an outcome releases, for comparing decisions (break-glass releases all).
RANK = {
    AccessOutcome.DENY: 0,
    AccessOutcome.PERMIT_REDACTED: 1,
    AccessOutcome.PERMIT: 2,
    AccessOutcome.BREAK_GLASS: 2,
}


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    MANAGE_ROSTER = "manage_roster"


@dataclass(frozen=True)
class Membership:
    """The caller's place on the team that owns the data."""

    disciplines: frozenset[Discipline]
    lead: bool


class Grant(Protocol):
    """A patient's consent, as the policy reads it."""

    @property
    def id(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def categories(self) -> Collection[Sensitivity]: ...
    @property
    def purposes(self) -> Collection[Purpose]: ...
    @property
    def disciplines(self) -> Collection[Discipline]: ...
    @property
    def granted_by(self) -> str: ...

    def active(self, now: datetime) -> bool: ...


@dataclass(frozen=True)
class Decision:
    outcome: AccessOutcome
    # For compliance officers reading the audit log: why, in plain words.
    reason: str
    # A change refused because the item is one the caller may only see redacted (rule 6):
    # the gate says so to the caller, in words that name none of the item's tags.
    unseen: bool = False

    @property
    def permitted(self) -> bool:
        """The item may be shown, in full or redacted."""
        return self.outcome is not AccessOutcome.DENY

    @property
    def redacted(self) -> bool:
        return self.outcome is AccessOutcome.PERMIT_REDACTED


def needs_consents(purpose: Purpose, sensitivity: Collection[Sensitivity]) -> bool:
    """Whether a member's decision can turn on the patient's consents (when it cannot,
    they need not be read)."""
    return bool(sensitivity) or purpose not in CARE_PURPOSES


def decide(
    *,
    actor: Actor,
    membership: Membership | None,
    patient_id: str | None,
    sensitivity: Collection[Sensitivity],
    purpose: Purpose,
    consents: Iterable[Grant],
    break_glass: str | None,
    now: datetime,
    action: Action = Action.READ,
) -> Decision:
    """What `actor` may do with one item: PERMIT, PERMIT_REDACTED, DENY or BREAK_GLASS.

    `patient_id` is the patient the item is about (None: a team-wide item, such as the
    board or a note about no one); `consents` are that patient's consents (others'
    are ignored); `break_glass` is the reason the caller gave for emergency access.
    """
    who = actor.user_id
    if action is Action.MANAGE_ROSTER:
        return _roster(who, membership)
    if membership is None:
        return _outsider(actor, patient_id, action, purpose, break_glass)
    tags = frozenset(sensitivity)
    if Sensitivity.GENETIC in tags and purpose in GINA_BARRED:
        return Decision(
            AccessOutcome.DENY,
            f"genetic information is never released for {purpose.value}, consent or not "
            "(GINA; 45 CFR 164.502(a)(5)(i); 29 CFR 1635)",
        )
    disciplines = membership.disciplines
    member = f"{who} is a team member ({_names(disciplines) or 'no discipline'})"
    applicable = [
        c
        for c in consents
        if c.patient_id == patient_id
        and c.active(now)
        and purpose in c.purposes
        and not disciplines.isdisjoint(c.disciplines)
    ]
    # Rule 7 at the moment of access: a consent its documenter holds a named discipline of
    # (taken after documenting it) never covers them, whatever the roster did meanwhile.
    in_force = [c for c in applicable if c.granted_by != who]
    if len(in_force) < len(applicable):
        member += f"; {_OWN_CONSENT}"
    if purpose not in CARE_PURPOSES:
        if patient_id is None:
            return Decision(
                AccessOutcome.DENY,
                f"{purpose.value} is not a use of a whole team's records; it needs one "
                "patient's consent",
            )
        if not in_force:
            return Decision(
                AccessOutcome.DENY,
                f"{member}, but {purpose.value} is not treatment, care coordination or "
                f"operations, and no active consent of the patient covers it for "
                f"{_names(disciplines) or 'their discipline'}",
            )
    if not tags:
        if purpose in CARE_PURPOSES:
            return Decision(AccessOutcome.PERMIT, f"{member}, for {purpose.value}")
        return Decision(AccessOutcome.PERMIT, f"{member}; {_consented(in_force, purpose)}")
    uncovered = [t for t in sorted(tags) if not any(t in c.categories for c in in_force)]
    if uncovered and action is Action.WRITE:
        return Decision(
            AccessOutcome.DENY,
            f"{member}; no active consent of the patient covers {_names(uncovered)} "
            f"for {_names(disciplines) or 'their discipline'} for {purpose.value}, so the "
            "item is one they may only see redacted, and they may not change it",
            unseen=True,
        )
    if uncovered:
        return Decision(
            AccessOutcome.PERMIT_REDACTED,
            f"{member}; no active consent of the patient covers {_names(uncovered)} "
            f"for {_names(disciplines) or 'their discipline'} for {purpose.value}, "
            "so it is shown redacted",
        )
    covering = [c for c in in_force if not tags.isdisjoint(c.categories)]
    return Decision(
        AccessOutcome.PERMIT, f"{member}; {_names(tags)}: {_consented(covering, purpose)}"
    )


_OWN_CONSENT = "a consent they documented themselves never covers them"


def _roster(who: str, membership: Membership | None) -> Decision:
    if membership is None:
        return Decision(AccessOutcome.DENY, f"{who} is not a member of the team")
    if not membership.lead:
        return Decision(AccessOutcome.DENY, f"{who} is a member but not a lead of the team")
    return Decision(AccessOutcome.PERMIT, f"{who} is a lead of the team")


def _outsider(
    actor: Actor, patient_id: str | None, action: Action, purpose: Purpose, break_glass: str | None
) -> Decision:
    who = actor.user_id
    if break_glass is None or not break_glass.strip():  # a reason is what makes it break-glass
        return Decision(AccessOutcome.DENY, f"{who} is not a member of the team")
    refused = f"{who} is not a member of the team and broke the glass, but "
    if held := GLOBAL_ROLES & actor.roles:
        return Decision(
            AccessOutcome.DENY,
            refused + f"holds the global role {', '.join(sorted(held))}; global roles never "
            "break the glass (separation of duties: those who review emergency access do "
            "not take it)",
        )
    if patient_id is None:
        return Decision(
            AccessOutcome.DENY, refused + "break-glass opens one patient's records, not a team's"
        )
    if action is not Action.READ:
        return Decision(AccessOutcome.DENY, refused + "break-glass reads; it changes nothing")
    if purpose is not Purpose.TREATMENT:
        return Decision(
            AccessOutcome.DENY,
            refused + f"break-glass is for emergency treatment, not {purpose.value}",
        )
    return Decision(
        AccessOutcome.BREAK_GLASS,
        f"{who} is not a member of the team; emergency access for TREATMENT "
        f"(42 CFR 2.51), queued for compliance review. Reason given: {break_glass}",
    )


def consent_entry(
    *,
    actor: Actor,
    membership: Membership | None,
    disciplines: Collection[Discipline],
    recorders: Collection[Discipline],
    revoking: bool = False,
) -> Decision:
    """Whether `actor` may document (or, `revoking`, withdraw) a patient's consent naming
    `disciplines`: a lead or a member of one of the `recorders` disciplines may, unless the
    consent names a discipline they hold themselves (only when granting: a revocation
    narrows access). PERMIT or DENY, with the reason for the audit log."""
    who = actor.user_id
    what = "revoke a patient's consent" if revoking else "document a patient's consent"
    if membership is None:
        return Decision(AccessOutcome.DENY, f"{who} is not a member of the team, so may not {what}")
    held = membership.disciplines
    entitled = membership.lead or not held.isdisjoint(recorders)
    member = f"{who} is a team member ({_names(held) or 'no discipline'})"
    if not entitled:
        return Decision(
            AccessOutcome.DENY,
            f"{member}, neither a lead nor of a discipline entitled to {what} "
            f"({_names(recorders) or 'leads only'})",
        )
    basis = "as a lead" if membership.lead else "by their discipline"
    if revoking:
        return Decision(AccessOutcome.PERMIT, f"{member}, entitled {basis} to {what}")
    if widened := held.intersection(disciplines):
        return Decision(
            AccessOutcome.DENY,
            f"{member}; the consent names {_names(widened)}, which they hold, so it would "
            "widen their own access: another entitled member must document it",
        )
    return Decision(AccessOutcome.PERMIT, f"{member}, entitled {basis} to {what}")


def role_assignment(*, actor: Actor, user_id: str, patients_enrolled: bool) -> Decision:
    """Whether `actor`, a lead (the gate has checked), may give `user_id` a discipline:
    anyone else, and themselves only while the team has no patient enrolled
    (`patients_enrolled`). PERMIT or DENY, with the reason for the audit log."""
    who = actor.user_id
    if user_id != who:
        return Decision(AccessOutcome.PERMIT, f"{who} is a lead of the team")
    if patients_enrolled:
        return Decision(
            AccessOutcome.DENY,
            f"{who} is a lead giving themselves a discipline on a team with a patient "
            "enrolled, which would widen their own access to the patients' records: "
            "another lead must assign it",
        )
    return Decision(
        AccessOutcome.PERMIT,
        f"{who} is a lead giving themselves a discipline on a team with no patient enrolled",
    )


def break_glass_review(*, actor: Actor, accessor_id: str) -> Decision:
    """Whether `actor` may record the review of a break-glass access `accessor_id` took:
    anyone but the accessor (the caller's role is the gate's to check)."""
    if actor.user_id == accessor_id:
        return Decision(
            AccessOutcome.DENY,
            f"{actor.user_id} took this break-glass access and may not review it "
            "(separation of duties: nobody reviews their own emergency access)",
        )
    return Decision(AccessOutcome.PERMIT, f"{actor.user_id} did not take this access")


def _consented(consents: Iterable[Grant], purpose: Purpose) -> str:
    ids = ", ".join(sorted({c.id for c in consents}))
    return f"the patient's consent {ids} covers {purpose.value}"


def _names(values: Iterable[StrEnum]) -> str:
    return ", ".join(sorted(v.value for v in values))
