"""The pure parts of discovery: page cursors, page sizes, search patterns, task sources as
GraphQL names them, and the board's filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.common import Discipline
from schemas.task import TASK_SOURCES
from services.api.graphql import board, paging
from services.api.graphql.scalars import TaskSource
from services.common.directory import like_prefix
from services.common.errors import InvalidInput
from services.tasks.domain import Task


def test_a_cursor_names_the_position_it_was_given_for_its_own_list_only() -> None:
    cursor = paging.encode("patients", 12345)

    assert paging.decode("patients", cursor) == 12345
    assert paging.decode("patients", None) == 0
    assert "12345" not in cursor  # opaque: clients do not build their own
    with pytest.raises(InvalidInput, match="not a cursor"):
        paging.decode("huddles", cursor)


@pytest.mark.parametrize(
    "cursor",
    ["", "not-a-cursor", "!!!", paging.encode("patients", 0)[:-1] + "%", "cGF0aWVudHN8LTE"],
    ids=["empty", "words", "not-base64", "mangled", "negative"],
)
def test_a_cursor_the_api_did_not_give_out_is_bad_user_input(cursor: str) -> None:
    with pytest.raises(InvalidInput):
        paging.decode("patients", cursor)


def test_page_sizes_run_from_one_to_the_maximum_and_default_to_fifty() -> None:
    assert (paging.size(None), paging.size(1), paging.size(100)) == (50, 1, 100)
    for wrong in (0, -1, 101):
        with pytest.raises(InvalidInput, match="between 1 and 100"):
            paging.size(wrong)


def test_a_search_is_matched_literally_whatever_like_would_make_of_it() -> None:
    assert like_prefix("50%_a\\b") == "50\\%\\_a\\\\b"
    assert like_prefix("Dana") == "Dana"


def test_every_task_source_of_the_events_has_a_graphql_name() -> None:
    assert [s.value for s in TaskSource] == list(TASK_SOURCES)
    assert TaskSource("action_item").name == "ACTION_ITEM"


def test_the_boards_filters_keep_only_cards_matching_every_one_given() -> None:
    card = Task(
        id="t-1",
        team_id="team-1",
        title="Call",
        source="manual",
        updated_at=datetime.now(UTC),
        assignee_id="rn-1",
        patient_id="p-1",
        discipline=Discipline.NURSE,
    )

    assert board._wanted(card, None, None, None)
    assert board._wanted(card, "rn-1", "p-1", Discipline.NURSE)
    assert not board._wanted(card, "rn-2", None, None)
    assert not board._wanted(card, "rn-1", "p-2", None)
    assert not board._wanted(card, None, None, Discipline.PHYSICIAN)
