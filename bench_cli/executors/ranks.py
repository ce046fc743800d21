"""The executor under ``torchrun``: every cell is trained by all ranks together, one at a time.

Rank 0 is the command's coordinator, on the same path as any command: it plans the phases,
claims each cell, reuses records, writes them and shows the progress. ``RanksExecutor`` sends each
claimed cell to the other ranks (a broadcast), which run it beside rank 0 under
DistributedDataParallel (``follow``); the run loop saves its checkpoints on rank 0 and every rank
resumes from them. When rank 0's command ends, ``lead`` tells the other ranks to stop and all
leave the process group together (``distributed.close``). Not when it ended inside a cell: a rank
may then wait in a collective that rank 0 will never join, and torchrun stops the ranks once
rank 0 has exited with an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench_cli import distributed as ddp
from bench_cli.executors import worker
from bench_cli.folder import Folder
from bench_cli.plan import Cell

T = TypeVar("T")

#: whether rank 0 is inside a cell (the other ranks then wait in its collectives, not in ``follow``)
_in_cell = False


class RanksExecutor:
    """Rank 0's executor: runs each cell that ``claim`` grants on every rank."""

    def __init__(self, log: dict | None = None):
        self.log = log

    def run(
        self, cells: list[Cell], folder: Folder, progress, claim: Callable[[Cell], bool]
    ) -> list[str]:
        global _in_cell
        ran = []
        for cell in cells:
            if not claim(cell):
                continue
            progress.started(cell)
            _in_cell = True
            try:
                ddp.order(("cell", cell, str(folder.path)))
                status = worker.execute_cell(cell, folder.path, progress.callback(cell), self.log)
            finally:
                folder.release(cell.run_id)
            _in_cell = False
            ran.append(cell.run_id)
            progress.finished(cell, status)
        if not ran:  # every cell is another coordinator's: the ranks hear from rank 0 as it waits
            ddp.order(("wait",))
        return ran


def lead(command: Callable[[], T]) -> T:
    """Rank 0: run the command, then tell the other ranks to stop (also when it failed before
    or between cells)."""
    try:
        return command()
    finally:
        if not _in_cell:
            ddp.order(None)
            ddp.close()


def follow() -> None:
    """Any other rank: run the cells rank 0 sends until it says stop. Rank 0 writes the records;
    a run that fails on this rank is written here and ends the command (``worker.execute_cell``)."""
    while True:
        message: Any = ddp.order()
        if message is None:
            ddp.close()
            return
        if message[0] == "cell":
            _, cell, out = message
            worker.execute_cell(cell, Path(out))
