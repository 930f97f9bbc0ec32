"""`carecoord up` end to end: what answers on HTTP, the event path from the store through
Kafka to a read model, supervision, a clean stop, and one-line start-up errors."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from services.common import db, embedded
from services.common.event_store import EventStore
from tests.e2e.conftest import Stack, external_services, family, parts, start_stack, stop_stack
from tests.factories import goal_added

ME = "{ me { userId name } }"


def test_health_graphiql_and_metrics_answer(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "postgres": "ok", "kafka": "ok"}

    page = client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()

    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text


def test_me_answers_for_a_minted_token_and_refuses_without_one(
    stack: Stack, client: httpx.Client
) -> None:
    token = stack.token("u-e2e", "Dr. Ada Example")

    signed_in = client.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"}
    )
    anonymous = client.post("/graphql", json={"query": ME})
    forged = client.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}x"}
    )

    assert signed_in.json() == {"data": {"me": {"userId": "u-e2e", "name": "Dr. Ada Example"}}}
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert forged.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_an_appended_event_travels_through_kafka_to_the_worker_read_model(stack: Stack) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"

    async def scenario() -> int:
        pool = await db.create_pool(stack.database_url, min_size=1, max_size=2)
        try:
            await EventStore(pool).append(
                f"plan-{team}", 0, [goal_added(f"plan-{team}", team_id=team, actor_id="u-e2e")]
            )
            for _ in range(300):
                applied = await pool.fetchval(
                    "SELECT events_applied FROM team_activity WHERE team_id = $1", team
                )
                if applied:
                    return int(applied)
                await asyncio.sleep(0.1)
            return 0
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == 1
    relay_gauge = 'carecoord_relay_position{topic="' + _events_topic(stack) + '"}'
    for _ in range(100):  # the relay records its checkpoint just after Kafka's ack
        metrics = httpx.get(f"{stack.base_url}/metrics").text
        head = _gauge(metrics, "carecoord_event_store_head_position")
        if head is not None and head >= 1 and _gauge(metrics, relay_gauge) == head:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"relay position never reached the store head in:\n{metrics}")


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _events_topic(stack: Stack) -> str:
    return stack.env.get("CARECOORD_TOPIC_PREFIX", "") + "care.events"


def test_a_part_that_dies_is_restarted_and_the_supervisor_says_so(stack: Stack) -> None:
    parts(stack.proc.pid)["relay"].kill()

    stack.wait_for_line(r"relay exited with code -9; restarting", seconds=10)
    stack.wait_for_line(r"relay restarted \(pid \d+\)", seconds=10)
    assert httpx.get(f"{stack.base_url}/healthz").status_code == 200


def test_sigterm_stops_every_part_and_exits_zero(tmp_path: Path) -> None:
    with external_services() as env:
        stack = start_stack(tmp_path, env)
        try:
            stack.wait_for_line(r"carecoord is up", seconds=120)
            children = family(stack.proc.pid)
            assert len(children) >= 4, stack.output()
            written = stack.data_dir / "stack.json"
            assert stat.S_IMODE(written.stat().st_mode) == 0o600
            left = written.read_bytes()
        finally:
            code = stop_stack(stack)

    assert code == 0, stack.output()[-3000:]
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left running: {[p.pid for p in alive]}"
    assert not written.exists()
    # A file left behind (a stack killed outright) names the fix instead of timing out.
    written.write_bytes(left)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "verify"],
        env={**env, "CARECOORD_DATA_DIR": str(stack.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    if "CARECOORD_DATABASE_URL" not in stack.env:
        assert done.stderr.startswith("carecoord: CARECOORD_DATABASE_URL is not set and the stack")
        assert done.stderr.endswith(
            f"is stale (its `carecoord up` (pid {stack.proc.pid}) is not running): start the "
            "stack with `make up`, or set CARECOORD_DATABASE_URL\n"
        )


def _up_once(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "up"],
        env={**os.environ, "CARECOORD_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _up_once(tmp_path, {"CARECOORD_API_PORT": str(port)})

    assert result.returncode == 1
    assert f"port {port}" in result.stdout
    assert "CARECOORD_API_PORT" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    dead = embedded.free_port()
    result = _up_once(
        tmp_path,
        {
            "CARECOORD_API_PORT": str(embedded.free_port()),
            "CARECOORD_DATABASE_URL": f"postgresql://carecoord:s3cret@127.0.0.1:{dead}/care",
        },
    )

    assert result.returncode == 1
    assert "cannot reach PostgreSQL" in result.stdout
    assert "CARECOORD_DATABASE_URL" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unreachable_broker_is_one_clear_line(tmp_path: Path, stack: Stack) -> None:
    dead = embedded.free_port()
    result = _up_once(
        tmp_path,
        {
            "CARECOORD_API_PORT": str(embedded.free_port()),
            "CARECOORD_DATABASE_URL": stack.database_url,
            "CARECOORD_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        },
    )

    assert result.returncode == 1
    assert f"cannot reach the Kafka broker at 127.0.0.1:{dead}" in result.stdout
    assert "CARECOORD_KAFKA_BOOTSTRAP" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_the_embedded_stack_migrates_as_the_owner_and_runs_the_services_as_a_role_owning_nothing(
    stack: Stack,
) -> None:
    if "CARECOORD_DATABASE_URL" in stack.env:
        pytest.skip("an external database: its roles are the operator's (deploy/README.md)")
    stack.wait_for_line(r"roles\s+carecoord_owner migrates, carecoord_app runs the services")

    async def look() -> tuple[set[str], set[str]]:
        conn = await asyncpg.connect(stack.database_url)  # the embedded server's superuser
        try:
            users = await conn.fetch(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            owners = await conn.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
            )
        finally:
            await conn.close()
        return {r["usename"] for r in users}, {r["owner"] for r in owners}

    users, owners = asyncio.run(look())
    assert users == {"carecoord_app"}
    assert owners == {"carecoord_owner"}
    passwords = stack.data_dir / "dev-db-passwords"
    assert passwords.stat().st_mode & 0o777 == 0o600
    services = {name: p.environ() for name, p in parts(stack.proc.pid).items()}
    assert set(services) == {"api", "worker", "relay", "witness"}
    for part, env in services.items():
        assert "carecoord_app" in env["CARECOORD_DATABASE_URL"], part
        assert "CARECOORD_MIGRATE_DATABASE_URL" not in env, part
    for part in ("api", "relay", "witness"):  # only the audit writer signs
        assert "CARECOORD_AUDIT_SIGNING_KEY" not in services[part], part
    assert services["api"]["CARECOORD_AUDIT_PUBLIC_KEY"]
