"""Benchmark (not a test): time from a task mutation sent over HTTP to its boardChanged event
received by a WebSocket subscriber, on a running stack.

    .venv/bin/python -m tests.bench.bench_board_latency [--changes 300] [--url http://...]

Without --url it starts `carecoord up` in a temporary folder (embedded PostgreSQL and
broker, or CARECOORD_TEST_DATABASE_URL / CARECOORD_TEST_KAFKA_BOOTSTRAP when set) and
stops it afterwards. Changes are sent one at a time: each is timed from the moment the
request leaves to the moment its event arrives, so the figure is the pipeline's latency
(API, event store, relay, Kafka, worker, board outbox, Kafka, fan-out), not its throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests import operations as op
from tests.e2e.conftest import external_services, start_stack, stop_stack
from tests.graphql import gql
from tests.ws import connect

_CYCLE = ["IN_PROGRESS", "DONE", "TODO"]


def _token(env: dict[str, str], sub: str) -> str:
    argv = [sys.executable, "-m", "services.cli", "token", "--sub", sub, "--name", "Bench Lead"]
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout.strip()


async def measure(base_url: str, token: str, changes: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        team = (await gql(client, op.CREATE_TEAM, {"name": "Bench"}, token=token))["createTeam"]
        async with connect(base_url, token) as socket:
            op_id = await socket.subscribe(op.BOARD_CHANGED, {"teamId": team["id"]})
            task = (
                await gql(client, op.CREATE_TASK, {"teamId": team["id"], "title": "t"}, token=token)
            )["createTask"]
            await socket.receive(30)  # its CREATED: the subscription is live
            latencies = []
            for n in range(changes):
                status = _CYCLE[n % len(_CYCLE)]
                started = time.perf_counter()
                await gql(
                    client, op.MOVE_TASK, {"taskId": task["id"], "status": status}, token=token
                )
                while True:
                    message = await socket.receive(30)
                    assert message["type"] == "next" and message["id"] == op_id, message
                    event = message["payload"]["data"]["boardChanged"]
                    if event["task"]["status"] == status:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def report(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    print(f"mutation -> boardChanged over {len(ordered)} changes:")
    print(f"  p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   min {ordered[0]:.1f}   max {ordered[-1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--url", help="a running stack, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", help="a lead's token for --url (else minted from env)")
    args = parser.parse_args()
    if args.changes < 1:
        parser.error("--changes must be at least 1")
    if args.url:
        import os

        token = args.token or _token(dict(os.environ), "bench-lead")
        report(asyncio.run(measure(args.url, token, args.changes)))
        return
    with tempfile.TemporaryDirectory() as tmp, external_services() as env:
        stack = start_stack(Path(tmp), env)
        try:
            stack.wait_for_line(r"carecoord is up", seconds=120)
            token = stack.token("bench-lead", "Bench Lead")
            report(asyncio.run(measure(stack.base_url, token, args.changes)))
        finally:
            stop_stack(stack)


if __name__ == "__main__":
    main()
