"""The live huddle board page in headless Chromium on the running stack: a move made over
the API reaches the open page without a reload, a genetic item shows per consent, a page
without a token asks for one, and a change made while the browser was offline appears
once it is back (by resuming the subscription, not reading the board again)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
)

from services.api.board_page import STATIC_DIR
from services.common.auth import mint_token
from services.common.dev_secrets import jwt_secret
from services.demo import Demo, Member, seed
from services.demo.scenario import PATIENT_NAME, TEAM_NAME
from services.settings import Settings
from tests import operations as op
from tests.e2e.conftest import Stack
from tests.graphql import gql

WALL_SCREEN: ViewportSize = {"width": 1920, "height": 1080}
SECRET_WORD = "CYP2C9"
RESTRICTED = "Restricted — consent required"
WAIT_MS = 30_000  # a change crosses the outbox, Kafka and the worker before it is pushed


class Console:
    """What a page wrote to its console, and the errors it threw."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        self.lines.append(f"{message.type}: {message.text}")


async def _page(browser: Browser) -> tuple[BrowserContext, Page, Console]:
    context = await browser.new_context(viewport=WALL_SCREEN)
    page = await context.new_page()
    return context, page, Console(page)


# --- the demo team ---------------------------------------------------------------------


async def _overdue_and_blocked(demo: Demo) -> tuple[str, str]:
    """Adds to the demo an overdue task and a blocked one, as a huddle's board has them."""
    lead, social_worker = demo.members[0], demo.member("SOCIAL_WORKER")
    today = datetime.now(UTC).date()
    titles = ("Repeat potassium and creatinine", "Book a post-shift lab slot")
    for title, member, due_in in ((titles[0], lead, -3), (titles[1], social_worker, 10)):
        task = {"teamId": demo.team_id, "title": title, "patientId": demo.patient_id}
        task |= {"assigneeId": member.user_id, "discipline": member.discipline}
        task |= {"dueDate": (today + timedelta(days=due_in)).isoformat()}
        created = (await _call(demo, op.CREATE_TASK, task))["createTask"]
    await _call(
        demo, op.MOVE_TASK, {"taskId": created["id"], "status": "BLOCKED", "reason": "transport"}
    )
    return titles


@pytest.fixture(scope="module")
async def demo(stack: Stack) -> Demo:
    secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
    assert secret is not None, "the stack made no JWT secret"
    return await seed(stack.base_url, secret=secret)


async def _board(demo: Demo, member: Member) -> dict[str, list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=demo.base_url, timeout=15) as api:
        board = (await gql(api, op.BOARD, {"teamId": demo.team_id}, token=member.token))["board"]
    return {column["status"]: column["tasks"] for column in board["columns"]}


async def _open_task(demo: Demo) -> dict[str, Any]:
    """A TODO task every member sees in full (seed() returns once the board has them)."""
    todo = (await _board(demo, demo.members[0]))["TODO"]
    return next(t for t in todo if not t["redacted"] and not t["sensitivity"])


async def _call(demo: Demo, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=demo.base_url, timeout=15) as api:
        return await gql(api, query, variables, token=demo.members[0].token)


def _card(page: Page, status: str, title: str) -> Any:
    return page.locator(f'.column[data-status="{status}"] .card', has_text=title)


# Where to copy the screenshots for people to look at (they stay in the test's temporary
# folder either way).
SCREENS = os.environ.get("CARECOORD_TEST_SCREENSHOTS")


def _shot(page_path: Path) -> Path:
    print(f"\nscreenshot: {page_path}")
    return page_path


def keep(path: Path) -> None:
    """A copy of a screenshot where the people reviewing the page look at them, if asked
    for (CARECOORD_TEST_SCREENSHOTS)."""
    print(f"\nscreenshot: {path}")
    if SCREENS:
        folder = Path(SCREENS)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)


# --- the tests -------------------------------------------------------------------------


async def test_a_task_moved_over_the_api_moves_on_the_open_board_and_genetic_items_follow_consent(
    browser: Browser, demo: Demo, tmp_path: Path
) -> None:
    pharmacist, social_worker = demo.viewers
    overdue, blocked = await _overdue_and_blocked(demo)
    task = await _open_task(demo)
    context, page, console = await _page(browser)
    await page.goto(demo.board_url(pharmacist))
    await expect(_card(page, "TODO", task["title"])).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    loaded_at = await page.evaluate("window.__loadedAt = Date.now()")

    await _call(demo, op.MOVE_TASK, {"taskId": task["id"], "status": "IN_PROGRESS"})

    await expect(_card(page, "IN_PROGRESS", task["title"])).to_be_visible(timeout=WAIT_MS)
    await expect(_card(page, "TODO", task["title"])).to_have_count(0)
    assert await page.evaluate("window.__loadedAt") == loaded_at, "the page reloaded"
    assert "token" not in page.url and pharmacist.token not in page.url
    assert await page.title() == "Team board · carecoord"
    await expect(page.locator("#team-name")).to_have_text(TEAM_NAME)
    await expect(page.locator(".card", has_text=SECRET_WORD).first).to_be_visible()
    await expect(page.locator(".card.restricted")).to_have_count(0)
    # Overdue and blocked say so in words, not by colour alone; assignees go by name.
    await expect(page.locator(".card.overdue", has_text=overdue)).to_contain_text("Overdue")
    await expect(_card(page, "BLOCKED", blocked)).to_contain_text("Blocked")
    await expect(_card(page, "BLOCKED", blocked)).to_contain_text("Waiting for: transport")
    await expect(_card(page, "BLOCKED", blocked)).to_contain_text(demo.member("SOCIAL_WORKER").name)
    # Each card says which patient it is about; the page says who is looking.
    await expect(_card(page, "IN_PROGRESS", task["title"]).locator(".patient")).to_have_text(
        PATIENT_NAME
    )
    await expect(page.locator("#viewer")).to_contain_text(pharmacist.name)
    await expect(page.locator("#agenda [data-part='blocked']")).to_contain_text(blocked)
    await page.screenshot(path=_shot(tmp_path / "board-stack-pharmacist.png"), full_page=True)
    keep(tmp_path / "board-stack-pharmacist.png")
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.screenshot(path=_shot(tmp_path / "board-stack-pharmacist-1280x800.png"))
    keep(tmp_path / "board-stack-pharmacist-1280x800.png")

    other, worker_page, worker_console = await _page(browser)
    await worker_page.goto(demo.board_url(social_worker))
    restricted = worker_page.locator(".card.restricted").first
    await expect(restricted).to_be_visible(timeout=WAIT_MS)
    await expect(restricted).to_contain_text(RESTRICTED)
    await expect(restricted.locator(".patient")).to_be_hidden()
    await expect(_card(worker_page, "IN_PROGRESS", task["title"])).to_be_visible()
    html = await worker_page.content()
    assert SECRET_WORD not in html and "[restricted]" not in html
    assert SECRET_WORD not in await worker_page.inner_text("body")
    await worker_page.screenshot(
        path=_shot(tmp_path / "board-stack-social-worker.png"), full_page=True
    )
    keep(tmp_path / "board-stack-social-worker.png")

    # Nothing on the console: no CSP violation, no error, and so no PHI either.
    assert console.lines == [] and worker_console.lines == []
    await context.close()
    await other.close()


async def test_a_page_without_a_token_asks_for_one_and_a_pasted_token_shows_the_board(
    browser: Browser, demo: Demo
) -> None:
    pharmacist = demo.member("PHARMACIST")
    context, page, console = await _page(browser)
    await page.goto(f"{demo.base_url}/board/{demo.team_id}")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#board")).to_be_hidden()

    await page.fill("#token-input", "not a token")
    await page.click("text=Show board")
    await expect(page.locator("#message")).to_contain_text("not a sign-in token")

    await page.fill("#token-input", pharmacist.token)
    await page.click("text=Show board")
    await expect(page.locator(".card").first).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#sign-in")).to_be_hidden()

    await page.reload()  # the token is kept for this tab
    await expect(page.locator(".card").first).to_be_visible(timeout=WAIT_MS)

    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator(".card")).to_have_count(0)
    assert await page.evaluate("sessionStorage.length") == 0
    assert console.lines == []
    await context.close()


async def test_a_refused_token_shows_why_and_asks_for_another(
    browser: Browser, demo: Demo, stack: Stack
) -> None:
    stranger = stack.token(f"stranger-{uuid.uuid4().hex[:8]}", "Not Onthe Team")
    context, page, _ = await _page(browser)

    await page.goto(f"{demo.base_url}/board/{demo.team_id}#token={stranger}")
    await expect(page.locator("#message")).to_contain_text("not available to you")
    await expect(page.locator("#sign-in")).to_be_visible()

    await page.goto(f"{demo.base_url}/board/{demo.team_id}#token=eyJhbGciOi.e30.bad")
    await expect(page.locator("#message")).to_contain_text("sign-in is not valid")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator(".card")).to_have_count(0)
    await context.close()


async def test_an_open_board_whose_token_expires_signs_out_and_asks_for_a_new_one(
    browser: Browser, demo: Demo, stack: Stack
) -> None:
    secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
    assert secret is not None
    lead = demo.members[0]
    short_lived = mint_token(secret=secret, sub=lead.user_id, name=lead.name, ttl_seconds=8)
    context, page, _ = await _page(browser)

    await page.goto(f"{demo.base_url}/board/{demo.team_id}#token={short_lived}")
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )

    # The server closes the socket (4401) at expiry; the page does not retry the old token.
    await expect(page.locator("#message")).to_contain_text("sign-in is not valid", timeout=WAIT_MS)
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator(".card")).to_have_count(0)
    await context.close()


def _resumes(page: Page) -> list[Any]:
    """The `after` of every boardChanged subscription the page sends from now on."""
    afters: list[Any] = []

    def frame(payload: str | bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "subscribe":
            afters.append(message["payload"]["variables"].get("after"))

    page.on("websocket", lambda ws: ws.on("framesent", frame))
    return afters


def _board_reads(page: Page) -> list[str]:
    """The board reads the page sends from now on (not its agenda reads)."""
    reads: list[str] = []

    def sent(request: Any) -> None:
        if request.url.endswith("/graphql") and "HuddleBoard(" in (request.post_data or ""):
            reads.append(request.url)

    page.on("request", sent)
    return reads


async def test_a_change_made_while_the_browser_was_offline_appears_once_it_reconnects(
    browser: Browser, demo: Demo
) -> None:
    """The page resumes its subscription after the last position it received: the change
    comes by the server's replay, not by reading the board again."""
    context, page, _ = await _page(browser)
    reads, afters = _board_reads(page), _resumes(page)
    await page.goto(demo.board_url(demo.members[0]))
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    loaded_at = await page.evaluate("window.__loadedAt = Date.now()")
    assert len(reads) == 1

    await context.set_offline(True)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", re.compile("offline|reconnecting"), timeout=WAIT_MS
    )
    title = f"Recheck potassium {uuid.uuid4().hex[:6]}"
    await _call(demo, op.CREATE_TASK, {"teamId": demo.team_id, "title": title})
    await asyncio.sleep(3)  # time enough for the push, had the socket still been open
    await expect(page.locator(".card", has_text=title)).to_have_count(0)

    await context.set_offline(False)

    await expect(_card(page, "TODO", title)).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    # The new subscription is live: a later move arrives too.
    task = next(t for t in (await _board(demo, demo.members[0]))["TODO"] if t["title"] == title)
    await _call(demo, op.MOVE_TASK, {"taskId": task["id"], "status": "DONE"})
    await expect(_card(page, "DONE", title)).to_be_visible(timeout=WAIT_MS)
    assert await page.evaluate("window.__loadedAt") == loaded_at, "the page reloaded"
    assert len(reads) == 1, "the board was read again: the change came by the refetch"
    # The first subscription starts after the board's position, the next after the last
    # position received (here, still the board's: nothing changed before the outage).
    assert len(afters) >= 2 and all(re.fullmatch(r"\d+", a) for a in afters), afters
    await context.close()


# --- signal cards, on the page alone ---------------------------------------------------

_ORIGIN = "http://board.test"
# When the answered board was read: now, so nothing on the page depends on the day it runs.
_AS_OF = datetime.now(UTC).replace(microsecond=0).isoformat()
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _signal_card(task_id: str, title: str, **fields: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": task_id,
        "title": title,
        "status": "TODO",
        "assigneeId": None,
        "discipline": "NURSE",
        "dueDate": None,
        "overdue": False,
        "sensitivity": [],
        "redacted": False,
        "updatedAt": _AS_OF,
        "patientId": "p-1",
        "blockedReason": None,
        "source": "SIGNAL",
        "urgent": False,
        "escalated": False,
        "signalCount": 1,
    }
    return card | fields


async def test_urgent_escalated_and_signal_cards_say_so_in_words_and_colour(
    browser: Browser, tmp_path: Path
) -> None:
    """The page shell and assets from services/api/static, the API answered by the test (a
    board of signal tasks): no stack needed to see how the cards are drawn."""
    team = "t-signals"
    tasks = [
        _signal_card("t-1", "Blood glucose 350 mg/dL", urgent=True, signalCount=3),
        _signal_card("t-2", "Blood glucose 320 mg/dL", urgent=True, escalated=True),
        _signal_card("t-3", "Body weight 130 kg", signalCount=2),
    ]
    board = {
        "me": {"userId": "u-1", "name": "Nia Nurse"},
        "team": {"id": team, "name": "Signals clinic"},
        "board": {
            "teamId": team,
            "asOf": _AS_OF,
            "position": "1",
            "columns": [{"status": "TODO", "tasks": tasks}]
            + [{"status": s, "tasks": []} for s in ("IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED")],
        },
    }
    context, page, console = await _page(browser)

    async def serve(route: Any) -> None:
        url = route.request.url
        if url.endswith("/graphql"):
            await route.fulfill(json={"data": board})
            return
        name = url.split("?")[0].rsplit("/", 1)[-1]
        path = STATIC_DIR / "board.html" if "/board/" in url else STATIC_DIR / name
        if "/vendor/" in url:
            path = STATIC_DIR / "vendor" / name
        suffix = path.suffix
        await route.fulfill(
            body=path.read_bytes(), content_type=_CONTENT_TYPES.get(suffix, "text/plain")
        )

    await page.route(f"{_ORIGIN}/**", serve)
    await page.goto(f"{_ORIGIN}/board/{team}#token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln")

    urgent = _card(page, "TODO", "350 mg/dL")
    escalated = _card(page, "TODO", "320 mg/dL")
    quiet = _card(page, "TODO", "130 kg")
    await expect(urgent).to_be_visible(timeout=WAIT_MS)
    await expect(urgent).to_contain_text("Urgent")
    await expect(urgent).to_contain_text("3 signals")
    await expect(urgent).not_to_contain_text("Escalated")
    await expect(escalated).to_contain_text("Urgent")
    await expect(escalated).to_contain_text("Escalated to leads")
    await expect(escalated).to_contain_text("1 signal")
    await expect(quiet).to_contain_text("2 signals")
    await expect(quiet).not_to_contain_text("Urgent")
    await expect(page.locator(".card.urgent")).to_have_count(2)
    await expect(page.locator(".card.escalated")).to_have_count(1)
    # In colour too: the urgent flag is drawn on a red of its own, not the card's surface.
    flag_bg = await urgent.locator(".flag-urgent").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    card_bg = await urgent.evaluate("e => getComputedStyle(e).backgroundColor")
    assert flag_bg != card_bg
    escalated_bg = await escalated.locator(".flag-escalated").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert escalated_bg not in (flag_bg, card_bg)
    await page.screenshot(path=_shot(tmp_path / "board-signals.png"), full_page=True)
    # The socket to the test origin cannot open; nothing else may be on the console.
    assert [line for line in console.lines if "WebSocket" not in line] == []
    await context.close()
