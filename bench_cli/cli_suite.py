"""``bench suite``: validate, run and inspect YAML suites (thin commands over bench_cli.suite)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench_cli import suite
from bench_cli.display import ProgressBar, frame_table, friendly, stderr, stdout
from bench_cli.results.record import RunRecord

suite_app = typer.Typer(
    help="Run YAML suites: every task x optimizer x configuration x seed, resumable.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="A suite file (see suites/*.yaml).")]


class SuiteProgress(ProgressBar):
    """A live row for the run in progress and one printed line per finished run."""

    def on_end(self, record: RunRecord) -> None:
        self.progress.remove_task(self.task_id)
        metric = record.target.metric if record.target else None
        best = (
            f"best {metric} {record.best_metrics[metric]:.4g}"
            if metric in record.best_metrics
            else ""
        )
        self.progress.console.print(
            f"{record.status:<8} {record.task} {record.optimizer} seed {record.seed} {best}",
            highlight=False,
        )


def _print_targets(calibration: dict[str, dict]) -> None:
    for key, cal in calibration.items():
        sign = "<=" if cal["direction"] == "min" else ">="
        stderr.print(
            f"calibrated target of {key}: {cal['metric']} {sign} {cal['value']:.6g} "
            f"(baseline's best {cal['best_config']}, margin {cal['margin']:g})",
            highlight=False,
        )


@suite_app.command()
@friendly
def validate(file: FileArg) -> None:
    """Check a suite file under each of its tiers and say how many runs each would make."""
    counts = suite.validate_suite(file)
    for tier, n in counts.items():
        stdout.print(f"  tier {tier or '(as written)'}: {n} runs", highlight=False)
    stdout.print(f"{file} is valid", highlight=False)


@suite_app.command("run")
@friendly
def run_(
    file: FileArg,
    tier: Annotated[
        str | None, typer.Option(help="A tier of the suite (default: its own).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Suite directory (default: suite-runs/FILE-TIER).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Skip runs whose record exists; --no-resume refuses a DIR with records."),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run every cell of a suite into one directory; rerun to resume after an interruption."""
    if quiet:
        summary = suite.run_suite(file, tier, out, resume)
    else:
        with SuiteProgress() as bar:
            summary = suite.run_suite(file, tier, out, resume, bar)
    stdout.print(frame_table(suite.status_counts(summary.table), title=str(summary.out)))
    _print_targets(summary.calibration)
    stderr.print(f"{summary.ran} runs now, {summary.skipped} already done", highlight=False)
    for r in summary.failed:
        first = escape((r.error or "-").splitlines()[0])
        stderr.print(f"[red]{r.optimizer} on {r.task} (seed {r.seed}) failed:[/red] {first}")
    if summary.failed:
        raise typer.Exit(1)


@suite_app.command()
@friendly
def status(directory: Annotated[Path, typer.Argument(help="A suite directory.")]) -> None:
    """Show which runs are done, diverged, failed, running, interrupted or missing."""
    table = suite.suite_status(directory)
    stdout.print(frame_table(suite.status_counts(table), title=str(directory)))
    counts = table["state"].value_counts()
    stdout.print(
        ", ".join(f"{counts.get(s, 0)} {s}" for s in suite.STATES) + f" (of {len(table)} runs)",
        highlight=False,
    )
    _print_targets(suite.calibration_of(directory))


@suite_app.command()
@friendly
def schema() -> None:
    """Print the suite file's JSON Schema, for editors (docs/how-to/editors.md)."""
    from bench_cli.schema_docs import schema_text

    typer.echo(schema_text(), nl=False)
