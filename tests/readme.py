"""Reading the README's walk-throughs: its fenced blocks, the First session's steps, and its
example dates moved to another day."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# The README's example dates were written on this day; the walk moves them by as many days
# as have passed since, so the walk-through keeps its meaning (a review in six weeks).
WRITTEN_ON = date(2026, 11, 22)
# A date, alone or starting a date-time ("2026-11-26T08:30:00-05:00", "...Z"). No word
# boundaries: "6T" is none, and a date-time's date would be left behind. The time and
# offset are kept as written, so only the calendar day moves.
_ISO_DATE = re.compile(
    r"(?<!\d)(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?(?!\d)"
)
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
# Which mutation's result fills which placeholder of later steps.
CAPTURES = {
    "createTeam": "TEAM_ID",
    "enrollPatient": "PATIENT_ID",
    "createCarePlan": "PLAN_ID",
    "scheduleHuddle": "HUDDLE_ID",
    "grantConsent": "CONSENT_ID",
}


@dataclass
class Step:
    query: str
    variables: str
    expect: str | None


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block that names its language."""
    return _BLOCK.findall(text)


def first_session_text() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## First session")
    return text[start : text.index("\n## ", start + 1)]


def first_session() -> tuple[tuple[str, str], list[Step]]:
    blocks = fenced_blocks(first_session_text())
    [sign_in] = [body for lang, body in blocks if lang == "sh"]
    argv = shlex.split(sign_in.strip())
    user = (argv[argv.index("--sub") + 1], argv[argv.index("--name") + 1])
    steps = []
    for (lang, body), (next_lang, next_body) in pairwise(blocks):
        if lang == "graphql":
            assert next_lang == "json", f"operation without variables:\n{body}"
            expect = re.search(r"^# expect: (\w+)", body, re.MULTILINE)
            steps.append(Step(body, next_body, expect.group(1) if expect else None))
    return user, steps


def shifted(text: str, days: int) -> str:
    """`text` with every date and date-time literal `days` later, each in its own format."""

    def move(m: re.Match[str]) -> str:
        try:
            day = date.fromisoformat(m.group(1))
        except ValueError as exc:
            raise ValueError(f"{m.group(0)!r} looks like a date but is none: {exc}") from exc
        return (day + timedelta(days=days)).isoformat() + (m.group(2) or "")

    return _ISO_DATE.sub(move, text)


_ANY_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
_SUBSHELL = re.compile(r"\$\((\S*carecoord\b[^)]*)\)")


def carecoord_commands() -> list[list[str]]:
    """Every `carecoord` command the README shows to run, as written, in order, once each:
    the lines of its shell blocks (continuations joined, comments dropped, `$(...)` opened)
    and the `$ ` lines of its output blocks. A `> FILE` redirection stays in the argv."""
    found: list[list[str]] = []
    for lang, body in _ANY_BLOCK.findall(README.read_text(encoding="utf-8")):
        for line in body.replace("\\\n", " ").splitlines():
            if lang != "sh":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if m := _SUBSHELL.search(line):
                line = m.group(1)
            argv = shlex.split(line, comments=True)
            if argv and argv[0].rsplit("/", 1)[-1] == "carecoord" and argv not in found:
                found.append(argv)
    return found
