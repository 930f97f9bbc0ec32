"""`carecoord bench --quick` keeps working: every figure and ratio it promises is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.bench.harness import KEYS, RATIOS
from tests.e2e.conftest import external_services


def test_a_quick_bench_run_writes_every_figure_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    with external_services() as env:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "bench", "--quick", "--json", str(out)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=280,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for name in [k.name for k in KEYS] + [r.name for r in RATIOS]:
        value = figures.get(name)
        assert isinstance(value, float) and value > 0, (name, value, figures["notes"])
    assert figures["quick"] is True
    assert "projection_events" in done.stdout
    # The signals step checked its tasks (it fails otherwise) and timed every reading sent.
    assert figures["extras"]["signal_push_errors"] == 0
    assert figures["extras"]["signal_push_readings"] > 0


def test_a_json_path_in_a_missing_folder_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "--json", str(tmp_path / "no" / "x.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr
