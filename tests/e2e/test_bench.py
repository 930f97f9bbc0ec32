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


def test_a_quick_scale_run_writes_every_stage_of_both_sweeps(tmp_path: Path) -> None:
    from services.bench.scale import COLUMNS, QUICK

    out = tmp_path / "scale.json"
    command = ["bench", "--scale", "--quick", "--json", str(out)]
    with external_services() as env:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", *command],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=280,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scaled = json.loads(out.read_text())
    events, teams = scaled["events_sweep"], scaled["teams_sweep"]
    assert [s["teams"] for s in events] == [QUICK.events_teams] * len(QUICK.events)
    assert [s["teams"] for s in teams] == list(QUICK.teams)
    # Each stage holds at least the events it names: whole task lives (at most 6 events)
    # are appended, by the fill and by each of the probe's 5 rounds, so a few more.
    for stage, wanted in zip(events, QUICK.events, strict=True):
        assert wanted <= stage["events"] < wanted + 6 * 6
    for stage in events + teams:
        for key, _, _ in COLUMNS:
            if key == "audit_verify" and stage in teams:
                continue
            assert stage["figures"][key] >= 0, (key, stage)
    assert all(s["figures"]["append_events"] > 0 for s in events + teams)
    assert "cost as events grow" in done.stdout
