"""A small GraphQL-over-HTTP client for seeding the demo: one call per named step, and
every failure turned into one line saying which step failed and why."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Each step is one small mutation; a stack that takes this long is not answering.
REQUEST_TIMEOUT_S = 30


class DemoError(Exception):
    """Seeding stopped; the message says at which step and why, in one line."""


def base_url_of(url: str) -> str:
    """The API's base URL without a trailing slash (or /graphql, which people paste)."""
    text = url.strip().rstrip("/")
    text = text.removesuffix("/graphql")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DemoError(
            f"{url!r} is not an http(s) URL of the API; give one like http://127.0.0.1:8000"
        )
    return text


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url

    def _unreachable(self, exc: BaseException) -> DemoError:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {REQUEST_TIMEOUT_S} s"
        elif isinstance(exc, aiohttp.ClientConnectorDNSError):
            why = "the host name is not known"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            why = "nothing answers there"
        else:
            why = str(exc) or type(exc).__name__
        return DemoError(
            f"cannot reach the carecoord API at {self.base_url} ({why}); "
            "is `make up` running, and is that its URL?"
        )

    async def check_health(self) -> None:
        """Fail early, with the likely cause, when the stack is not there or not well."""
        try:
            async with self._session.get(f"{self.base_url}/healthz") as response:
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if status == 503:
            raise DemoError(
                f"the API at {self.base_url} is up but reports PostgreSQL or Kafka "
                "unreachable (/healthz: 503); see the `make up` output"
            )
        if status != 200:
            raise DemoError(
                f"{self.base_url}/healthz answered HTTP {status}; is that a carecoord API?"
            )

    async def call(
        self, step: str, token: str, query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        """The operation's data; DemoError naming `step` on any error."""
        try:
            async with self._session.post(
                f"{self.base_url}/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DemoError(f"{step}: {self._unreachable(exc)}") from exc
        if not isinstance(body, dict):
            raise DemoError(
                f"{step}: {self.base_url}/graphql answered HTTP {status} without a GraphQL "
                "response; is that a carecoord API?"
            )
        if errors := body.get("errors"):
            first = errors[0] if isinstance(errors, list) and errors else {}
            code = (first.get("extensions") or {}).get("code") or "ERROR"
            message = first.get("message") or "no message"
            hint = ""
            if code == "UNAUTHENTICATED":
                hint = (
                    " (the demo signs its tokens with this machine's secret: is that URL "
                    "the stack started here?)"
                )
            raise DemoError(f"{step} failed: {code}: {message}{hint}")
        data = body.get("data")
        if status != 200 or not isinstance(data, dict):
            raise DemoError(f"{step} failed: HTTP {status} and no data from {self.base_url}")
        return data


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
