"""`carecoord bench`'s bookkeeping: which steps run, the ratios, and what the JSON holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from services.bench.harness import (
    KEYS,
    QUICK,
    RATIOS,
    Report,
    change,
    combine,
    compare_table,
    load_earlier,
    table,
    to_json,
    verdict,
)
from services.bench.run import NAMES, STEPS, chosen, groups
from services.cli.main import app


def _column(shown: Table, header: str) -> list[str]:
    [column] = [c for c in shown.columns if c.header == header]
    return [str(cell) for cell in column.cells]


def test_a_chosen_step_brings_the_steps_it_needs_in_run_order() -> None:
    assert [s.name for s in chosen(["faust"])] == ["append", "relay", "faust"]
    assert [s.name for s in chosen(["audit", "pg"])] == ["pg", "audit"]
    assert [s.name for s in chosen([])] == list(NAMES)


def test_a_step_that_runs_alone_gets_parts_of_its_own_after_the_shared_ones() -> None:
    shown = [[s.name for s in group] for group in groups(chosen(["subscribers", "stack", "pg"]))]

    assert shown == [["pg", "append", "relay", "stack"], ["subscribers"]]
    assert [[s.name for s in g] for g in groups(chosen(["signals"]))] == [["signals"]]
    alone = {s.name for s in STEPS if s.alone}
    assert alone == {"signals", "subscribers"}
    # Nothing a step alone needs, or gives, crosses to other parts.
    assert not any(s.needs for s in STEPS if s.alone)
    assert not any(set(s.needs) & alone for s in STEPS)


def test_every_figure_is_measured_by_exactly_one_step() -> None:
    measured = [key for step in STEPS for key in step.keys]
    assert sorted(measured) == sorted(k.name for k in KEYS)


def test_a_ratio_is_left_empty_when_either_side_was_not_measured() -> None:
    report = Report(figures={"audit_append": 20_000.0, "raw_pg_copy": 80_000.0})
    report.figures["projection_events"] = None

    ratios = report.ratios()

    assert ratios["audit_append_over_copy"] == 0.25
    assert ratios["projection_over_faust_count"] is None
    assert not report.complete
    assert [r.name for r in RATIOS] == list(ratios)


def test_the_json_has_every_figure_ratio_and_why_one_is_missing() -> None:

    report = Report(figures={k.name: 1.0 for k in KEYS}, notes={}, extras={"command_errors": 0.0})
    report.figures["eventsourcing_append"] = None
    report.notes["eventsourcing_append"] = "not measured: the library is not installed"

    document = orjson.loads(
        to_json(report, quick=True, sizes=QUICK, parts={"postgres": "p"}, seconds=1.0)
    )

    for name in [k.name for k in KEYS] + [r.name for r in RATIOS]:
        assert name in document
    assert document["append_over_eventsourcing"] is None
    assert "not installed" in document["notes"]["eventsourcing_append"]
    assert document["sizes"]["appends"] == QUICK.appends
    assert table(report, "t").row_count == len(KEYS) + len(RATIOS)  # "-" where missing


def test_the_table_shows_only_what_the_chosen_steps_measure() -> None:
    report = Report(figures={"audit_append": 2.0, "audit_verify": 3.0})

    assert table(report, "t").row_count == 2  # no ratio: raw_pg_copy did not run


def _run(**figures: float | None) -> Report:
    report = Report(figures=dict(figures))
    for key, value in figures.items():
        if value is None:
            report.notes[key] = "failed: TimeoutError: the broker did not answer"
    return report


def test_repeated_runs_report_each_figures_median_and_min_max() -> None:
    runs = [
        _run(audit_append=20_000.0, raw_pg_copy=40_000.0, e2e_p99=50.0),
        _run(audit_append=30_000.0, raw_pg_copy=100_000.0, e2e_p99=90.0),
        _run(audit_append=10_000.0, raw_pg_copy=80_000.0, e2e_p99=40.0),
    ]

    report = combine(runs)

    assert report.figures == {"audit_append": 20_000.0, "raw_pg_copy": 80_000.0, "e2e_p99": 50.0}
    assert report.spread["e2e_p99"] == (40.0, 90.0)
    # Ratios within each run (0.5, 0.3, 0.125), then their median: not 20,000 / 80,000.
    assert report.ratios()["audit_append_over_copy"] == 0.3
    assert report.spread["audit_append_over_copy"] == (0.125, 0.5)
    assert [run["e2e_p99"] for run in report.runs] == [50.0, 90.0, 40.0]
    assert report.complete


def test_a_figure_one_run_missed_says_so_and_leaves_the_report_incomplete() -> None:
    report = combine([_run(e2e_p99=50.0), _run(e2e_p99=None), _run(e2e_p99=70.0)])

    assert report.figures["e2e_p99"] == 60.0  # the median of the runs that measured it
    assert report.notes["e2e_p99"].startswith("measured in 2 of 3 runs; failed: TimeoutError")
    assert not report.complete

    nowhere = combine([_run(e2e_p99=None), _run(e2e_p99=None)])
    assert nowhere.figures["e2e_p99"] is None
    assert nowhere.notes["e2e_p99"].startswith("failed: TimeoutError")


@pytest.mark.parametrize(
    ("target", "value", "met"),
    [
        ("<= 20", 19.9, True),
        ("<= 20", 20.0, True),
        ("<= 20", 20.1, False),
        (">= 100,000", 99_999.0, False),
        (">= 100,000", 100_000.0, True),
        (">= 0.7", 0.71, True),
        (">= 5x lib", 1e9, None),  # judged by its ratio
        ("", 1.0, None),
        ("<= 20", None, None),
    ],
)
def test_a_verdict_compares_the_figure_with_its_target(
    target: str, value: float | None, met: bool | None
) -> None:
    assert verdict(target, value) is met


def test_the_table_gives_each_key_its_verdict_and_with_repeats_its_min_max() -> None:
    single = table(Report(figures={"e2e_p99": 300.0, "audit_verify": 120_000.0}), "t")
    repeated = table(combine([_run(e2e_p99=100.0), _run(e2e_p99=300.0)]), "t")

    assert _column(single, "verdict") == ["[red]missed[/red]", "[green]met[/green]"]
    assert _column(repeated, "median") == ["200.0 ms"]
    assert _column(repeated, "min - max") == ["100.0 ms - 300.0 ms"]
    assert "min - max" not in [c.header for c in single.columns]


@pytest.mark.parametrize(
    ("name", "unit", "now", "before", "expected"),
    [
        ("append_events", "/s", 12_000.0, 8_000.0, ("x1.50", "[green]better[/green]")),
        ("append_events", "/s", 6_000.0, 8_000.0, ("x0.75", "[red]worse[/red]")),
        ("e2e_p99", "ms", 40.0, 80.0, ("x0.50", "[green]better[/green]")),
        ("rss_api_mb", "MB", 120.0, 100.0, ("x1.20", "[red]worse[/red]")),
        ("e2e_p99", "ms", 81.0, 80.0, ("x1.01", "same")),
        ("rebuild_events", "/s", 18_400.0, 20_000.0, ("x0.92", "same")),  # noise
        ("projection_over_faust_count", "", 0.7, 0.35, ("x2.00", "[green]better[/green]")),
        ("subscribers", "", 10_000.0, 1_000.0, ("x10.00", "")),
        ("e2e_p99", "ms", 40.0, None, ("", "")),
    ],
)
def test_a_change_is_judged_by_the_keys_unit(
    name: str, unit: str, now: float, before: float | None, expected: tuple[str, str]
) -> None:
    assert change(name, unit, now, before) == expected


def test_today_is_shown_beside_an_earlier_json_with_overlapping_spreads_as_the_same(
    tmp_path: Path,
) -> None:
    report = combine([_run(e2e_p99=100.0, audit_verify=50_000.0), _run(e2e_p99=140.0)])
    earlier_file = tmp_path / "earlier.json"
    earlier_file.write_bytes(
        orjson.dumps(
            {"e2e_p99": 150.0, "audit_verify": 25_000.0, "spread": {"e2e_p99": [130, 170]}}
        )
    )

    shown = compare_table(report, load_earlier(earlier_file), "t")

    assert _column(shown, "earlier") == ["150.0 ms", "25,000/s"]
    assert _column(shown, "") == ["same", "[green]better[/green]"]  # 120 ms, min 100: overlaps


def test_an_earlier_file_that_is_not_a_bench_json_is_refused_saying_why(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not json")
    (tmp_path / "other.json").write_text('{"name": "something else"}')

    for name, why in [
        ("missing.json", "cannot be read"),
        ("notes.txt", "not JSON"),
        ("other.json", "not a carecoord bench JSON"),
    ]:
        with pytest.raises(ValueError, match=why):
            load_earlier(tmp_path / name)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--repeat", "0"], "Invalid value for '--repeat'"),
        (["--repeat", "21"], "Invalid value for '--repeat'"),
        (["--repeat", "many"], "Invalid value for '--repeat'"),
        (["--compare", "no-such-run.json"], "--compare no-such-run.json: cannot be read"),
        (["--scale", "--only", "pg"], "--scale runs on its own"),
        (["--scale", "--repeat", "2"], "--scale runs on its own"),
    ],
)
def test_the_bench_refuses_bad_arguments_before_it_runs(
    arguments: list[str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.bench import run, scale

    def never(**_: object) -> Report:
        raise AssertionError("the bench ran")

    monkeypatch.setattr(run, "bench", never)
    monkeypatch.setattr(scale, "scale", never)
    result = CliRunner().invoke(app, ["bench", *arguments])

    assert result.exit_code == 2
    assert said in result.output


def test_the_library_step_defines_its_aggregate_once_so_a_second_run_can_save_too() -> None:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate

    from services.bench.store import _goal_class

    for n in range(2):  # a repeated bench takes the step once a run, in one process
        app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        goal = _goal_class(Aggregate)
        saved = goal(description=f"goal {n}")
        app.save(saved)
        assert app.repository.get(saved.id).description == f"goal {n}"
        app.close()


def test_the_scale_table_shows_each_stage_beside_the_first() -> None:
    from services.bench.scale import Scaled, Stage, table, to_json

    stages = [
        Stage(10_000, 1_000, {"append_events": 10_000.0, "board_p50": 0.5}),
        Stage(100_000, 1_000, {"append_events": 9_000.0, "board_p50": 1.5}),
        Stage(1_000_000, 1_000, {"append_events": 5_000.0}),
    ]
    console = Console(width=200, record=True)
    console.print(table(stages, "cost as events grow"))
    text = console.export_text()

    assert "10,000/s" in text and "9,000/s (x0.9)" in text and "5,000/s (x0.5)" in text
    assert "0.50 ms" in text and "1.50 ms (x3.0)" in text
    assert "audit verify" not in text  # no stage measured it
    document = to_json(Scaled(events=stages))
    assert document["events_sweep"][2]["figures"] == {"append_events": 5_000.0}
