"""Bounded work per operation: the document's tokens, aliases, depth and cost are checked
before validation and before any resolver runs, and parsed documents are cached within a
byte budget.

Order matters. graphql-core's parser stops lexing past `max_tokens` (strawberry's
MaxTokensLimiter sets the same option), so an oversized document costs at most that many
tokens of work. The remaining limits are counted in one pass over the parsed document in
which each fragment is counted once and reused, so nested or repeated fragment spreads
cannot make the count itself expensive (strawberry's MaxAliasesLimiter and
QueryDepthLimiter walk a fragment again at every spread, which grows exponentially with
fragments that spread each other twice). A response key repeated in one selection set is
bounded too: validation compares such fields pairwise, so their number, not the
document's size, decides its cost. A refused document is neither validated nor cached.
The cost is the number of root fields that read or change records (every root field but
`me` and the introspection ones): 2,000 aliased `patient(id)` reads in one request are
refused before the first is looked up.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from services.common.errors import ErrorCode
from services.settings import Settings

# Root fields that read no record: they cost nothing.
_FREE_ROOT_FIELDS = frozenset({"me", "__typename", "__schema", "__type"})
# Root fields whose depth is not counted: introspection walks the schema, never a record,
# and a client's standard introspection query (GraphiQL's, codegen's) nests 15 levels
# deep (`ofType` in `ofType`). What could multiply, lists of types in lists of fields, is
# refused past 3 levels by graphql-core's MaxIntrospectionDepthRule at validation; the
# token limit bounds the rest, and aliases and repeats are counted as anywhere.
_INTROSPECTION_ROOT_FIELDS = frozenset({"__schema", "__type"})

# A parsed and validated document takes about this many bytes per character of its text
# (measured on graphql-core 3.3: ~60 for the shipped operations, ~90 for alias floods).
_BYTES_PER_CHARACTER = 100


@dataclass(frozen=True)
class Limits:
    """The per-operation limits (services.settings), by the names clients see."""

    tokens: int
    aliases: int
    depth: int
    root_fields: int
    repeats: int
    cache_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            tokens=settings.max_document_tokens,
            aliases=settings.max_aliases,
            depth=settings.max_depth,
            root_fields=settings.max_root_fields,
            repeats=settings.max_field_repeats,
            cache_bytes=settings.document_cache_bytes,
        )


# limit name (extensions.limit) -> (what is counted, the setting that raises it)
_NAMES = {
    "maxTokens": ("tokens in the document", "CARECOORD_MAX_DOCUMENT_TOKENS"),
    "maxAliases": ("aliased fields", "CARECOORD_MAX_ALIASES"),
    "maxDepth": ("levels of field nesting", "CARECOORD_MAX_DEPTH"),
    "maxFieldRepeats": (
        "times one field (or alias) may appear in one selection set",
        "CARECOORD_MAX_FIELD_REPEATS",
    ),
    "maxRootFields": (
        "root fields that read or change records (all but `me`)",
        "CARECOORD_MAX_ROOT_FIELDS",
    ),
}


def limit_error(limit: str, allowed: int) -> GraphQLError:
    """BAD_USER_INPUT naming the limit and its value (never the document's content)."""
    what, _ = _NAMES[limit]
    return GraphQLError(
        f"The operation is over the limit {limit} of {allowed} {what}. "
        "Split it into smaller operations.",
        extensions={"code": str(ErrorCode.BAD_USER_INPUT), "limit": limit, "allowed": allowed},
    )


@dataclass(frozen=True)
class Cost:
    """What one operation would make the server do, fragments expanded."""

    aliases: int = 0
    depth: int = 0
    root_fields: int = 0
    repeats: int = 0


@dataclass(frozen=True)
class _Shape:
    """A selection set, fragments expanded: its aliases, depth, the most times one
    response key appears in any one selection set within it, and the response keys of
    its own level (inline fragments and spreads merged in), with multiplicity."""

    aliases: int = 0
    depth: int = 0
    repeats: int = 0
    keys: Counter[str] = field(default_factory=Counter)


@dataclass
class _Counter:
    fragments: Mapping[str, FragmentDefinitionNode]
    # Per fragment, its shape; a fragment being counted is empty (a cycle, which
    # validation refuses anyway).
    done: dict[str, _Shape] = field(default_factory=dict)
    # Per fragment spread at the root: the record-reading fields it holds.
    roots_done: dict[str, int] = field(default_factory=dict)

    def selections(self, selection_set: SelectionSetNode | None) -> _Shape:
        aliases = depth = repeats = 0
        keys: Counter[str] = Counter()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                inner = self.selections(selection.selection_set)
                aliases += inner.aliases + (1 if selection.alias else 0)
                depth = max(depth, inner.depth + 1)
                keys[(selection.alias or selection.name).value] += 1
            elif isinstance(selection, InlineFragmentNode | FragmentSpreadNode):
                inner = (
                    self.selections(selection.selection_set)
                    if isinstance(selection, InlineFragmentNode)
                    else self.fragment(selection.name.value)
                )
                aliases += inner.aliases
                depth = max(depth, inner.depth)
                keys.update(inner.keys)
            else:  # pragma: no cover - graphql-core has no other selection
                continue
            repeats = max(repeats, inner.repeats)
        repeats = max(repeats, max(keys.values(), default=0))
        return _Shape(aliases, depth, repeats, keys)

    def fragment(self, name: str) -> _Shape:
        if name not in self.done:
            definition = self.fragments.get(name)
            self.done[name] = _Shape()
            if definition is not None:
                self.done[name] = self.selections(definition.selection_set)
        return self.done[name]

    def root_fields(self, selection_set: SelectionSetNode | None) -> int:
        count = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                count += selection.name.value not in _FREE_ROOT_FIELDS
            elif isinstance(selection, InlineFragmentNode):
                count += self.root_fields(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                count += self.fragment_roots(selection.name.value)
        return count

    def fragment_roots(self, name: str) -> int:
        if name not in self.roots_done:
            definition = self.fragments.get(name)
            self.roots_done[name] = 0
            if definition is not None:
                self.roots_done[name] = self.root_fields(definition.selection_set)
        return self.roots_done[name]


def cost(document: DocumentNode) -> Cost:
    """The largest cost of any operation in the document (one of them runs)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    counter = _Counter(fragments)
    worst = Cost()
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            shape = counter.selections(definition.selection_set)
            roots = counter.root_fields(definition.selection_set)
            depth = counter.selections(_without_introspection(definition.selection_set)).depth
            worst = Cost(
                aliases=max(worst.aliases, shape.aliases),
                depth=max(worst.depth, depth),
                root_fields=max(worst.root_fields, roots),
                repeats=max(worst.repeats, shape.repeats),
            )
    return worst


def _without_introspection(selection_set: SelectionSetNode) -> SelectionSetNode:
    return SelectionSetNode(
        selections=tuple(
            s
            for s in selection_set.selections
            if not (isinstance(s, FieldNode) and s.name.value in _INTROSPECTION_ROOT_FIELDS)
        )
    )


def over_limit(document: DocumentNode, limits: Limits) -> GraphQLError | None:
    """The first limit the document is over, as the error the client gets; None if none."""
    found = cost(document)
    for name, counted, allowed in (
        ("maxRootFields", found.root_fields, limits.root_fields),
        ("maxAliases", found.aliases, limits.aliases),
        ("maxDepth", found.depth, limits.depth),
        ("maxFieldRepeats", found.repeats, limits.repeats),
    ):
        if counted > allowed:
            return limit_error(name, allowed)
    return None


def is_token_limit(error: GraphQLError) -> bool:
    # graphql-core's words when the parser stops at max_tokens.
    return isinstance(error, GraphQLSyntaxError) and "tokens. Parsing aborted" in error.message


@dataclass
class _Entry:
    document: DocumentNode
    errors: list[GraphQLError]
    size: int


class DocumentCache:
    """Parsed and validated documents by query text, least recently used first out, within
    a byte budget estimated from each text's length. A document larger than an eighth of
    the budget is not kept (a few of them would flush every other entry)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Operations run on one event loop; the lock keeps the books right if they do not.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(query)
            if entry is not None:
                self._entries.move_to_end(query)
            return entry

    def put(self, query: str, document: DocumentNode, errors: list[GraphQLError]) -> None:
        size = len(query) * _BYTES_PER_CHARACTER
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(query, None)
            if old is not None:
                self.bytes -= old.size
            self._entries[query] = _Entry(document, errors, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.size


class BoundedDocuments(SchemaExtension):
    """The limits above, and the document cache (in place of strawberry's ParserCache and
    ValidationCache, which count entries, not bytes: 512 alias floods held ~35 GB)."""

    def __init__(self, *, limits: Limits, cache: DocumentCache) -> None:
        self.limits = limits
        self.cache = cache
        self._cached: _Entry | None = None

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.limits.tokens
        yield

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query
        self._cached = self.cache.get(query) if query else None
        if self._cached is not None:
            ctx.graphql_document = self._cached.document
        yield
        for error in ctx.pre_execution_errors or ():
            if is_token_limit(error):
                named = limit_error("maxTokens", self.limits.tokens)
                # The parser's own error object is what the response carries: reword it.
                error.message, error.extensions = named.message, named.extensions

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if self._cached is not None:
            ctx.pre_execution_errors = list(self._cached.errors)
            yield
            return
        document = ctx.graphql_document
        refused = over_limit(document, self.limits) if document is not None else None
        if refused is not None:
            # Validation runs only while pre_execution_errors is None: this skips it.
            ctx.pre_execution_errors = [refused]
            yield
            return
        yield
        if document is not None and ctx.query and ctx.pre_execution_errors is not None:
            self.cache.put(ctx.query, document, list(ctx.pre_execution_errors))
