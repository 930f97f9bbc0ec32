"""GraphiQL on the running stack in headless Chromium with every other host unreachable:
the page, its scripts, styles and fonts all come from the API, it renders, reads the
schema so its explorer plugin lists the queries, and a query typed into it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.e2e.conftest import Stack
from tests.e2e.test_board_page import WAIT_MS, Console


async def test_graphiql_renders_and_runs_a_query_with_no_other_host_reachable(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    console = Console(page)
    elsewhere: list[str] = []

    async def only_the_api(route: Any) -> None:
        url = route.request.url
        if url.startswith(f"{stack.base_url}/") or url.startswith("data:"):
            await route.continue_()
        else:
            elsewhere.append(url)
            await route.abort("internetdisconnected")

    await context.route("**/*", only_the_api)
    await page.goto(f"{stack.base_url}/graphql")

    await expect(page.locator(".graphiql-container .graphiql-editors")).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(page.get_by_text("Loading...", exact=True)).to_have_count(0)
    # Styled by the vendored stylesheet (without it the sessions pane is a plain block).
    sessions = page.locator(".graphiql-sessions")
    assert await sessions.evaluate("e => getComputedStyle(e).display") == "flex"
    # The explorer plugin's own bundle loaded too.
    await expect(page.get_by_role("button", name="Show GraphiQL Explorer")).to_be_visible()
    await page.locator(".graphiql-query-editor .CodeMirror").evaluate(
        "e => e.CodeMirror.setValue('{ __typename }')"
    )
    await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    await expect(page.get_by_role("region", name="Result Window")).to_contain_text(
        '"__typename": "Query"', timeout=WAIT_MS
    )
    # It read the schema (introspection), so the explorer plugin lists the queries.
    await page.get_by_role("button", name="Show GraphiQL Explorer").click()
    explorer = page.locator(".graphiql-explorer-root")
    await expect(explorer).to_contain_text("huddleAgenda", timeout=WAIT_MS)
    await page.screenshot(path=tmp_path / "graphiql-offline.png")
    assert elsewhere == []
    refused = [line for line in console.lines if "Content Security Policy" in line]
    assert refused == []
    assert [line for line in console.lines if line.startswith(("error", "pageerror"))] == []
    await context.close()
