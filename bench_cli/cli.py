"""The ``bench`` command: each command declares its options and hands off to ``bench_cli.api``."""

import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from bench_cli import __version__
from bench_cli.cli_data import data_app
from bench_cli.cli_results import BaselineOpt, check_out, suite_baseline, warn
from bench_cli.cli_results import register as register_results_commands
from bench_cli.cli_run import register as register_run_commands
from bench_cli.cli_suite import suite_app
from bench_cli.display import friendly, other_rank, stderr, stdout
from bench_cli.errors import BenchError, Terminated

app = typer.Typer(
    name="bench",
    help="Compare deep-learning optimizers fairly and fast.",
    no_args_is_help=True,
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


register_run_commands(app)  # `run` and `plan` first in the help


@app.command("list")
@friendly
def list_(plugin: PluginOpt = None) -> None:
    """List the registered optimizers and tasks, one line each (details: bench show NAME)."""
    from bench_cli import api, describe

    api.load_plugins(plugin or [])
    for kind, rows in describe.catalog().items():
        stdout.print(f"[bold]{kind}[/bold]")
        for name, line in rows:
            stdout.print(f"  {name:<22} {line}", highlight=False, soft_wrap=True)


@app.command()
@friendly
def show(
    name: Annotated[str, typer.Argument(help="An optimizer or task name.")],
    task: Annotated[
        str | None,
        typer.Option(help="With an optimizer: show the values a run of this task uses."),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Records to set beside a published result (default: ./results when it exists)."
        ),
    ] = None,
    plugin: PluginOpt = None,
) -> None:
    """Show an optimizer's update rule and defaults, or a task's options, presets and target."""
    from bench_cli import api, describe

    api.load_plugins(plugin or [])
    records = describe.stored_records(results or Path("results"), results is not None, warn)
    text = describe.describe(name, task, records)
    stdout.print(text, highlight=False, markup=False, soft_wrap=True)


@app.command()
@friendly
def report(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="A directory of run records (a suite's).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The HTML file to write.", show_default="DIR/report.html"),
    ] = None,
    baseline: BaselineOpt = None,
) -> None:
    """Write one self-contained HTML page: tables, figures, update rules, suite, environment."""
    from bench_cli import describe
    from bench_cli.results.defaults import DEFAULT_BASELINE
    from bench_cli.results.report import write_report
    from bench_cli.results.store import check_results_folder

    check_results_folder(directory)  # a file or a missing folder: one line, before anything
    check_out(out, example="report.html")
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise BenchError(f"--out {str(out)!r}: the report is one HTML page; give a .html name")
    baseline = baseline or suite_baseline(directory) or DEFAULT_BASELINE
    docs = describe.docstrings()
    path = write_report(directory, out or Path(directory) / "report.html", baseline, docs)
    stdout.print(str(path), highlight=False, markup=False, soft_wrap=True)


register_results_commands(app)
app.add_typer(suite_app, name="suite")
from bench_cli.cli_perf import perf_app  # noqa: E402

app.add_typer(perf_app, name="perf")
app.add_typer(data_app, name="data")


def _untyped_flags(params: list) -> list:
    """A flag takes no value, so its help row shows no type (typer's rich help prints
    ``<bool>`` for any option without a metavar)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _untyped_flags(super().get_params(ctx))

    def parse_args(self, ctx, args):
        """An empty ``--out`` (``--out "$DIR"`` with DIR unset) would be the current folder."""
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if arg == "--out=" or (arg == "--out" and args[i + 1 : i + 2] == [""]):
                raise typer.BadParameter(
                    "it is empty; name a file or folder (--out . for the current folder)",
                    ctx=ctx,
                    param_hint="'--out'",
                )
        return super().parse_args(ctx, args)


# click's exceptions, from whichever click this typer parses with (its own copy since 0.26)
_clicks = sys.modules[typer.BadParameter.__module__]
_BARE_GROUP = getattr(_clicks, "NoArgsIsHelpError", ())  # click 8.2 and later; before, an exit


def _usage_line(exc: Exception) -> NoReturn:
    """A mistyped command line is one line on stderr naming the problem and where the options
    are listed, exit 2, instead of a usage banner and a boxed message."""
    where = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split()).rstrip(".")
    if where is not None:
        see = f"see '{where.command_path} --help'"
        message += f" {see[0].upper()}{see[1:]}" if message.endswith("?") else f"; {see}"
    stderr.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


class _Group(TyperGroup):
    def get_params(self, ctx):
        return _untyped_flags(super().get_params(ctx))

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _BARE_GROUP:
            raise  # a bare group prints its help
        except _clicks.ClickException as exc:
            _usage_line(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _BARE_GROUP:
            raise
        except _clicks.ClickException as exc:
            _usage_line(exc)


def _use_untyped_flags(typer_app: typer.Typer) -> None:
    """Every command and group of the app, including those registered by other modules."""
    typer_app.info.cls = _Group
    for info in typer_app.registered_commands:
        info.cls = _Command if info.cls in (None, TyperCommand) else info.cls
    for group in typer_app.registered_groups:
        group.cls = _Group
        _use_untyped_flags(group.typer_instance)


_use_untyped_flags(app)


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated(128 + signum)


def _as_bench_module() -> None:
    """Started by the ``bench`` launcher, run as ``bench_cli.__main__``, as ``python -m bench_cli``
    does: multiprocessing then does not run the launcher again in each local worker, where it
    would import the whole command line (1.4 s on a GPU host) before the worker could start."""
    launcher = sys.modules.get("__main__")
    path = getattr(launcher, "__file__", None)
    if getattr(launcher, "__spec__", None) is None and path and Path(path).name == "bench":
        launcher.__spec__ = importlib.util.find_spec("bench_cli.__main__")


_RESUMES = "finished runs are kept, the same command resumes"


def main() -> None:
    from bench_cli.bytecode import keep_bytecode

    keep_bytecode()  # before anything imports torch: see bench_cli/bytecode.py
    _as_bench_module()
    # SIGTERM stops like Ctrl-C: running cells stop with their workers, claims are released
    # and finished records stay; without this the process dies at once and its workers run on.
    # Not in a rank under torchrun: a rank blocked in a collective could not run the handler,
    # and torchrun stops its ranks with SIGTERM
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        signal.signal(signal.SIGTERM, _terminate)
    stdout.quiet = other_rank()  # under torchrun rank 0 prints the tables and the plan, once
    try:
        app()
    except Terminated:
        print(f"bench: stopped by SIGTERM; {_RESUMES}", file=sys.stderr)
        raise
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGINT:  # typer's exit on KeyboardInterrupt, said nothing
            print(f"bench: stopped by Ctrl-C; {_RESUMES}", file=sys.stderr)
        raise
    finally:  # the interpreter's own shutdown is not interrupted by a late SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":  # pragma: no cover
    main()
