"""The task registry. Built-ins register with ``@TASKS.register("name")``; installed packages
through the entry-point group ``bench_cli.tasks``; user code through ``--plugin``."""

from __future__ import annotations

import importlib
import pkgutil

from bench_cli.plugins import Registry
from bench_cli.tasks.base import Task, TaskOptions

TASKS: Registry[type[Task]] = Registry("task", "bench_cli.tasks")


def _import_builtins() -> None:
    """Every public module of this package (but the interface) is a built-in task."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in ("base", "data"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtins()

__all__ = ["TASKS", "Task", "TaskOptions"]
