"""The request limits under attack, on a running stack (`carecoord up`): how fast an oversized
document from an unsigned client is refused, the worst latency a concurrent client sees
meanwhile, and the API's resident memory before and after a run of distinct large
documents (which, unbounded, the parse caches kept: ~68 MB each).

    python -m services.bench.limits [--quick] [--json PATH]

It starts its own `carecoord up` in a temporary folder (embedded PostgreSQL and broker,
or CARECOORD_DATABASE_URL / CARECOORD_KAFKA_BOOTSTRAP when set) and prints the figures
beside the limits the API ran with. Figures, not assertions: the refusals themselves are
checked by tests/integration/test_limits.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from services.bench.stack import carecoord_up
from services.common import embedded
from services.settings import Settings

PROBE = {"query": "{ __typename }"}


@dataclass(frozen=True)
class Sizes:
    flood_aliases: int  # the oversized document (the issue's: 150,000)
    # Distinct large documents sent between the two RSS readings: half as large as the
    # issue's (60,000 aliases, over the body limit), half as large as the body limit lets
    # through, so the parser (and its cache) sees them.
    documents: int


FULL = Sizes(flood_aliases=150_000, documents=20)
QUICK = Sizes(flood_aliases=150_000, documents=4)
# Bytes of one "dNNNxMMMMM: __typename " alias, roughly.
_ALIAS_BYTES = 24


def flood(aliases: int, tag: str = "a") -> bytes:
    """A document of `aliases` aliased __typename fields; `tag` makes it distinct."""
    fields = " ".join(f"{tag}{i}: __typename" for i in range(aliases))
    return json.dumps({"query": "{ " + fields + " }"}).encode()


def rss_mb(pid: int) -> float:
    """VmRSS from /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def measure(base_url: str, api_pid: int, sizes: Sizes) -> dict[str, float]:
    """The figures, against the API at `base_url` running as process `api_pid`."""
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url=base_url) as client:

        async def post(body: bytes) -> tuple[float, dict[str, object]]:
            started = time.perf_counter()
            async with client.post("/graphql", data=body, headers=headers) as response:
                answer = await response.json(content_type=None)
            return (time.perf_counter() - started) * 1000, answer

        for _ in range(20):  # warm: connections, first-request paths
            await post(json.dumps(PROBE).encode())
        before = rss_mb(api_pid)
        latencies: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                took, answer = await post(json.dumps(PROBE).encode())
                if answer != {"data": {"__typename": "Query"}}:
                    raise RuntimeError(f"the concurrent client was not answered: {answer}")
                latencies.append(took)

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        body = flood(sizes.flood_aliases)
        refusals = []
        for _ in range(5):
            took, answer = await post(body)
            _refused(answer)
            refusals.append(took)
        admitted = int(Settings().max_body_bytes * 0.9) // _ALIAS_BYTES
        for n in range(sizes.documents):
            aliases = 60_000 if n % 2 else admitted
            _, answer = await post(flood(aliases, tag=f"d{n}x"))
            _refused(answer)
        await asyncio.sleep(0.2)
        stop.set()
        await prober
        after = rss_mb(api_pid)
    return {
        "refuse_oversized_ms": statistics.median(refusals),
        "concurrent_worst_ms": max(latencies),
        "concurrent_p50_ms": statistics.median(latencies),
        "concurrent_answered": float(len(latencies)),
        "rss_api_before_mb": before,
        "rss_api_after_mb": after,
        "documents": float(sizes.documents),
    }


def _refused(answer: dict[str, object]) -> None:
    errors = answer.get("errors")
    if not isinstance(errors, list) or errors[0]["extensions"]["code"] != "BAD_USER_INPUT":
        raise RuntimeError(f"an oversized document was not refused: {str(answer)[:200]}")


@contextlib.asynccontextmanager
async def stack(folder: Path) -> AsyncIterator[tuple[str, int]]:
    """`carecoord up` in `folder`: the API's base URL and process id."""
    port = embedded.free_port()
    env = {**os.environ, "CARECOORD_DATA_DIR": str(folder), "CARECOORD_API_PORT": str(port)}
    async with carecoord_up(env, folder / "stack.log", within=180) as proc:
        api = next(
            child
            for child in psutil.Process(proc.pid).children(recursive=True)
            if child.cmdline()[-1:] == ["api"]
        )
        yield f"http://127.0.0.1:{port}", api.pid


def report(figures: dict[str, float], settings: Settings) -> str:
    """The figures beside the limits they ran under."""
    return "\n".join(
        (
            f"oversized document ({FULL.flood_aliases:,} aliases, no token) refused in "
            f"{figures['refuse_oversized_ms']:.1f} ms (median of 5); limit "
            f"CARECOORD_MAX_BODY_BYTES={settings.max_body_bytes}",
            f"concurrent client meanwhile: worst {figures['concurrent_worst_ms']:.1f} ms, "
            f"median {figures['concurrent_p50_ms']:.1f} ms over "
            f"{figures['concurrent_answered']:.0f} answers",
            f"API RSS before/after {figures['documents']:.0f} distinct large documents: "
            f"{figures['rss_api_before_mb']:.0f} -> {figures['rss_api_after_mb']:.0f} MB "
            f"(document cache CARECOORD_DOCUMENT_CACHE_BYTES={settings.document_cache_bytes})",
            f"limits: tokens {settings.max_document_tokens}, aliases {settings.max_aliases}, "
            f"depth {settings.max_depth}, root fields {settings.max_root_fields}, field repeats "
            f"{settings.max_field_repeats}, reads "
            f"{settings.read_rate_per_second:g}/s (burst {settings.read_rate_burst}) per actor",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench.limits", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 large documents, not 20")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="carecoord-bench-limits-") as folder:
            async with stack(Path(folder)) as (base_url, api_pid):
                return await measure(base_url, api_pid, sizes)

    figures = asyncio.run(run())
    print(report(figures, Settings()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
