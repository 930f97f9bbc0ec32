"""Every text value an operation carries is checked before any resolver runs: no argument or
variable may hide a control, bidirectional-control or zero-width character.

Commands check their own text (services.common.commands), but not every value reaches a
command: ids in queries (`carePlan(id)`, `patient(id)`) and the audit filters are looked
up, and an id that matches nothing is written into the audit log's refusal as given. A
U+202E there would make the compliance officer's trail read differently from what was
asked. So a hidden character anywhere in an operation's arguments or variables is
BAD_USER_INPUT naming the argument (or variable) and the character, never the value;
a variable's default value in the document is checked like a literal argument.
Tabs and line breaks pass here: whether a field may span lines is the command's rule.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    ListValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    VariableDefinitionNode,
    Visitor,
    visit,
)
from strawberry.extensions import SchemaExtension

from services.common.errors import InvalidInput
from services.common.text import TextProblem, clean, plain


class RefuseHiddenCharacters(SchemaExtension):
    """Refuses an operation whose arguments or variables hide characters (see module)."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        for name, value in _variables(context.variables or {}):
            _check(name, value)
        if context.graphql_document is not None:
            for name, value in _literals(context.graphql_document):
                _check(name, value)
        yield


def _check(name: str, value: str) -> None:
    if plain(value):  # the common case, checked in C
        return
    try:
        clean(value, multiline=True)
    except TextProblem as problem:
        raise InvalidInput(f"{name} {problem}.") from None


def _variables(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in values.items():
        yield from _strings(str(name), value)


def _strings(name: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _strings(f"{name}.{key}", inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(name, inner)


# The string literals of each document in use, by the document's id. A document the
# cache holds (services.api.graphql.limits) runs again and again and its literals never
# change, so it is walked once; an entry goes when its document does (the finalizer runs
# before the id can be taken by another object).
_LITERALS: dict[int, list[tuple[str, str]]] = {}


def _literals(document: DocumentNode) -> list[tuple[str, str]]:
    key = id(document)
    found = _LITERALS.get(key)
    if found is None:
        arguments = _Arguments()
        visit(document, arguments)
        # The visitor caches its own bound methods: a cycle, left to a full collection
        # unless broken here.
        arguments.enter_leave_map.clear()
        found = _LITERALS[key] = arguments.found
        weakref.finalize(document, _LITERALS.pop, key, None)
    return found


class _Arguments(Visitor):
    """The string literals of a document's arguments and variable defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
        self.found.extend(_in_value(node.name.value, node.value))

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: Any) -> None:
        # A variable's default is a literal too: `query($id: ID = "...")` is run with it
        # when the request sends no value, and `variables` holds only those sent.
        if node.default_value is not None:
            self.found.extend(_in_value(node.variable.name.value, node.default_value))


def _in_value(name: str, node: ValueNode) -> Iterator[tuple[str, str]]:
    if isinstance(node, StringValueNode):
        yield name, node.value
    elif isinstance(node, ListValueNode):
        for inner in node.values:
            yield from _in_value(name, inner)
    elif isinstance(node, ObjectValueNode):
        for field in node.fields:
            yield from _in_value(f"{name}.{field.name.value}", field.value)
