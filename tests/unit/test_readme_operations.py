"""Every GraphQL operation the README shows is valid against the schema the API serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import parse, validate

from services.api.graphql.schema import schema

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```graphql[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
OPERATIONS = _BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_shows_board_queries_and_subscriptions() -> None:
    text = "\n".join(OPERATIONS)
    assert "board(teamId" in text and "huddleAgenda" in text and "boardChanged" in text


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.split("{")[0].strip()[:40])
def test_each_readme_operation_validates_against_the_served_schema(operation: str) -> None:
    errors = validate(schema._schema, parse(operation))
    assert errors == [], [e.message for e in errors]
