"""Access records per screen-hour of the board page, measured (run by hand, not collected
by pytest): `python -m tests.e2e.board_access_hour old|new [minutes]`.

It starts a stack, seeds the demo team and adds eleven patients with a task each (28 cards,
12 patients), opens one headless Chromium screen at 1920x1080 as the team's pharmacist, and
runs the page's clock ahead in 5 s steps (Playwright's fake clock; the server keeps real
time). The audit log's entries whose actor is the pharmacist are counted after the page
loaded and again after the hour, each count taken once it stops growing (the audit writer
follows within moments). `old` serves the page's files as of commit 82a2fdd (the page
that refetched the board every 60 s and on every connection), `new` those of this tree.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Route, async_playwright

from services.common.dev_secrets import jwt_secret
from services.demo import seed
from services.settings import Settings
from tests import operations as op
from tests.e2e.chromium import CHROMIUM_ARGS, chromium
from tests.e2e.conftest import start_stack, stop_stack
from tests.graphql import gql

OLD = "82a2fdd"
ROOT = Path(__file__).resolve().parents[2]
CONTENT_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}


def _old_file(name: str) -> bytes:
    git = shutil.which("git")
    assert git is not None, "git is needed to read the old page's files"
    path = f"{OLD}:services/api/static/{name}"
    return subprocess.run(
        [git, "-C", str(ROOT), "show", path], check=True, capture_output=True
    ).stdout


async def _entries(api: httpx.AsyncClient, officer: str, actor: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        variables = {"filter": {"actorId": actor}, "first": 500, "after": after}
        page = (await gql(api, op.AUDIT_TRAIL, variables, token=officer))["auditTrail"]
        out += page["entries"]
        if not (after := page["nextCursor"]):
            return out


async def _settled(api: httpx.AsyncClient, officer: str, actor: str) -> list[dict[str, Any]]:
    """The actor's entries once their count has not moved for four seconds."""
    last, same = -1, 0
    while same < 4:
        count = len(await _entries(api, officer, actor))
        same = same + 1 if count == last else 0
        last = count
        await asyncio.sleep(1)
    return await _entries(api, officer, actor)


async def measure(which: str, minutes: int) -> None:
    stack = start_stack(Path(tempfile.mkdtemp(prefix="board-access-")), {})
    try:
        stack.wait_for_line(r"carecoord is up", seconds=180)
        secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
        assert secret is not None
        demo = await seed(stack.base_url, secret=secret)
        viewer, lead = demo.member("PHARMACIST"), demo.members[0]
        officer = stack.token("co-measure", "Cora Compliance", "compliance_officer")
        async with (
            httpx.AsyncClient(base_url=stack.base_url, timeout=30) as api,
            async_playwright() as playwright,
        ):
            today = datetime.now(UTC).date()
            for i in range(11):
                patient = {"teamId": demo.team_id, "mrn": f"MEAS-{i:04d}"}
                patient |= {"name": f"Patient Number{i}", "birthDate": f"1960-01-{1 + i:02d}"}
                enrolled = (await gql(api, op.ENROLL, patient, token=lead.token))["enrollPatient"]
                due = today + timedelta(days=-2 if i < 3 else 5)
                task = {"teamId": demo.team_id, "title": f"Follow up {i}"}
                task |= {"patientId": enrolled["id"], "dueDate": due.isoformat()}
                await gql(api, op.CREATE_TASK, task, token=lead.token)
            await asyncio.sleep(5)
            board = await gql(api, op.BOARD, {"teamId": demo.team_id}, token=lead.token)
            cards = [t for c in board["board"]["columns"] for t in c["tasks"]]
            patients = {t["patientId"] for t in cards if t["patientId"]}
            print(f"board: {len(cards)} cards, {len(patients)} patients")
            before = await _settled(api, officer, viewer.user_id)

            browser = await playwright.chromium.launch(
                executable_path=chromium(), args=CHROMIUM_ARGS
            )
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            reads: collections.Counter[str] = collections.Counter()

            async def serve(route: Route) -> None:
                url, request = route.request.url, route.request
                if url.endswith("/graphql") and request.method == "POST":
                    reads["agenda" if "huddleAgenda" in (request.post_data or "") else "board"] += 1
                elif which == "old" and ("/static/board." in url or "/board/" in url):
                    name = url.split("?")[0].rsplit("/", 1)[-1]
                    name = name if name.startswith("board.") else "board.html"
                    kind = CONTENT_TYPES[name.rsplit(".", 1)[-1]]
                    await route.fulfill(body=_old_file(name), content_type=kind)
                    return
                await route.continue_()

            await page.route(f"{stack.base_url}/**", serve)
            await page.clock.install()
            await page.goto(demo.board_url(viewer))
            await page.locator(".card").first.wait_for(timeout=30_000)
            await page.wait_for_timeout(3000)
            loaded = await _settled(api, officer, viewer.user_id)
            at_load = dict(reads)
            for _ in range(minutes * 12):
                await page.clock.run_for(5000)
                await page.wait_for_timeout(40)
            await page.wait_for_timeout(3000)
            after = await _settled(api, officer, viewer.user_id)
            await browser.close()
        hour = after[len(loaded) :]
        kinds = collections.Counter(f"{e['resource'].split('/')[0]}:{e['action']}" for e in hour)
        since = {k: reads[k] - at_load.get(k, 0) for k in reads}
        print(f"{which}: page load: {len(loaded) - len(before)} access records, reads {at_load}")
        print(
            f"{which}: next {minutes} min: {len(hour)} access records {dict(kinds)}, reads {since}"
        )
    finally:
        stop_stack(stack)


if __name__ == "__main__":
    asyncio.run(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60))
