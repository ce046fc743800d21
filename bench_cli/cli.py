"""The ``bench`` command: each command declares its options and hands off to ``bench_cli.api``."""

from pathlib import Path
from typing import Annotated

import typer

from bench_cli import __version__, api
from bench_cli.cli_results import register as register_results_commands
from bench_cli.cli_suite import suite_app
from bench_cli.display import ProgressBar, frame_table, friendly, stderr, stdout

app = typer.Typer(
    name="bench",
    help="Compare deep-learning optimizers fairly and fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PluginOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin", help="Import a module or .py file that registers optimizers/tasks (repeatable)."
    ),
]


def _version(value: bool) -> None:
    if value:
        stdout.print(f"bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Compare deep-learning optimizers fairly and fast."""


@app.command()
@friendly
def run(
    opt: Annotated[str, typer.Option("--opt", help="Optimizer name, or several: adamw,ademamix")],
    task: Annotated[str, typer.Option("--task", help="Task name (see `bench list`).")],
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (default: the task's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for model init and data order.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the run records.")] = Path("results"),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override: KEY=VALUE; opt.KEY, task.KEY, run.KEY or OPTNAME.KEY (repeatable).",
        ),
    ] = None,
    data: Annotated[str | None, typer.Option(help="Local data file or folder.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    plugin: PluginOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train each optimizer on the task with the same seed and data order; print one table."""
    req = api.RunRequest(
        task=task,
        optimizers=[o for o in opt.split(",") if o.strip()],
        sets=set_ or [],
        steps=steps,
        seed=seed,
        data=data,
        device=device,
        plugins=plugin or [],
    )
    if quiet:
        records = api.run(req, out)
    else:
        with ProgressBar() as bar:
            records = api.run(req, out, callback=bar)
    df = api.summary(records)
    stdout.print(
        frame_table(
            df.drop(columns=["task", "seed"]), title=f"{task} (seed {seed})", transpose=True
        )
    )
    stderr.print(f"records written to {out}/", highlight=False)
    if any(r.status == "error" for r in records):
        for r in records:
            if r.error:
                stderr.print(f"[red]{r.optimizer} failed:[/red] {r.error.splitlines()[0]}")
        raise typer.Exit(1)


@app.command("list")
@friendly
def list_(plugin: PluginOpt = None) -> None:
    """List the registered optimizers and tasks, one line each."""
    api.load_plugins(plugin or [])
    for kind, rows in api.catalog().items():
        stdout.print(f"[bold]{kind}[/bold]")
        for name, line in rows:
            stdout.print(f"  {name:<22} {line}", highlight=False, soft_wrap=True)


@app.command()
@friendly
def show(
    name: Annotated[str, typer.Argument(help="An optimizer or task name.")],
    plugin: PluginOpt = None,
) -> None:
    """Show an optimizer's math, defaults and memory, or a task's options and defaults."""
    api.load_plugins(plugin or [])
    stdout.print(api.describe(name), highlight=False, markup=False, soft_wrap=True)


register_results_commands(app)
app.add_typer(suite_app, name="suite")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
