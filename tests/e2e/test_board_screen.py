"""The huddle board page on a wall screen, in headless Chromium against an API the test
answers itself (the page's own files from services/api/static, the GraphQL reads and the
graphql-transport-ws subscription played by the test): thirty cards fit 1920x1080, each
names its patient unless redacted, the agenda and the viewer show, kiosk mode has no
controls, and a dropped connection resumes after the last position without reading the
board again, nor polling it."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    Page,
    ViewportSize,
    WebSocketRoute,
    expect,
)

from services.api.board_page import STATIC_DIR
from tests.e2e.test_board_page import Console, keep

ORIGIN = "http://screen.test"
TEAM = "t-screen"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.e30.c2NyZWVu"
WALL: ViewportSize = {"width": 1920, "height": 1080}
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
VIEWER = "Dana Lead"
RESTRICTED = "Restricted — consent required"
SECRET_PATIENT = "Rosalind Withheld"
WAIT_MS = 10_000
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Now, so that nothing on the page depends on the day the test runs.
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()

PATIENTS = [
    "Ada Okafor",
    "Bruno Lindqvist",
    "Chen Wei",
    "Dolores Ramírez",
    "Emeka Nwosu",
    "Farah Haddad",
]
# Thirty cards as a busy huddle has them: most to do, a few in each other column.
SPREAD = {"TODO": 16, "IN_PROGRESS": 6, "BLOCKED": 4, "DONE": 4}


def _task(n: int, status: str, **fields: Any) -> dict[str, Any]:
    patient = PATIENTS[n % len(PATIENTS)]
    due: date = TODAY + timedelta(days=(n % 9) - 2)
    card: dict[str, Any] = {
        "id": f"task-{n}",
        "title": f"Task {n}: review medication list and call about follow-up",
        "status": status,
        "assigneeId": "u-1",
        "discipline": "NURSE",
        "dueDate": due.isoformat(),
        "overdue": due < TODAY and status not in ("DONE", "CANCELLED"),
        "sensitivity": [],
        "redacted": False,
        "updatedAt": (NOW - timedelta(minutes=n)).isoformat(),
        "patientId": f"p-{n % len(PATIENTS)}",
        "blockedReason": "Waiting for insurer reply" if status == "BLOCKED" else None,
        "source": "MANUAL",
        "urgent": False,
        "escalated": False,
        "signalCount": 0,
        "assignee": {"userId": "u-1", "name": "Sam Nurse"},
        "patient": {"id": f"p-{n % len(PATIENTS)}", "name": patient},
    }
    return card | fields


def thirty_cards() -> list[dict[str, Any]]:
    tasks, n = [], 0
    for status, count in SPREAD.items():
        for _ in range(count):
            tasks.append(_task(n, status))
            n += 1
    # One card the viewer may not read: the API withholds its title; its patient stays off.
    tasks[3] |= {
        "redacted": True,
        "title": "[restricted]",
        "sensitivity": ["GENETIC"],
        "patient": {"id": "p-secret", "name": SECRET_PATIENT},
        "patientId": "p-secret",
    }
    # One about no patient at all, and one a reading raised.
    tasks[5] |= {"patientId": None, "patient": None, "title": "Restock the glucometer strips"}
    tasks[7] |= {"source": "SIGNAL", "urgent": True, "signalCount": 2, "title": "Glucose 350"}
    return tasks


class FakeApi:
    """The API as the page sees it: the board read (with its position), the agenda, and a
    boardChanged subscription that replays the changes after `after`, then goes live."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = {t["id"]: t for t in tasks}
        self.position = 100  # the board as read reflects this position
        self.log: list[dict[str, Any]] = []  # changes after the board's position
        self.oldest = 0  # a resume from before this position is refused (CONFLICT)
        self.board_reads = 0
        self.agenda_reads = 0
        self.subscribed: list[Any] = []  # the `after` of every subscribe message
        self.sockets: list[WebSocketRoute] = []
        self.live: dict[int, str] = {}  # socket index -> subscription id

    # --- GraphQL over HTTP ---------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        query = body["query"]
        if "huddleAgenda" in query:
            self.agenda_reads += 1
            return {"data": {"huddleAgenda": self.agenda()}}
        self.board_reads += 1
        columns = [
            {"status": s, "tasks": [t for t in self.tasks.values() if t["status"] == s]}
            for s in ("TODO", "IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED")
        ]
        return {
            "data": {
                "me": {"userId": "u-lead", "name": VIEWER},
                # The roster too, as the page once named assignees by it.
                "team": {
                    "id": TEAM,
                    "name": "Cardiometabolic clinic",
                    "members": [{"userId": "u-1", "name": "Sam Nurse"}],
                },
                "board": {
                    "teamId": TEAM,
                    "asOf": NOW.isoformat(),
                    "position": str(self.position),
                    "columns": columns,
                },
            }
        }

    def agenda(self) -> dict[str, Any]:
        review = (TODAY + timedelta(days=2)).isoformat()
        return {
            "plansDueForReview": [
                {
                    "id": "plan-1",
                    "patientId": "p-1",
                    "title": "Heart failure plan",
                    "nextReviewDate": review,
                }
            ],
            "goalsAtRisk": [{"id": "goal-1", "description": "HbA1c below 7%"}],
            "readingsOverdue": [
                {"id": "mon-1", "redacted": False, "measure": {"name": "Body weight"}}
            ],
        }

    # --- the subscription -----------------------------------------------------------------

    def change(self, change: str, task: dict[str, Any]) -> None:
        """A change on the board: logged (for a resume) and pushed to the open sockets."""
        self.position += 1
        if change != "REMOVED":
            self.tasks[task["id"]] = task
        else:
            self.tasks.pop(task["id"], None)
        event = {"teamId": TEAM, "change": change, "position": str(self.position), "task": task}
        self.log.append(event)
        for index, sid in self.live.items():
            self._next(self.sockets[index], sid, event)

    def _next(self, ws: WebSocketRoute, sid: str, event: dict[str, Any]) -> None:
        payload = {"data": {"boardChanged": event}}
        ws.send(json.dumps({"type": "next", "id": sid, "payload": payload}))

    def socket(self, ws: WebSocketRoute) -> None:
        index = len(self.sockets)
        self.sockets.append(ws)

        def message(raw: str | bytes) -> None:
            msg = json.loads(raw)
            kind = msg["type"]
            if kind == "connection_init":
                ws.send(json.dumps({"type": "connection_ack"}))
            elif kind == "ping":
                ws.send(json.dumps({"type": "pong"}))
            elif kind == "subscribe":
                after = msg["payload"]["variables"].get("after")
                self.subscribed.append(after)
                if after is not None and int(after) < self.oldest:
                    error = {
                        "message": "That position is no longer held: read the board again.",
                        "extensions": {"code": "CONFLICT", "refetch": True},
                    }
                    ws.send(json.dumps({"type": "error", "id": msg["id"], "payload": [error]}))
                    return
                for event in self.log if after is not None else ():
                    if int(event["position"]) > int(after):
                        self._next(ws, msg["id"], event)
                self.live[index] = msg["id"]
            elif kind == "complete":
                self.live.pop(index, None)

        ws.on_message(message)
        ws.on_close(lambda *_: self.live.pop(index, None))

    async def drop(self) -> None:
        """The server goes away (a restart): every open socket closes, retryably."""
        for index in list(self.live):
            self.live.pop(index)
            await self.sockets[index].close(code=1012, reason="service restart")


async def _open(
    browser: Browser,
    api: FakeApi,
    viewport: ViewportSize,
    *,
    kiosk: bool = False,
    clock: bool = False,
) -> tuple[Page, Console]:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    console = Console(page)

    async def serve(route: Any) -> None:
        request = route.request
        url = request.url
        if url.endswith("/graphql"):
            await route.fulfill(json=api.answer(json.loads(request.post_data or "{}")))
            return
        name = url.split("?")[0].split("#")[0].rsplit("/", 1)[-1]
        path = STATIC_DIR / ("vendor/" if "/vendor/" in url else "") / name
        if "/board/" in url:
            path = STATIC_DIR / "board.html"
        content_type = CONTENT_TYPES.get(path.suffix, "text/plain")
        await route.fulfill(body=path.read_bytes(), content_type=content_type)

    await page.route(f"{ORIGIN}/**", serve)
    await page.route_web_socket(f"ws://{ORIGIN.split('//')[1]}/graphql", api.socket)
    if clock:
        await page.clock.install()
    query = "?kiosk=1" if kiosk else ""
    await page.goto(f"{ORIGIN}/board/{TEAM}{query}#token={TOKEN}")
    await expect(page.locator(".card").first).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    return page, console


async def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    await page.screenshot(path=path)
    keep(path)


# Where each card is, against the window and its column's scrolling list, once the list is
# scrolled to it: a card counts as shown if it then lies wholly inside both.
_REACH = """() => {
  const out = [];
  for (const card of document.querySelectorAll('#board .card')) {
    const list = card.closest('.cards');
    const before = card.getBoundingClientRect();
    const inView = (r) =>
      r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
    const inList = (r, l) => r.top >= l.top - 1 && r.bottom <= l.bottom + 1;
    const seenAtOnce = inView(before) && inList(before, list.getBoundingClientRect());
    card.scrollIntoView({block: 'nearest', inline: 'nearest'});
    const after = card.getBoundingClientRect();
    out.push({
      id: card.dataset.taskId,
      seenAtOnce,
      reached: inView(after) && inList(after, list.getBoundingClientRect()),
      pageScrolled: scrollX !== 0 || scrollY !== 0,
    });
    list.scrollTop = 0;
  }
  return out;
}"""


async def _layout_facts(page: Page) -> dict[str, Any]:
    return await page.evaluate(
        """() => ({
          pageHeight: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
          pageWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
          viewportHeight: innerHeight,
          viewportWidth: innerWidth,
        })"""
    )


@pytest.mark.parametrize(
    ("viewport", "name"), [(WALL, "board-1920x1080.png"), (LAPTOP, "board-1280x800.png")]
)
async def test_thirty_cards_fit_the_screen_each_naming_its_patient_beside_the_agenda(
    browser: Browser, tmp_path: Path, viewport: ViewportSize, name: str
) -> None:
    api = FakeApi(thirty_cards())
    page, console = await _open(browser, api, viewport)
    await expect(page.locator("#board .card")).to_have_count(30)

    facts = await _layout_facts(page)
    assert facts["pageHeight"] <= facts["viewportHeight"], facts
    assert facts["pageWidth"] <= facts["viewportWidth"], facts
    reach = await page.evaluate(_REACH)
    assert len(reach) == 30
    assert [c["id"] for c in reach if not c["reached"]] == []
    assert not any(c["pageScrolled"] for c in reach)
    if viewport == WALL:
        # On the wall screen nobody scrolls: every card is on it at once.
        assert [c["id"] for c in reach if not c["seenAtOnce"]] == []
    await _shot(page, tmp_path, name)

    # Each card names its patient, as the policy allows: none on the redacted card.
    for task in api.tasks.values():
        card = page.locator(f'.card[data-task-id="{task["id"]}"]')
        if task["redacted"]:
            await expect(card).to_contain_text(RESTRICTED)
            await expect(card.locator(".patient")).to_be_hidden()
        elif task["patient"]:
            await expect(card.locator(".patient")).to_have_text(task["patient"]["name"])
        else:
            await expect(card.locator(".patient")).to_be_hidden()
    assert SECRET_PATIENT not in await page.content()

    # The agenda: overdue and blocked from the live board, reviews due and signals.
    overdue = [t for t in api.tasks.values() if t["overdue"]]
    agenda = page.locator("#agenda")
    await expect(agenda).to_be_visible()
    await expect(agenda.locator('[data-part="overdue"] .count')).to_have_text(str(len(overdue)))
    await expect(agenda.locator('[data-part="blocked"] .count')).to_have_text("4")
    await expect(agenda.locator('[data-part="reviews"]')).to_contain_text("Heart failure plan")
    await expect(agenda.locator('[data-part="reviews"]')).to_contain_text(PATIENTS[1])
    signals = agenda.locator('[data-part="signals"]')
    await expect(signals).to_contain_text("Glucose 350")
    await expect(signals).to_contain_text("HbA1c below 7%")
    await expect(signals).to_contain_text("Body weight")

    # Who is signed in, and a blocked card says what it waits for once.
    await expect(page.locator("#viewer")).to_contain_text(VIEWER)
    blocked = page.locator('.column[data-status="BLOCKED"] .card').first
    await expect(blocked.locator(".blocked-reason")).to_have_text("Waiting for insurer reply")
    assert (await blocked.inner_text()).count("Waiting for") == 1
    await expect(page.locator("#sign-out")).to_be_visible()
    assert console.lines == []
    await page.context.close()


async def test_a_kiosk_screen_shows_no_sign_out_and_no_controls_and_keeps_its_token(
    browser: Browser, tmp_path: Path
) -> None:
    api = FakeApi(thirty_cards())
    page, console = await _open(browser, api, WALL, kiosk=True)

    await expect(page.locator("#sign-out")).to_be_hidden()
    controls = page.locator("button:visible, summary:visible, textarea:visible, input:visible")
    await expect(controls).to_have_count(0)
    await expect(page.locator("#viewer")).to_contain_text(VIEWER)
    assert TOKEN not in page.url
    # A wall screen's browser restarts: the token outlives the tab, and only there.
    assert await page.evaluate("localStorage.length") == 1
    assert await page.evaluate("sessionStorage.length") == 0
    facts = await _layout_facts(page)
    assert facts["pageHeight"] <= facts["viewportHeight"], facts
    await _shot(page, tmp_path, "board-kiosk-1920x1080.png")

    await page.reload()
    await expect(page.locator("#board .card")).to_have_count(30, timeout=WAIT_MS)

    # Signed out from the same browser without ?kiosk=1: the screen's token goes too.
    await page.goto(f"{ORIGIN}/board/{TEAM}#token={TOKEN}")
    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("localStorage.length + sessionStorage.length") == 0
    await page.goto(f"{ORIGIN}/board/{TEAM}?kiosk=1")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator(".card")).to_have_count(0)
    assert console.lines == []
    await page.context.close()


async def test_a_dropped_connection_resumes_after_the_last_position_without_reading_the_board(
    browser: Browser,
) -> None:
    api = FakeApi(thirty_cards())
    page, console = await _open(browser, api, WALL)
    assert api.board_reads == 1 and api.subscribed == ["100"]

    moved = api.tasks["task-0"] | {"status": "IN_PROGRESS"}
    api.change("MOVED", moved)
    card = page.locator('.column[data-status="IN_PROGRESS"] .card[data-task-id="task-0"]')
    await expect(card).to_be_visible(timeout=WAIT_MS)

    await api.drop()
    await expect(page.locator("#connection")).not_to_have_attribute("data-state", "live")
    # Meanwhile, a card is added: the page hears of it only through the resume.
    added = _task(99, "TODO", title="Arrange a home visit", updatedAt=NOW.isoformat())
    api.change("CREATED", added)

    new_card = page.locator('.column[data-status="TODO"] .card[data-task-id="task-99"]')
    await expect(new_card).to_be_visible(timeout=WAIT_MS)
    await expect(new_card.locator(".patient")).to_have_text(added["patient"]["name"])
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert api.subscribed == ["100", "101"], "the resume starts after the last position"
    assert api.board_reads == 1, "the board was read again"

    # A card the viewer may no longer see goes.
    api.change("REMOVED", moved)
    await expect(page.locator('.card[data-task-id="task-0"]')).to_have_count(0)
    assert console.lines == []
    await page.context.close()


async def test_a_resume_the_server_refuses_reads_the_board_again_and_subscribes_after_it(
    browser: Browser,
) -> None:
    api = FakeApi(thirty_cards())
    page, _ = await _open(browser, api, WALL)

    await api.drop()
    # The server restarts with a rebuilt board: the page's position is no longer held.
    added = _task(98, "TODO", title="Call the pharmacy", updatedAt=NOW.isoformat())
    api.change("CREATED", added)
    api.oldest = api.position + 1
    api.position += 5  # the rebuilt board's position

    await expect(page.locator('.card[data-task-id="task-98"]')).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert api.board_reads == 2
    assert api.subscribed == ["100", "100", "106"]
    await page.context.close()


async def test_an_hour_on_the_wall_reads_the_board_once_and_the_agenda_once_an_hour(
    browser: Browser,
) -> None:
    """The page polls nothing: with the browser's clock run an hour ahead, the board is
    read only at the start (the old page read it every 60 s)."""
    api = FakeApi(thirty_cards())
    page, _ = await _open(browser, api, WALL, clock=True)
    assert api.board_reads == 1

    for _ in range(60):  # a minute at a time, so that a fetch a timer starts gets answered
        await page.clock.run_for(60_000)
        await page.wait_for_timeout(20)

    print(f"\nin an hour: {api.board_reads} board reads, {api.agenda_reads} agenda reads")
    assert api.board_reads == 1, "the board was read again"
    assert api.agenda_reads == 2
    await page.context.close()


async def test_a_card_turns_overdue_once_its_due_date_has_passed_everywhere_with_no_read(
    browser: Browser,
) -> None:
    """The server's notice that a task became overdue is not replayed on a resume, so the
    page works out the flip itself (the server's rule: the due date passed in UTC-12)."""
    # Due today in UTC-12 (the last place on Earth where it is still that day): not overdue.
    due = (datetime.now(UTC) - timedelta(hours=12)).date().isoformat()
    task = _task(0, "TODO", dueDate=due, overdue=False, title="Send the discharge letter")
    api = FakeApi([task])
    page, console = await _open(browser, api, WALL, clock=True)
    card = page.locator('.card[data-task-id="task-0"]')
    await expect(card).not_to_contain_text("Overdue")
    await expect(page.locator('[data-part="overdue"] .count')).to_have_text("0")

    await page.clock.fast_forward(25 * 60 * 60 * 1000)  # a day later, as after a sleep

    await expect(card).to_contain_text("Overdue")
    await expect(card).to_have_class(re.compile(r"\boverdue\b"))
    await expect(page.locator('[data-part="overdue"] .count')).to_have_text("1")
    assert api.board_reads == 1
    assert console.lines == []
    await page.context.close()


async def test_a_closed_card_leaves_the_wall_once_it_is_older_than_a_board_read_shows(
    browser: Browser,
) -> None:
    """A screen left running for weeks drops a done card as a fresh board read would (it
    shows those closed within 14 days), with no read: none is kept past what a consent
    change re-decides."""
    closed = (datetime.now(UTC) - timedelta(days=13, hours=12)).isoformat()
    done = _task(0, "DONE", updatedAt=closed, title="Send the discharge letter")
    api = FakeApi([done, _task(1, "TODO")])
    page, console = await _open(browser, api, WALL, clock=True)
    card = page.locator('.card[data-task-id="task-0"]')
    await expect(card).to_be_visible()

    await page.clock.fast_forward(25 * 60 * 60 * 1000)  # a day later

    await expect(card).to_have_count(0)
    await expect(page.locator('.card[data-task-id="task-1"]')).to_be_visible()
    assert api.board_reads == 1
    assert console.lines == []
    await page.context.close()


async def test_a_server_that_refuses_every_resume_gets_board_reads_that_back_off(
    browser: Browser,
) -> None:
    """Each board read is an access record per patient on it: a resume refused again and
    again (a server bug, a board rebuilt in a loop) must not become a tight read loop."""
    api = FakeApi(thirty_cards())
    page, _ = await _open(browser, api, WALL, clock=True)
    api.oldest = 10**9  # from now on every resume is refused

    await api.drop()
    for _ in range(60):  # a minute, a second at a time
        await page.clock.run_for(1000)
        await page.wait_for_timeout(20)

    # Right away, then after 2, 4, 8, 16 and 32 s at most.
    assert 2 <= api.board_reads <= 7, api.board_reads
    await expect(page.locator("#board .card")).to_have_count(30)
    await page.context.close()
