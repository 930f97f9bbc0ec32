"""`carecoord bench`'s client of the running stack."""

from __future__ import annotations

import inspect

import uvicorn

from services.bench.stack import client_session


async def test_the_bench_client_lets_an_idle_connection_go_before_the_api_closes_it() -> None:
    # `carecoord api` keeps uvicorn's keep-alive; a request sent on a connection the server
    # is closing as idle fails with "Server disconnected".
    api_keep_alive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default

    async with client_session("http://127.0.0.1:8000", "token") as client:
        assert client.connector is not None
        assert client.connector._keepalive_timeout < api_keep_alive


def test_the_machine_s_busy_time_leaves_out_idle_waits_steal_and_guest_counted_twice() -> None:
    import psutil

    from services.bench.stack import _busy

    fields = psutil.cpu_times()._fields
    zero = type(psutil.cpu_times())(*(0.0 for _ in fields))
    spent = {"user": 3.0, "system": 1.0, "idle": 50.0, "iowait": 2.0, "steal": 4.0}
    # Linux counts guest time inside user time too.
    spent |= {"guest": 2.0} if "guest" in fields else {}
    after = zero._replace(**{k: v for k, v in spent.items() if k in fields})
    assert _busy(zero, after) == 4.0


async def test_the_idle_api_s_cpu_is_counted_per_command_the_offered_rate_would_send() -> None:
    import dataclasses
    import time
    from pathlib import Path

    from services.bench.harness import QUICK, Run
    from services.bench.stack import _idle

    class Clock:
        """The API's CPU: 50 ms a second of wall time (5% of a core)."""

        began = time.perf_counter()

        def cpu_seconds(self, part: str) -> float:
            assert part == "api"
            return 0.05 * (time.perf_counter() - self.began)

    sizes = dataclasses.replace(QUICK, offered=200, command_seconds=0.4)
    # The window reads only the sizes: no settings or pool are needed.
    run = Run(settings=None, pool=None, sizes=sizes, tmp=Path("."))  # type: ignore[arg-type]
    # 50 ms a second over 200 commands a second: 0.25 ms a command, whatever the window.
    assert 0.249 <= await _idle(Clock(), run) <= 0.251  # type: ignore[arg-type]
