"""The time axis in named units, per-step training curves and the forgetting probe figure."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench_cli.results import plots
from bench_cli.results.record import EvalPoint, TrainPoint
from tests.results import TOKENS_PER_STEP, make_record


def _tick_labels(svg: str) -> list[str]:
    """Text drawn in the figure (plot_all writes SVG text as text, not as glyph paths)."""
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def with_seconds_scaled(record, factor: float):
    curve = [p.model_copy(update={"seconds": p.seconds * factor}) for p in record.curve]
    return record.model_copy(update={"curve": curve})


def test_time_unit_follows_the_longest_run() -> None:
    assert plots.time_unit(0.004) == (1.0, "seconds")
    assert plots.time_unit(119.0) == (1.0, "seconds")
    assert plots.time_unit(600.0) == (60.0, "minutes")
    assert plots.time_unit(3 * 3600.0) == (3600.0, "hours")


def test_millisecond_runs_are_labelled_in_seconds_not_milli_suffixes(tmp_path: Path) -> None:
    # the made-up runs last 10 s; scaled by 1/1000 they last 10 ms
    records = [with_seconds_scaled(make_record("lm", "adamw", s, 4000.0), 1e-3) for s in (0, 1)]
    plots.plot_all(records, tmp_path, plots.PlotOptions(fmt="svg"))
    svg = (tmp_path / "lm__vs_seconds.svg").read_text()
    assert "training time (seconds)" in svg
    labels = _tick_labels(svg)
    assert not [t for t in labels if re.fullmatch(r"[\d.]+m", t)], labels  # no "5m" ticks
    assert any(re.fullmatch(r"0\.0\d+", t) for t in labels), labels


def test_long_runs_are_drawn_in_minutes(tmp_path: Path) -> None:
    # 10 s scaled by 60 is 600 s: the axis reads 0..10 minutes
    records = [with_seconds_scaled(make_record("lm", "adamw", 0, 4000.0), 60.0)]
    plots.plot_all(records, tmp_path, plots.PlotOptions(fmt="svg"))
    svg = (tmp_path / "lm__vs_seconds.svg").read_text()
    assert "training time (minutes)" in svg
    assert "10" in _tick_labels(svg) and "600" not in _tick_labels(svg)


def with_train_curve(record, losses: list[float]):
    curve = [TrainPoint(step=10 * (i + 1), loss=x, lr=1e-3) for i, x in enumerate(losses)]
    return record.model_copy(update={"train_curve": curve})


def test_train_curve_series_is_loss_against_tokens_per_logged_step() -> None:
    rec = with_train_curve(make_record("lm", "adamw", 0, 4000.0), [3.0, 2.0, float("nan"), 1.0])
    [(x, y, diverged)] = plots._train_series([SimpleNamespace(record=rec)])
    np.testing.assert_array_equal(
        x, [10 * TOKENS_PER_STEP, 20 * TOKENS_PER_STEP, 40 * TOKENS_PER_STEP]
    )
    np.testing.assert_array_equal(y, [3.0, 2.0, 1.0])  # the non-finite reading is left out
    assert not diverged


def test_train_curve_figure_only_for_records_that_kept_the_curve(tmp_path: Path) -> None:
    plain = [make_record("lm", "adamw", s, 4000.0) for s in (0, 1)]
    opt = plots.PlotOptions(fmt="svg")
    assert plots.plot_train_curves(plain, tmp_path, opt) == []
    kept = [with_train_curve(r, [2.0, 1.5, 1.2]) for r in plain]
    [path] = plots.plot_train_curves(kept, tmp_path, opt)
    assert path.name == "lm__train_loss.svg"
    names = {p.name for p in plots.plot_all(kept, tmp_path / "all", opt)}
    assert "lm__train_loss.svg" in names
    assert "train loss" in _tick_labels((tmp_path / "all" / "lm__train_loss.svg").read_text())


def with_probe(record, step: int, values: list[float]):
    curve = [
        EvalPoint(
            step=p.step,
            tokens=p.tokens,
            seconds=p.seconds,
            metrics={**p.metrics, "probe_loss": values[i]},
        )
        if i < len(values)
        else p
        for i, p in enumerate(record.curve)
    ]
    options = {**record.task_options, "probe_batch_step": step}
    return record.model_copy(update={"curve": curve, "task_options": options})


def test_probe_figure_marks_the_step_the_batch_was_trained_on(tmp_path: Path) -> None:
    base = make_record("lm", "adamw", 0, 4000.0)
    rec = with_probe(base, 30, [4.0, 4.0, 4.0, 4.0, 1.0, 2.0, 2.5])
    paths = plots.plot_all([rec], tmp_path, plots.PlotOptions(fmt="svg"))
    assert "lm__probe.svg" in {p.name for p in paths}
    text = _tick_labels((tmp_path / "lm__probe.svg").read_text())
    assert {"probe loss", "probe batch", "lm: forgetting probe"} <= set(text), text
    assert plots.plot_probe([base], tmp_path / "none", plots.PlotOptions(fmt="svg")) == []


def test_figures_draw_the_scoring_runs_not_a_luckier_tuning_run() -> None:
    """In a suite folder a single tuning run of another learning rate can have a lower best
    loss than the scored configuration's median; the figures, like the tables, draw the
    scoring runs."""
    scored = [make_record("lm", "adamw", s, 4000.0, hparams={"lr": 1e-3}) for s in (0, 1, 2)]
    lucky = make_record("lm", "adamw", 100, 2000.0, hparams={"lr": 3e-4}, best=0.1)
    lucky = lucky.model_copy(update={"role": "tune"})
    by_task, _ = plots._best_runs([*scored, lucky], plots.PlotOptions())
    drawn = {o.record.run_id for o in by_task["lm"]["adamw"]}
    assert drawn == {r.run_id for r in scored}
