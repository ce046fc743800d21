"""``bench perf``: how fast the tool itself is (optimizer steps, the run loop)."""

import json
from enum import Enum
from typing import Annotated

import typer

from bench_cli.display import friendly, stderr, stdout

perf_app = typer.Typer(help="Measure the speed of optimizer steps.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    json = "json"


@perf_app.command("optimizers")
@friendly
def optimizers(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    params: Annotated[
        str, typer.Option(help="gpt2-small (124.5M in 150 tensors) or a number of parameters")
    ] = "gpt2-small",
    opt: Annotated[
        str | None, typer.Option("--opt", help="comma-separated optimizers (default: all)")
    ] = None,
    iters: Annotated[int, typer.Option(min=1, help="steps per timed round")] = 5,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.table,
) -> None:
    """Time every optimizer's step on each path against the memory-bandwidth bound."""
    from bench_cli import perf  # imports torch

    names = [n.strip() for n in opt.split(",") if n.strip()] if opt else None
    progress = None if fmt == Format.json else (lambda line: stderr.print(line, highlight=False))
    header, rows = perf.perf_optimizers(device, params, names, iters, progress)
    if fmt == Format.json:
        print(json.dumps(perf.as_json(header, rows), indent=2))
    else:
        stdout.print(perf.as_markdown(header, rows), highlight=False, soft_wrap=True)


@perf_app.command("loop")
@friendly
def loop(
    task: Annotated[str, typer.Option("--task", help="a text LM task: lm-small or lm-medium")],
    steps: Annotated[int, typer.Option(min=2, help="steps of each run (the first is untimed)")] = 500,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    data: Annotated[str | None, typer.Option(help="a UTF-8 text file (default: the task's)")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE as for bench run (repeatable)")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="runs of each loop, alternating")] = 2,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for both loops (default 1)")
    ] = None,
    startup: Annotated[
        bool, typer.Option("--startup/--no-startup", help="time a fresh `bench run --steps 1`")
    ] = True,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.table,
) -> None:
    """Tokens/s of `bench run` against a bare hand-written loop, evaluation share, start-up."""
    from bench_cli import perf_loop  # imports torch

    progress = None if fmt == Format.json else (lambda line: stderr.print(line, highlight=False))
    result = perf_loop.perf_loop(
        task, steps, device, data, sets or [], rounds, threads, startup, progress
    )
    if fmt == Format.json:
        print(json.dumps(result, indent=2))
    else:
        stdout.print(perf_loop.as_markdown(result), highlight=False, soft_wrap=True)
