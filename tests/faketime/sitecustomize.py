"""Put on PYTHONPATH by `make test-future` only, so every Python process of the run loads it.

Under libfaketime 0.9.10 (Debian 12's) with DONT_FAKE_MONOTONIC=1, an absolute sleep on the
monotonic clock is shifted by the fake offset and fails with EINVAL (libfaketime #426, fixed
in 0.9.11). Python 3.11's time.sleep is such a sleep, and subprocess's timed waits use it.
A relative timeout is left alone, so sleeping in select() keeps the real duration. Faking
the monotonic clock instead is no way out: timed lock waits then never return.
"""

from __future__ import annotations

import os
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


if "faketime" in os.environ.get("LD_PRELOAD", ""):
    time.sleep = _sleep
