"""Faust on its own: an agent that only counts the events the store filled care.events with."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from services.bench.harness import Figures, Run
from services.bench.parts import environment, spawn, stop_process


async def faust_count(run: Run) -> Figures:
    expected = run.shared["published"]
    out = run.tmp / "faust-count.json"
    log = run.tmp / "faust-count.log"
    argv = [sys.executable, "-m", "services.bench.faust_count", str(expected), str(out)]
    proc = spawn(argv, environment(run.settings), log)
    try:
        deadline = time.monotonic() + 60 + expected / 500
        while not out.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the counting agent exited ({proc.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the counting agent did not see {expected} events")
            await asyncio.sleep(0.1)
        result = orjson.loads(out.read_bytes())
    finally:
        await stop_process(proc)
    return {"raw_faust_count": result["events"] / result["seconds"]}
