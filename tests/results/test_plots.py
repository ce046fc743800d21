"""Figures are written, non-empty and of the asked format; the band arithmetic by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bench_cli.cli_results import register
from bench_cli.errors import BenchError
from bench_cli.results import plots
from tests.results import make_record, write_all

MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}


def small_set() -> list:
    """One task, two optimizers, two seeds; one lion seed diverges halfway."""
    records = [make_record("lm", "adamw", s, 4000.0 + 500 * s) for s in (0, 1)]
    records.append(make_record("lm", "lion", 0, 3000.0))
    records.append(make_record("lm", "lion", 1, None, status="diverged", steps_done=50))
    return records


@pytest.mark.parametrize("fmt", plots.PLOT_FORMATS)
def test_every_figure_is_written_in_the_asked_format(tmp_path: Path, fmt: str) -> None:
    paths = plots.plot_all(small_set(), tmp_path / "figs", plots.PlotOptions(fmt=fmt))
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [f"lm__vs_tokens.{fmt}", f"lm__vs_seconds.{fmt}", f"performance_profile.{fmt}"]
    )
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes().startswith(MAGIC[fmt])
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == names  # no temporaries


def test_log_x_drops_the_zero_point(tmp_path: Path) -> None:
    paths = plots.plot_curves(small_set(), tmp_path, plots.PlotOptions(logx=True))
    assert all(p.stat().st_size > 0 for p in paths)


def test_median_and_band_over_seeds() -> None:
    # seed b starts later and stops earlier: outside its range only a and c count
    a = (np.array([0.0, 2.0]), np.array([4.0, 2.0]), False)
    b = (np.array([1.0, 2.0]), np.array([1.0, 1.0]), True)
    c = (np.array([0.0, 2.0]), np.array([6.0, 4.0]), False)
    grid, med, lo, hi = plots.aggregate([a, b, c])
    assert list(grid) == [0.0, 1.0, 2.0]
    assert list(med) == [5.0, 3.0, 2.0]  # x=0: median(4, 6); x=1: median(3, 1, 5)
    assert list(lo) == [4.0, 1.0, 1.0] and list(hi) == [6.0, 5.0, 4.0]


def test_colours_are_fixed_per_optimizer() -> None:
    one = plots.colors(["adamw", "lion", "ademamix"], "adamw")
    two = plots.colors(["adamw", "lion"], "adamw")
    assert one["adamw"] == "#000000" and one["lion"] == two["lion"]
    assert len(set(plots.colors(["adamw", "x", "y", "lion"], "adamw").values())) == 4


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown plot format 'jpg'"):
        plots.plot_all(small_set(), tmp_path, plots.PlotOptions(fmt="jpg"))


def test_plot_command(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    results = write_all(tmp_path / "results", small_set())
    result = CliRunner().invoke(app, ["plot", str(results), "--format", "svg"])
    assert result.exit_code == 0, result.output
    assert (results / "plots" / "performance_profile.svg").stat().st_size > 0
    assert "lm__vs_tokens.svg" in result.stdout
    bad = CliRunner().invoke(app, ["plot", str(results), "--format", "gif"])
    assert bad.exit_code == 1 and "unknown format 'gif'" in bad.output


def test_plot_command_without_scored_runs_says_so_and_names_tasks_left_out(tmp_path: Path) -> None:
    """Figures draw scoring runs only: a folder of tuning runs is refused in one line with
    nothing written; a task with tuning runs only is named as left out."""
    app = typer.Typer()
    register(app)
    tune = [r.model_copy(update={"role": "tune"}) for r in small_set()]
    only_tune = write_all(tmp_path / "tune", tune)
    res = CliRunner().invoke(app, ["plot", str(only_tune), "--out", str(tmp_path / "p1")])
    assert res.exit_code == 1 and "no scored runs" in res.output
    assert not (tmp_path / "p1").exists()
    partial = [r.model_copy(update={"task": "later", "run_id": r.run_id + "-later"}) for r in tune]
    mixed = write_all(tmp_path / "mixed", [*small_set(), *partial])
    res = CliRunner().invoke(app, ["plot", str(mixed), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 0, res.output
    assert "no scored runs yet for later: left out of the figures" in res.output
    assert not list((tmp_path / "p2").glob("later__*"))
