"""Terminal output: the progress bar (a run-loop callback) and rich tables of DataFrames."""

from __future__ import annotations

import functools
import inspect
import math
import sys

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bench_cli.errors import BenchError
from bench_cli.results.record import RunRecord
from bench_cli.runner import RunCallback, RunSpec

# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; give them room instead.
_WIDTH = None if sys.stdout.isatty() else 200
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
stdout = Console(width=_WIDTH)


class ProgressBar(RunCallback):
    """A rich progress bar on stderr, one row per run: step, loss, throughput, ETA.

    Use as a context manager around all the runs of one command.
    """

    def __init__(self, console: Console = stderr):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task_id = None

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_start(self, spec: RunSpec, unit: str) -> None:
        self.unit = unit
        self.task_id = self.progress.add_task(
            f"{spec.optimizer} on {spec.task}", total=spec.settings.steps, loss="-", rate=""
        )

    def on_log(self, step: int, loss: float, tokens_per_second: float) -> None:
        self.progress.update(
            self.task_id,
            completed=step,
            loss=f"{loss:.4f}",
            rate=f"{tokens_per_second:,.0f} {self.unit}/s",
        )

    def on_end(self, record: RunRecord) -> None:
        self.progress.update(self.task_id, completed=record.steps_done)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def frame_table(df: pd.DataFrame, title: str | None = None, transpose: bool = False) -> Table:
    """A rich table of ``df``; ``transpose`` puts each row in a column (side by side)."""
    table = Table(title=title, show_lines=False)
    if transpose:
        table.add_column("")
        for _, row in df.iterrows():
            table.add_column(str(row.get("optimizer", "")), justify="right")
        for col in df.columns:
            if col == "optimizer":
                continue
            table.add_row(col, *(_fmt(v) for v in df[col]))
        return table
    for col in df.columns:
        table.add_column(str(col), justify="right")
    for _, row in df.iterrows():
        table.add_row(*(_fmt(v) for v in row))
    return table


def friendly(fn):
    """For CLI commands: a domain error prints one red line on stderr and exits 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    wrapper.__signature__ = inspect.signature(fn)  # typer reads the options from it
    return wrapper
