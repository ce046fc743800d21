"""The optimizer registry: ``build_optimizer(name, params, **hparams)`` is the public way in.

Built-ins register themselves with ``@OPTIMIZERS.register("name")``; installed packages through
the entry-point group ``bench_cli.optimizers``; user code through ``--plugin``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from typing import Any

import torch

from bench_cli.errors import ConfigError, clip
from bench_cli.plugins import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer", "bench_cli.optimizers")


def _import_builtins() -> None:
    """Every public module of this package is a built-in optimizer that registers on import."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtins()

#: constructor arguments that select an implementation, not the algorithm
IMPLEMENTATION_ARGS = ("foreach", "fused", "capturable", "differentiable", "maximize")


def optimizer_defaults(cls: type) -> dict[str, Any]:
    """The algorithm's keyword arguments and their defaults, read off the constructor."""
    out: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params") or name in IMPLEMENTATION_ARGS:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        out[name] = None if param.default is inspect.Parameter.empty else param.default
    return out


def _as_tuples(value: Any) -> Any:
    """YAML and JSON give lists; the optimizers take tuples for betas and friends."""
    return tuple(value) if isinstance(value, list) else value


def _value_problem(value: Any, default: Any) -> str | None:
    """What is wrong with a hyperparameter value whatever the optimizer: a non-finite number
    (also inside a list), or a boolean where the default is a number."""
    if isinstance(value, bool):
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        return "must be a number, not true/false" if numeric else None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, (list, tuple)):
        inner = default if isinstance(default, (list, tuple)) else (None,) * len(value)
        for v, d in zip(value, [*inner, *(None,) * (len(value) - len(inner))]):
            if problem := _value_problem(v, d):
                return problem
    return None


def build_optimizer(name: str, params, **hparams: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer by name (case- and ``-``/``_``-insensitive).

    Unknown hyperparameters and invalid values raise ``ConfigError`` (a ``ValueError``) naming
    the argument.
    """
    cls = OPTIMIZERS.get(name)
    accepted = set(optimizer_defaults(cls)) | set(IMPLEMENTATION_ARGS)
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise ConfigError(
            f"optimizer {cls.registry_name!r} has no hyperparameter {unknown[0]!r}; "
            f"it accepts: {', '.join(optimizer_defaults(cls))}"
        )
    defaults = optimizer_defaults(cls)
    for key, value in hparams.items():
        if problem := _value_problem(value, defaults.get(key)):
            got = clip(repr(value))
            raise ConfigError(f"optimizer {cls.registry_name!r}: {key} {problem}, got {got}")
    try:
        return cls(params, **{k: _as_tuples(v) for k, v in hparams.items()})
    except ValueError as exc:
        raise ConfigError(f"optimizer {cls.registry_name!r}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"optimizer {cls.registry_name!r}: {exc}") from exc


def check_optimizer(name: str, **hparams: Any) -> None:
    """Raise what ``build_optimizer`` would raise for these values: it builds the optimizer on a
    dummy tensor (planning, before any run starts)."""
    build_optimizer(name, [torch.zeros(2, 2, requires_grad=True)], **hparams)


__all__ = ["OPTIMIZERS", "build_optimizer", "check_optimizer", "optimizer_defaults"]
