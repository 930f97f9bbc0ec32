"""Command building: readable InvalidInput errors, trimmed text, limits, and `distinct`."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from schemas.common import Discipline, Sensitivity
from services.common import commands
from services.common.commands import build, distinct
from services.common.errors import InvalidInput, Missing, NotPermitted, Refused, StateConflict
from services.plans.domain.careplan import AddGoal, AddIntervention, CreateCarePlan
from services.plans.domain.consent import GrantConsent
from services.plans.domain.huddle import RaiseActionItem, RecordHuddleNote, ScheduleHuddle
from services.plans.domain.patient import EnrollPatient
from services.plans.domain.team import AssignRole, CreateTeam

PHI = "Jane Q Patient"


def _invalid(model: type[commands.Command], **fields: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        build(model, **fields)
    return caught.value


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput, "BAD_USER_INPUT"),
        (NotPermitted, "FORBIDDEN"),
        (Missing, "NOT_FOUND"),
        (StateConflict, "CONFLICT"),
    ],
)
def test_each_refusal_carries_its_public_code_in_extensions(
    error: type[Refused], code: str
) -> None:
    refusal = error("nope")
    assert isinstance(refusal, Refused)
    assert refusal.message == "nope"
    assert str(refusal) == "nope"
    assert refusal.code == code
    assert refusal.extensions == {"code": code}


def test_build_returns_the_command_when_the_fields_are_valid() -> None:
    command = build(CreateTeam, team_id="t-1", name="Ward 4", actor_id="u-1", actor_name="Dr A")
    assert command == CreateTeam(team_id="t-1", name="Ward 4", actor_id="u-1", actor_name="Dr A")


def test_build_strips_surrounding_whitespace_from_text() -> None:
    command = build(CreateTeam, team_id=" t-1 ", name="  Ward 4\n", actor_id="u-1", actor_name="A")
    assert command.team_id == "t-1"
    assert command.name == "Ward 4"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_optional_text_becomes_none(blank: str) -> None:
    command = build(AddGoal, plan_id="p", goal_id="g", description="Walk daily", target=blank)
    assert command.target is None


def test_present_optional_text_is_stripped() -> None:
    command = build(AddGoal, plan_id="p", goal_id="g", description="Walk", target=" 5 km ")
    assert command.target == "5 km"


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_required_text_is_refused_as_empty(blank: str) -> None:
    error = _invalid(CreateTeam, team_id="t-1", name=blank, actor_id="u-1", actor_name="A")
    assert error.message == "name must not be empty."
    assert error.extensions == {"code": "BAD_USER_INPUT"}


def test_blank_optional_id_is_refused_rather_than_dropped() -> None:
    error = _invalid(RecordHuddleNote, huddle_id="h", note_id="n", text="x", patient_id="")
    assert error.message == "patientId must not be empty."


@pytest.mark.parametrize(
    ("model", "fields", "argument", "limit"),
    [
        (CreateTeam, {"team_id": "t", "actor_id": "u", "actor_name": "A"}, "name", "NAME_MAX"),
        (CreateCarePlan, {"plan_id": "p", "patient_id": "x", "team_id": "t"}, "title", "TITLE_MAX"),
        (
            EnrollPatient,
            {"patient_id": "p", "team_id": "t", "name": "A", "birth_date": date(1970, 1, 1)},
            "mrn",
            "MRN_MAX",
        ),
        (AddGoal, {"plan_id": "p", "goal_id": "g"}, "description", "SHORT_TEXT_MAX"),
        (AddGoal, {"plan_id": "p", "goal_id": "g", "description": "d"}, "target", "SHORT_TEXT_MAX"),
        (
            AddIntervention,
            {
                "plan_id": "p",
                "intervention_id": "i",
                "kind": "THERAPY",
                "tier": "FIRST_LINE",
                "title": "t",
                "responsible_discipline": "NURSE",
            },
            "detail",
            "LONG_TEXT_MAX",
        ),
        (RecordHuddleNote, {"huddle_id": "h", "note_id": "n"}, "text", "NOTE_MAX"),
        (CreateTeam, {"name": "n", "actor_id": "u", "actor_name": "A"}, "team_id", "ID_MAX"),
    ],
)
def test_text_at_its_limit_is_accepted_and_one_more_character_is_refused(
    model: type[commands.Command], fields: dict[str, object], argument: str, limit: str
) -> None:
    maximum = getattr(commands, limit)
    accepted = build(model, **fields, **{argument: "x" * maximum})
    assert getattr(accepted, argument) == "x" * maximum

    error = _invalid(model, **fields, **{argument: "x" * (maximum + 1)})
    camel = "".join(
        part if i == 0 else part.capitalize() for i, part in enumerate(argument.split("_"))
    )
    assert error.message == f"{camel} must be at most {maximum} characters."
    assert "x" * 10 not in error.message


def test_the_limits_are_the_documented_sizes() -> None:
    assert (
        commands.NAME_MAX,
        commands.TITLE_MAX,
        commands.MRN_MAX,
        commands.SHORT_TEXT_MAX,
        commands.LONG_TEXT_MAX,
        commands.NOTE_MAX,
        commands.ID_MAX,
    ) == (200, 200, 64, 1_000, 4_000, 10_000, 128)


def test_a_missing_argument_is_named_in_camel_case() -> None:
    error = _invalid(AddGoal, goal_id="g", description="d")
    assert error.message == "planId field required."


def test_an_unknown_argument_is_refused_and_named_in_camel_case() -> None:
    error = _invalid(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A", made_up_x=1)
    assert error.message == "madeUpX extra inputs are not permitted."


def test_every_bad_argument_is_listed_in_one_message() -> None:
    error = _invalid(
        AssignRole, team_id="t", user_id=" ", name="x" * 201, discipline="SURGEON", actor_id="u"
    )
    parts = error.message.rstrip(".").split("; ")
    assert parts[0] == "userId must not be empty"
    assert parts[1] == "name must be at most 200 characters"
    assert parts[2].startswith("discipline input should be ")
    assert error.message.endswith(".")


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (AssignRole, {"team_id": "t", "user_id": "u", "name": "n", "actor_id": "a"}),
        (
            EnrollPatient,
            {"patient_id": "p", "team_id": "t", "mrn": "m", "name": "n"},
        ),
        (RaiseActionItem, {"huddle_id": "h", "task_id": "t", "title": "x"}),
        (ScheduleHuddle, {"huddle_id": "h", "team_id": "t"}),
    ],
)
def test_the_message_never_quotes_the_offending_value(
    model: type[commands.Command], fields: dict[str, object]
) -> None:
    bad: dict[str, object] = {
        AssignRole: {"discipline": PHI},
        EnrollPatient: {"birth_date": PHI},
        RaiseActionItem: {"due_date": PHI},
        ScheduleHuddle: {"at": PHI},
    }[model]
    error = _invalid(model, **fields, **bad)
    assert PHI not in error.message
    assert "Jane" not in error.message


def test_a_long_value_is_not_quoted_either() -> None:
    error = _invalid(
        EnrollPatient,
        patient_id="p",
        team_id="t",
        mrn="MRN-" + "7" * 70,
        name="n",
        birth_date=date(1970, 1, 1),
    )
    assert error.message == "mrn must be at most 64 characters."


def test_an_empty_list_is_refused_as_naming_no_value() -> None:
    error = _invalid(
        GrantConsent,
        consent_id="c",
        patient_id="p",
        categories=(),
        purposes=("TREATMENT",),
        disciplines=("NURSE",),
        evidence="form-1",
    )
    assert error.message == "categories must name at least one value."


def test_a_naive_datetime_is_refused_by_the_command_model() -> None:
    error = _invalid(ScheduleHuddle, huddle_id="h", team_id="t", at=datetime(2026, 11, 23, 9))
    assert error.message.startswith("at ")
    assert "timezone" in error.message


def test_an_aware_datetime_is_accepted_by_the_command_model() -> None:
    at = datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert build(ScheduleHuddle, huddle_id="h", team_id="t", at=at).at == at


def test_repeated_tags_are_collapsed_in_first_seen_order() -> None:
    command = build(
        RecordHuddleNote,
        huddle_id="h",
        note_id="n",
        text="x",
        sensitivity=("MENTAL_HEALTH", "GENETIC", "MENTAL_HEALTH"),
    )
    assert command.sensitivity == (Sensitivity.MENTAL_HEALTH, Sensitivity.GENETIC)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((), ()),
        ((1,), (1,)),
        ((3, 1, 3, 2, 1), (3, 1, 2)),
        (("b", "a", "b"), ("b", "a")),
        ((Discipline.NURSE, Discipline.NURSE), (Discipline.NURSE,)),
    ],
)
def test_distinct_drops_repeats_and_keeps_first_seen_order(
    values: tuple[object, ...], expected: tuple[object, ...]
) -> None:
    assert distinct(values) == expected


def test_commands_are_frozen() -> None:
    command = build(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A")
    with pytest.raises(ValueError, match="frozen"):
        command.name = "other"  # type: ignore[misc]


BIDI_TITLE = "Warfarin \u202eexe.evil"


@pytest.mark.parametrize(
    ("model", "fields", "argument"),
    [
        (CreateTeam, {"team_id": "t", "actor_id": "u", "actor_name": "A"}, "name"),
        (CreateCarePlan, {"plan_id": "p", "patient_id": "x", "team_id": "t"}, "title"),
        (AddGoal, {"plan_id": "p", "goal_id": "g", "description": "d"}, "target"),
        (RecordHuddleNote, {"huddle_id": "h", "note_id": "n"}, "text"),
        (CreateTeam, {"name": "n", "actor_id": "u", "actor_name": "A"}, "team_id"),
    ],
)
@pytest.mark.parametrize(
    ("hidden", "named"),
    [
        ("\u202e", "a bidirectional-control character (U+202E)"),
        ("\u200b", "a zero-width character (U+200B)"),
        ("\x1b", "a control character (U+001B)"),
    ],
)
def test_hidden_characters_in_any_text_are_refused_naming_the_argument_not_the_value(
    model: type[commands.Command],
    fields: dict[str, object],
    argument: str,
    hidden: str,
    named: str,
) -> None:
    error = _invalid(model, **fields, **{argument: f"Jane{hidden}Patient"})
    camel = "".join(
        part if i == 0 else part.capitalize() for i, part in enumerate(argument.split("_"))
    )
    assert error.message == f"{camel} must not contain {named}, found at character 5."
    assert error.extensions == {"code": "BAD_USER_INPUT"}
    assert "Jane" not in error.message and "Patient" not in error.message


def test_a_title_with_a_right_to_left_override_is_refused() -> None:
    error = _invalid(CreateCarePlan, plan_id="p", patient_id="x", team_id="t", title=BIDI_TITLE)
    assert error.message.startswith("title must not contain a bidirectional-control character")


def test_text_is_stored_nfc_normalised() -> None:
    command = build(CreateTeam, team_id="t-1", name="Jose\u0301", actor_id="u", actor_name="A")
    assert command.name == "Jos\u00e9"


def test_nfc_that_lengthens_text_past_its_ceiling_is_refused() -> None:
    # U+0958 has no composed form: NFC writes it as two code points.
    title = "x" * (commands.TITLE_MAX - 1) + "\u0958"
    error = _invalid(CreateCarePlan, plan_id="p", patient_id="x", team_id="t", title=title)
    assert error.message == f"title must be at most {commands.TITLE_MAX} characters."


def test_notes_details_and_summaries_may_span_lines_with_tabs_but_titles_may_not() -> None:
    note = build(RecordHuddleNote, huddle_id="h", note_id="n", text="BP\t140/90\r\nrecheck")
    detail = build(
        AddIntervention,
        plan_id="p",
        intervention_id="i",
        kind="THERAPY",
        tier="FIRST_LINE",
        title="t",
        responsible_discipline="NURSE",
        detail="one\ntwo",
    )
    error = _invalid(CreateCarePlan, plan_id="p", patient_id="x", team_id="t", title="a\nb")

    assert note.text == "BP\t140/90\nrecheck"
    assert detail.detail == "one\ntwo"
    assert error.message == (
        "title must not contain a control character (U+000A), found at character 2; "
        "only notes may span lines."
    )


def test_a_reason_is_one_line() -> None:
    error = _invalid(AddGoal, plan_id="p", goal_id="g", description="walk\ndaily")
    assert "description must not contain a control character (U+000A)" in error.message


@pytest.mark.parametrize(
    ("model", "fields", "argument"),
    [
        (
            AssignRole,
            {"team_id": "t", "name": "n", "discipline": "NURSE", "actor_id": "a"},
            "userId",
        ),
        (RaiseActionItem, {"huddle_id": "h", "task_id": "t", "title": "x"}, "assigneeId"),
    ],
)
@pytest.mark.parametrize("user_id", ["u-ph\u0430rm", "u pharm", "-lead", "\u00fc-nurse", "a/b"])
def test_a_user_id_outside_the_safe_form_is_refused_naming_the_argument(
    model: type[commands.Command], fields: dict[str, object], argument: str, user_id: str
) -> None:
    snake = {"userId": "user_id", "assigneeId": "assignee_id"}[argument]
    error = _invalid(model, **fields, **{snake: user_id})
    assert error.message.startswith(f"{argument} must be 1 to 128 ASCII letters, digits")
    assert user_id not in error.message


def test_a_user_id_in_the_safe_form_passes() -> None:
    command = build(
        AssignRole, team_id="t", user_id="auth0|5f1c", name="n", discipline="NURSE", actor_id="a"
    )
    assert command.user_id == "auth0|5f1c"
