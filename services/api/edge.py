"""The HTTP edge of the API: request bodies and query strings bounded before anything reads
them, security headers on every response, refusals shaped as GraphQL errors, and the
GraphiQL page made fit for a browser holding a clinician's token.

The body limit runs first: a Content-Length past it is refused before a byte of the body
is read, and a body without one (chunked) is counted as it arrives and refused the moment
it passes the limit. So an oversized document from anyone, signed in or not, costs the
server nothing but the refusal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ErrorCode

# Every response that does not set its own (the board page does): a JSON API answer
# needs no content at all, and is never framed, sniffed, referred or cached.
DEFAULT_HEADERS: Mapping[bytes, bytes] = {
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    # Answers carry patient data: no shared or browser cache keeps a copy.
    b"cache-control": b"no-store",
}


def error_body(message: str, code: str, **extensions: object) -> bytes:
    """A GraphQL-shaped error response body: {"errors": [{message, extensions.code}]}."""
    error = {"message": message, "extensions": {"code": str(code), **extensions}}
    return json.dumps({"errors": [error]}).encode()


def limit_refusal(limit: str, allowed: int, what: str) -> bytes:
    return error_body(
        f"The request is over the limit {limit} of {allowed} bytes of {what}.",
        ErrorCode.BAD_USER_INPUT,
        limit=limit,
        allowed=allowed,
    )


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class EdgeMiddleware:
    """Body and query-string limits, then security headers on whatever is answered."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_query_string_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_query_string = max_query_string_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in DEFAULT_HEADERS.items() if k not in present]
                message["headers"] = headers
            await send(message)

        if len(scope.get("query_string", b"")) > self.max_query_string:
            body = limit_refusal("maxQueryStringBytes", self.max_query_string, "query string")
            await send_json(send_with_headers, 414, body)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await send_json(send_with_headers, 413, self._too_large())
            return
        replay = await self._read_bounded(receive)
        if replay is None:
            await send_json(send_with_headers, 413, self._too_large())
            return
        await self.app(scope, replay, send_with_headers)

    def _too_large(self) -> bytes:
        return limit_refusal("maxBodyBytes", self.max_body, "request body")

    async def _read_bounded(self, receive: Receive) -> Receive | None:
        """The body read in full within the limit, as a receive that replays it; None when
        it passes the limit (what was read is dropped)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # A disconnect: the app sees it as the body's end.
                pending: Message | None = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                pending = None
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if pending is not None and not body:
                    return pending
                return {"type": "http.request", "body": body, "more_body": False}
            if pending is not None:
                return pending
            return await receive()

        return replay


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# GraphiQL: strawberry's page, served with no CDN and changed so nothing the user types
# (tokens in the headers editor, variables that may hold an MRN) is kept in the browser
# beyond the tab: headers are not persisted, the editor's storage is in memory, variables
# stay out of the URL.
#
# The files the page names on unpkg.com, each served from the package instead
# (services/api/static/vendor, fetched from the npm registry by update.sh there): the same
# published builds, so the page's integrity attributes (sha384) still hold, and the page
# works with no network at all. The paths are relative to /graphql, like the board page's.
GRAPHIQL_ASSETS: Mapping[str, str] = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": (
        "react-dom.production.min.js"
    ),
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": (
        "graphiql-plugin-explorer.css"
    ),
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": (
        "graphiql-plugin-explorer.umd.js"
    ),
}
GRAPHIQL_ASSET_PATH = "static/vendor/"
_MEMORY_STORAGE = """
      const memoryStorage = (() => {
        const items = new Map();
        return {
          getItem: (key) => (items.has(key) ? items.get(key) : null),
          setItem: (key, value) => items.set(key, String(value)),
          removeItem: (key) => items.delete(key),
          clear: () => items.clear(),
          key: (i) => Array.from(items.keys())[i] ?? null,
          get length() { return items.size; },
        };
      })();
"""
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
# Any address the page would still load from another origin (src= or href=).
_EXTERNAL_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def graphiql_page(template: str) -> tuple[str, str]:
    """The GraphiQL page and the Content-Security-Policy that lets exactly it run.

    Raises RuntimeError when strawberry's template no longer has what is changed here (a
    newer strawberry naming other versions, say): the page is then a masked error, never
    one that loads from a CDN, and the unit tests say what changed."""
    replacements = (
        *((f'"{url}"', f'"{GRAPHIQL_ASSET_PATH}{name}"') for url, name in GRAPHIQL_ASSETS.items()),
        (
            "shouldPersistHeaders: true,",
            "shouldPersistHeaders: false,\n          storage: memoryStorage,",
        ),
        ("updateURL({ variables: newVariables });", ""),
        ("const parameters = {};", "const parameters = {};\n" + _MEMORY_STORAGE),
    )
    page = template
    for old, new in replacements:
        if old not in page:
            raise RuntimeError(f"the GraphiQL template changed; cannot find {old!r}")
        page = page.replace(old, new)
    if external := _EXTERNAL_REFERENCE.search(page):
        raise RuntimeError(f"the GraphiQL template loads from elsewhere: {external.group(0)!r}")
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(page)
    )
    policy = "; ".join(
        (
            "default-src 'none'",
            # The vendored, integrity-checked bundles, and the page's own script.
            f"script-src 'self' {hashes}",
            # The page's own style block, and the inline styles React and GraphiQL set.
            "style-src 'self' 'unsafe-inline'",
            # GraphiQL's fonts are inlined in its stylesheet.
            "font-src data:",
            "img-src 'self' data:",
            "connect-src 'self' ws: wss:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return page, policy
