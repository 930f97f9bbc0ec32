"""The huddle board page over ASGI: the shell and its security headers, the static assets,
the vendored graphql-ws client, and that nothing outside the API is referenced."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import quote

import httpx
import pytest
from graphql import parse, validate
from pydantic import SecretStr

from services.api.app import create_app
from services.api.board_page import STATIC_DIR
from services.api.graphql.schema import schema
from services.settings import Settings

TEAM = "3f1c9a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
# graphql-ws 6.4.2, umd/graphql-ws.min.js as published (MIT).
GRAPHQL_WS_SHA256 = "5f1e250bdea0a551d58272048281dbf5b2fb69faa120160bab49485c72b6f24d"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(jwt_secret=SecretStr("board-page-unit-test-secret-long-enough"))
    app = create_app(settings, pool=object())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


class _References(HTMLParser):
    """Every src/href in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _csp(response: httpx.Response) -> dict[str, str]:
    directives = (d.strip() for d in response.headers["content-security-policy"].split(";"))
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in directives if d}


async def test_the_board_page_is_served_with_strict_security_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"/board/{TEAM}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = _csp(response)
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert set(csp["connect-src"].split()) <= {"'self'", "ws:", "wss:"}
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert '<main id="board"' in response.text


async def test_the_page_has_no_inline_script_or_style(client: httpx.AsyncClient) -> None:
    html = (await client.get(f"/board/{TEAM}")).text

    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert not re.search(r"\sstyle=", html), "inline style attribute"


async def test_the_page_references_nothing_outside_the_api(client: httpx.AsyncClient) -> None:
    html = (await client.get(f"/board/{TEAM}")).text
    parser = _References()
    parser.feed(html)

    assert parser.urls, "the page loads its script and style sheet"
    for url in parser.urls:
        if url == "data:,":  # the empty favicon, so the browser asks for none
            continue
        assert "//" not in url and ":" not in url, f"{url} leaves the API's origin"
        response = await client.get(httpx.URL(f"http://testserver/board/{TEAM}").join(url).path)
        assert response.status_code == 200, url
    own = "".join(p.read_text() for p in STATIC_DIR.glob("board.*"))
    # The SVG namespace is a name, never fetched.
    assert set(re.findall(r"\w+://[^\s\"'`)]*", own)) <= {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/board.js", ("text/javascript", "application/javascript")),
        ("/static/board.css", ("text/css",)),
        ("/static/vendor/graphql-ws.min.js", ("text/javascript", "application/javascript")),
        ("/static/vendor/graphql-ws.LICENSE.md", ("text/markdown",)),
    ],
)
async def test_static_assets_are_served_with_their_content_types(
    client: httpx.AsyncClient, path: str, content_type: tuple[str, ...]
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in content_type
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_missing_asset_is_not_found(client: httpx.AsyncClient) -> None:
    assert (await client.get("/static/nothing-here.js")).status_code == 404
    assert (await client.get("/static/../board_page.py")).status_code == 404


def test_the_vendored_graphql_ws_client_is_the_published_build_with_its_licence() -> None:
    bundle = (STATIC_DIR / "vendor" / "graphql-ws.min.js").read_bytes()
    licence = (STATIC_DIR / "vendor" / "graphql-ws.LICENSE.md").read_text()

    assert hashlib.sha256(bundle).hexdigest() == GRAPHQL_WS_SHA256
    assert b"graphqlWs" in bundle and b"createClient" in bundle
    assert licence.startswith("MIT License")


@pytest.mark.parametrize(
    "team_id",
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "a" * 129,
        "team 42!",
        "%3Cb%3E",
        "a/b",
    ],
)
async def test_an_odd_team_id_gets_a_not_found_page_that_does_not_reflect_it(
    client: httpx.AsyncClient, team_id: str
) -> None:
    response = await client.get(f"/board/{quote(team_id, safe='')}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"]
    for shown in (team_id, "<script>alert", "onerror", "<b>", "aaaaaaaaaa"):
        assert shown not in response.text
    assert "No such board" in response.text


async def test_the_page_shell_is_the_same_whatever_the_team(client: httpx.AsyncClient) -> None:
    one = (await client.get(f"/board/{TEAM}")).text
    other = (await client.get("/board/another-team_1")).text

    assert one == other
    assert TEAM not in one


def _page_operations() -> list[str]:
    """The GraphQL documents board.js sends, with its TASK_FIELDS filled in."""
    script = (STATIC_DIR / "board.js").read_text(encoding="utf-8")
    fields_source = re.search(r"const TASK_FIELDS =\s*((?:\"[^\"]*\"\s*\+?\s*)+);", script)
    assert fields_source is not None, "TASK_FIELDS not found in board.js"
    fields = "".join(re.findall(r"\"([^\"]*)\"", fields_source.group(1)))
    documents = re.findall(r"const (?:BOARD_QUERY|AGENDA_QUERY|BOARD_CHANGED) = `([^`]*)`", script)
    assert len(documents) == 3, "the board and agenda queries, subscription not in board.js"
    return [d.replace("${TASK_FIELDS}", fields) for d in documents]


def test_the_pages_queries_and_subscription_ask_only_for_what_the_api_serves() -> None:
    for document in _page_operations():
        assert validate(schema._schema, parse(document)) == [], document
    assert "urgent escalated signalCount" in _page_operations()[0]
