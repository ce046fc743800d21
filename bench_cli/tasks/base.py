"""The task interface: a task owns the problem and knows nothing about optimizers.

A task builds the model, yields deterministic batches for a seed, computes the loss, evaluates
(returning its named metrics, one of which is the target), and says what one step consumes.
Its options are a pydantic model; a ``preset`` option (``default`` or ``tiny``) fills sizes that
were not set explicitly, and ``tiny`` runs on a CPU in well under a second per step.

A task states its presets in one table, ``PRESETS = {name: Preset(...)}``: the option values,
the run settings and the target of each preset in one place (``run_settings`` builds the
settings). The table fills the task's ``SETTINGS``, ``TARGETS`` and ``Options.PRESETS``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from bench_cli.numbers import numbers_not_booleans
from bench_cli.results.record import Direction, Target


class TaskOptions(BaseModel):
    """Options shared by every task; tasks subclass this and add their own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    #: name -> {field: value}; fields the user did not set are filled from the chosen preset
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}

    preset: str = "default"

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "default")
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(cls.PRESETS)}")
        return {**cls.PRESETS[preset], **data}


def run_settings(
    steps: int,
    eval_interval: int,
    *,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    grad_clip: float | None = 1.0,
    log_interval: int | None = None,
) -> dict[str, Any]:
    """The run settings of one preset; the log interval defaults to the evaluation interval."""
    return dict(
        steps=steps,
        warmup_steps=warmup_steps,
        schedule=schedule,
        min_lr_ratio=min_lr_ratio,
        grad_clip=grad_clip,
        eval_interval=eval_interval,
        log_interval=log_interval or eval_interval,
    )


@dataclass(frozen=True)
class Preset:
    """One row of a task's preset table."""

    settings: dict[str, Any]
    target: Target | None = None
    #: option values the preset sets (those the user sets win)
    options: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One benchmark problem. Subclasses set the class attributes and implement the methods."""

    Options: ClassVar[type[TaskOptions]] = TaskOptions
    #: what one step consumes: "tokens", "images" or "steps"
    unit: ClassVar[str] = "steps"
    #: metric name -> "min" or "max"
    metric_directions: ClassVar[dict[str, Direction]] = {}
    #: run settings for each preset (steps, warmup_steps, eval_interval, ...)
    SETTINGS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    #: AdamW-style baseline hyperparameters (lr, betas, weight_decay) that each optimizer's
    #: recipe translates into its own recommended values
    BASELINE: ClassVar[dict[str, Any]] = {}
    #: the default target, for each preset
    TARGETS: ClassVar[dict[str, Target]] = {}
    #: the preset table (fills SETTINGS, TARGETS and Options.PRESETS when a task sets it)
    PRESETS: ClassVar[dict[str, Preset]] = {}
    registry_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("PRESETS")
        if not table:
            return
        cls.SETTINGS = {name: dict(p.settings) for name, p in table.items()}
        cls.TARGETS = {name: p.target for name, p in table.items() if p.target is not None}
        presets = {name: dict(p.options) for name, p in table.items()}
        if "Options" in cls.__dict__:  # the task's own options class
            cls.Options.PRESETS = presets
        else:  # inherited: a subclass, so that tasks sharing a class keep their own presets
            base = cls.Options
            namespace = {"PRESETS": presets, "__module__": cls.__module__}
            cls.Options = type(base.__name__, (base,), namespace)

    def __init__(self, options: TaskOptions):
        self.options = options
        #: optimizer steps taken so far; the runner keeps it current for ``evaluate``
        self.steps_done = 0

    # -- what the runner asks -------------------------------------------------------------------

    def default_settings(self) -> dict[str, Any]:
        presets = self.SETTINGS
        return dict(presets.get(self.options.preset, presets["default"]))

    def default_target(self) -> Target | None:
        return self.TARGETS.get(self.options.preset, self.TARGETS.get("default"))

    @property
    @abstractmethod
    def units_per_step(self) -> int:
        """Tokens (or images, or 1 step) consumed by one optimizer step."""

    #: a run whose target metric (one to minimise) rises above this many times its value at
    #: step 0 is ``diverged``, like a non-finite loss (None: only non-finite values count)
    divergence_factor: ClassVar[float | None] = 10.0

    #: whether it trains under torchrun (DistributedDataParallel): its loss runs a batch through
    #: the model, which each rank holds a slice of
    distributed: ClassVar[bool] = True

    @property
    def seed_independent(self) -> bool:
        """True when the outcome does not depend on the seed (no noise, no dropout, no data
        order): its seeds then count as one observation, with no interval and no verdict."""
        return False

    @property
    def memory_gib(self) -> float:
        """The GPU memory one run needs (model, optimizer state, activations), so an executor can
        decide how many runs share a GPU. A generous estimate is fine."""
        return 1.0

    def prepare(self, device: torch.device) -> None:  # noqa: B027 - optional hook
        """Load data onto ``device``; called once before the model is built."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the runner seeds torch before calling this)."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Weight decay on matrices; none on biases, norms, embeddings and scalars.

        Each group has ``name`` and ``params``; a group with ``weight_decay: 0.0`` overrides the
        optimizer's decay, the others use it.
        """
        decay, no_decay = [], []
        no_decay_modules = (nn.Embedding, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)
        seen: set[int] = set()
        for module in model.modules():
            for _, p in module.named_parameters(recurse=False):
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                if p.dim() >= 2 and not isinstance(module, no_decay_modules):
                    decay.append(p)
                else:
                    no_decay.append(p)
        groups = [{"name": "decay", "params": decay}]
        if no_decay:
            groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    @abstractmethod
    def batches(self, seed: int) -> Iterator[Any]:
        """An endless, deterministic stream of training batches for ``seed``, on the device."""

    def batches_from(self, seed: int, step: int) -> Iterator[Any]:
        """The stream of ``batches(seed)`` resumed at ``step``: its batches ``step``, ``step + 1``,
        ... (0-based). This default draws and drops the first ``step``; tasks override it where
        they can jump ahead cheaply."""
        return itertools.islice(self.batches(seed), step, None)

    def describe_preset(self) -> list[str]:
        """Extra lines that ``bench show`` prints under this task's preset (none by default)."""
        return []

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar training loss of ``model`` on ``batch``."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Named metrics (the model is in eval mode and gradients are off)."""
