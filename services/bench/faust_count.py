"""A Faust agent that only counts care.events: Faust's own speed, with the worker's Faust
settings, beside which the board projector is measured. `carecoord bench` runs it as a
process of its own: `python -m services.bench.faust_count EXPECTED OUT_FILE`."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from services.common.worker import make_app, raw_topic, run_worker
from services.settings import get_settings


def main() -> None:
    expected, out = int(sys.argv[1]), Path(sys.argv[2])
    settings = get_settings()
    app = make_app(settings, name="bench-count")
    seen = {"events": 0, "first": 0.0}

    @app.agent(raw_topic(app, settings.events_topic), name="count")
    async def count(stream: Any) -> None:
        async for _ in stream:
            seen["events"] += 1
            if seen["events"] == 1:
                seen["first"] = time.perf_counter()
            if seen["events"] == expected:
                seconds = time.perf_counter() - seen["first"]
                part = out.with_suffix(".part")  # renamed whole: the bench never reads half
                part.write_bytes(orjson.dumps({"events": expected - 1, "seconds": seconds}))
                part.rename(out)
                os.kill(os.getpid(), signal.SIGTERM)

    run_worker(app)


if __name__ == "__main__":
    main()
