"""The plans service's root fields, which services/api/schema.py merges into the schema."""

from __future__ import annotations

import strawberry

from services.plans.gql import meetings, mutations
from services.plans.gql.queries import PlansQuery
from services.plans.gql.types import CarePlan, Consent, Huddle, Patient, Team

__all__ = ["PlansMutation", "PlansQuery"]

_VERSION_NOTE = " Send expectedVersion to refuse the change if the plan moved on (CONFLICT)."


@strawberry.type
class PlansMutation:
    create_team: Team = strawberry.mutation(
        resolver=mutations.create_team, description="Create a team; the caller becomes a lead."
    )
    assign_role: Team = strawberry.mutation(
        resolver=mutations.assign_role,
        description="Give a user a discipline on the team (leads only); lead=true also makes "
        "them a lead, lead=false never demotes.",
    )
    revoke_role: Team = strawberry.mutation(
        resolver=mutations.revoke_role,
        description="Take a discipline away (leads only); a member left with none leaves the "
        "team, unless a lead.",
    )
    remove_member: Team = strawberry.mutation(
        resolver=mutations.remove_member,
        description="Take a user off the team, lead or not (leads only); the team's last lead "
        "cannot be removed.",
    )
    enroll_patient: Patient = strawberry.mutation(
        resolver=mutations.enroll_patient,
        description="Enroll a patient on a team; the MRN is unique per team.",
    )
    create_care_plan: CarePlan = strawberry.mutation(
        resolver=mutations.create_care_plan, description="Start a DRAFT care plan for a patient."
    )
    add_goal: CarePlan = strawberry.mutation(
        resolver=mutations.add_goal, description="Add a goal." + _VERSION_NOTE
    )
    set_goal_status: CarePlan = strawberry.mutation(
        resolver=mutations.set_goal_status, description="Move a goal on." + _VERSION_NOTE
    )
    add_intervention: CarePlan = strawberry.mutation(
        resolver=mutations.add_intervention,
        description="Add an intervention (tier, responsible discipline, sensitivity tags)."
        + _VERSION_NOTE,
    )
    discontinue_intervention: CarePlan = strawberry.mutation(
        resolver=mutations.discontinue_intervention,
        description="Stop an intervention, with the reason." + _VERSION_NOTE,
    )
    set_plan_status: CarePlan = strawberry.mutation(
        resolver=mutations.set_plan_status,
        description="DRAFT -> ACTIVE -> ON_HOLD/COMPLETED/REVOKED; COMPLETED and REVOKED are "
        "final." + _VERSION_NOTE,
    )
    review_care_plan: CarePlan = strawberry.mutation(
        resolver=mutations.review_care_plan,
        description="Record a review and the next review date." + _VERSION_NOTE,
    )
    schedule_huddle: Huddle = strawberry.mutation(resolver=meetings.schedule_huddle)
    open_huddle: Huddle = strawberry.mutation(resolver=meetings.open_huddle)
    record_huddle_note: Huddle = strawberry.mutation(resolver=meetings.record_huddle_note)
    raise_action_item: Huddle = strawberry.mutation(
        resolver=meetings.raise_action_item,
        description="Raise an action item; it becomes a task on the team's board.",
    )
    close_huddle: Huddle = strawberry.mutation(
        resolver=meetings.close_huddle, description="Close the huddle; nothing more is added."
    )
    grant_consent: Consent = strawberry.mutation(resolver=meetings.grant_consent)
    revoke_consent: Consent = strawberry.mutation(resolver=meetings.revoke_consent)
