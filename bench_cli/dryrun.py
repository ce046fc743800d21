"""``bench plan`` and ``bench run --dry-run``: what a suite will run, before it runs.

Each phase with its cells and their resolved hyperparameters, a count, and an estimated duration
from earlier records of the same task variant and optimizer (their training, evaluation and
set-up seconds), when a folder of them is given. Later phases depend on earlier results: their
cells are shown with the configuration still to be selected.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench_cli.config import SuiteFile
from bench_cli.errors import BenchError
from bench_cli.plan import Cell, build_plan


def _history(folder: Path | None, warn: Callable[[str], None] | None = None) -> dict:
    """Per (task variant, optimizer): the median seconds a step and of set-up in ``folder``.

    An estimate is optional: files that cannot be read as records are left out (``warn`` hears
    of each), and a folder that cannot be read at all gives no estimate (``warn`` hears why).
    """
    if folder is None or not Path(folder).is_dir():
        return {}
    from bench_cli.results.store import load_records

    say = warn or (lambda _msg: None)
    seconds = defaultdict(list)
    try:
        records = load_records(folder, skip_damaged=True, warn=say)
    except BenchError as exc:
        say(f"no estimate from {str(folder)!r}: {exc}")
        return {}
    for r in records:
        if r.status != "error":
            per_step = (r.train_seconds + r.eval_seconds) / max(r.steps_done, 1)
            seconds[(r.task_key, r.optimizer)].append((per_step, r.setup_seconds))
    return {
        k: (statistics.median(p for p, _ in v), statistics.median(s for _, s in v))
        for k, v in seconds.items()
    }


def _fmt_seconds(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 7200 else f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def rough_estimate(suite: SuiteFile, tier: str | None, sizes: dict, history: Path | None):
    """Seconds for ``sizes`` cells from the median earlier run of each task and optimizer, without
    resolving a single cell (for grids too large to plan); None when nothing is known."""
    from bench_cli import api
    from bench_cli.config import apply_tier

    past = defaultdict(list)
    for (task_id, _), (per_step, setup) in _history(history).items():
        past[task_id].append((per_step, setup))
    if not past:
        return None
    _, suite = apply_tier(suite, tier)
    per_run = []
    for t in suite.tasks:
        task = api.make_task(t.name, dict(t.options))
        known = past.get(t.id or api.task_label(task))
        if not known:
            return None
        steps = t.budget.steps or task.default_settings().get("steps", 1000)
        per_run.append(statistics.median(p * steps + s for p, s in known))
    return sum(sizes.values()) * statistics.mean(per_run)


def _seconds(cells: list[Cell], past: dict) -> float | None:
    """Run time of ``cells`` from the earlier runs of each task and optimizer (None: unknown)."""
    total = 0.0
    for c in cells:
        est = past.get((c.spec.task_id, c.spec.optimizer))
        if est is None:
            return None
        total += est[0] * c.spec.settings.steps + est[1]
    return total


def describe_plan(
    suite: SuiteFile,
    tier: str | None,
    history: Path | None,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    plan = build_plan(suite, tier)
    past = _history(history, warn)
    lines = []
    total, known = 0.0, True

    def estimate(cells: list[Cell]) -> str:
        nonlocal total, known
        secs = _seconds(cells, past)
        if secs is None:
            known = False
            return "no earlier records to estimate from"
        total += secs
        return f"about {_fmt_seconds(secs)} of run time"

    def show(phase: str, cells: list[Cell], note: str = "") -> None:
        lines.append(f"phase {phase}: {len(cells)} cells{note}; {estimate(cells)}")
        for c in cells:
            s = c.spec
            hp = ", ".join(f"{k}={v}" for k, v in s.hparams.items())
            lines.append(
                f"  {s.task_id}  {s.optimizer}  seed {s.seed}  steps {s.settings.steps}  {hp}"
            )

    if plan.tunes:
        show("tune", plan.tune_cells())
    if any(tp.calibrate for tp in plan.tasks):
        show(
            "calibrate",
            plan.calibrate_cells({}),
            " (the baseline's configuration chosen in tuning)",
        )
    note = " (each optimizer's configuration selected in tuning)" if plan.tunes else ""
    targets = {tp.task_id: tp.target.value for tp in plan.tasks if tp.calibrate}
    show("score", plan.score_cells({}, targets), note)
    sizes = plan.phase_sizes()
    lines.append(
        f"{sum(sizes.values())} cells in all ("
        + ", ".join(f"{v} {k}" for k, v in sizes.items())
        + ")"
        + (f"; about {_fmt_seconds(total)} of run time, before parallelism" if known else "")
    )
    return lines
