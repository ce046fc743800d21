"""The task interface: a task owns the problem and knows nothing about optimizers.

A task builds the model, yields deterministic batches for a seed, computes the loss, evaluates
(returning its named metrics, one of which is the target), and says what one step consumes.
Its options are a pydantic model; a ``preset`` option (``default`` or ``tiny``) fills sizes that
were not set explicitly, and ``tiny`` runs on a CPU in well under a second per step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from bench_cli.results.record import Direction, Target


class TaskOptions(BaseModel):
    """Options shared by every task; tasks subclass this and add their own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: name -> {field: value}; fields the user did not set are filled from the chosen preset
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}

    preset: str = "default"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "default")
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(cls.PRESETS)}")
        return {**cls.PRESETS[preset], **data}


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
    registry_name: ClassVar[str]

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

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar training loss of ``model`` on ``batch``."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Named metrics (the model is in eval mode and gradients are off)."""
