"""The floor under the API's commands: the same parts serving a bare mutation.

uvicorn run as `carecoord api` runs it (httptools, uvloop, proxy headers, no access log),
starlette, strawberry's HTTP view with orjson and strawberry's own parse and validation
caches, and a resolver of one PostgreSQL round trip. No token, roster, aggregate,
event, access record or audit log. Loaded as the stack step loads the API (the same
client, query text and offered rate), its CPU per request is what those parts cost a
command before carecoord does anything; `command_cpu_over_raw_graphql` is how many
times that the API spends.

Run as `python -m services.bench.graphql_floor PORT` (the DSN in CARECOORD_DATABASE_URL).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
import strawberry
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from services.bench.harness import Figures, Run, open_loop, percentile, wait_until
from services.bench.parts import environment, spawn, stop_process
from services.bench.stack import ADD_GOAL, CommandFailed, client_session, gql, lead_token
from services.common import db, embedded

WARM_UP = 100
_POOL: dict[str, asyncpg.Pool[Any]] = {}


@strawberry.type
class Goal:
    id: strawberry.ID
    version: int


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def add_goal(self, plan_id: strawberry.ID, description: str) -> Goal:
        version = await _POOL["pool"].fetchval("SELECT $1::integer + 1", len(description))
        return Goal(id=plan_id, version=version)


class _View(GraphQL[None, None]):
    def encode_json(self, data: object) -> str:
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)


@contextlib.asynccontextmanager
async def _lifespan(_app: Starlette) -> AsyncIterator[None]:
    # The API's own pool: no session reset (a round trip) when a connection goes back.
    pool = await db.create_pool(os.environ["CARECOORD_DATABASE_URL"])
    _POOL["pool"] = pool
    try:
        yield
    finally:
        await pool.close()


def app() -> Starlette:
    schema = strawberry.Schema(
        Query, Mutation, extensions=[lambda: ParserCache(100), lambda: ValidationCache(100)]
    )
    return Starlette(
        routes=[Route("/graphql", _View(schema), methods=["GET", "POST"])], lifespan=_lifespan
    )


async def graphql(run: Run) -> Figures:
    """The bare mutation at the stack step's offered load: the server's CPU per request,
    and each request's latency from when it was due."""
    port = embedded.free_port()
    argv = [sys.executable, "-m", "services.bench.graphql_floor", str(port)]
    server = spawn(argv, environment(run.settings), run.tmp / "graphql_floor.log")
    try:

        async def listening() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"the bare GraphQL server exited; see {run.tmp}")
            return embedded.port_in_use(port)

        await wait_until(listening, 60, "the bare GraphQL server")
        # The same headers as the stack's commands carry (the server reads none of them).
        async with client_session(f"http://127.0.0.1:{port}", lead_token(run)) as client:
            for n in range(WARM_UP):
                await gql(client, ADD_GOAL, {"planId": "p", "description": f"goal {n}"})
            process = psutil.Process(server.pid)
            before = process.cpu_times()
            figures = await _load(client, run)
            after = process.cpu_times()
    finally:
        await stop_process(server)
    cpu = after.user + after.system - before.user - before.system
    answered = figures.pop("answered")
    return {**figures, "raw_graphql_cpu_ms": cpu * 1000 / answered}


async def _load(client: aiohttp.ClientSession, run: Run) -> Figures:
    rate, count = run.sizes.offered, int(run.sizes.offered * run.sizes.command_seconds)
    latencies: list[float] = []

    async def one(n: int, due: float) -> None:
        await gql(client, ADD_GOAL, {"planId": f"p{n % 100}", "description": f"goal {n}"})
        latencies.append((time.perf_counter() - due) * 1000)

    try:
        await open_loop(count, rate, one)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CommandFailed(f"the bare mutation failed: {type(exc).__name__}") from exc
    return {
        "raw_graphql_p50": statistics.median(latencies),
        "raw_graphql_p99": percentile(latencies, 0.99),
        "answered": float(len(latencies)),
    }


def main() -> None:
    import uvicorn

    from services.api.http_protocol import HttpProtocol

    uvicorn.run(
        "services.bench.graphql_floor:app",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http=HttpProtocol,
    )


if __name__ == "__main__":
    main()
