"""A worker's batch takes the read models' locks shared in ascending order; a rebuild
takes them exclusively in its targets' order. The two orders must agree, or a worker and
a rebuild could each hold one lock and wait for the other's."""

from __future__ import annotations

from services.tasks import rebuild
from services.tasks.agents import default_projections


def test_a_rebuild_takes_the_read_models_locks_in_ascending_order() -> None:
    locks = [target.lock for target in rebuild._TARGETS]
    assert locks == sorted(locks)
    worker_locks = {p.lock for p in default_projections() if p.lock is not None}
    assert worker_locks == set(locks)
