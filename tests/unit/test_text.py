"""Typed text and user ids: what is normalised, what is refused, and that a refusal never
quotes the text."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.text import (
    TextProblem,
    check_user_id,
    clean,
    escape_hidden_json,
    is_hidden,
    reveal,
    user_id_key,
)


@pytest.mark.parametrize(
    ("char", "named"),
    [
        ("\u202e", "bidirectional-control character (U+202E)"),
        ("\u2067", "bidirectional-control character (U+2067)"),
        ("\u200b", "zero-width character (U+200B)"),
        ("\ufeff", "zero-width character (U+FEFF)"),
        ("\x1b", "control character (U+001B)"),
        ("\x00", "NUL character (U+0000)"),
        ("\x85", "control character (U+0085)"),
        ("\u00ad", "invisible formatting character (U+00AD)"),
        ("\U000e0041", "invisible formatting character (U+E0041)"),
        ("\ud800", "lone surrogate (U+D800)"),
        ("\u2028", "line separator (U+2028)"),
        ("\u2029", "paragraph separator (U+2029)"),
        # Letters and marks that render as nothing: a name of Hangul fillers reads blank.
        ("\u3164", "invisible filler character (U+3164)"),
        ("\u115f", "invisible filler character (U+115F)"),
        ("\uffa0", "invisible filler character (U+FFA0)"),
        ("\u034f", "invisible filler character (U+034F)"),
        ("\u17b4", "invisible filler character (U+17B4)"),
    ],
)
@pytest.mark.parametrize("multiline", [False, True])
def test_hidden_characters_are_refused_by_code_point_and_position(
    char: str, named: str, multiline: bool
) -> None:
    with pytest.raises(TextProblem) as refused:
        clean(f"Warfarin{char} secret", multiline=multiline)
    message = str(refused.value)
    assert named in message and "character 9" in message
    assert "Warfarin" not in message and "secret" not in message


@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_line_breaks_and_tabs_only_in_multiline_text(char: str) -> None:
    with pytest.raises(TextProblem, match="only notes may span lines"):
        clean(f"a{char}b")
    assert clean(f"a{char}b", multiline=True) == ("a\nb" if char == "\r" else f"a{char}b")


def test_carriage_returns_become_newlines_in_multiline_text() -> None:
    assert clean("one\r\ntwo\rthree\n", multiline=True) == "one\ntwo\nthree\n"


def test_text_is_nfc_normalised() -> None:
    decomposed = "Jose\u0301 Mu\u0308ller"
    assert clean(decomposed) == "José Müller"
    assert unicodedata.is_normalized("NFC", clean(decomposed))


def test_ordinary_text_in_many_scripts_passes_unchanged() -> None:
    for text in (
        "Metformin 500 mg",
        "Ærø — “quoted” ½",
        "Иванов",
        "王小明",
        "مريض",
        "🙂",
        "김민지",
    ):
        assert clean(text) == text


@given(st.text())
def test_clean_text_holds_nothing_it_refuses(text: str) -> None:
    try:
        cleaned = clean(text, multiline=True)
    except TextProblem:
        return
    assert unicodedata.is_normalized("NFC", cleaned)
    assert clean(cleaned, multiline=True) == cleaned


@given(st.text(), st.booleans())
def test_clean_refuses_exactly_the_text_holding_a_hidden_character(
    text: str, multiline: bool
) -> None:
    # Whichever way it checks (in C for ordinary text, character by character otherwise),
    # clean refuses a text if and only if it holds a character is_hidden names.
    read = text.replace("\r\n", "\n").replace("\r", "\n") if multiline else text
    allowed = "\t\n" if multiline else ""
    hidden = any(is_hidden(c) and c not in allowed for c in read)
    try:
        cleaned = clean(text, multiline=multiline)
    except TextProblem:
        assert hidden
        return
    assert not hidden
    assert cleaned == unicodedata.normalize("NFC", read)


@pytest.mark.parametrize(
    ("text", "multiline"),
    [
        ("Metformin 500 mg, twice daily", False),
        ("Иванов 王小明 مريض 🙂 김민지 Ærø ½", False),
        ("Huddle:\n\t- titrate insulin\r\n\t- recheck A1c in 3 months", True),
    ],
)
def test_ordinary_text_is_checked_without_a_walk_in_python(
    text: str, multiline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 10,000-character note walked a character at a time costs milliseconds of the
    # API's CPU; ordinary text is checked in C.
    def walked(char: str) -> None:
        raise AssertionError("clean walked ordinary text a character at a time")

    monkeypatch.setattr("services.common.text._describe", walked)
    assert clean(text, multiline=multiline)


@pytest.mark.parametrize(
    "user_id",
    ["u-pharm", "auth0|5f1c2a", "jane.doe@example.org", "3f2b9c1e-0d4a-4c1b-9a55-7e1f2d3c4b5a"],
)
def test_user_ids_of_common_identity_providers_pass(user_id: str) -> None:
    assert check_user_id(user_id) == user_id


@pytest.mark.parametrize(
    "user_id",
    ["", "u-ph\u0430rm", "-lead", "u pharm", "u-pharm\u200b", "x" * 129, "ü-nurse", "a/b"],
)
def test_user_ids_outside_the_safe_form_are_refused(user_id: str) -> None:
    with pytest.raises(TextProblem, match="ASCII letters, digits"):
        check_user_id(user_id)


def test_ids_differing_only_in_case_share_a_key() -> None:
    assert user_id_key("Dr.Lee") == user_id_key("dr.lee") != user_id_key("dr.lea")


@pytest.mark.parametrize(
    ("one", "other"),
    [("nurse.b0b", "nurse.bob"), ("ward1", "wardl"), ("Ian", "lan"), ("auth0|x", "auth0lx")],
)
def test_ids_differing_only_in_ascii_look_alikes_share_a_key(one: str, other: str) -> None:
    assert user_id_key(one) == user_id_key(other)


def test_rn_reads_as_m() -> None:
    assert user_id_key("dr.rnoore") == user_id_key("dr.moore")


def test_distinct_uuids_keep_distinct_keys() -> None:
    ids = ["3f2b9c1e-0d4a-4c1b-9a55-7e1f2d3c4b5a", "3f2b9c1e-0d4a-4c1b-9a55-7e1f2d3c4b5b"]
    assert user_id_key(ids[0]) != user_id_key(ids[1])


def test_reveal_shows_hidden_characters_by_code_point_and_leaves_other_text_alone() -> None:
    assert reveal("Ærø\u202eevil\x1b[0m\ttab\n") == "Ærø<U+202E>evil<U+001B>[0m<U+0009>tab<U+000A>"
    assert reveal("王小明 — “ok” 🙂") == "王小明 — “ok” 🙂"
    # Fillers are printable to Python, yet render as nothing: shown too.
    assert reveal("\u3164\u3164") == "<U+3164><U+3164>"
    assert escape_hidden_json('{"v":"\u3164"}') == '{"v":"\\u3164"}'


@given(st.recursive(st.text(), lambda inner: st.lists(inner, max_size=3), max_leaves=5))
def test_escaped_json_is_the_same_value_with_nothing_hidden_in_it(value: object) -> None:
    document = json.dumps({"v": value}, ensure_ascii=False, indent=2)
    escaped = escape_hidden_json(document)
    assert json.loads(escaped) == {"v": value}
    assert not any(char not in "\t\n\r" and is_hidden(char) for char in escaped)
