"""`python -m services.bench.limits --quick` keeps working: on a stack of its own it writes
every figure it promises (the time to refuse an oversized document, a concurrent client's
latencies, the API's memory before and after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import external_services

FIGURES = (
    "refuse_oversized_ms",
    "concurrent_worst_ms",
    "concurrent_p50_ms",
    "concurrent_answered",
    "rss_api_before_mb",
    "rss_api_after_mb",
)


def test_a_quick_limits_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "limits.json"
    with external_services() as env:
        done = subprocess.run(
            [sys.executable, "-m", "services.bench.limits", "--quick", "--json", str(out)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=280,
        )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for name in FIGURES:
        assert isinstance(figures[name], float) and figures[name] > 0, (name, figures)
    assert "refused in" in done.stdout and "CARECOORD_MAX_BODY_BYTES" in done.stdout
