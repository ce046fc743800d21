"""``bench run`` and ``bench plan``, and the executor options they share with ``bench suite run``."""

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from bench_cli.display import frame_table, friendly, stderr, stdout
from bench_cli.errors import ConfigError
from bench_cli.results.metrics import precision_note

Executor = Annotated[
    str | None,
    typer.Option("--executor", help="local (default), ray or slurm.", rich_help_panel="Executor"),
]
Jobs = Annotated[
    int | None, typer.Option(help="CPU: runs at once (default 1).", rich_help_panel="Executor")
]
Threads = Annotated[
    int | None,
    typer.Option(help="CPU: threads per run (default: cores // jobs).", rich_help_panel="Executor"),
]
Gpus = Annotated[
    str | None,
    typer.Option(
        help="CUDA: the GPUs to use, e.g. 0,2 (default: all).", rich_help_panel="Executor"
    ),
]
RunsPerGpu = Annotated[
    int | None,
    typer.Option(
        help="CUDA: runs sharing one GPU (default: from memory, at most 4).",
        rich_help_panel="Executor",
    ),
]
Mps = Annotated[
    bool | None,
    typer.Option(
        "--mps/--no-mps",
        help="CUDA: run the runs sharing a GPU under NVIDIA MPS.",
        show_default="on when runs share a GPU and nvidia-cuda-mps-control is installed",
        rich_help_panel="Executor",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="Ray: an existing cluster (default: a local Ray).", rich_help_panel="Executor"
    ),
]
SlurmCluster = Annotated[
    str | None,
    typer.Option(
        help="SLURM: slurm (default: sbatch must be here), local (submitit runs the jobs on "
        "this machine) or debug (in this process).",
        rich_help_panel="Executor",
    ),
]
SlurmPartition = Annotated[
    str | None, typer.Option(help="SLURM: the partition (-p).", rich_help_panel="Executor")
]
SlurmTime = Annotated[
    int | None, typer.Option(help="SLURM: minutes per job.", rich_help_panel="Executor")
]
SlurmGpus = Annotated[
    int | None, typer.Option(help="SLURM: GPUs per job.", rich_help_panel="Executor")
]
SlurmAccount = Annotated[
    str | None, typer.Option(help="SLURM: the account charged (-A).", rich_help_panel="Executor")
]
SlurmFlag = Annotated[
    list[str] | None,
    typer.Option(
        help="SLURM: another sbatch flag, KEY=VALUE (repeatable).", rich_help_panel="Executor"
    ),
]
Log = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        help="Log to tensorboard, mlflow or wandb (repeatable).",
        rich_help_panel="Trackers",
    ),
]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (default: a file store in the folder).",
        rich_help_panel="Trackers",
    ),
]


def executor_options(
    executor=None, jobs=None, threads=None, gpus=None, runs_per_gpu=None, mps=None, ray_address=None,
    slurm_cluster=None, slurm_partition=None, slurm_time=None, slurm_gpus=None,
    slurm_account=None, slurm_flag=None,
) -> dict:  # fmt: skip
    """The command line's executor settings (only those given)."""
    out: dict = {"kind": executor, "jobs": jobs, "threads": threads, "runs_per_gpu": runs_per_gpu}
    out["ray_address"] = ray_address
    out["mps"] = mps
    if gpus is not None:
        try:
            out["gpus"] = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise ConfigError(f"--gpus takes GPU numbers like 0,2; got {gpus!r}") from None
    slurm = {
        "cluster": slurm_cluster,
        "partition": slurm_partition,
        "time_minutes": slurm_time,
        "gpus_per_node": slurm_gpus,
        "account": slurm_account,
    }
    slurm = {k: v for k, v in slurm.items() if v is not None}
    if slurm_flag:
        extra = {}
        for item in slurm_flag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--slurm-flag expects KEY=VALUE, got {item!r}")
            extra[key] = value
        slurm["extra"] = extra
    out["slurm"] = slurm
    return {k: v for k, v in out.items() if v is not None}


def log_options(log: list[str] | None, mlflow_uri: str | None) -> dict:
    allowed = ("tensorboard", "mlflow", "wandb")
    for kind in log or []:
        if kind not in allowed:
            raise ConfigError(f"--log {kind!r}: choose one of {', '.join(allowed)}")
    out = {"kinds": list(log)} if log else {}
    if mlflow_uri:
        out["mlflow_uri"] = mlflow_uri
    return out


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seed takes a number or several, like 0,1,2; got {text!r}")
    return seeds


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def run(
        opt: Annotated[str, typer.Option("--opt", help="Optimizer name, or several: adamw,ademamix")],
        task: Annotated[str, typer.Option("--task", help="Task name (see `bench list`).")],
        steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: the task's).")] = None,
        seed: Annotated[str, typer.Option(help="Seed (model init, data order), or several: 0,1,2.")] = "0",
        out: Annotated[Path, typer.Option(help="Directory for the run records.")] = Path("results"),
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override: KEY=VALUE; opt.KEY, task.KEY, run.KEY or OPTNAME.KEY (repeatable)."),
        ] = None,
        data: Annotated[str | None, typer.Option(help="Local data file or folder.")] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
        compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
        rerun: Annotated[bool, typer.Option("--rerun", help="Replace records already in --out.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the cells; run nothing.")] = False,
        plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Import a module or .py file that registers optimizers/tasks (repeatable).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
        executor: Executor = None, jobs: Jobs = None, threads: Threads = None, gpus: Gpus = None,
        runs_per_gpu: RunsPerGpu = None, mps: Mps = None, ray_address: RayAddress = None,
        slurm_cluster: SlurmCluster = None, slurm_partition: SlurmPartition = None,
        slurm_time: SlurmTime = None, slurm_gpus: SlurmGpus = None,
        slurm_account: SlurmAccount = None, slurm_flag: SlurmFlag = None,
        log: Log = None, mlflow_uri: MlflowUri = None,
    ) -> None:  # fmt: skip
        """Train each optimizer on the task with the same seeds and data order; print one table.
        Rerunning the same command reuses the records in --out (--rerun replaces them)."""
        from bench_cli.config import ExecutorSettings, executor_settings
        from bench_cli.executors import forks

        seeds = _seeds(seed)
        optimizers = [o for o in opt.split(",") if o.strip()]
        ex = executor_options(
            executor, jobs, threads, gpus, runs_per_gpu, mps, ray_address, slurm_cluster,
            slurm_partition, slurm_time, slurm_gpus, slurm_account, slurm_flag,
        )  # fmt: skip
        where = executor_settings(ExecutorSettings(), dict(ex))  # checked, with --dry-run too
        if not dry_run and len(optimizers) * len(seeds) > 1:  # a pool may start
            forks.prestart(where, device)  # before torch
        from bench_cli import api, distributed
        from bench_cli.progress import Progress

        settings = {"compile": True} if compile_ else {}
        req = api.RunRequest(
            task=task,
            optimizers=optimizers,
            sets=set_ or [],
            steps=steps,
            seed=seeds[0],
            seeds=seeds,
            data=data,
            device=device,
            plugins=plugin or [],
            settings=settings,
        )
        with _from_the_command_line():
            if dry_run:
                _print_plan(api.request_suite(req), None, Path(out))
                return
            trackers = log_options(log, mlflow_uri)

            def command():
                with Progress(stderr, quiet=quiet) as progress:
                    return api.run_summary(req, Path(out), progress, ex, rerun, trackers)

            if distributed.world_size() > 1:  # every rank trains each run; rank 0 reports
                from bench_cli.plan import build_plan

                plan = build_plan(api.request_suite(req))
                summary = distributed.under_torchrun(plan, ex, command)
                if summary is None:
                    return
            else:
                summary = command()
        records = summary.scored
        df = api.summary(records)
        shown = ",".join(map(str, seeds))
        title = f"{records[0].task_id} (seed{'s' * (len(seeds) > 1)} {shown})" if records else task
        stdout.print(frame_table(df.drop(columns=["task", "seed"]), title=title, transpose=True))
        if summary.ran < len(summary.records):
            reused = len(summary.records) - summary.ran
            stderr.print(
                f"reused {reused} records already in {out}/ (--rerun replaces them)",
                highlight=False,
            )
        for r in records:  # the values each optimizer ran with: defaults, recipe and --set
            values = ", ".join(f"{k}={v}" for k, v in r.hparams.items())
            stderr.print(f"{r.optimizer}: {values}", highlight=False, markup=False)
        if summary.ran:
            stderr.print(f"records written to {out}/", highlight=False)
        for r in records:
            if note := precision_note(r):
                stderr.print(f"note: {note}", highlight=False, markup=False)
        failed = [r for r in records if r.status == "error"]
        for r in failed:
            stderr.print(f"[red]{r.optimizer} failed:[/red] {(r.error or '-').splitlines()[0]}")
        if failed:
            raise typer.Exit(1)

    @app.command("plan")
    @friendly
    def plan_(
        file: Annotated[Path, typer.Argument(help="A suite file.")],
        tier: Annotated[str | None, typer.Option(help="A tier of the suite.")] = None,
        history: Annotated[
            Path | None,
            typer.Option(help="Records of earlier runs to estimate durations from."),
        ] = None,
    ) -> None:
        """Show a suite's phases and cells, resolved, with a count and an estimated duration."""
        from bench_cli.config import load_suite
        from bench_cli.results.store import check_results_folder

        if history is not None:
            check_results_folder(history)  # a folder that is not there, or a file: one line
        _print_plan(load_suite(file), tier, history)


@contextmanager
def _from_the_command_line():
    """``bench run`` plans a one-task suite built from its options: an error in it is said
    without the suite key path (``tasks[0] (lm-small): ...``) that the user never wrote."""
    try:
        yield
    except ConfigError as exc:
        if exc.unlocated is None:
            raise
        error = ConfigError(exc.unlocated)
        error.details = exc.details
        raise error from exc


def _print_plan(suite, tier, history: Path | None) -> None:
    from bench_cli.cli_results import warn
    from bench_cli.dryrun import describe_plan

    for line in describe_plan(suite, tier, history, warn):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)
