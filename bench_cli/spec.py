"""What a run is before it runs: the resolved ``RunSpec`` and the progress hooks.

Torch-free, so that the terminal display and the result commands can import it cheaply.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from bench_cli.config import RunSettings
from bench_cli.results.record import EvalPoint, Role, RunRecord, Target, TrainPoint


class RunSpec(BaseModel):
    """A fully resolved run: what the record stores and what the run id hashes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    task: str
    task_id: str
    task_options: dict[str, Any]
    optimizer: str
    hparams: dict[str, Any]
    settings: RunSettings
    seed: int
    target: Target | None
    role: Role = "score"
    config: dict[str, Any] = {}


def record_fields(spec: RunSpec) -> dict[str, Any]:
    """What a run's record copies from its spec (a finished run's and a failed cell's alike)."""
    return dict(
        run_id=spec.run_id,
        task=spec.task,
        task_id=spec.task_id,
        task_options=spec.task_options,
        optimizer=spec.optimizer,
        hparams=spec.hparams,
        settings=spec.settings.model_dump(),
        seed=spec.seed,
        role=spec.role,
        config=spec.config,
        target=spec.target,
    )


class RunCallback:
    """Progress hooks; the loop calls them, they never change the run."""

    def on_start(self, spec: RunSpec, unit: str) -> None: ...
    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None: ...
    def on_eval(self, point: EvalPoint) -> None: ...
    def on_end(self, record: RunRecord) -> None: ...


class Callbacks(RunCallback):
    """Several callbacks as one, called in order."""

    def __init__(self, *callbacks: RunCallback | None):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_start(self, spec: RunSpec, unit: str) -> None:
        for c in self.callbacks:
            c.on_start(spec, unit)

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        for c in self.callbacks:
            c.on_log(point, tokens_per_second)

    def on_eval(self, point: EvalPoint) -> None:
        for c in self.callbacks:
            c.on_eval(point)

    def on_end(self, record: RunRecord) -> None:
        for c in self.callbacks:
            c.on_end(record)
