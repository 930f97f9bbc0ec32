"""Progress lines at info for the long-running loops (relay, worker agents), rate-limited:
the first items at once (a process says it is moving), then one line when `seconds` have
passed or `count` items have gone by since the last line, whichever comes first. Lines
carry counts and positions only, never what an event says."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts items and says when a progress line is due; nothing is due while idle."""

    def __init__(
        self,
        *,
        seconds: float = 10.0,
        count: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._count = count
        self._clock = clock
        self._since: float | None = None
        self._pending = 0

    def add(self, n: int) -> int | None:
        """Count n more items; when a line is due, the items since the last one (and the
        count starts again), else None."""
        self._pending += n
        now = self._clock()
        if self._pending <= 0:
            if self._since is not None:  # a quiet stretch is no time passed
                self._since = now
            return None
        if (
            self._since is not None
            and self._pending < self._count
            and now - self._since < self._seconds
        ):
            return None
        done, self._pending, self._since = self._pending, 0, now
        return done
