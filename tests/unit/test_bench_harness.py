"""`carecoord bench`'s bookkeeping: which steps run, the ratios, and what the JSON holds."""

from __future__ import annotations

import orjson

from services.bench.harness import KEYS, QUICK, RATIOS, Report, table, to_json
from services.bench.run import NAMES, STEPS, chosen


def test_a_chosen_step_brings_the_steps_it_needs_in_run_order() -> None:
    assert [s.name for s in chosen(["faust"])] == ["append", "relay", "faust"]
    assert [s.name for s in chosen(["audit", "pg"])] == ["pg", "audit"]
    assert [s.name for s in chosen([])] == list(NAMES)


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
