"""Exports parsed back: CSV with pandas, Markdown and LaTeX structure, strict JSON; the CLI."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bench_cli.cli_results import register
from bench_cli.results import export, latex, leaderboard
from tests.results import make_record, suite, write_all

runner = CliRunner()


@pytest.fixture(scope="module")
def lb() -> leaderboard.Leaderboard:
    return leaderboard.build(suite())


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_csv_reads_back_with_pandas(lb) -> None:
    df = pd.read_csv(io.StringIO(export.render(lb, "csv")))
    assert list(df.columns) == leaderboard.TASK_COLUMNS
    assert len(df) == 6
    row = df[(df["task"] == "valley") & (df["optimizer"] == "slow")].iloc[0]
    assert math.isnan(row["tokens_to_target"]) and row["tokens_to_target_hi"] == math.inf
    pd.testing.assert_series_equal(df["tokens_to_target"], lb.tasks["tokens_to_target"])
    ranking = pd.read_csv(io.StringIO(export.render(lb, "csv", table="ranking")))
    assert list(ranking["optimizer"]) == ["fast", "adamw", "slow"]


def test_markdown_is_well_formed_pipe_tables(lb) -> None:
    text = export.render(lb, "md")
    assert "### lm" in text and "### valley" in text and "### Overall ranking" in text
    tables = re.findall(r"((?:^\|.*\|$\n?)+)", text, flags=re.M)
    assert len(tables) == 3
    for table in tables:
        lines = table.strip().splitlines()
        widths = {line.count("|") for line in lines}
        assert len(widths) == 1, "every row has as many cells as the header"
        assert re.fullmatch(r"\|(-+:?\|)+", lines[1].replace("--:", "--:"))
    # three seeds: [min, max] with its true coverage, 75%
    assert "| fast | 3/3 | 2.05k [2k, 2.1k] 75% | 2.00x too few seeds |" in text
    # never reached, each run trained 10k: bounds, never a point value
    assert "| slow | 0/3 | >10k [10k, >10k] 75% | <0.41x too few seeds |" in text
    assert "sign-flip permutation test" in text and "two-sided at 0.05" in text


def latex_rows(tabular: str) -> list[str]:
    body = tabular.split(r"\midrule")[1].split(r"\bottomrule")[0]
    return [line for line in body.strip().splitlines()]


def test_latex_uses_booktabs_and_escapes(lb) -> None:
    text = export.render(lb, "latex")
    tabulars = re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", text, flags=re.S)
    assert len(tabulars) == 3
    for tabular in tabulars:
        assert tabular.count(r"\toprule") == tabular.count(r"\bottomrule") == 1
        columns = len(re.match(r"\\begin\{tabular\}\{(\w+)\}", tabular).group(1))
        header = tabular.split(r"\toprule")[1].split(r"\midrule")[0]
        for line in [header.strip(), *latex_rows(tabular)]:
            assert line.endswith(r"\\") and line.count("&") == columns - 1
    tex = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    assert r"Best val\_loss" in tex and "val_loss" not in tex.replace(r"val\_loss", "")
    assert "∞" not in text and "—" not in text
    # 2 of 3 seeds reached: a median with an interval open to the top (the third trained 10k)
    partly = [make_record("t", "a", s, None if s == 2 else 4000.0) for s in range(3)]
    assert r"4k [4k, $>$10k] 75\%" in export.render(leaderboard.build(partly, "a"), "latex")


def test_latex_tables_are_captioned_labelled_floats(lb) -> None:
    """Each table is a float to \\input: its caption says what the comment above it says, in
    LaTeX (no bare < or _, which text fonts misprint), and its label names its task."""
    text = export.render(lb, "latex")
    floats = re.findall(r"% ([^\n]*)\n\\begin\{table\}\[t\]\n\\centering\n\\caption\{([^\n]*)\}\n"
                        r"\\label\{([^\n]*)\}\n\\begin\{tabular\}.*?\\end\{tabular\}\n\\end\{table\}",
                        text, flags=re.S)  # fmt: skip
    assert len(floats) == 3 == text.count(r"\begin{table}") == text.count(r"\end{table}")
    for comment, caption, _ in floats:
        plain = caption.replace(r"$\le$", "<=").replace(r"$\ge$", ">=").replace(r"\_", "_")
        assert plain == comment, (plain, comment)
        assert "<" not in caption and ">" not in caption
    labels = [label for _, _, label in floats]
    tasks = [name for name, _ in export.tasks_of(lb)]
    assert labels == [f"tab:bench-{t}" for t in tasks] + ["tab:bench-overall-ranking"]
    assert latex._latex_text("a_b <= 1 < 2 >= 3 > 4 & c") == (
        r"a\_b $\le$ 1 $<$ 2 $\ge$ 3 $>$ 4 \& c"
    )


def test_latex_bolds_a_winner_only_when_its_interval_excludes_the_others() -> None:
    six = leaderboard.build(suite(seeds=tuple(range(6))))  # 96% intervals, verdicts decided
    lm = re.search(r"% lm:.*?\\end\{tabular\}", export.render(six, "latex"), flags=re.S).group(0)
    rows = {row.split(" & ")[0]: row for row in latex_rows(lm)}
    assert r"\textbf{2.12k [2k, 2.25k] 96\%}" in rows["fast"] and "2.00x better" in rows["fast"]
    assert r"\textbf" not in rows["adamw"] + rows["slow"]
    # two optimizers whose intervals overlap: nobody is bold
    close = [make_record("t", "a", s, 4000.0 + 500 * s) for s in range(6)]
    close += [make_record("t", "b", s, 4200.0 + 500 * s) for s in range(6)]
    assert r"\textbf" not in export.render(leaderboard.build(close, "a"), "latex")
    # one seed each: no interval, so nobody is bold however far apart
    apart = [make_record("t", "a", 0, 1000.0), make_record("t", "b", 0, 9000.0)]
    assert r"\textbf" not in export.render(leaderboard.build(apart, "a"), "latex")


def test_winner_rule() -> None:
    assert latex.winner([1.0, 3.0], [0.5, 2.5], [1.5, 3.5], lower=True) == 0
    assert latex.winner([1.0, 3.0], [0.5, 1.0], [2.0, 3.5], lower=True) == -1  # overlap
    assert latex.winner([1.0, 3.0], [0.5, 2.5], [1.5, 3.5], lower=False) == 1
    assert latex.winner([1.0, math.nan], [0.5, 1e4], [1.5, math.inf], lower=True) == 0
    assert latex.winner([1.0], [0.5], [1.5], lower=True) == -1  # alone: nothing to beat
    assert latex.winner([1.0, 3.0], [0.5, math.nan], [1.5, math.nan], lower=True) == -1


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine")
def test_latex_compiles(lb, tmp_path: Path) -> None:
    doc = tmp_path / "t.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
        + export.render(lb, "latex")
        + "\\end{document}\n"
    )
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_json_is_strict_and_complete(lb) -> None:
    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(export.render(lb, "json"), parse_constant=no_constants)
    assert data["baseline"] == "adamw" and data["targets"]["lm"]["value"] == 1.0
    slow = next(r for r in data["tasks"] if (r["task"], r["optimizer"]) == ("valley", "slow"))
    assert slow["tokens_to_target"] is None and slow["tokens_to_target_hi"] == "inf"
    assert [r["optimizer"] for r in data["ranking"]] == ["fast", "adamw", "slow"]


@pytest.mark.parametrize(
    ("x", "text"),
    [(1_234_567, "1.23M"), (999_950, "1M"), (12, "12"), (2.5e9, "2.5B"), (math.inf, "∞")],
)
def test_counts_read_well(x, text) -> None:
    assert export.fmt_count(x) == text


def test_latex_escape() -> None:
    assert latex.latex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"


def test_export_command_writes_a_file_atomically(app, tmp_path: Path) -> None:
    results = write_all(tmp_path / "results", suite())
    out = tmp_path / "paper" / "table.tex"
    result = runner.invoke(app, ["export", str(results), "--format", "latex", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().count(r"\toprule") == 3
    assert [p.name for p in out.parent.iterdir()] == ["table.tex"]  # no temporary left behind
    result = runner.invoke(app, ["export", str(results), "--format", "csv"])
    assert result.exit_code == 0 and len(pd.read_csv(io.StringIO(result.stdout))) == 6


def test_leaderboard_command_prints_every_task_and_the_ranking(app, tmp_path: Path) -> None:
    results = write_all(tmp_path / "results", suite(seeds=tuple(range(6))))
    result = runner.invoke(app, ["leaderboard", str(results)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for text in ("lm: target val_loss <= 1", "valley", "overall", "2.00x better", "0/6", "2.12k"):
        assert text in result.stdout
    for text in ("—: not defined", ">x: at least x", "<x: at most x", "sign-flip", "0.05"):
        assert text in " ".join(result.stdout.split())
    # --alpha: at 1% eight pairs are needed, so six give no verdict
    result = runner.invoke(app, ["leaderboard", str(results), "--alpha", "0.01"])
    assert result.exit_code == 0 and "too few seeds" in result.stdout
    assert "better" not in result.stdout.split("overall")[0]


def _widest_line(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def long_names_suite() -> list:
    """Three seeds, a long optimizer name, a censored row and a stopped run."""
    records = []
    for s in range(3):
        records.append(make_record("lm", "adamw", s, 4000.0 + 10 * s))
        records.append(make_record("lm", "simplified-ademamix", s, None, steps_done=60 + s))
        records.append(make_record("lm", "schedule-free", s, 2500.0 + 10 * s))
    return records


def test_compact_view_fits_100_columns_and_wide_shows_the_rest(app, tmp_path: Path) -> None:
    results = write_all(tmp_path / "results", long_names_suite())
    compact = runner.invoke(app, ["leaderboard", str(results)], env={"COLUMNS": "300"})
    assert compact.exit_code == 0, compact.output
    tables = compact.stdout.split("Medians over")[0]
    assert _widest_line(tables) <= 100, tables
    # stopped after 6000, 6100 and 6200 tokens: at least what they trained, never their plan
    assert ">6.1k [6k, >6.2k] 75%" in tables and "<0.66x too few seeds" in tables
    assert "tuning compute" not in tables.split("overall")[0] and "grad evals" not in tables
    assert " trials, " in tables  # each title states the trials and what they trained
    wide = runner.invoke(app, ["leaderboard", str(results), "--wide"], env={"COLUMNS": "300"})
    for header in ("seconds to target", "trials", "tuning compute", "grad evals", "30k tokens"):
        assert header in wide.stdout
    some = runner.invoke(
        app, ["leaderboard", str(results), "--columns", "optimizer,trials"], env={"COLUMNS": "300"}
    )
    first = some.stdout.split("overall")[0]
    assert "trials" in first and "reached" not in first and "3 (1 cfg)" in first
    bad = runner.invoke(app, ["leaderboard", str(results), "--columns", "optimizer,nope"])
    assert bad.exit_code == 1 and "unknown column 'nope'" in bad.output


def test_one_seed_shows_no_interval(app, tmp_path: Path) -> None:
    results = write_all(tmp_path / "results", suite(seeds=(0,)))
    out = runner.invoke(app, ["leaderboard", str(results)], env={"COLUMNS": "300"}).stdout
    assert "2k " in out and "[2k" not in out and "%]" not in out.split("Medians")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{dir}", "--format", "xlsx"], "unknown format 'xlsx'"),
        (["export", "{missing}"], "does not exist"),
        (["leaderboard", "{empty}"], "no run records"),
        (["leaderboard", "{dir}", "--baseline", "sgd"], "baseline 'sgd' has no runs"),
        (["leaderboard", "{dir}", "--alpha", "1.5"], "--alpha must lie strictly between 0 and 1"),
    ],
)
def test_bad_input_is_one_red_line(app, tmp_path: Path, args, message) -> None:
    paths = {
        "dir": str(write_all(tmp_path / "results", suite(seeds=(0,)))),
        "missing": str(tmp_path / "nowhere"),
        "empty": str(write_all(tmp_path / "empty", [])),
    }
    result = runner.invoke(app, [a.format(**paths) for a in args])
    assert result.exit_code == 1
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("value", "lo", "hi", "text"),
    [
        (1.52, 1.52, 1.52, "1.52x"),
        (math.nan, 1.2, math.inf, ">1.20x"),  # the baseline was censored: at least
        (math.nan, 0.0, 0.8, "<0.80x"),  # the optimizer was censored: at most
        (math.nan, 0.0, math.inf, "—"),  # both censored: nothing is known
    ],
)
def test_speedups_print_as_bounds_where_censored(value, lo, hi, text) -> None:
    assert export.fmt_speedup(value, lo, hi) == text


def test_seed_independent_rows_show_no_interval_and_no_verdict() -> None:
    recs = [
        make_record("rosenbrock", opt, s, t).model_copy(update={"seed_independent": True})
        for opt, t in (("adamw", 4000.0), ("mars", 3000.0))
        for s in range(8)
    ]
    lb = leaderboard.build(recs)
    shown = export.display_task(lb.tasks)
    assert list(shown["tokens to target"]) == ["3k", "4k"]
    assert list(shown["speedup"]) == ["1.33x", "baseline"] and list(shown["reached"]) == ["1/1"] * 2
    assert "seed-independent" in export.title(lb, "rosenbrock")


@pytest.mark.parametrize(
    ("level", "text"), [(0.75, "75%"), (0.978515625, "97%"), (1 - 2 / 64, "96%"), (0.5, "50%")]
)
def test_levels_are_rounded_down(level, text) -> None:
    assert export.fmt_level(level) == text


def test_a_folder_with_only_tuning_runs_says_so(app, tmp_path: Path) -> None:
    tuning = [r.model_copy(update={"role": "tune"}) for r in suite(seeds=(0,))]
    results = write_all(tmp_path / "results", tuning)
    result = runner.invoke(app, ["leaderboard", str(results)])
    assert result.exit_code == 1 and "no scored runs" in result.output
    assert "6 tuning or calibration runs" in result.output


@pytest.mark.parametrize("seeds", [(0, 1), (0, 1, 2), (0, 1, 2, 3, 4)])
def test_latex_bolds_nothing_where_the_seeds_are_too_few_for_a_verdict(seeds) -> None:
    # fast's intervals lie wholly below the others', but 2, 3 and 5 seeds give [min, max] at
    # 50%, 75% and 93%, under the 95% a verdict needs; the row says "too few seeds", so no bold
    lb = leaderboard.build(suite(seeds=seeds))
    text = export.render(lb, "latex")
    assert "too few seeds" in text
    assert r"\textbf" not in text
    # the same data at 6 seeds (96%, "better") keeps its bold cells
    six = export.render(leaderboard.build(suite(seeds=tuple(range(6)))), "latex")
    assert six.count(r"\textbf") == 4  # tokens and seconds to target, on lm and on valley


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_export_refuses_a_folder_with_only_tuning_runs(app, tmp_path: Path, fmt) -> None:
    tuning = [r.model_copy(update={"role": "tune"}) for r in suite(seeds=(0,))]
    results = write_all(tmp_path / "results", tuning)
    result = runner.invoke(app, ["export", str(results), "--format", fmt])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: no scored runs in {str(results)!r} (6 tuning or calibration runs); run the "
        "suite to the end to score the selected configurations"
    ]
    out = tmp_path / "paper" / f"table.{fmt}"
    result = runner.invoke(app, ["export", str(results), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 1 and "no scored runs" in result.output
    assert not out.exists()
