"""The Team aggregate: creation, who may change the roster, and how roles fold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.base import Event
from schemas.common import Discipline
from schemas.patient import PatientEnrolled
from schemas.team import MemberRemoved, RoleAssigned, RoleRevoked, TeamCreated
from services.common.commands import build
from services.common.domain import Meta
from services.common.errors import InvalidInput, Missing, NotPermitted, StateConflict
from services.plans.domain.patient import EnrollPatient
from services.plans.domain.team import (
    TEAM,
    AssignRole,
    CreateTeam,
    Member,
    RemoveMember,
    RevokeRole,
    Team,
    decide,
    evolve,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
META = Meta("u-1", NOW, "t-1")
NURSE = Discipline.NURSE
PHARMACIST = Discipline.PHARMACIST


def _fold(*events: Event) -> Team:
    team: Team | None = None
    for event in events:
        team = evolve(team, event, META)
    assert team is not None
    return team


def _created() -> TeamCreated:
    return TeamCreated(team_id="t-1", name="Ward 4", lead_user_id="lead", lead_name="Dr Lead")


def _assigned(
    user: str, discipline: Discipline, *, lead: bool = False, name: str = ""
) -> RoleAssigned:
    return RoleAssigned(
        team_id="t-1", user_id=user, name=name or f"Name {user}", discipline=discipline, lead=lead
    )


def _team() -> Team:
    """Lead `lead` (no discipline yet) and member `bob`, a nurse."""
    return _fold(_created(), _assigned("bob", NURSE))


def _assign(user: str = "amy", discipline: Discipline = NURSE, **overrides: object) -> AssignRole:
    fields: dict[str, object] = {
        "team_id": "t-1",
        "user_id": user,
        "name": f"Name {user}",
        "discipline": discipline,
        "actor_id": "lead",
    }
    fields.update(overrides)
    return build(AssignRole, **fields)


def _revoke(user: str = "bob", discipline: Discipline = NURSE, actor: str = "lead") -> RevokeRole:
    return build(RevokeRole, team_id="t-1", user_id=user, discipline=discipline, actor_id=actor)


def test_creating_a_team_makes_its_creator_the_first_lead() -> None:
    command = build(CreateTeam, team_id="t-1", name="Ward 4", actor_id="lead", actor_name="Dr Lead")
    assert decide(command, None, NOW) == [_created()]
    team = _fold(*decide(command, None, NOW))
    assert team.id == "t-1"
    assert team.name == "Ward 4"
    assert list(team.members) == ["lead"]
    assert team.member("lead") == Member("lead", "Dr Lead", frozenset(), lead=True)
    assert team.is_lead("lead")


def test_creating_a_team_that_exists_is_a_conflict() -> None:
    command = build(CreateTeam, team_id="t-1", name="Ward 4", actor_id="lead", actor_name="A")
    with pytest.raises(StateConflict) as caught:
        decide(command, _team(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}


@pytest.mark.parametrize("command", [_assign(), _revoke()], ids=["assign", "revoke"])
def test_changing_the_roster_of_a_team_that_does_not_exist_is_a_conflict(
    command: object,
) -> None:
    with pytest.raises(StateConflict, match="does not exist"):
        decide(command, None, NOW)


@pytest.mark.parametrize("actor", ["bob", "stranger"])
@pytest.mark.parametrize(
    "command",
    [
        lambda actor: _assign("amy", actor_id=actor),
        lambda actor: _assign("bob", PHARMACIST, actor_id=actor),
        lambda actor: _assign(actor, NURSE, lead=True, actor_id=actor),
        lambda actor: _revoke("bob", NURSE, actor=actor),
        lambda actor: _revoke("zed", NURSE, actor=actor),
    ],
    ids=["add-member", "add-discipline", "self-promote", "revoke", "revoke-non-member"],
)
def test_only_a_lead_may_change_the_roster(actor: str, command: object) -> None:
    with pytest.raises(NotPermitted) as caught:
        decide(command(actor), _team(), NOW)  # type: ignore[operator]
    assert caught.value.extensions == {"code": "FORBIDDEN"}


def test_a_lead_may_add_a_new_member() -> None:
    assert decide(_assign("amy", PHARMACIST), _team(), NOW) == [
        RoleAssigned(
            team_id="t-1", user_id="amy", name="Name amy", discipline=PHARMACIST, lead=False
        )
    ]


def test_a_lead_may_add_a_new_lead() -> None:
    (event,) = decide(_assign("amy", lead=True), _team(), NOW)
    assert isinstance(event, RoleAssigned)
    assert event.lead is True


def test_a_second_lead_may_change_the_roster_too() -> None:
    team = _fold(_created(), _assigned("amy", NURSE, lead=True))
    assert decide(_assign("zed", actor_id="amy"), team, NOW) != []
    assert decide(_revoke("amy", actor="amy"), team, NOW) != []


def test_assigning_an_already_held_discipline_records_nothing() -> None:
    assert decide(_assign("bob", NURSE), _team(), NOW) == []


def test_assigning_an_already_held_discipline_to_a_lead_without_lead_flag_records_nothing() -> None:
    team = _fold(_created(), _assigned("lead", NURSE, name="Dr Lead"))
    assert decide(_assign("lead", NURSE, name="Dr Lead", lead=False), team, NOW) == []
    assert decide(_assign("lead", NURSE, name="Dr Lead", lead=True), team, NOW) == []


def test_promoting_a_member_in_a_discipline_they_hold_is_recorded() -> None:
    (event,) = decide(_assign("bob", NURSE, lead=True), _team(), NOW)
    assert isinstance(event, RoleAssigned)
    assert event.lead is True


def test_renaming_a_member_in_a_discipline_they_hold_is_recorded() -> None:
    (event,) = decide(_assign("bob", NURSE, name="Robert"), _team(), NOW)
    assert isinstance(event, RoleAssigned)
    assert event.name == "Robert"


def test_revoking_a_held_discipline_is_recorded() -> None:
    assert decide(_revoke("bob", NURSE), _team(), NOW) == [
        RoleRevoked(team_id="t-1", user_id="bob", discipline=NURSE)
    ]


def test_revoking_a_discipline_not_held_is_a_conflict() -> None:
    with pytest.raises(StateConflict) as caught:
        decide(_revoke("bob", PHARMACIST), _team(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}
    assert "PHARMACIST" in caught.value.message


def test_revoking_from_someone_who_is_not_a_member_is_not_found() -> None:
    with pytest.raises(Missing, match="not a member"):
        decide(_revoke("zed", NURSE), _team(), NOW)


def test_revoking_from_a_lead_who_holds_no_discipline_is_a_conflict() -> None:
    with pytest.raises(StateConflict):
        decide(_revoke("lead", NURSE), _team(), NOW)


def test_the_team_cannot_handle_a_foreign_command() -> None:
    foreign = build(
        EnrollPatient, patient_id="p", team_id="t", mrn="m", name="n", birth_date="1970-01-01"
    )
    with pytest.raises(InvalidInput, match="EnrollPatient"):
        decide(foreign, _team(), NOW)


def test_a_role_assigned_to_a_newcomer_adds_a_member_in_joining_order() -> None:
    team = _fold(_created(), _assigned("bob", NURSE), _assigned("amy", PHARMACIST))
    assert list(team.members) == ["lead", "bob", "amy"]
    assert team.member("amy") == Member("amy", "Name amy", frozenset({PHARMACIST}), lead=False)
    assert not team.is_lead("amy")
    assert not team.is_lead("nobody")
    assert team.member("nobody") is None


def test_a_second_discipline_is_added_to_the_existing_ones() -> None:
    team = _fold(_created(), _assigned("bob", NURSE), _assigned("bob", PHARMACIST))
    member = team.member("bob")
    assert member is not None
    assert member.disciplines == {NURSE, PHARMACIST}
    assert list(team.members) == ["lead", "bob"]


def test_lead_false_never_demotes_a_lead() -> None:
    team = _fold(_created(), _assigned("lead", NURSE, lead=False))
    member = team.member("lead")
    assert member is not None
    assert member.lead is True
    assert member.disciplines == {NURSE}


def test_lead_true_promotes_an_existing_member() -> None:
    team = _fold(_created(), _assigned("bob", NURSE), _assigned("bob", PHARMACIST, lead=True))
    assert team.is_lead("bob")
    assert [m.user_id for m in team.leads] == ["lead", "bob"]


def test_a_role_assigned_updates_the_members_name() -> None:
    team = _fold(_created(), _assigned("bob", NURSE), _assigned("bob", NURSE, name="Robert"))
    member = team.member("bob")
    assert member is not None
    assert member.name == "Robert"


def test_revoking_one_of_several_disciplines_keeps_the_member() -> None:
    team = _fold(
        _created(),
        _assigned("bob", NURSE),
        _assigned("bob", PHARMACIST),
        RoleRevoked(team_id="t-1", user_id="bob", discipline=NURSE),
    )
    member = team.member("bob")
    assert member is not None
    assert member.disciplines == {PHARMACIST}


def test_revoking_the_last_discipline_of_a_non_lead_removes_the_member() -> None:
    team = _fold(
        _created(),
        _assigned("bob", NURSE),
        RoleRevoked(team_id="t-1", user_id="bob", discipline=NURSE),
    )
    assert team.member("bob") is None
    assert list(team.members) == ["lead"]


def test_revoking_the_last_discipline_of_a_lead_keeps_the_lead() -> None:
    team = _fold(
        _created(),
        _assigned("lead", NURSE),
        RoleRevoked(team_id="t-1", user_id="lead", discipline=NURSE),
    )
    assert team.member("lead") == Member("lead", "Name lead", frozenset(), lead=True)
    assert team.is_lead("lead")


def test_a_revocation_for_an_unknown_member_leaves_the_team_unchanged() -> None:
    team = _team()
    assert evolve(team, RoleRevoked(team_id="t-1", user_id="zed", discipline=NURSE)) == team


def test_folding_does_not_change_the_earlier_state() -> None:
    before = _team()
    evolve(before, _assigned("amy", NURSE), META)
    assert list(before.members) == ["lead", "bob"]


def test_a_role_event_before_team_created_is_an_error() -> None:
    with pytest.raises(ValueError, match="before TeamCreated"):
        evolve(None, _assigned("bob", NURSE), META)


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = PatientEnrolled(
        patient_id="p", team_id="t-1", mrn="m", name="n", birth_date="1970-01-01"
    )
    with pytest.raises(ValueError, match="PatientEnrolled"):
        evolve(_team(), foreign, META)


def test_the_team_aggregate_type_names_its_stream() -> None:
    assert TEAM.stream_id("t-1") == "team-t-1"
    assert (TEAM.name, TEAM.decide, TEAM.evolve) == ("team", decide, evolve)


def _remove(user: str, actor: str = "lead") -> RemoveMember:
    return build(RemoveMember, team_id="t-1", user_id=user, actor_id=actor)


def test_a_lead_removes_a_member_with_all_their_disciplines() -> None:
    team = _fold(_created(), _assigned("bob", NURSE), _assigned("bob", PHARMACIST))

    events = decide(_remove("bob"), team, NOW)

    assert events == [MemberRemoved(team_id="t-1", user_id="bob")]
    assert "bob" not in evolve(team, events[0], META).members


def test_a_lead_who_leaves_is_removed_when_another_lead_remains() -> None:
    team = _fold(_created(), _assigned("amy", NURSE, lead=True))

    [event] = decide(_remove("lead", actor="amy"), team, NOW)

    after = evolve(team, event, META)
    assert list(after.members) == ["amy"]
    assert not after.is_lead("lead")


def test_the_teams_only_lead_cannot_be_removed() -> None:
    with pytest.raises(StateConflict, match="only lead") as caught:
        decide(_remove("lead"), _team(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}


def test_only_a_lead_removes_members() -> None:
    with pytest.raises(NotPermitted):
        decide(_remove("lead", actor="bob"), _team(), NOW)


def test_removing_someone_not_on_the_team_is_not_found() -> None:
    with pytest.raises(Missing):
        decide(_remove("zed"), _team(), NOW)


@pytest.mark.parametrize("look_alike", ["BOB", "b0b", "Bob"])
def test_a_second_member_whose_id_reads_as_an_existing_one_is_refused(look_alike: str) -> None:
    with pytest.raises(StateConflict) as refused:
        decide(_assign(look_alike), _team(), NOW)
    assert "reads the same as the id of member bob" in refused.value.message


def test_an_existing_member_gains_a_discipline_without_a_look_alike_refusal() -> None:
    [event] = decide(_assign("bob", PHARMACIST), _team(), NOW)
    assert isinstance(event, RoleAssigned) and event.user_id == "bob"


def test_a_member_stored_before_ids_were_checked_can_still_be_revoked_and_removed() -> None:
    # Events already stored are never changed: a roster may hold an id the safe form refuses.
    legacy = "b\u043eb"  # with a Cyrillic "o"
    team = _fold(_created(), _assigned(legacy, NURSE), _assigned("eve", NURSE))
    remove = build(RemoveMember, team_id="t-1", user_id=legacy, actor_id="lead")
    assert decide(_revoke(legacy), team, NOW) == [
        RoleRevoked(team_id="t-1", user_id=legacy, discipline=NURSE)
    ]
    assert decide(remove, team, NOW) == [MemberRemoved(team_id="t-1", user_id=legacy)]
