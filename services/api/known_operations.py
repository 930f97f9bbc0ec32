"""The operation names the project ships (the board page, the README's walk-through, the
demo): the only client-sent names /metrics uses as label values. Any other name is counted
as "other", so a client cannot mint label values (tests/unit/test_known_operations.py
keeps this list in step with the documents that name operations)."""

from __future__ import annotations

# The board page (services/api/static/board.js).
BOARD_PAGE = frozenset({"HuddleBoard", "HuddleBoardChanged", "HuddleAgendaPanel"})

# The README's walk-through and operator sections.
README = frozenset(
    {
        "Board",
        "BuildPlan",
        "Consent",
        "CreateTeam",
        "Enroll",
        "Fresh",
        "Glucose",
        "HbA1c",
        "Huddle",
        "Live",
        "NewPlan",
        "Patient",
        "Proofs",
        "Queue",
        "Resume",
        "Review",
        "Revoke",
        "Roster",
        "Schedule",
        "SignIns",
        "Signals",
        "Stale",
        "Trail",
    }
)

# The demo's and the tests' clients.
CLIENTS = frozenset({"Demo", "Me"})

KNOWN = BOARD_PAGE | README | CLIENTS

# Label values for what is not a shipped name.
ANONYMOUS = "anonymous"
OTHER = "other"


def label(name: str | None) -> str:
    """The label value of a client-sent operation name: a shipped name as it is, no name
    "anonymous", anything else "other"."""
    if not name:
        return ANONYMOUS
    return name if name in KNOWN else OTHER
