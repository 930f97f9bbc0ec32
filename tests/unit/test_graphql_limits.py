"""The document limits counted before validation and the byte-bounded document cache, as
plain values."""

from __future__ import annotations

from graphql import get_introspection_query, parse

from services.api.graphql.limits import DocumentCache, Limits, cost, over_limit

LIMITS = Limits(tokens=1000, aliases=20, depth=10, root_fields=10, repeats=5, cache_bytes=1 << 20)


def doubling_fragments(levels: int) -> str:
    """F0 holds one aliased field; each F(i) spreads F(i-1) twice: 2**levels aliases."""
    parts = [f"query {{ ...F{levels} }}", "fragment F0 on Query { a: __typename }"]
    parts += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return "\n".join(parts)


def test_aliases_depth_and_record_reads_are_counted_with_fragments_expanded() -> None:
    document = parse(
        """query Q { a: patient(id: "1") { id } ...Two me { userId } __typename }
        fragment Two on Query {
          b: carePlan(id: "2") { goals { id } } c: consents(patientId: "3") { id }
        }"""
    )

    found = cost(document)

    assert (found.aliases, found.depth, found.root_fields) == (3, 3, 3)


def test_a_fragment_spread_twice_at_every_level_is_counted_once_per_fragment() -> None:
    # 2**80 aliases: a walk that follows every spread would never finish.
    found = cost(parse(doubling_fragments(80)))

    assert found.aliases == 2**80
    refused = over_limit(parse(doubling_fragments(80)), LIMITS)
    assert refused is not None
    assert refused.extensions == {"code": "BAD_USER_INPUT", "limit": "maxAliases", "allowed": 20}


def test_each_limit_is_named_with_its_value_when_passed_and_none_is_at_its_edge() -> None:
    reads = " ".join(f'p{i}: patient(id: "{i}") {{ id }}' for i in range(11))
    nested = "{ team(id: 1) " + "{ members " * 10 + "{ userId }" + " }" * 10 + " }"

    assert over_limit(parse("{ " + reads + " }"), LIMITS).extensions["limit"] == "maxRootFields"  # type: ignore[union-attr]
    assert over_limit(parse(nested), LIMITS).extensions["limit"] == "maxDepth"  # type: ignore[union-attr]
    ten = " ".join(f'p{i}: patient(id: "{i}") {{ id }}' for i in range(10))
    assert over_limit(parse("{ " + ten + " }"), LIMITS) is None
    message = over_limit(parse("{ " + reads + " }"), LIMITS).message  # type: ignore[union-attr]
    assert "maxRootFields" in message and "10" in message


def test_a_standard_introspection_query_is_not_refused_for_its_depth() -> None:
    introspection = parse(get_introspection_query(descriptions=True))
    nested = "{ team(id: 1) " + "{ members " * 10 + "{ userId }" + " }" * 10 + " }"
    beside = parse(nested[:-1] + " __schema { types { name } } }")

    assert over_limit(introspection, LIMITS) is None
    # A record read beside it is counted as ever.
    assert over_limit(beside, LIMITS).extensions["limit"] == "maxDepth"  # type: ignore[union-attr]


def test_the_document_cache_keeps_to_its_byte_budget_dropping_the_least_recent() -> None:
    cache = DocumentCache(max_bytes=100 * 1000)  # ~1000 characters of query text
    texts = [f"{{ me {{ userId }} }} # {i:0100d}" for i in range(12)]  # ~120 characters each
    for text in texts:
        cache.put(text, parse(text), [])

    assert cache.bytes <= cache.max_bytes
    assert cache.get(texts[-1]) is not None
    assert cache.get(texts[0]) is None


def test_a_document_larger_than_an_eighth_of_the_cache_is_not_kept() -> None:
    cache = DocumentCache(max_bytes=100 * 1000)
    text = "{ me { userId } } #" + "x" * 200

    cache.put(text, parse(text), [])

    assert len(cache) == 0


def test_a_field_repeated_in_one_selection_set_is_counted_through_fragments() -> None:
    # Validation compares same-named fields pairwise: 500 of them held the loop for seconds.
    inline = parse("{ me { userId userId } ... on Query { me { userId } } me { name } }")
    spread = parse(doubling_fragments(3).replace("a: __typename", "me { userId }"))

    assert cost(inline).repeats == 3
    assert cost(spread).repeats == 8
    refused = over_limit(spread, LIMITS)
    assert refused is not None and refused.extensions["limit"] == "maxFieldRepeats"  # type: ignore[index]
