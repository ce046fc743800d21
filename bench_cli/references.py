"""Published results that a task reproduces, printed beside our own runs of the same set-up.

Only set-ups that match a published configuration exactly are listed (model, data, batch,
context, steps, lr schedule), so the two numbers can be read side by side. No torch here: the
report and ``bench show`` both use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_cli.results.record import RunRecord


@dataclass(frozen=True)
class Reference:
    """A published ``metric`` value for ``optimizer`` on ``task`` with ``options`` and ``steps``."""

    task: str
    optimizer: str
    metric: str
    value: float
    steps: int
    source: str
    options: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"published: {self.source}: {self.optimizer} {self.metric} {self.value:.4f} "
            f"after {self.steps:,} steps"
        )

    def matches(self, record: RunRecord) -> bool:
        """A scored record of the same set-up: task, optimizer, options and run length, with no
        probe batch put into its data (tuning and calibration runs try other values)."""
        return (
            record.task == self.task
            and record.optimizer == self.optimizer
            and record.status != "error"
            and record.role == "score"
            and record.task_options.get("probe_batch_step") is None
            and record.settings.get("steps") == self.steps
            and all(record.task_options.get(k) == v for k, v in self.options.items())
        )


REFERENCES: tuple[Reference, ...] = (
    Reference(
        task="lm-medium",
        optimizer="adamw",
        metric="val_loss",
        value=1.4697,
        steps=5000,
        source="nanoGPT README, config/train_shakespeare_char.py",
        options={"preset": "default"},
    ),
)


def references_for(task: str) -> list[Reference]:
    return [r for r in REFERENCES if r.task == task]


@dataclass(frozen=True)
class Ours:
    """Our runs of a reference's set-up: the median over seeds of the best metric."""

    median: float
    runs: int
    seeds: tuple[int, ...]

    def line(self, ref: Reference) -> str:
        seeds = ", ".join(map(str, self.seeds))
        gap = self.median - ref.value
        return (
            f"ours:      {ref.optimizer} best {ref.metric} {self.median:.4f} "
            f"(median of {self.runs} run(s), seeds {seeds}; {gap:+.4f} vs published)"
        )


def our_result(ref: Reference, records: Sequence[RunRecord]) -> Ours | None:
    """Our best ``ref.metric`` on the reference's set-up, or None when no record matches."""
    values = {}
    for r in records:
        x = r.best_metrics.get(ref.metric)
        if ref.matches(r) and x is not None and math.isfinite(x):
            values[r.seed] = x
    if not values:
        return None
    return Ours(statistics.median(values.values()), len(values), tuple(sorted(values)))


def reference_lines(task: str, records: Sequence[RunRecord]) -> list[str]:
    """For each published reference of ``task``: its line, then ours (or how to get it)."""
    lines = []
    for ref in references_for(task):
        lines.append(ref.line())
        ours = our_result(ref, records)
        lines.append(
            ours.line(ref)
            if ours
            else f"ours:      no {ref.optimizer} run of this set-up in the records "
            f"(bench run --opt {ref.optimizer} --task {ref.task})"
        )
    return lines
