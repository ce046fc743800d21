"""Progress of a suite: one live display on a terminal, plain lines in logs.

On a terminal: cells done, running (each with its step), failed, and an ETA from the pace so
far. Off a terminal (CI, cluster logs): a line per finished cell, and a line for each running
cell about once a minute.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from bench_cli.results.record import TrainPoint
from bench_cli.spec import RunCallback, RunSpec

PLAIN_EVERY = 60.0


def _name(cell: Any) -> str:
    s = cell.spec
    config = f" {cell.label}" if cell.spec.config else ""
    return f"{s.role} {s.task_id} {s.optimizer}{config} seed {s.seed}"


def _at(step: int | None, total: int) -> str:
    return f"step {step}/{total}" if step is not None else "starting (no step reported yet)"


class Progress:
    """Receives the executor's events; ``quiet`` prints nothing but warnings."""

    def __init__(
        self, console: Console | None = None, quiet: bool = False, live: bool | None = None
    ):
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        terminal = sys.stderr is not None and sys.stderr.isatty()  # None: started without one
        self.live_mode = (terminal if live is None else live) and not quiet
        self.total = self.done = self.failed = self.reused_n = 0
        self.running: dict[str, list] = {}  # run_id -> [name, step, total]
        self.t0 = time.monotonic()
        self.last_plain = time.monotonic()
        self.live: Live | None = None
        self._depth = 0  # how many ``with`` blocks are open on it

    # -- the executor's events ------------------------------------------------------------------

    def phase(self, name: str, n: int) -> None:
        self.total += n
        if not self.quiet and n:
            self._print(f"{name}: {n} cells")

    def reused(self, cell: Any) -> None:
        self.reused_n += 1
        self.done += 1

    def started(self, cell: Any) -> None:
        self.running[cell.run_id] = [_name(cell), None, cell.spec.settings.steps]
        self._refresh()

    def step(self, run_id: str, step: int, total: int) -> None:
        if run_id in self.running:
            self.running[run_id][1:] = [step, total]
        self._refresh()

    def finished(self, cell: Any, status: str) -> None:
        self.running.pop(cell.run_id, None)
        self.done += 1
        self.failed += status == "error"
        if not self.quiet:
            self._print(f"{status:<8} {_name(cell)}")
        self._refresh()

    def tick(self) -> None:
        """No news, but time has passed: an executor calls it while it waits, so that the plain
        lines for running cells come about once a minute even when none reports a step."""
        self._refresh()

    def waiting(self, cells: list) -> None:
        if not self.quiet and time.monotonic() - self.last_plain >= PLAIN_EVERY:
            self.last_plain = time.monotonic()
            self._print(f"waiting for {len(cells)} cells run by another process")

    def warn(self, message: str) -> None:
        self._print(f"[yellow]warning:[/yellow] {message}", markup=True)

    def callback(self, cell: Any) -> RunCallback:
        """A run-loop callback that reports a cell run in this process."""
        return _Steps(self, cell.run_id, cell.spec.settings.steps)

    # -- display --------------------------------------------------------------------------------

    def _print(self, text: str, markup: bool = False) -> None:
        target = self.live.console if self.live else self.console
        target.print(text, highlight=False, markup=markup)

    def eta(self) -> str:
        ran = self.done - self.reused_n
        left = self.total - self.done
        if ran <= 0 or left <= 0:
            return "-"
        seconds = (time.monotonic() - self.t0) / ran * left
        return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"

    def table(self) -> Table:
        t = Table.grid(padding=(0, 2))
        t.add_row(
            f"[bold]{self.done}/{self.total}[/bold] done",
            f"{len(self.running)} running",
            f"[red]{self.failed} failed[/red]" if self.failed else "0 failed",
            f"ETA {self.eta()}",
        )
        for name, step, total in list(self.running.values())[:16]:
            t.add_row(f"  {name}", _at(step, total), "", "")
        return t

    def _refresh(self) -> None:
        if self.quiet:
            return
        if self.live_mode and self.live is not None:
            self.live.update(self.table())
        elif not self.live_mode and time.monotonic() - self.last_plain >= PLAIN_EVERY:
            self.last_plain = time.monotonic()
            for name, step, total in self.running.values():
                self._print(f"running  {name}: {_at(step, total)} (ETA of the suite {self.eta()})")

    def __enter__(self) -> Progress:
        """Start the live display; entered again (the command line's display, passed to the
        suite, which enters what it is given), it keeps the one it has."""
        self._depth += 1
        if self.live_mode and self._depth == 1:
            self.live = Live(self.table(), console=self.console, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self.live is not None and self._depth == 0:
            self.live.stop()
            self.live = None


class _Steps(RunCallback):
    def __init__(self, progress: Progress, run_id: str, total: int):
        self.progress, self.run_id, self.total = progress, run_id, total

    def on_start(self, spec: RunSpec, unit: str) -> None:
        self.progress.step(self.run_id, 0, self.total)

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        self.progress.step(self.run_id, point.step, self.total)
