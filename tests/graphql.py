"""A small GraphQL-over-HTTP client for tests: call an operation, get data or coded errors."""

from __future__ import annotations

from typing import Any

import httpx


class GraphQLErrors(AssertionError):
    """The response carried errors; `codes` lists their extensions.code in order."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(
            "; ".join(f"{e.get('extensions', {}).get('code')}: {e['message']}" for e in errors)
        )
        self.errors = errors

    @property
    def codes(self) -> list[str | None]:
        return [e.get("extensions", {}).get("code") for e in self.errors]

    @property
    def code(self) -> str | None:
        [code] = set(self.codes)
        return code


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The operation's data; GraphQLErrors if the response has errors."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
    )
    body = response.json()
    if body.get("errors"):
        raise GraphQLErrors(body["errors"])
    assert response.status_code == 200, response.text
    data: dict[str, Any] = body["data"]
    return data
