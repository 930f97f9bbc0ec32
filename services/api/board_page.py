"""The live huddle board page: /board/{teamId} and its static assets under /static.

The page is a static shell: it carries no data and reflects nothing from the request. The
script reads the team id from the path and the token from the URL fragment, and asks the
GraphQL API for everything else, so all authorization stays in the API.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

# Team ids are UUIDs today; anything outside this shape cannot name a team.
_TEAM_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # The live updates: a WebSocket back to this API (older browsers need the schemes).
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The shell holds no data, but a shared wall screen should never show a cached copy.
    "Cache-Control": "no-store",
}
_ASSET_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Revalidated on every load (ETag), so a deploy reaches every screen at its next reload.
    (b"cache-control", b"no-cache"),
]

_NOT_FOUND = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>No such board · carecoord</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="../static/board.css"></head>
<body><main class="notice"><h1>No such board</h1>
<p>The address does not name a team. Open the board link your team lead shared,
of the form <code>/board/&lt;team id&gt;#token=…</code>.</p></main></body>
</html>
"""


@functools.cache
def _board_shell() -> str:
    return (STATIC_DIR / "board.html").read_text(encoding="utf-8")


async def board(request: Request) -> Response:
    """The page shell for a team's board, or a 404 page for anything that is not a team id
    (the route takes the rest of the path, so "/board/a/b" gets this page too)."""
    team_id = request.path_params["team_id"]
    if not _TEAM_ID.fullmatch(team_id):
        return HTMLResponse(_NOT_FOUND, status_code=404, headers=PAGE_HEADERS)
    return HTMLResponse(_board_shell(), headers=PAGE_HEADERS)


class _AssetHeaders:
    """Adds the asset headers to every response of the wrapped static files app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_ASSET_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    """The page and its assets, for the API app's route list."""
    return [
        Route("/board/{team_id:path}", board, methods=["GET"]),
        Mount("/static", app=_AssetHeaders(StaticFiles(directory=STATIC_DIR)), name="static"),
    ]
