"""``bench suite``: validate, run and inspect YAML suites (thin commands over bench_cli.suite)."""

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench_cli.cli_run import (
    Executor,
    Gpus,
    Jobs,
    Log,
    MlflowUri,
    Mps,
    RayAddress,
    RunsPerGpu,
    SlurmAccount,
    SlurmCluster,
    SlurmFlag,
    SlurmGpus,
    SlurmPartition,
    SlurmTime,
    Threads,
    executor_options,
    log_options,
)
from bench_cli.display import frame_table, friendly, stderr, stdout

suite_app = typer.Typer(
    help="Run YAML suites: every task x optimizer x configuration x seed, resumable.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="A suite file (see suites/*.yaml).")]


def _print_targets(calibration: dict[str, dict]) -> None:
    for key, cal in calibration.items():
        sign = "<=" if cal["direction"] == "min" else ">="
        stderr.print(
            f"calibrated target of {key}: {cal['metric']} {sign} {cal['value']:.6g} "
            f"(median best of the baseline's {cal.get('config') or 'configuration'} on "
            f"calibration seeds {cal.get('seeds')}, margin {cal['margin']:g})",
            highlight=False,
        )


@suite_app.command()
@friendly
def validate(file: FileArg) -> None:
    """Check a suite file under each of its tiers and say how many runs each phase would make."""
    from bench_cli import suite

    counts = suite.validate_suite(file)
    for tier, sizes in counts.items():
        phases = ", ".join(f"{n} {phase}" for phase, n in sizes.items() if n)
        stdout.print(
            f"  tier {tier or '(as written)'}: {sum(sizes.values())} runs ({phases})",
            highlight=False,
        )
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
    max_cells: Annotated[
        int, typer.Option(help="Refuse a suite of more cells unless raised.")
    ] = 10_000,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this task of the suite, by id (repeatable); a later run does the rest."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    executor: Executor = None, jobs: Jobs = None, threads: Threads = None, gpus: Gpus = None,
    runs_per_gpu: RunsPerGpu = None, mps: Mps = None, ray_address: RayAddress = None,
    slurm_cluster: SlurmCluster = None, slurm_partition: SlurmPartition = None,
    slurm_time: SlurmTime = None, slurm_gpus: SlurmGpus = None,
    slurm_account: SlurmAccount = None, slurm_flag: SlurmFlag = None,
    log: Log = None, mlflow_uri: MlflowUri = None,
) -> None:  # fmt: skip
    """Run a suite's phases (tune, calibrate, score) into one directory; rerun to resume."""
    from bench_cli.config import executor_settings, load_suite
    from bench_cli.executors import forks

    ex = executor_options(
        executor, jobs, threads, gpus, runs_per_gpu, mps, ray_address, slurm_cluster,
        slurm_partition, slurm_time, slurm_gpus, slurm_account, slurm_flag,
    )  # fmt: skip
    spec = load_suite(file)
    forks.prestart(executor_settings(spec.executor, dict(ex)), spec.device)  # before torch loads
    from bench_cli import distributed, suite
    from bench_cli.progress import Progress

    trackers = log_options(log, mlflow_uri)

    def command():
        with Progress(stderr, quiet=quiet) as progress:
            return suite.run_suite(file, tier, out, resume, progress, ex, trackers, max_cells, only)

    if distributed.world_size() > 1:  # every rank trains each run; rank 0 reports
        from bench_cli.plan import at_path, build_plan

        plan = at_path(str(file), build_plan, spec, tier)
        tasks = [tp for tp in plan.tasks if not only or tp.task_id in only]  # what it will run
        summary = distributed.under_torchrun(dataclasses.replace(plan, tasks=tasks), ex, command)
        if summary is None:
            return
    else:
        summary = command()
    stdout.print(frame_table(suite.status_counts(summary.table), title=str(summary.out)))
    _print_targets(summary.calibration)
    stderr.print(f"{summary.ran} runs now, {summary.skipped} already done", highlight=False)
    for r in summary.failed:
        first = escape((r.error or "-").splitlines()[0])
        stderr.print(f"[red]{r.optimizer} on {r.task_id} (seed {r.seed}) failed:[/red] {first}")
    if summary.failed:
        raise typer.Exit(1)


@suite_app.command()
@friendly
def status(directory: Annotated[Path, typer.Argument(help="A suite directory.")]) -> None:
    """Show which runs are done, diverged, failed, running, interrupted or missing."""
    from bench_cli import suite
    from bench_cli.results.store import check_results_folder

    fix = "pass the folder that bench suite run wrote"
    check_results_folder(directory, "suite folder", fix)  # not there, or a file: say so
    table = suite.suite_status(directory)
    if table.attrs.get("damage"):  # no claim can be read: no cell shows as running
        stderr.print(f"[yellow]warning:[/yellow] {escape(table.attrs['damage'])}", highlight=False)
    for run_id in table.attrs.get("damaged", []):
        stderr.print(
            f"[yellow]warning:[/yellow] {escape(run_id)}: its record is damaged (it cannot be "
            "read), so the cell counts as missing; `bench suite run` runs it again",
            highlight=False,
        )
    if unplanned := table.attrs.get("unplanned"):
        shown = ", ".join(unplanned[:3]) + (
            f" and {len(unplanned) - 3} more" * (len(unplanned) > 3)
        )
        stderr.print(
            f"[yellow]warning:[/yellow] {len(unplanned)} record file(s) here are not cells this "
            f"suite has planned ({escape(shown)}): from another suite? `bench leaderboard` "
            "counts them; move them out if so",
            highlight=False,
        )
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
