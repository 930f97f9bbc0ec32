"""The pipeline gauges /metrics reads from PostgreSQL at scrape time, on a real database:
each read model's position and lag, the audit chains' last append and checkpoint, and the
signal and board outboxes."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.api import pipeline_gauges
from services.audit import keys as audit_keys
from services.audit import store as audit_store
from services.common.projection import apply_batch
from services.settings import Settings
from services.tasks.activity import TeamActivity
from tests.integration.audit_chains import record
from tests.integration.goals import goals_appended


def _gauge(metrics: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{sample} is not on /metrics"
    return float(match.group(1))


async def test_each_read_model_shows_its_position_and_the_events_it_has_not_applied(
    pool: asyncpg.Pool[Any], api: httpx.AsyncClient
) -> None:
    ahead = await goals_appended(pool, "team-a", 3)
    behind = await goals_appended(pool, "team-b", 2)
    await apply_batch(pool, TeamActivity(), ahead + behind[:1])

    lags = {lag.projection: lag for lag in await pipeline_gauges.projection_lags(pool)}
    metrics = (await api.get("/metrics")).text

    assert set(lags) == set(pipeline_gauges.PROJECTIONS)
    assert lags["team_activity"].position == max(e.position for e in ahead + behind[:1])
    assert lags["team_activity"].unapplied == 1
    assert lags["board"].position == 0
    assert lags["board"].unapplied == 5
    assert _gauge(metrics, 'carecoord_projection_lag_events{projection="team_activity"}') == 1
    assert _gauge(metrics, 'carecoord_projection_lag_events{projection="board"}') == 5
    head = _gauge(metrics, "carecoord_event_store_head_position")
    assert head == behind[-1].position
    assert _gauge(metrics, 'carecoord_projection_position{projection="board"}') == 0


async def test_an_empty_store_shows_every_read_model_at_zero(pool: asyncpg.Pool[Any]) -> None:
    lags = await pipeline_gauges.projection_lags(pool)

    assert {(lag.projection, lag.position, lag.unapplied) for lag in lags} == {
        (name, 0, 0) for name in pipeline_gauges.PROJECTIONS
    }


async def test_the_audit_chains_show_their_last_append_and_their_newest_checkpoint(
    pool: asyncpg.Pool[Any], settings: Settings, api: httpx.AsyncClient
) -> None:
    keys = audit_keys.load(settings, create=True)
    now = datetime.now(UTC)
    async with pool.acquire() as conn:

        async def append(chain: int, first: int, count: int) -> None:
            await audit_store.append(
                conn,
                chain,
                [record(first + i) for i in range(count)],
                keys,
                role=settings.audit_db_role,
                checkpoint_every=1000,
                now=now,
                log_name=settings.audit_log_name,
            )

        await append(2, 0, 4)
        await audit_store.checkpoint(
            conn,
            2,
            keys,
            role=settings.audit_db_role,
            now=now - timedelta(minutes=5),
            log_name=settings.audit_log_name,
        )
        await append(2, 4, 3)  # after the checkpoint: unsigned
        await append(5, 100, 2)  # never signed

    chains = {c.chain: c for c in await pipeline_gauges.audit_chains(pool)}
    metrics = (await api.get("/metrics")).text

    assert set(chains) == {2, 5}
    assert chains[2].unsigned == 3
    assert 5 * 60 - 5 <= chains[2].checkpoint_seconds <= 5 * 60 + 120
    assert 0 <= chains[2].last_append_seconds < 120
    assert chains[5].unsigned == 2
    assert math.isinf(chains[5].checkpoint_seconds)
    assert _gauge(metrics, 'carecoord_audit_unsigned_entries{chain="2"}') == 3
    assert _gauge(metrics, 'carecoord_audit_checkpoint_age_seconds{chain="5"}') == math.inf
    assert _gauge(metrics, 'carecoord_audit_last_append_seconds{chain="5"}') < 120


async def test_the_signal_and_board_outboxes_show_their_depth_and_oldest_wait(
    pool: asyncpg.Pool[Any], api: httpx.AsyncClient
) -> None:
    empty = (await api.get("/metrics")).text
    assert _gauge(empty, "carecoord_signal_outbox_depth") == 0
    assert _gauge(empty, "carecoord_board_outbox_oldest_seconds") == 0

    await pool.execute(
        "INSERT INTO signal_outbox (monitoring_id, body, queued_at) VALUES "
        "('m-1', '{}', now() - interval '90 seconds'), ('m-2', '{}', now())"
    )
    await pool.execute(
        "INSERT INTO board_outbox (team_id, body, created_at) VALUES "
        "('team-a', '{}', now() - interval '30 seconds')"
    )
    metrics = (await api.get("/metrics")).text

    assert _gauge(metrics, "carecoord_signal_outbox_depth") == 2
    assert 90 <= _gauge(metrics, "carecoord_signal_outbox_oldest_seconds") < 200
    assert _gauge(metrics, "carecoord_board_outbox_depth") == 1
    assert 30 <= _gauge(metrics, "carecoord_board_outbox_oldest_seconds") < 140
