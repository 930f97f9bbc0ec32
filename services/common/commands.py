"""The base of every command, the text limits of the API, and readable validation errors.

Commands are imperative (`AddGoal`), frozen and closed to unknown fields. Text is
trimmed, must not be empty, and has a ceiling so no single field can swell a stream;
the limits are listed in the README's API notes. It is NFC-normalised and may hide
nothing (services.common.text): control, bidirectional-control and zero-width characters
are refused, tabs and newlines only in multi-line text (notes, details, summaries). A field
that names a user (`UserId`) holds a user id in the safe ASCII form tokens' `sub` has.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from services.common import text
from services.common.errors import InvalidInput

T = TypeVar("T")

# Ceilings, in characters, per kind of text.
NAME_MAX = 200  # team, member and patient names
TITLE_MAX = 200  # plan, intervention, task and action-item titles
MRN_MAX = 64
SHORT_TEXT_MAX = 1_000  # goal description, goal target, reasons
LONG_TEXT_MAX = 4_000  # intervention detail, review summary
NOTE_MAX = 10_000  # huddle notes
ID_MAX = 128


def _typed(max_length: int, *, multiline: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            cleaned = text.clean(value, multiline=multiline)
        except text.TextProblem as problem:
            # The problem names a code point and a position, never the text around it.
            raise PydanticCustomError(
                "hidden_character", "{problem}", {"problem": str(problem)}
            ) from None
        # NFC may lengthen a few characters, so the ceiling holds for what is stored.
        if len(cleaned) > max_length:
            raise PydanticCustomError("string_too_long", "too long", {"max_length": max_length})
        return cleaned

    return check


def _text(max_length: int, *, multiline: bool = False) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(_typed(max_length, multiline=multiline)),
    ]


def _user_id(value: str) -> str:
    try:
        return text.check_user_id(value)
    except text.TextProblem as problem:
        raise PydanticCustomError("user_id", "{problem}", {"problem": str(problem)}) from None


Name = _text(NAME_MAX)
Title = _text(TITLE_MAX)
Mrn = _text(MRN_MAX)
ShortText = _text(SHORT_TEXT_MAX)
LongText = _text(LONG_TEXT_MAX, multiline=True)
NoteText = _text(NOTE_MAX, multiline=True)
IdText = _text(ID_MAX)
# A user named by a command (a member added, an assignee): the form sign-in tokens'
# `sub` has, so no id can pass for another by an invisible or look-alike character.
UserId: Any = Annotated[IdText, AfterValidator(_user_id)]


def _blank_is_absent(value: object) -> object:
    # Forms send "" for an optional field left empty; that means "not given".
    return None if isinstance(value, str) and not value.strip() else value


def _optional(max_length: int, *, multiline: bool = False) -> Any:
    return Annotated[
        _text(max_length, multiline=multiline) | None, BeforeValidator(_blank_is_absent)
    ]


OptionalShortText = _optional(SHORT_TEXT_MAX)
OptionalLongText = _optional(LONG_TEXT_MAX, multiline=True)


def distinct(values: tuple[T, ...]) -> tuple[T, ...]:
    """The values without repeats, in first-seen order (for tag and category lists)."""
    return tuple(dict.fromkeys(values))


class Command(BaseModel):
    """A request to change one aggregate, validated before the domain sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


C = TypeVar("C", bound=Command)
_CAMEL = re.compile(r"_([a-z])")


def _argument(loc: tuple[int | str, ...]) -> str:
    # Report the GraphQL argument name (camelCase), which is what the caller typed.
    head = loc[0] if loc else "input"
    return _CAMEL.sub(lambda m: m.group(1).upper(), str(head))


def _explain(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return "must name at least one value"
    message: str = error["msg"]
    return message[0].lower() + message[1:] if message else kind


def build(model: type[C], **fields: Any) -> C:
    """The command, or InvalidInput naming each bad argument and what is wrong with it.

    The message never quotes the value: it may be PHI.
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [f"{_argument(e['loc'])} {_explain(e)}" for e in exc.errors()]
        raise InvalidInput("; ".join(problems) + ".") from None
