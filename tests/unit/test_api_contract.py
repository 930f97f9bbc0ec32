"""The served GraphQL schema keeps the public contract of shared/API.md: its enums, scalars, types,
fields, arguments and defaults, by name and by type string. The server may add more (fields,
optional arguments, types), never less, and never a required argument clients do not send."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    is_non_null_type,
    print_ast,
)
from graphql.utilities import get_default_value_ast

from services.api.graphql.schema import schema as served_strawberry_schema

CONTRACT_PATH = Path(__file__).resolve().parents[3] / "shared" / "API.md"

# Parts of the contract that later work will add. Remove each entry in the change that makes its
# capability land: test_every_pending_entry_is_still_missing_from_the_served_schema fails as soon
# as a pending type or field is served, so the list cannot go stale.
PENDING_TYPES: set[str] = set()
PENDING_FIELDS: set[tuple[str, str]] = set()

_GRAPHQL_BLOCK = re.compile(r"^```graphql[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def contract_sdl_from(markdown: str) -> str:
    blocks = _GRAPHQL_BLOCK.findall(markdown)
    assert len(blocks) == 1, f"API.md should hold exactly one ```graphql block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def contract_sdl() -> str:
    if not CONTRACT_PATH.is_file():
        pytest.skip(f"API contract not found at {CONTRACT_PATH} (CI always has it)")
    return contract_sdl_from(CONTRACT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def contract(contract_sdl: str) -> GraphQLSchema:
    return build_schema(contract_sdl)


@pytest.fixture(scope="module")
def served() -> GraphQLSchema:
    return served_strawberry_schema._schema


def _kind(named: GraphQLNamedType) -> str:
    kinds = {
        GraphQLObjectType: "object type",
        GraphQLInputObjectType: "input type",
        GraphQLInterfaceType: "interface",
        GraphQLUnionType: "union",
        GraphQLEnumType: "enum",
        GraphQLScalarType: "scalar",
    }
    return next((kind for cls, kind in kinds.items() if isinstance(named, cls)), "unknown")


def _user_types(schema: GraphQLSchema) -> dict[str, GraphQLNamedType]:
    return {name: t for name, t in schema.type_map.items() if not name.startswith("__")}


def _default(value: GraphQLArgument | GraphQLInputField) -> str | None:
    """The default as a printed literal, with "no default" on a nullable input read as `null`.

    A client cannot tell the two apart (omitting a nullable argument and sending null mean the
    same to it), and strawberry prints `= null` for every Optional argument defaulting to None,
    so only a real difference (`[]` against `null`, `false` against none) counts."""
    literal = get_default_value_ast(value)
    if literal is not None:
        return print_ast(literal)
    return None if is_non_null_type(value.type) else "null"


def _shown(default: str | None) -> str:
    return "no default" if default is None else f"default {default}"


def _compare_inputs(
    where: str,
    contract_inputs: dict[str, GraphQLArgument] | dict[str, GraphQLInputField],
    served_inputs: dict[str, GraphQLArgument] | dict[str, GraphQLInputField],
) -> list[str]:
    """Arguments of a field, or fields of an input type: same type and default, no extra
    required one."""
    problems: list[str] = []
    for name, wanted in contract_inputs.items():
        got = served_inputs.get(name)
        if got is None:
            problems.append(f"{where}({name}): missing, API.md has {name}: {wanted.type}")
            continue
        if str(got.type) != str(wanted.type):
            problems.append(f"{where}({name}): served type {got.type}, API.md has {wanted.type}")
        if _default(got) != _default(wanted):
            problems.append(
                f"{where}({name}): served with {_shown(_default(got))}, "
                f"API.md has {_shown(_default(wanted))}"
            )
    for name, extra in served_inputs.items():
        if name not in contract_inputs and is_non_null_type(extra.type) and _default(extra) is None:
            problems.append(
                f"{where}({name}): extra required {name}: {extra.type} that clients of API.md "
                "do not send"
            )
    return problems


def enum_mismatches(
    contract: GraphQLSchema, served: GraphQLSchema, pending: set[str] = PENDING_TYPES
) -> list[str]:
    problems: list[str] = []
    for name, wanted in _user_types(contract).items():
        if not isinstance(wanted, GraphQLEnumType) or name in pending:
            continue
        got = served.type_map.get(name)
        if not isinstance(got, GraphQLEnumType):
            shown = "missing" if got is None else f"a {_kind(got)}"
            problems.append(f"enum {name}: {shown} in the served schema")
            continue
        missing = [v for v in wanted.values if v not in got.values]
        extra = [v for v in got.values if v not in wanted.values]
        if missing:
            problems.append(f"enum {name}: served without {', '.join(missing)}")
        if extra:
            problems.append(f"enum {name}: served with values not in API.md: {', '.join(extra)}")
    return problems


def type_mismatches(
    contract: GraphQLSchema,
    served: GraphQLSchema,
    pending_types: set[str] = PENDING_TYPES,
    pending_fields: set[tuple[str, str]] = PENDING_FIELDS,
) -> list[str]:
    """Every non-pending object and input type of the contract, field by field and argument by
    argument; extras in the served schema are fine unless they are required inputs."""
    problems: list[str] = []
    for name, wanted in _user_types(contract).items():
        if name in pending_types or not isinstance(
            wanted, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType
        ):
            continue
        got = served.type_map.get(name)
        if got is None:
            problems.append(f"{_kind(wanted)} {name}: missing from the served schema")
            continue
        if _kind(got) != _kind(wanted):
            problems.append(f"{name}: served as {_kind(got)}, API.md has {_kind(wanted)}")
            continue
        if isinstance(wanted, GraphQLInputObjectType):
            assert isinstance(got, GraphQLInputObjectType)
            problems += _compare_inputs(name, wanted.fields, got.fields)
            continue
        assert isinstance(wanted, GraphQLObjectType | GraphQLInterfaceType)
        assert isinstance(got, GraphQLObjectType | GraphQLInterfaceType)
        for field_name, wanted_field in wanted.fields.items():
            if (name, field_name) in pending_fields:
                continue
            where = f"{name}.{field_name}"
            got_field = got.fields.get(field_name)
            if got_field is None:
                problems.append(f"{where}: missing, API.md has {field_name}: {wanted_field.type}")
                continue
            if str(got_field.type) != str(wanted_field.type):
                problems.append(
                    f"{where}: served type {got_field.type}, API.md has {wanted_field.type}"
                )
            problems += _compare_inputs(where, wanted_field.args, got_field.args)
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} mismatch(es) with {CONTRACT_PATH}:\n  " + "\n  ".join(problems)


def test_every_contract_enum_is_served_with_exactly_the_same_values(
    contract: GraphQLSchema, served: GraphQLSchema
) -> None:
    problems = enum_mismatches(contract, served)
    assert not problems, _report(problems)


def test_every_contract_type_is_served_with_the_same_fields_arguments_and_defaults(
    contract: GraphQLSchema, served: GraphQLSchema
) -> None:
    problems = type_mismatches(contract, served)
    assert not problems, _report(problems)


def test_the_date_and_datetime_scalars_are_served(served: GraphQLSchema) -> None:
    problems = [
        f"scalar {name}: {'missing' if served.type_map.get(name) is None else 'not a scalar'}"
        for name in ("Date", "DateTime")
        if not isinstance(served.type_map.get(name), GraphQLScalarType)
    ]
    assert not problems, _report(problems)


def test_every_pending_entry_is_still_missing_from_the_served_schema(served: GraphQLSchema) -> None:
    landed = [f"type {name}" for name in sorted(PENDING_TYPES) if name in served.type_map]
    for type_name, field_name in sorted(PENDING_FIELDS):
        served_type = served.type_map.get(type_name)
        if isinstance(served_type, GraphQLObjectType) and field_name in served_type.fields:
            landed.append(f"field {type_name}.{field_name}")
    assert not landed, "now served, so remove from PENDING_TYPES/PENDING_FIELDS:\n  " + (
        "\n  ".join(landed)
    )


def test_every_pending_entry_is_part_of_the_contract(contract: GraphQLSchema) -> None:
    unknown = [f"type {name}" for name in sorted(PENDING_TYPES) if name not in contract.type_map]
    for type_name, field_name in sorted(PENDING_FIELDS):
        contract_type = contract.type_map.get(type_name)
        if not isinstance(contract_type, GraphQLObjectType):
            unknown.append(f"field {type_name}.{field_name} (no type {type_name} in API.md)")
        elif field_name not in contract_type.fields:
            unknown.append(f"field {type_name}.{field_name}")
    assert not unknown, "pending but not in API.md (typo?):\n  " + "\n  ".join(unknown)


def test_the_comparison_reports_a_field_renamed_in_the_contract(
    contract_sdl: str, served: GraphQLSchema
) -> None:
    """The check can fail: a copy of API.md with Patient.mrn renamed is caught, all at once."""
    altered_sdl, renamed = re.subn(
        r"(type Patient \{[^}]*?)\bmrn: String!", r"\1medicalRecordNumber: String!", contract_sdl
    )
    assert renamed == 1, "Patient.mrn no longer in API.md; pick another field to rename"
    altered = build_schema(altered_sdl)
    baseline = set(type_mismatches(build_schema(contract_sdl), served))

    new = set(type_mismatches(altered, served)) - baseline

    assert new == {"Patient.medicalRecordNumber: missing, API.md has medicalRecordNumber: String!"}


def test_the_comparison_reports_every_kind_of_drift_together() -> None:
    contract = build_schema(
        """
        enum Color { RED GREEN }
        input Filter { color: Color first: Int = 10 }
        type Item { id: ID! tags: [String!]! }
        type Query {
          item(id: ID!, lead: Boolean = false, tags: [String!] = [], note: String): Item
          items(filter: Filter): [Item!]!
        }
        """
    )
    served = build_schema(
        """
        enum Color { RED BLUE }
        input Filter { color: Color first: Int = 20 mandatory: Int! extra: Int }
        type Item { id: ID tags: [String!]! name: String }
        type Query {
          item(id: ID!, lead: Boolean! = false, tags: [String!] = null, note: String = null,
               extra: Int, needed: String!): Item
        }
        """
    )

    problems = enum_mismatches(contract, served, set()) + type_mismatches(
        contract, served, set(), set()
    )

    assert sorted(problems) == sorted(
        [
            "enum Color: served without GREEN",
            "enum Color: served with values not in API.md: BLUE",
            "Filter(first): served with default 20, API.md has default 10",
            "Filter(mandatory): extra required mandatory: Int! that clients of API.md do not send",
            "Item.id: served type ID, API.md has ID!",
            "Query.item(lead): served type Boolean!, API.md has Boolean",
            "Query.item(tags): served with default null, API.md has default []",
            "Query.item(needed): extra required needed: String! that clients of API.md do not send",
            "Query.items: missing, API.md has items: [Item!]!",
        ]
    )
