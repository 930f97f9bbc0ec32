"""Text a person typed, and the user ids they name: what is normalised and what is refused
(pure, no I/O).

Free text is NFC-normalised, so the same words are stored as the same code points. It may
not hide anything: control characters, bidirectional overrides and isolates, zero-width
and other invisible format characters, lone surrogates and line or paragraph separators
are refused, because they make a title, a name or a reason read differently from what is
stored (U+202E turns "evil.exe" into "exe.live") or smuggle invisible text into exports;
so are the fillers that render as nothing (Hangul fillers such as U+3164, U+034F).
Multi-line text (notes, details, summaries) may hold tabs and newlines; a carriage
return there is read as a newline.

A user id is what a sign-in token's `sub` and a roster name: printable ASCII letters,
digits and `. _ @ : | + = -`, starting with a letter or digit. ASCII only, so a
Cyrillic "a" (U+0430) can never pass for a Latin one. Two ids that differ only in letter
case or in ASCII look-alikes (0/O, 1/l/I/|, rn/m: the ASCII entries of Unicode's
confusables, UTS #39) are the same person to a reader, so a roster refuses the second
(`user_id_key`). A confusables library would add nothing here: ids are ASCII only.
"""

from __future__ import annotations

import re
import unicodedata

USER_ID_MAX = 128
USER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@:|+=\-]{{0,{USER_ID_MAX - 1}}}")

# Unicode general categories no typed text needs: controls, format characters (bidi
# controls, zero-width characters, tags, the BOM), surrogates, line/paragraph separators.
_REFUSED = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# Default-ignorable letters and marks that render as nothing (Hangul fillers, the combining
# grapheme joiner, Khmer inherent vowels): a name made of them reads blank, and they hide
# a difference between two names. Modern Korean text (NFC syllables) never needs them.
_FILLERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
_FILLER = re.compile(f"[{''.join(sorted(_FILLERS))}]")
_MULTILINE_ALLOWED = frozenset("\t\n")
_NEWLINES = re.compile(r"\r\n?")


class TextProblem(ValueError):
    """What is wrong with a piece of text, in words that never quote it."""


def _describe(char: str) -> str | None:
    if char in _BIDI:
        kind = "a bidirectional-control character"
    elif char in _ZERO_WIDTH:
        kind = "a zero-width character"
    elif char in _FILLERS:
        kind = "an invisible filler character"
    elif char == "\x00":
        kind = "a NUL character"
    else:
        category = unicodedata.category(char)
        if category not in _REFUSED:
            return None
        kind = _REFUSED[category]
    return f"{kind} (U+{ord(char):04X})"


def clean(value: str, *, multiline: bool = False) -> str:
    """`value` NFC-normalised, or TextProblem naming the first character it may not hold
    (by code point and position, never the text around it)."""
    if multiline:
        value = _NEWLINES.sub("\n", value)
    # The common case, checked in C: text with nothing `_describe` names (every character
    # it names is one `str.isprintable` refuses, or a filler) needs no walk in Python.
    if plain(value.replace("\t", "").replace("\n", "") if multiline else value):
        return unicodedata.normalize("NFC", value)
    for position, char in enumerate(value, start=1):
        if multiline and char in _MULTILINE_ALLOWED:
            continue
        if (what := _describe(char)) is not None:
            where = "" if multiline or char not in "\t\n\r" else "; only notes may span lines"
            raise TextProblem(f"must not contain {what}, found at character {position}{where}")
    return unicodedata.normalize("NFC", value)


def plain(value: str) -> bool:
    """Whether `value` holds nothing `clean` would refuse in multi-line text nor a tab or
    line break: the common case, checked in C."""
    return value.isprintable() and _FILLER.search(value) is None


def check_user_id(value: str) -> str:
    """`value` if it is a user id in the safe form, else TextProblem saying what the form is."""
    if USER_ID.fullmatch(value):
        return value
    raise TextProblem(
        f"must be 1 to {USER_ID_MAX} ASCII letters, digits or . _ @ : | + = -, "
        "starting with a letter or digit"
    )


# The ASCII characters a reader takes for one another (UTS #39 confusables.txt maps 0 to O,
# and 1, I and | to l; "rn" reads as "m"). Applied after casefolding, so "I" is "i" here.
_LOOK_ALIKES = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l"})


def user_id_key(value: str) -> str:
    """What two user ids are compared by when a roster checks for look-alikes: letter case
    and the ASCII look-alikes folded, so "Dr.Lee", "dr.lee" and "dr.1ee" share a key."""
    return value.casefold().translate(_LOOK_ALIKES).replace("rn", "m")


def is_hidden(char: str) -> bool:
    """Whether `clean` refuses `char` in one-line text (tabs and line breaks included)."""
    return char in "\t\n\r" or _describe(char) is not None


def reveal(value: str) -> str:
    """`value` with each character `clean` would refuse (and tabs and line breaks) written
    out as `<U+XXXX>`: for output where a hidden character must neither act (an ANSI escape
    in a terminal, U+202E reordering a line) nor vanish unseen, such as a CSV cell holding
    text stored before it was refused. Ordinary text comes back unchanged."""
    if plain(value):  # the common case, checked in C
        return value
    return "".join(f"<U+{ord(c):04X}>" if is_hidden(c) else c for c in value)


def escape_hidden_json(document: str) -> str:
    """A JSON document with every hidden character inside its strings written as a `\\uXXXX`
    escape: the same JSON value, but nothing in it reorders or colours a line on a terminal
    or in an editor. Tabs and newlines are left: JSON escapes them inside strings already,
    and outside strings they are the document's own whitespace."""
    if plain(document):
        return document
    out = []
    for char in document:
        if char in "\t\n\r" or _describe(char) is None:
            out.append(char)
            continue
        code = ord(char)
        if code > 0xFFFF:  # JSON spells an astral code point as its UTF-16 surrogate pair
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)
