"""Run configuration: settings and ``--set key=value`` overrides.

A run is (task + options, optimizer + hyperparameters, settings, seed). Overrides go to one of
three places: ``opt.KEY`` (optimizer hyperparameters; ``OPTNAME.KEY`` for one optimizer only),
``task.KEY`` (task options) and ``run.KEY`` (settings). An unprefixed key goes wherever it is
known; a key known in two places must be prefixed; an unknown key is an error naming it.

The suite file's schema lives in ``bench_cli.suite_schema`` and YAML reading in
``bench_cli.yamlio``; both are importable from here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench_cli.errors import ConfigError, clip
from bench_cli.numbers import numbers_not_booleans
from bench_cli.yamlio import (  # noqa: F401
    key_path,
    problem_text,
    read_text_file,
    read_yaml,
    schema_message,
)

#: a calibrated target is the baseline's median best value relaxed by this fraction by default
DEFAULT_MARGIN = 0.01
#: bounds of run settings: enough for any real run, small enough to fail early on a typo
MAX_STEPS = 10**9
MAX_SECONDS = 10**7  # about 116 days


class RunSettings(BaseModel):
    """How the runner trains; each task supplies its own defaults (``bench show TASK``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1000, ge=1, le=MAX_STEPS, description="optimizer steps")
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="linear lr warmup steps")
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final lr / peak lr")
    grad_clip: float | None = Field(
        1.0, gt=0.0, allow_inf_nan=False, description="global grad-norm clip (None: off)"
    )
    eval_interval: int = Field(100, ge=1, le=MAX_STEPS, description="steps between evaluations")
    log_interval: int = Field(
        10, ge=1, le=MAX_STEPS, description="steps between loss reads (host syncs)"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    compile: bool = Field(False, description="torch.compile the model")
    target: float | None = Field(
        None, allow_inf_nan=False, description="override the task's target value"
    )
    max_seconds: float | None = Field(
        None, gt=0.0, le=MAX_SECONDS, description="wall-clock cap on training"
    )
    checkpoint_minutes: float | None = Field(
        None,
        ge=0.0,
        description="minutes between checkpoints (default: 10 on GPU, off on CPU; 0: off)",
    )

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)


#: run settings that never change what a run computes: they leave its run id as it is, and a
#: suite folder may resume with other values
NEUTRAL_SETTINGS = frozenset({"checkpoint_minutes"})


def parse_value(text: str, source: str = "--set") -> Any:
    """A ``--set`` value, read by the suite files' YAML loader: ``1e-3``, ``[0.9, 1e-1]``,
    ``null``, ``true``; anything else is text. ``inf`` stays text (YAML spells it ``.inf``), and
    an empty value is null, as in a file."""
    return read_yaml(text, source)


def parse_sets(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {clip(repr(item))}")
        out.append((key.strip(), parse_value(raw.strip(), f"--set {clip(key.strip(), 40)}")))
    return out


class Overrides(BaseModel):
    """Overrides sorted into their three destinations."""

    hparams: dict[str, dict[str, Any]] = {}  # optimizer name -> {key: value}
    task: dict[str, Any] = {}
    settings: dict[str, Any] = {}


def sort_overrides(
    pairs: list[tuple[str, Any]],
    optimizer_args: dict[str, set[str]],
    task_fields: set[str],
) -> Overrides:
    """Send each ``key=value`` to the optimizers, the task or the settings."""
    setting_fields = set(RunSettings.model_fields)
    out = Overrides(hparams={name: {} for name in optimizer_args})
    for key, value in pairs:
        scope, _, name = key.rpartition(".")
        scope = scope.lower().replace("_", "-")
        if scope in ("opt", ""):
            takers = [o for o, args in optimizer_args.items() if name in args]
        elif scope in optimizer_args:
            if name not in optimizer_args[scope]:
                raise ConfigError(
                    f"--set {key}: optimizer {scope!r} has no hyperparameter {name!r}; it accepts "
                    f"{', '.join(sorted(optimizer_args[scope]))}"
                )
            takers = [scope]
        elif scope not in ("task", "run"):
            raise ConfigError(
                f"--set {key}: {scope!r} is not opt, task, run or one of the optimizers of this "
                f"run ({', '.join(optimizer_args)})"
            )
        else:
            takers = []
        in_task = scope in ("task", "") and name in task_fields
        in_run = scope in ("run", "") and name in setting_fields
        places = bool(takers) + in_task + in_run
        if places > 1:
            raise ConfigError(
                f"--set {key}: {name!r} is ambiguous (an optimizer hyperparameter, task option or "
                f"run setting at once); write opt.{name}, task.{name} or run.{name}"
            )
        if places == 0:
            raise ConfigError(
                f"--set {key}: unknown key {name!r}. Optimizer hyperparameters: "
                f"{', '.join(sorted(set().union(*optimizer_args.values())))}; task options: "
                f"{', '.join(sorted(task_fields))}; run settings: "
                f"{', '.join(sorted(setting_fields))}"
            )
        for opt in takers:
            out.hparams[opt][name] = value
        if in_task:
            out.task[name] = value
        if in_run:
            out.settings[name] = value
    return out


def validation_message(exc: ValidationError, what: str) -> str:
    """One line per invalid field of a pydantic error, each naming the field."""
    lines = []
    for err in exc.errors():
        loc = " " + ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        lines.append(f"{what}{loc}: {problem_text(err)}")
    return "; ".join(lines)


# the suite schema, importable from here as before (imported last: it builds on RunSettings)
from bench_cli.suite_schema import (  # noqa: E402, F401
    Budget,
    ExecutorSettings,
    OptimizerEntry,
    SlurmSettings,
    SuiteFile,
    TaskEntry,
    Tier,
    Tuning,
    apply_tier,
    executor_settings,
    expand_grid,
    load_suite,
    parse_suite,
)
