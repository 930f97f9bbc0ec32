"""Cursor paging of the lists that grow (a team's patients and huddles): opaque cursors
that name the store position of the last record a page held, so records added later
never move a page, and page sizes within bounds."""

from __future__ import annotations

import base64
import binascii

from services.common.errors import InvalidInput

MAX_PAGE = 100
DEFAULT_PAGE = 50


def size(first: int | None) -> int:
    """The page size asked for; BAD_USER_INPUT outside 1..MAX_PAGE."""
    wanted = DEFAULT_PAGE if first is None else first
    if not 1 <= wanted <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}.")
    return wanted


def encode(kind: str, position: int) -> str:
    raw = f"{kind}|{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str | None) -> int:
    """The position a cursor of this list names (0 for none); BAD_USER_INPUT for anything
    else, a cursor of another list included."""
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition("|")
        position = int(number)
        if prefix != kind or position < 0:
            raise ValueError("not ours")
        return position
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("'after' is not a cursor this API gave out for this list.") from None
