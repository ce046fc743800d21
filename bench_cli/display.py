"""Terminal output: the progress bar (a run-loop callback) and rich tables of DataFrames.

Everything printed through ``stdout``/``stderr``, ``frame_table`` and ``write_plain`` has its
control characters removed first (``clean``): a record's text cannot move the cursor, recolour
the terminal or set its title.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import sys
from typing import TYPE_CHECKING

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

from bench_cli.errors import DISK_FULL, BenchError, Terminated, cannot_write, describe
from bench_cli.results.record import RunRecord, TrainPoint
from bench_cli.spec import RunCallback, RunSpec

if TYPE_CHECKING:  # pandas (0.2-1 s) loads with the first table, not with the command line
    import pandas as pd

# escape sequences (CSI, OSC, DCS/PM/APC strings, two-byte ones), then any other C0 or C1
# control character but tab and newline, DEL, and the bidirectional overrides
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


def clean(text: str) -> str:
    """``text`` without terminal control characters (ANSI escape sequences included)."""
    return _CONTROL.sub("", text)


class ReaderGone(Exception):
    """The reader of the output left (``bench leaderboard DIR | head``)."""


class _CleanConsole(Console):
    """A console that removes control characters from the text it is given."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 - rich's name
        super().print(*(clean(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def on_broken_pipe(self) -> None:
        """Stop quietly, as Unix tools do when the reader leaves (rich's own raises SystemExit,
        which would read as a plug-in's)."""
        self.quiet = True
        raise ReaderGone


def _reader_gone() -> typer.Exit:
    """The exit of a command whose reader left: quietly, with the status of a process that
    SIGPIPE ends, and with the output pointed at /dev/null so that no later flush fails."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return typer.Exit(128 + 13)


def write_plain(text: str) -> None:
    """Plain text (an export) on stdout, without control characters."""
    if sys.stdout is None:  # started with its standard output closed
        raise BenchError("the standard output is closed; pass --out FILE to write to a file")
    sys.stdout.write(clean(text))


def _width(stream) -> int | None:
    """Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; give them room
    instead. A closed stream (``None``: the process started without it) prints nothing."""
    return None if stream is not None and stream.isatty() else 200


stderr = _CleanConsole(stderr=True, width=_width(sys.stderr))
stdout = _CleanConsole(width=_width(sys.stdout))


def other_rank() -> bool:
    """A torchrun rank other than 0: rank 0 prints the command's output for all of them."""
    return "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("RANK", "0") != "0"


def _said_by_rank_zero() -> bool:
    """Another rank before it joined the process group: it refuses what rank 0 refuses (the same
    command line, checked the same way), so rank 0's line says it. Once joined, a rank's own
    failure is its own to say."""
    dist = sys.modules.get("torch.distributed")
    joined = dist is not None and dist.is_available() and dist.is_initialized()
    return other_rank() and not joined


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

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        self.progress.update(
            self.task_id,
            completed=point.step,
            loss=f"{point.loss:.4f}",
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
    return clean(str(value))


def frame_table(df: pd.DataFrame, title: str | None = None, transpose: bool = False) -> Table:
    """A rich table of ``df``; ``transpose`` puts each row in a column (side by side)."""
    table = Table(title=clean(title) if title else title, show_lines=False)
    if transpose:
        table.add_column("")
        for _, row in df.iterrows():
            table.add_column(clean(str(row.get("optimizer", ""))), justify="right")
        for col in df.columns:
            if col == "optimizer":
                continue
            table.add_row(clean(str(col)), *(_fmt(v) for v in df[col]))
        return table
    for col in df.columns:
        table.add_column(clean(str(col)), justify="right")
    for _, row in df.iterrows():
        table.add_row(*(_fmt(v) for v in row))
    return table


def friendly(fn):
    """For CLI commands: a domain error, a write that found the disk full, or a plug-in's
    ``sys.exit`` (while the command plans its runs, say), prints one red line on stderr and exits
    1. A reader of the output that left (``| head``) ends the command quietly."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            except BrokenPipeError:
                raise ReaderGone from None  # an export written to a pipe that closed
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                raise cannot_write(exc, exc.filename or "to the disk") from None
        except BenchError as exc:
            if _said_by_rank_zero():
                raise typer.Exit(1) from None
            for line in exc.details:
                stderr.print(escape(line), highlight=False, soft_wrap=True)
            stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Terminated:
            raise
        except ReaderGone:
            raise _reader_gone() from None
        except SystemExit as exc:  # inside a command, only a plug-in's code calls sys.exit
            stderr.print(f"[red]error:[/red] {escape(describe(exc))}", highlight=False)
            raise typer.Exit(1) from None

    wrapper.__signature__ = inspect.signature(fn)  # typer reads the options from it
    return wrapper
