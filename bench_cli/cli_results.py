"""The analysis commands: ``leaderboard``, ``export``, ``plot``, ``probe`` and ``check``.

Everything is regenerated from the stored records alone; ``register(app)`` adds the commands to
the ``bench`` app. (No ``from __future__ import annotations`` here: typer reads the annotations
at run time.) The modules that build the tables import pandas, so each command imports them
itself: the command line as a whole, which every ``bench`` command loads, does not wait for it.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench_cli.display import frame_table, friendly, stderr, stdout, write_plain
from bench_cli.errors import BenchError
from bench_cli.results import defaults, inference
from bench_cli.results.record import RunRecord
from bench_cli.results.store import check_parent_folder, load_records, nothing_scored

DirArg = Annotated[
    Path,
    typer.Argument(metavar="DIR", help="A directory of run records (searched recursively)."),
]
SkipDamagedOpt = Annotated[
    bool,
    typer.Option(
        "--skip-damaged",
        help="Go on without record files that cannot be read (a warning names each one).",
    ),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option(
        help="Optimizer that speedups are measured against (the suite's baseline in a suite's "
        f"folder, else {defaults.DEFAULT_BASELINE})."
    ),
]
ProbeBaselineOpt = Annotated[
    str | None,
    typer.Option(
        "--baseline",
        help="Optimizer the others' probe excess is compared with, paired by seed (the suite's "
        f"baseline in a suite's folder, else {defaults.DEFAULT_BASELINE}).",
    ),
]


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def _records(directory: Path, skip_damaged: bool = False) -> list[RunRecord]:
    """The records of ``directory``; unreadable files fail the command unless skipped."""
    hint = ", or pass --skip-damaged to leave them out"
    records = load_records(directory, skip_damaged, warn, skip_hint=hint)
    if not records:
        raise BenchError(f"no run records in {str(directory)!r}")
    return records


def suite_baseline(directory: Path) -> str | None:
    """The baseline that the suite run in ``directory`` names (None outside a suite's folder)."""
    from bench_cli.folder import RESOLVED, read_suite_file

    path = Path(directory) / RESOLVED
    if not path.is_file():
        return None
    data = read_suite_file(path, "restore it, or pass --baseline")
    value = data.get("baseline") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _baseline(
    records: list[RunRecord], baseline: str | None, directory: Path, lost: str = "no speedups"
) -> str:
    """The baseline: as given, else the suite's, else the default. One given must have runs;
    the others only get a warning (``lost``: what the tables then lack)."""
    names = sorted({r.optimizer for r in records})
    chosen = baseline or suite_baseline(directory) or defaults.DEFAULT_BASELINE
    if chosen not in names:
        message = f"baseline {chosen!r} has no runs here (optimizers: {', '.join(names)})"
        if baseline is not None:
            raise BenchError(message + "; choose one with --baseline")
        stderr.print(f"[yellow]warning:[/yellow] {message}; {lost}", highlight=False)
    return chosen


def check_out(out: Path | None, example: str = "table.md") -> None:
    """An ``--out`` file that can be written, before any work (``example``: a file name to
    suggest when ``out`` is a folder)."""
    if out is not None:
        check_parent_folder(out)
        if out.is_dir() or not out.name:
            raise BenchError(f"--out {str(out)!r} is a folder; give a file name, such as {example}")
        if out.exists() and not out.is_file():  # a device or a pipe: the write would replace it
            raise BenchError(
                f"--out {str(out)!r} is not a regular file (a device or a pipe); give a file "
                f"name, such as {example}"
            )


def _escaped(df):
    return df.apply(lambda col: col.map(lambda x: escape(x) if isinstance(x, str) else x))


def show_leaderboard(
    directory: DirArg,
    baseline: BaselineOpt = None,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Every column: seconds, trials, tuning compute, grad evals, flags."
        ),
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated columns to show, from: {', '.join(defaults.WIDE)}.",
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Level of the two-sided verdict test (0.05 = 5%).")
    ] = inference.ALPHA,
    skip_damaged: SkipDamagedOpt = False,
) -> None:
    """Per task, each optimizer's scored runs over seeds; then the overall ranking."""
    from bench_cli.results import export, leaderboard

    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must lie strictly between 0 and 1 (0.05 = 5%), got {alpha}")
    shown = export.parse_columns(columns) if columns else export.WIDE if wide else export.COMPACT
    records = _records(directory, skip_damaged)
    lb = leaderboard.build(records, _baseline(records, baseline, directory), alpha=alpha)
    if lb.tasks.empty:
        raise nothing_scored(directory, records)
    for name, task in export.tasks_of(lb):
        table = export.display_task(task, columns=shown)
        stdout.print(frame_table(_escaped(table), title=escape(export.title(lb, name))))
    stdout.print(frame_table(_escaped(export.display_ranking(lb.ranking)), title="overall"))
    stdout.print(escape(export.legend(lb)), style="dim", highlight=False)


def export_tables(
    directory: DirArg,
    fmt: Annotated[str, typer.Option("--format", help="csv, md, latex or json.")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    table: Annotated[str, typer.Option(help="all, tasks or ranking (CSV: one table).")] = "all",
    baseline: BaselineOpt = None,
    skip_damaged: SkipDamagedOpt = False,
) -> None:
    """Export the leaderboard's tables for a paper or a spreadsheet."""
    from bench_cli.results import export, leaderboard

    if fmt not in export.FORMATS:
        raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(export.FORMATS)}")
    records = _records(directory, skip_damaged)  # the input first: a missing folder, one line
    check_out(out)
    lb = leaderboard.build(records, _baseline(records, baseline, directory))
    if lb.tasks.empty:  # as the leaderboard: no table of nothing, nothing written
        raise nothing_scored(directory, records)
    text = export.render(lb, fmt, table)
    if out is None:
        write_plain(text)
    else:
        export.write(text, out)
        stderr.print(f"wrote {out}", highlight=False)


def plot(
    directory: DirArg,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the figures.", show_default="DIR/plots")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="png, svg or pdf.")] = "png",
    logx: Annotated[bool, typer.Option("--logx", help="Logarithmic x axis.")] = False,
    baseline: BaselineOpt = None,
    skip_damaged: SkipDamagedOpt = False,
) -> None:
    """Loss against tokens and against training seconds per task, and the performance profile."""
    from bench_cli.results import plots, stats  # plots loads matplotlib: only for this command

    if fmt not in plots.PLOT_FORMATS:
        raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(plots.PLOT_FORMATS)}")
    records = _records(directory, skip_damaged)  # before the figures' folder, under it
    out = out or Path(directory) / "plots"
    check_parent_folder(out / "figure", "--out folder")  # a file where the folder would be
    scored = {r.task_key for r in stats.scored(records)}
    if not scored:
        raise nothing_scored(directory, records)
    if left := sorted({r.task_key for r in records} - scored):
        warn(f"no scored runs yet for {', '.join(left)}: left out of the figures")
    options = plots.PlotOptions(
        fmt=fmt, baseline=_baseline(records, baseline, directory), logx=logx
    )
    for path in plots.plot_all(records, out, options):
        stdout.print(str(path), highlight=False, markup=False, soft_wrap=True)


def probe_table(
    directory: DirArg,
    fmt: Annotated[str, typer.Option("--format", help="md, csv or json.")] = "md",
    after: Annotated[
        str, typer.Option(help="Steps after the probe batch to report, comma-separated.")
    ] = ",".join(map(str, defaults.DEFAULT_AFTER)),
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    baseline: ProbeBaselineOpt = None,
    skip_damaged: SkipDamagedOpt = False,
) -> None:
    """The forgetting probe: how much of the probe batch each optimizer keeps, by seed against
    the baseline (runs with the task option probe_batch_step)."""
    from bench_cli.results import export, probe

    try:
        steps = sorted({int(a) for a in after.split(",") if a.strip()})
    except ValueError:
        raise BenchError(
            f"--after {after!r}: give whole numbers of steps, such as 100,500"
        ) from None
    if not steps or min(steps) <= 0:
        raise BenchError(f"--after {after!r}: give positive numbers of steps, such as 100,500")
    if fmt not in probe.FORMATS:
        raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(probe.FORMATS)}")
    records = _records(directory, skip_damaged)  # the input first: a missing folder, one line
    check_out(out)
    base = _baseline(records, baseline, directory, lost="no comparison by seed")
    text = probe.render(probe.table(records, base, steps), fmt, base)
    if out is None:
        write_plain(text)
    else:
        export.write(text, out)
        stderr.print(f"wrote {out}", highlight=False)


def check(
    directory: DirArg,
    against: Annotated[Path, typer.Option("--against", help="Baseline results directory.")],
    tolerance: Annotated[
        float,
        typer.Option(help="Allowed slowdown beyond the baseline's runs, 0 to 1 (0.05 = 5%)."),
    ] = defaults.DEFAULT_TOLERANCE,
    alpha: Annotated[
        float,
        typer.Option(help="Level of the test that calls a pair slower (3+ seeds a side at 0.05)."),
    ] = 0.05,
) -> None:
    """Exit 1 when tokens-to-target got slower (a permutation test where the seeds allow one,
    else the values), a run newly failed, a task, optimizer or seed of the baseline has no runs,
    or a record of either folder cannot be read."""
    from bench_cli.results import check as checks

    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must lie strictly between 0 and 1 (0.05 = 5%), got {alpha}")
    report = checks.check_dirs(directory, against, tolerance, warn=warn, alpha=alpha)
    for problem in report.problems:
        stderr.print(f"[red]regression:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    if report.problems:
        raise typer.Exit(1)
    stdout.print(f"no regressions against {against}: {report.compared}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("leaderboard")(friendly(show_leaderboard))
    app.command("export")(friendly(export_tables))
    app.command("plot")(friendly(plot))
    app.command("probe")(friendly(probe_table))
    app.command("check")(friendly(check))
