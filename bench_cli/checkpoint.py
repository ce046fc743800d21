"""Checkpoints of a run in progress, so that a killed or preempted cell resumes where it was.

A checkpoint holds the model, the optimizer, the position in the data stream (batches drawn),
the random state, the curves and the clock. It is written atomically (temp file, then rename)
and read with ``torch.load(weights_only=True)``, which unpickles tensors and plain containers
only. On a CPU a resumed run gives the same record as an uninterrupted one, timings aside.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch


class Checkpointer:
    """Saves every ``minutes`` of wall time (``None``: never) to ``DIR/<run_id>.pt``."""

    def __init__(self, directory: Path | None, run_id: str, minutes: float | None):
        self.path = Path(directory) / f"{run_id}.pt" if directory is not None else None
        self.run_id = run_id
        self.every = minutes * 60 if minutes else None
        self.last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.path is not None and self.every is not None

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            torch.save({**state, "run_id": self.run_id}, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged checkpoint: start over rather than trust it
            return self._ignored(f"is damaged ({type(exc).__name__})")
        owner = state.get("run_id") if isinstance(state, dict) else None
        if owner != self.run_id:  # copied or renamed from another run's
            return self._ignored(f"is not this run's (it holds {owner or 'no run id'})")
        return state

    def _ignored(self, why: str) -> None:
        print(
            f"warning: the checkpoint {self.path} {why}; the run starts over from its first step",
            file=sys.stderr,
        )
        return None

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
