"""The API's HTTP edge in-process, with a stand-in pool: bounded bodies and documents, coded
and masked errors for anything malformed, security headers, and GraphiQL and
introspection only where a setting turns them on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr
from strawberry.http.ides import get_graphql_ide_html

from services.api import edge
from services.api.app import create_app
from services.api.board_page import STATIC_DIR
from services.api.edge import GRAPHIQL_ASSETS
from services.settings import Settings
from tests.unit.test_api_app import SECRET, FakePool, Health, _bearer, websocket

ME = "{ me { userId } }"


def app_client(**overrides: Any) -> httpx.AsyncClient:
    health = Health()
    settings = Settings(jwt_secret=SecretStr(SECRET), **overrides)
    app = create_app(
        settings,
        pool=FakePool(),  # type: ignore[arg-type]
        kafka_ping=health.kafka_ping,
        db_check=health.db_check,  # type: ignore[arg-type]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as client:
        yield client


def coded(response: httpx.Response, code: str = "BAD_USER_INPUT") -> dict[str, Any]:
    """The single GraphQL-shaped error of a response, checked to carry `code`."""
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == code, error
    return dict(error)


def aliases(n: int, field: str = "__typename") -> str:
    return "{ " + " ".join(f"a{i}: {field}" for i in range(n)) + " }"


# --- bounded work ------------------------------------------------------------------------


async def test_an_oversized_body_is_refused_by_its_content_length_naming_the_limit(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/graphql", json={"query": aliases(150_000)})

    assert response.status_code == 413
    error = coded(response)
    assert error["extensions"]["limit"] == "maxBodyBytes"
    assert str(256 * 1024) in error["message"]


async def test_a_streamed_body_without_a_length_is_refused_once_it_passes_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ '
        for _ in range(100):
            yield b"a: __typename " * 100

    async with app_client(max_body_bytes=64 * 1024) as client:
        response = await client.post(
            "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 413
    assert coded(response)["extensions"]["limit"] == "maxBodyBytes"


async def test_a_long_get_query_string_is_refused_naming_the_limit(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/graphql", params={"query": aliases(1500)})

    assert response.status_code == 414
    assert coded(response)["extensions"]["limit"] == "maxQueryStringBytes"


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        (aliases(3000), "maxTokens"),
        (aliases(21), "maxAliases"),
        ("{ " + "me { userId } " * 6 + "}", "maxFieldRepeats"),
        (
            "{ ...A } fragment A on Query { "
            + " ".join(f"...B{i}" for i in range(6))
            + " } "
            + " ".join(f"fragment B{i} on Query {{ __typename }}" for i in range(6)),
            "maxFieldRepeats",
        ),
        (
            "{ " + " ".join(f'p{i}: patient(id: "{i}") {{ id }}' for i in range(11)) + " }",
            "maxRootFields",
        ),
        ("{ team(id: 1) " + "{ members " * 10 + "{ userId }" + " }" * 10 + " }", "maxDepth"),
    ],
)
async def test_a_document_over_a_limit_is_refused_before_any_resolver_naming_it(
    client: httpx.AsyncClient, query: str, limit: str
) -> None:
    # Signed in: a resolver reaching the stand-in pool would fail, masked, instead.
    response = await client.post("/graphql", json={"query": query}, headers=_bearer())

    error = coded(response)
    assert error["extensions"]["limit"] == limit
    assert response.json()["data"] is None


async def test_two_thousand_aliased_patient_reads_are_refused_before_any_is_looked_up(
    client: httpx.AsyncClient,
) -> None:
    query = aliases(2000, 'patient(id: "p-1") { name mrn }')

    response = await client.post("/graphql", json={"query": query}, headers=_bearer())

    assert coded(response)["extensions"]["limit"] in {"maxBodyBytes", "maxTokens"}


async def test_limits_are_settings(client: httpx.AsyncClient) -> None:
    async with app_client(max_aliases=30) as roomy:
        allowed = await roomy.post("/graphql", json={"query": aliases(25)})

    assert allowed.json() == {"data": {f"a{i}": "Query" for i in range(25)}}
    refused = await client.post("/graphql", json={"query": aliases(25)})
    assert coded(refused)["extensions"] == {
        "code": "BAD_USER_INPUT",
        "limit": "maxAliases",
        "allowed": 20,
    }


# --- coded, masked errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{",  # invalid UTF-8
        b'{"query": "{ me { userId } }", "variables": {"x": "\\ud800"}}',  # lone surrogate
        b'{"query": "{ me { userId } \\udfff }"}',
        b'{"query": "{ me { userId } }"',  # truncated
        b"42",
        b'"a string"',
        b'{"query": 5}',
        b'{"query": "{ me { userId } }", "operationName": ["x"]}',
        b'{"query": "{ me { userId } }", "variables": [1]}',
    ],
)
async def test_a_malformed_body_is_a_coded_graphql_error_with_no_internal_text(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json", **_bearer()}
    )

    assert response.status_code == 400
    error = coded(response)
    assert not re.search(r"Traceback|Error\b|Exception|pydantic|\.py", error["message"])


async def test_an_unknown_operation_name_is_refused_without_quoting_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", json={"query": "query A { me { userId } }", "operationName": "MRN-12345"}
    )

    error = coded(response)
    assert "MRN-12345" not in error["message"]


_PRINTABLE = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _PRINTABLE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_PRINTABLE, inner, max_size=4),
    max_leaves=10,
)
_QUERIES = st.sampled_from(
    [ME, "{ __typename }", "query Q { me { name } }", "{ patient(id: 1) { name } }", "{", ""]
) | st.text(max_size=60)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda q, v, n: {"query": q, "variables": v, "operationName": n},
        _QUERIES,
        _JSON,
        st.none() | _PRINTABLE | st.integers(),
    ),
    _JSON,
)
_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Authorization",
            "X-Purpose-Of-Use",
            "X-Break-Glass",
            "X-Request-Id",
            "X-Correlation-Id",
            "Content-Type",
            "Accept",
        ]
    ),
    _HEADER_VALUE
    | st.sampled_from(["Bearer x.y.z", "application/json", "text/html", "TREATMENT", "Bearer "]),
    max_size=5,
)
# What must never reach a client: Python's own words about an exception.
_UNMASKED = re.compile(
    r"Traceback|File \"|\.py\b|pydantic|validation error for|object has no attribute|"
    r"(Type|Value|Key|Attribute|Unicode\w*|Runtime|Assertion)Error|Exception\b"
)


@given(body=_BODIES, headers=_HEADERS, method=st.sampled_from(["POST", "GET"]))
@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_no_body_or_header_gets_a_server_error_or_an_unmasked_message(
    body: object, headers: dict[str, str], method: str
) -> None:
    client = _shared_client()
    # Bytes, as a client on the wire may send them (httpx would refuse non-ASCII text).
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    if method == "GET":
        params = body if isinstance(body, dict) else {"query": str(body)}
        response = await client.get(
            "/graphql",
            params={k: str(v) for k, v in params.items() if v is not None},
            headers=raw,
        )
    else:
        content = body if isinstance(body, bytes) else _json_bytes(body)
        if "Content-Type" not in headers:
            raw.append((b"Content-Type", b"application/json"))
        response = await client.post("/graphql", content=content, headers=raw)

    assert response.status_code < 500, response.text
    assert not _UNMASKED.search(response.text), response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        for error in response.json().get("errors", ()):
            assert error["extensions"]["code"]


_SHARED: list[httpx.AsyncClient] = []


def _shared_client() -> httpx.AsyncClient:
    # One app for every example: building the schema per example would take minutes.
    # ASGITransport keeps no connection, so the client needs no closing.
    if not _SHARED:
        _SHARED.append(app_client())
    return _SHARED[0]


def _json_bytes(value: object) -> bytes:
    import json

    return json.dumps(value).encode("utf-8", "surrogatepass")


# --- production surface --------------------------------------------------------------------

_JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_every_json_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/graphql", json={"query": ME}, headers=_bearer()),
        await client.post(
            "/graphql", content=b"\xff", headers={"Content-Type": "application/json"}
        ),
        await client.post("/graphql", json={"query": aliases(150_000)}),
        await client.get("/healthz"),
    ):
        assert_security_headers(response)
        assert response.headers["content-security-policy"] == _JSON_CSP
        assert response.headers["cache-control"] == "no-store"


async def test_the_board_page_keeps_its_own_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/board/team-1")

    assert_security_headers(response)
    assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_graphiql_and_introspection_are_off_unless_a_setting_turns_them_on(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    schema = await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})

    assert page.status_code == 404
    coded(page, "NOT_FOUND")
    assert "introspection" in schema.json()["errors"][0]["message"]
    async with app_client(introspection=True) as open_client:
        opened = await open_client.post(
            "/graphql", json={"query": "{ __schema { queryType { name } } }"}
        )
    assert opened.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_introspection_takes_a_standard_query_and_refuses_one_that_multiplies() -> None:
    nested = "{ __schema { types { fields { type { fields { type { fields { type { fields {"
    nested += " name } } } } } } } } } }"
    async with app_client(introspection=True) as client:
        standard = await client.post(
            "/graphql", json={"query": get_introspection_query(descriptions=True)}
        )
        multiplying = await client.post("/graphql", json={"query": nested})

    assert standard.json()["data"]["__schema"]["queryType"] == {"name": "Query", "kind": "OBJECT"}
    assert "errors" not in standard.json()
    coded(multiplying)
    assert multiplying.json()["data"] is None


def _inline_script_hashes(page: str) -> Iterator[str]:
    for script in re.findall(r"<script>(.*?)</script>", page, re.S):
        yield "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


async def test_graphiql_runs_under_a_policy_of_its_own_and_keeps_no_token_in_storage() -> None:
    async with app_client(graphiql=True) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})

    policy = page.headers["content-security-policy"]
    assert_security_headers(page)
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    for allowed in _inline_script_hashes(page.text):
        assert allowed in policy
    assert "shouldPersistHeaders: false" in page.text
    assert "storage: memoryStorage" in page.text
    assert "localStorage" not in page.text
    assert "updateURL({ variables" not in page.text
    assert set(string.whitespace) & set(policy) <= {" "}


_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.S)
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _graphiql_files(page: str) -> Iterator[tuple[str, str | None]]:
    """Each address GraphiQL's page loads (src or href, not the inline data: icon), with
    its integrity attribute."""
    for tag in _TAG.findall(page):
        address = re.search(r'\b(?:src|href)\s*=\s*"([^"]*)"', tag)
        if address is None or address.group(1).startswith("data:"):
            continue
        integrity = re.search(r'\bintegrity\s*=\s*"([^"]*)"', tag)
        yield address.group(1), integrity.group(1) if integrity else None


async def test_graphiql_loads_every_file_from_the_api_itself() -> None:
    async with app_client(graphiql=True) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        files = list(_graphiql_files(page.text))
        served = {
            url: await client.get(httpx.URL("http://testserver/graphql").join(url))
            for url, _ in files
        }

    policy = page.headers["content-security-policy"]
    assert len(files) == len(GRAPHIQL_ASSETS) == 7
    assert "//" not in policy and "unpkg" not in policy
    assert policy.split("script-src ")[1].startswith("'self' 'sha256-")
    for url, integrity in files:
        assert "//" not in url and ":" not in url, f"{url} leaves the API's origin"
        response = served[url]
        assert response.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert response.headers["content-type"].split(";")[0] == _CONTENT_TYPES[suffix], url
        assert response.headers["x-content-type-options"] == "nosniff"
        # The published build the page's integrity attribute names, byte for byte.
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert integrity == f"sha384-{digest}", url


def test_every_vendored_graphiql_file_comes_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    for name in GRAPHIQL_ASSETS.values():
        assert (vendor / name).is_file(), name
    for package in ("react", "react-dom", "js-cookie", "graphiql", "graphiql-plugin-explorer"):
        assert (vendor / f"{package}.LICENSE.md").read_text().startswith("MIT License")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A strawberry naming another version than the one vendored.
        ("graphiql@3.8.3/graphiql.min.js", "graphiql@4.0.0/graphiql.min.js"),
        # Or loading one more file from a CDN.
        ("</head>", '<script src="https://cdn.example/x.js"></script></head>'),
    ],
)
def test_a_graphiql_template_that_would_load_from_elsewhere_is_refused(old: str, new: str) -> None:
    template = get_graphql_ide_html(graphql_ide="graphiql")
    assert old in template

    with pytest.raises(RuntimeError, match="GraphiQL template"):
        edge.graphiql_page(template.replace(old, new))


async def test_a_websocket_message_with_a_lone_surrogate_closes_the_socket_as_invalid() -> None:
    health = Health()
    app = create_app(
        Settings(jwt_secret=SecretStr(SECRET)),
        pool=FakePool(),  # type: ignore[arg-type]
        kafka_ping=health.kafka_ping,
    )
    async with websocket(app) as ws:
        text = '{"type": "connection_init", "payload": {"name": "\\ud800"}}'
        await ws.inbox.put({"type": "websocket.receive", "text": text})
        closed = await asyncio.wait_for(ws.outbox.get(), timeout=5)

    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4400


async def test_a_websocket_operation_over_a_limit_is_refused_naming_it() -> None:
    health = Health()
    app = create_app(
        Settings(jwt_secret=SecretStr(SECRET)),
        pool=FakePool(),  # type: ignore[arg-type]
        kafka_ping=health.kafka_ping,
    )
    async with websocket(app) as ws:
        await ws.send_json({"type": "connection_init", "payload": _bearer()})
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": aliases(21)}})
        message = await ws.receive_json()

    assert message["type"] == "error"
    [error] = message["payload"]
    assert error["extensions"]["limit"] == "maxAliases"
