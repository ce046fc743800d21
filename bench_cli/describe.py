"""The text of ``bench list`` and ``bench show``: what each optimizer and task is and does.

An optimizer is shown with its update rule as readable unicode (converted from the docstring's
reST and LaTeX), its constructor's defaults, and, given a task, the values a run of that task
will actually use: the recipe applied to the task's AdamW baseline and the run's horizons.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_cli.config import RunSettings
from bench_cli.errors import BenchError, UnknownNameError
from bench_cli.mathtext import inline_text, to_text
from bench_cli.plugins import suggestion
from bench_cli.references import reference_lines
from bench_cli.registry import OPTIMIZERS, optimizer_defaults
from bench_cli.results.record import RunRecord
from bench_cli.tasks import TASKS


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return inline_text(doc.splitlines()[0]) if doc else ""


def catalog() -> dict[str, list[tuple[str, str]]]:
    """Registered names with a one-line description each."""
    return {
        "optimizers": [(n, _first_line(c)) for n, c in OPTIMIZERS.items()],
        "tasks": [(n, _first_line(c)) for n, c in TASKS.items()],
    }


def _unknown(name: str, kinds: str = "optimizer or task") -> UnknownNameError:
    lists = {"optimizer": OPTIMIZERS.names(), "task": TASKS.names()}
    if kinds in lists:  # only the kind asked for
        lists = {kinds: lists[kinds]}
    names = [n for group in lists.values() for n in group]
    known = " ".join(f"{k.capitalize()}s: {', '.join(v)}." for k, v in lists.items())
    return UnknownNameError(f"no {kinds} named {name!r}.{suggestion(name, names)} {known}")


def stored_records(
    directory: Path, named: bool = False, warn: Callable[[str], None] | None = None
) -> list[RunRecord]:
    """The records under ``directory``: none when it does not exist, unless the user ``named`` it.

    Files that cannot be read as records are left out, and ``warn`` hears of each.
    """
    if not Path(directory).is_dir():
        if named:
            raise BenchError(
                f"--results {str(directory)!r} is not a folder of run records; "
                "pass a results folder, or leave --results out"
            )
        return []
    from bench_cli.results.store import load_records

    return load_records(directory, skip_damaged=True, warn=warn)


def describe(name: str, task: str | None = None, records: Sequence[RunRecord] = ()) -> str:
    """The text of ``bench show NAME [--task TASK]``."""
    if name in OPTIMIZERS:
        return describe_optimizer(name, task, records)
    if name in TASKS:
        if task is not None:
            raise UnknownNameError(
                f"--task applies to an optimizer; {name!r} is a task: bench show OPT --task {name}"
            )
        return describe_task(name, records)
    raise _unknown(name)


def docstrings() -> dict[str, str]:
    """Every registered optimizer's docstring (the report renders their update rules)."""
    return {name: inspect.getdoc(cls) or "" for name, cls in OPTIMIZERS.items()}


def update_rule(name: str) -> str:
    """An optimizer's docstring as terminal text: prose and its update rule in unicode."""
    return to_text(inspect.getdoc(OPTIMIZERS.get(name)) or "")


def describe_optimizer(name: str, task: str | None, records: Sequence[RunRecord] = ()) -> str:
    cls = OPTIMIZERS.get(name)
    lines = [f"optimizer {cls.registry_name} ({cls.__module__}.{cls.__name__})", ""]
    lines += [update_rule(name), ""]
    defaults = optimizer_defaults(cls)
    if task is None:
        lines.append("defaults (the class's; with --task TASK, the values a run of TASK uses):")
        lines += [f"  {k} = {v!r}" for k, v in defaults.items()]
    else:
        lines += _task_hparams(cls.registry_name, task, defaults)
    lines += [
        "",
        f"state memory: {getattr(cls, 'state_memory', '') or 'not declared'}",
        f"paper: {getattr(cls, 'paper', '') or 'not declared'}",
    ]
    flags = [
        f
        for f in ("has_train_eval_modes", "owns_warmup", "owns_lr_schedule")
        if getattr(cls, f, False)
    ]
    if getattr(cls, "horizon_hparams", ()):
        flags.append(f"filled from the run length: {', '.join(cls.horizon_hparams)}")
    if flags:
        lines.append("runner: " + "; ".join(flags))
    if task is not None:
        lines += reference_lines(TASKS.get(task).registry_name, records)
    return "\n".join(lines)


def _task_hparams(opt: str, task_name: str, defaults: dict) -> list[str]:
    """The resolved hyperparameters of a default run of ``opt`` on ``task_name``."""
    from bench_cli.api import make_task, resolve_hparams

    if task_name not in TASKS:
        raise _unknown(task_name, "task")
    task = make_task(task_name, {})
    settings = RunSettings(**task.default_settings())
    resolved = resolve_hparams(opt, task, {}, settings)
    lines = [
        f"defaults on {task.registry_name} ({settings.steps} steps; the recipe applied to the "
        "task's AdamW baseline, horizons filled from the run):"
    ]
    for key, value in resolved.items():
        before = defaults.get(key)
        before = list(before) if isinstance(before, tuple) else before
        note = "" if value == before else f"   (class default {before!r})"
        lines.append(f"  {key} = {value!r}{note}")
    return lines


def describe_task(name: str, records: Sequence[RunRecord] = ()) -> str:
    cls = TASKS.get(name)
    lines = [
        f"task {cls.registry_name} ({cls.__module__}.{cls.__name__}); unit: {cls.unit}",
        "",
        to_text(inspect.getdoc(cls) or ""),
        "",
    ]
    for preset in cls.Options.PRESETS:
        task = cls(cls.Options(preset=preset))
        opts = task.options.model_dump()
        lines.append(f"preset {preset}:")
        lines.append("  options: " + ", ".join(f"{k}={v!r}" for k, v in opts.items()))
        settings = RunSettings(**task.default_settings()).model_dump()
        lines.append("  settings: " + ", ".join(f"{k}={v!r}" for k, v in settings.items()))
        target = task.default_target()
        if target:
            sign = "<=" if target.direction == "min" else ">="
            lines.append(f"  target: {target.metric} {sign} {target.value:g}")
        lines += task.describe_preset()
    if cls.BASELINE:
        lines.append(
            "AdamW baseline (each optimizer's recipe starts from it): "
            + ", ".join(f"{k}={v!r}" for k, v in cls.BASELINE.items())
        )
    lines.append("metrics: " + ", ".join(f"{k} ({v})" for k, v in cls.metric_directions.items()))
    lines += reference_lines(cls.registry_name, records)
    return "\n".join(lines)
