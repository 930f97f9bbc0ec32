"""A per-actor rate limit on reads of patient data: a token bucket per actor id, in this API
process (each API process keeps its own; behind N processes an actor gets up to N times
the rate).

Each record the access gate opens for reading takes one token; a bucket holds at most
`burst` and refills at `per_second`. A read with no token left is refused BAD_USER_INPUT
naming the limit and when to retry. The first refusal of an actor in a window of
`AUDIT_WINDOW_SECONDS` is recorded in the audit log (a DENY naming the limit); the rest
of that window's refusals are not, so a client hammering the API cannot flood the log.
Pure: the clock is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# One DENY record per actor per this many seconds of refused reads.
AUDIT_WINDOW_SECONDS = 60.0
# Buckets kept; past this, full (idle) buckets are forgotten first, then the oldest.
_MAX_ACTORS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float
    recorded_at: float | None = None


@dataclass(frozen=True)
class Refusal:
    """A read refused: whole seconds until a token is back, and whether to audit it."""

    retry_after: int
    record: bool


class ReadRate:
    def __init__(self, per_second: float, burst: int, clock: Callable[[], float]) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, actor_id: str) -> Refusal | None:
        """One read by `actor_id`: None if permitted (a token taken), else the refusal."""
        now = self._clock()
        bucket = self._buckets.get(actor_id)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[actor_id] = _Bucket(tokens=float(self.burst), at=now)
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        record = bucket.recorded_at is None or now - bucket.recorded_at >= AUDIT_WINDOW_SECONDS
        if record:
            bucket.recorded_at = now
        wait = (1.0 - bucket.tokens) / self.per_second
        return Refusal(retry_after=max(1, math.ceil(wait)), record=record)

    def _make_room(self) -> None:
        if len(self._buckets) < _MAX_ACTORS:
            return
        now = self._clock()
        idle = [
            actor
            for actor, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.per_second >= self.burst
        ]
        for actor in idle or list(self._buckets)[: _MAX_ACTORS // 10]:
            del self._buckets[actor]
