"""`carecoord demo` on the running stack: what it seeds, read back over HTTP through the
two board URLs it prints, and the one-line errors when it cannot do its work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from services.common import embedded
from services.common.dev_secrets import jwt_secret
from services.demo import DemoError, seed
from services.settings import Settings
from tests.e2e.conftest import Stack
from tests.fhir import references_in
from tests.graphql import gql

SEVEN = {
    "PHYSICIAN",
    "NURSE_PRACTITIONER",
    "PHARMACIST",
    "GENETIC_COUNSELOR",
    "SOCIAL_WORKER",
    "DIETITIAN",
    "NURSE",
}
READ_BACK = """
query Demo($team: ID!, $patient: ID!, $plan: ID!, $huddle: ID!) {
  team(id: $team) { name members { userId name disciplines lead } }
  patient(id: $patient) { mrn birthDate }
  carePlan(id: $plan) {
    status nextReviewDate
    goals { description target dueDate status }
    interventions { kind tier title detail responsibleDiscipline sensitivity redacted }
  }
  huddle(id: $huddle) {
    status notes { text redacted } actionItems { title discipline assigneeId dueDate }
  }
  board(teamId: $team) { columns { tasks { title sensitivity redacted } } }
}"""
SIGNALS = """
query Signals($team: ID!, $plan: ID!) {
  carePlan(id: $plan) {
    monitoring { measure { code } responsibleDiscipline high criticalHigh status
                 latest { value unit source } }
    goals { measurable { measure { code } comparator value unit } progress }
  }
  board(teamId: $team) {
    columns { tasks { title source discipline signalCount urgent escalated } } }
  huddleAgenda(teamId: $team) { signals { title discipline signalCount } }
}"""


@dataclass
class Board:
    label: str
    team_id: str
    token: str


@dataclass
class Printed:
    ids: dict[str, str]
    boards: list[Board]


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse(stdout: str) -> Printed:
    lines = stdout.splitlines()
    ids = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^  (team|patient|plan|huddle)\s+(\S+)", stdout, re.MULTILINE)
    }
    boards = []
    for n, line in enumerate(lines):
        if m := re.fullmatch(r"\s+http://\S+/board/([^/#\s]+)#token=(\S+)", line):
            boards.append(Board(label=lines[n - 1], team_id=m.group(1), token=m.group(2)))
    return Printed(ids, boards)


def age_on(today: date, born: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


async def read_back(stack: Stack, printed: Printed, token: str) -> dict[str, Any]:
    variables = {k: printed.ids[k] for k in ("team", "patient", "plan", "huddle")}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        return await gql(client, READ_BACK, variables, token=token)


def tasks(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for column in data["board"]["columns"] for t in column["tasks"]]


async def test_the_demo_seeds_a_seven_discipline_team_whose_two_boards_differ_by_consent(
    stack: Stack,
) -> None:
    today = date.today()
    done = run_demo(stack.env, "--api-url", stack.base_url)
    assert done.returncode == 0, done.stderr
    printed = parse(done.stdout)
    assert sorted(printed.ids) == ["huddle", "patient", "plan", "team"]
    assert "DEV ONLY" in done.stdout
    pharmacist, social_worker = printed.boards
    assert "Pharmacist" in pharmacist.label and "in full" in pharmacist.label
    assert "Social worker" in social_worker.label and "[restricted]" in social_worker.label
    assert pharmacist.team_id == social_worker.team_id == printed.ids["team"]

    seen = await read_back(stack, printed, pharmacist.token)
    hidden = await read_back(stack, printed, social_worker.token)

    members = seen["team"]["members"]
    assert len(members) == 7
    assert {d for m in members for d in m["disciplines"]} == SEVEN
    assert (members[0]["disciplines"], members[0]["lead"]) == (["PHYSICIAN"], True)
    assert [m["lead"] for m in members[1:]] == [False] * 6

    assert age_on(today, date.fromisoformat(seen["patient"]["birthDate"])) == 58
    assert seen["patient"]["mrn"].startswith("DEMO-")

    plan = seen["carePlan"]
    assert plan["status"] == "ACTIVE"
    assert plan["nextReviewDate"] == (today + timedelta(days=42)).isoformat()
    assert [g["target"] for g in plan["goals"]] == [
        "HbA1c < 7.0%",
        "< 130/80 mmHg, mean of a 7-day home series",
        "eGFR decline < 3 mL/min/1.73 m² per year; UACR tracked every 6 months, "
        "aiming for ≥ 30% lower",
    ]
    assert all(g["dueDate"] and g["status"] == "IN_PROGRESS" for g in plan["goals"])
    tiers = {i["tier"] for i in plan["interventions"]}
    assert tiers == {"FIRST_LINE", "SECOND_LINE", "RESCUE"}
    assert sum(i["kind"] == "MONITORING" for i in plan["interventions"]) == 4

    # Every intervention is a task on the board, with the review and the two action items.
    titles = [i["title"] for i in plan["interventions"]]
    board = tasks(seen)
    assert set(titles) <= {t["title"] for t in board}
    assert len(board) == len(titles) + 1 + 2 + 1  # and the glucose signal task

    [cyp2c9] = [t for t in board if t["title"].startswith("CYP2C9")]
    assert (cyp2c9["sensitivity"], cyp2c9["redacted"]) == (["GENETIC"], False)
    withheld = [t for t in tasks(hidden) if t["sensitivity"] == ["GENETIC"]]
    assert len(withheld) == 2
    assert all(t["redacted"] and t["title"] == "[restricted]" for t in withheld)
    assert not any("CYP2C9" in t["title"] for t in tasks(hidden))
    redacted_plan = [i for i in hidden["carePlan"]["interventions"] if i["redacted"]]
    assert [(i["title"], i["detail"]) for i in redacted_plan] == [("[restricted]",) * 2] * 2

    for data in (seen, hidden):
        huddle = data["huddle"]
        assert huddle["status"] == "CLOSED"
        assert len(huddle["notes"]) == 3
        assert [
            (a["discipline"], bool(a["assigneeId"] and a["dueDate"])) for a in huddle["actionItems"]
        ] == [("PHARMACIST", True), ("SOCIAL_WORKER", True)]
    assert [n["redacted"] for n in seen["huddle"]["notes"]] == [False] * 3
    assert [n["text"] for n in hidden["huddle"]["notes"] if n["redacted"]] == ["[restricted]"]

    # The week of home glucose readings: two above 250 mg/dL make one signal task for the
    # nurse (not two), titled with the latest and the threshold, and on the huddle agenda.
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        signals = await gql(
            client,
            SIGNALS,
            {"team": printed.ids["team"], "plan": printed.ids["plan"]},
            token=pharmacist.token,
        )
    [glucose] = signals["carePlan"]["monitoring"]
    assert glucose["measure"]["code"] == "2339-0"
    assert (glucose["responsibleDiscipline"], glucose["high"], glucose["criticalHigh"]) == (
        "NURSE",
        180,
        300,
    )
    assert glucose["status"] == "IN_RANGE"  # the latest reading, 151 mg/dL
    assert glucose["latest"] == {"value": 151, "unit": "mg/dL", "source": "PATIENT_REPORTED"}
    hba1c = signals["carePlan"]["goals"][0]
    assert hba1c["measurable"] == {
        "measure": {"code": "4548-4"},
        "comparator": "LT",
        "value": 7,
        "unit": "%",
    }
    assert hba1c["progress"] == "NO_DATA"
    [signal] = [t for t in tasks(signals) if t["source"] == "SIGNAL"]
    assert (signal["discipline"], signal["signalCount"], signal["urgent"]) == ("NURSE", 2, False)
    assert "272 mg/dL" in signal["title"] and "above 180 mg/dL" in signal["title"]
    assert [(t["discipline"], t["signalCount"]) for t in signals["huddleAgenda"]["signals"]] == [
        ("NURSE", 2)
    ]


async def test_seeding_twice_makes_two_teams_with_distinct_members(stack: Stack) -> None:
    secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
    assert secret is not None

    first = await seed(stack.base_url + "/", secret=secret)
    second = await seed(stack.base_url, secret=secret)

    assert first.team_id != second.team_id
    assert not {m.user_id for m in first.members} & {m.user_id for m in second.members}
    assert [m.discipline for m in first.members] == [
        "PHYSICIAN",
        "NURSE_PRACTITIONER",
        "PHARMACIST",
        "GENETIC_COUNSELOR",
        "SOCIAL_WORKER",
        "DIETITIAN",
        "NURSE",
    ]
    assert [m.lead for m in first.members] == [True] + [False] * 6
    pharmacist, social_worker = first.viewers
    assert (pharmacist.sees_genetic, social_worker.sees_genetic) == (True, False)
    assert first.board_url(pharmacist) == (
        f"{stack.base_url}/board/{first.team_id}#token={pharmacist.token}"
    )
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        me = await gql(client, "{ me { userId name } }", token=social_worker.token)
    assert me["me"] == {"userId": social_worker.user_id, "name": social_worker.name}


async def test_a_failure_part_way_says_which_step_and_which_team_it_left(stack: Stack) -> None:
    secret, _ = jwt_secret(Settings(data_dir=stack.data_dir))
    assert secret is not None
    # Dated a year back, the goals' due dates are in the past, which the API refuses.
    with pytest.raises(DemoError) as failed:
        await seed(stack.base_url, secret=secret, today=date.today() - timedelta(days=400))

    message = str(failed.value)
    assert message.startswith("add goal 1 of 3 failed: BAD_USER_INPUT: dueDate ")
    assert "is in the past" in message
    assert re.search(r"stopped part-way on team [0-9a-f-]{36}", message)


def test_a_stack_signed_with_another_secret_fails_at_the_first_step(stack: Stack) -> None:
    env = {**stack.env, "CARECOORD_JWT_SECRET": "another-secret-" + "x" * 32}
    done = run_demo(env, "--api-url", stack.base_url)

    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.startswith("carecoord: demo: create the team failed: UNAUTHENTICATED")
    assert len(done.stderr.strip().splitlines()) == 1


def test_no_api_at_the_url_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    port = embedded.free_port()  # nothing listens on it
    env = {
        **os.environ,
        "CARECOORD_DATA_DIR": str(tmp_path),
        "CARECOORD_JWT_SECRET": "a-test-secret-" + "y" * 32,
    }
    done = run_demo(env, "--api-url", f"http://127.0.0.1:{port}")

    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"carecoord: demo: cannot reach the carecoord API at http://127.0.0.1:{port} "
        "(nothing answers there); is `make up` running, and is that its URL?"
    )


def test_the_demo_patients_fhir_export_is_a_valid_r4_bundle_of_the_whole_record(
    stack: Stack, tmp_path: Path
) -> None:
    done = run_demo(stack.env, "--api-url", stack.base_url)
    assert done.returncode == 0, done.stderr
    patient = parse(done.stdout).ids["patient"]
    env = {
        **stack.env,
        "CARECOORD_DATABASE_URL": stack.database_url,
        "CARECOORD_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
    }

    def export(purpose: str) -> Bundle:
        out = tmp_path / f"{purpose}.json"
        argv = ["export", "fhir", "--patient", patient, "--out", str(out), "--purpose", purpose]
        ran = subprocess.run(
            [sys.executable, "-m", "services.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        return Bundle.model_validate_json(out.read_text(encoding="utf-8"))

    bundle = export("TREATMENT")

    kinds = Counter(e.resource.get_resource_type() for e in bundle.entry)
    for kind in ("Patient", "CareTeam", "CarePlan", "Goal", "Task", "Consent", "AuditEvent"):
        assert kinds[kind] >= 1, kinds
    # 13 interventions' tasks, the review's, 2 action items' and the glucose signal's.
    assert (kinds["Patient"], kinds["Goal"], kinds["Task"]) == (1, 3, 17)
    [careteam] = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "CareTeam"]
    assert len(careteam.participant) == 7
    # The week of glucose readings, two of them high against the monitoring plan.
    readings = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"]
    flags = sorted(r.interpretation[0].coding[0].code for r in readings)
    assert flags == ["H", "H", "N", "N", "N", "N", "N"]
    cyp2c9 = [
        e.resource
        for e in bundle.entry
        if e.resource.get_resource_type() == "Task" and "CYP2C9" in (e.resource.description or "")
    ]
    assert len(cyp2c9) == 1
    assert "GDIS" in {label.code for label in cyp2c9[0].meta.security}
    full_urls = {e.fullUrl for e in bundle.entry}
    references = references_in(json.loads(bundle.model_dump_json()))
    assert references and set(references) <= full_urls  # every reference resolves inside

    # For employment, GINA keeps every genetic item out of the export.
    assert "CYP2C9" not in export("EMPLOYMENT").model_dump_json()
