"""A refill's cycle collector: run rarely while any refill of the process runs, and the
process's own thresholds again after the last one ends, however they overlap or end."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.tasks import rebuild

DEFAULTS = (700, 10, 10)


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*DEFAULTS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_refills_that_overlap_collect_rarely_until_the_last_one_ends() -> None:
    rarely = rebuild._RareCollection()
    first, second = rarely.during(), rarely.during()
    first.__enter__()
    assert gc.get_threshold() == rebuild._COLLECT_AFTER
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends while the second still runs
    assert gc.get_threshold() == rebuild._COLLECT_AFTER
    second.__exit__(None, None, None)
    assert gc.get_threshold() == DEFAULTS


def test_a_refill_that_fails_leaves_the_thresholds_as_they_were() -> None:
    rarely = rebuild._RareCollection()
    with pytest.raises(RuntimeError), rarely.during():
        raise RuntimeError("the refill failed")
    assert gc.get_threshold() == DEFAULTS


def test_a_process_that_collects_more_rarely_still_is_not_made_to_collect_more_often() -> None:
    """The API's own thresholds (api_gc_thresholds) are rarer still in some places."""
    gc.set_threshold(100_000, 10, 5000)
    with rebuild._RareCollection().during():
        assert gc.get_threshold() == (100_000, rebuild._COLLECT_AFTER[1], 5000)
    assert gc.get_threshold() == (100_000, 10, 5000)
