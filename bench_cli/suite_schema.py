"""The YAML suite file: its schema, validation, sweeps and tiers.

A run is (task + options, optimizer + hyperparameters, settings, seed). Overrides go to one of
three places: ``opt.KEY`` (optimizer hyperparameters; ``OPTNAME.KEY`` for one optimizer only),
``task.KEY`` (task options) and ``run.KEY`` (settings). An unprefixed key goes wherever it is
known; a key known in two places must be prefixed; an unknown key is an error naming it.

A suite file (more in ``suites/*.yaml``)::

    name: example
    baseline: adamw                      # speedups and calibrated targets (default adamw)
    seeds: [0, 1, 2]
    tasks:
      - name: lm-small
        options: {preset: tiny}          # task options (`bench show lm-small`)
        budget: {steps: 2000, max_seconds: 600, eval_interval: 100}
        settings: {warmup_steps: 100}    # any other run setting
        target: calibrate                # a number, `calibrate`, or left out (the task's own)
        margin: 0.01                     # calibrate only: 1% worse than the baseline's value
    optimizers:
      - name: adamw
        hparams: {betas: [0.9, 0.95]}    # fixed values: a list here is ONE value (a tuple)
        sweep: {lr: [3.0e-4, 1.0e-3, 3.0e-3]}   # the grid: each key lists its values
      - name: ademamix
        sweep: {betas: [[0.9, 0.999, 0.999], [0.9, 0.999, 0.9999]]}   # two values of betas
    tiers:
      smoke: {seeds: [0], budget: {steps: 50}, tasks: {lm-small: {eval_interval: 10}}}
    default_tier: smoke

Sweeps: ``sweep`` maps a hyperparameter to the list of its values; several keys expand to their
Cartesian product, in the order written. ``hparams`` holds values that do not change, so
``betas: [0.9, 0.99]`` there is one value and ``betas: [[0.9, 0.99], [0.95, 0.99]]`` under
``sweep`` is two; a sweep over a tuple-valued hyperparameter is never ambiguous. Both apply on
every task of the suite, over the optimizer's recipe for that task.

Tiers: ``--tier NAME`` (else ``default_tier``) replaces ``seeds`` and overrides each task's budget
with the tier's ``budget``, then with ``tasks.<id>`` (a task's ``id`` defaults to its name).

``parse_suite`` and ``load_suite`` validate a suite file; ``bench_cli.suite`` runs it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from bench_cli.config import DEFAULT_MARGIN, RunSettings, validation_message
from bench_cli.errors import ConfigError
from bench_cli.numbers import numbers_not_booleans
from bench_cli.results.store import MAX_NAME, NAME_PATTERN, name_problem
from bench_cli.yamlio import read_text_file, read_yaml, schema_message

# -- YAML suites: the schema --------------------------------------------------------------------

#: run settings that have their own key in a suite (not under ``settings``)
_OWN_KEYS = {
    "steps": "budget.steps",
    "max_seconds": "budget.max_seconds",
    "eval_interval": "budget.eval_interval",
    "target": "target",
    "device": "device (at the top level)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe_name(value: str) -> str:
    """Task ids, tier and registry names become parts of file and folder names."""
    problem = name_problem(value)
    if problem:
        raise ValueError(
            f"{problem} (it becomes part of file names: {NAME_PATTERN}, at most "
            f"{MAX_NAME} characters)"
        )
    return value


#: a name that may be part of a path (see ``bench_cli.results.store.NAME_PATTERN``)
SafeName = Annotated[str, AfterValidator(_safe_name)]


class Budget(_Strict):
    """What each run of a task may spend; unset fields keep the task's own settings."""

    steps: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0.0)
    eval_interval: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)

    def over(self, other: Budget | None) -> Budget:
        """This budget with the fields that ``other`` sets on top."""
        return (
            self if other is None else self.model_copy(update=other.model_dump(exclude_none=True))
        )


class TaskEntry(_Strict):
    name: SafeName
    id: SafeName | None = None
    options: dict[str, Any] = {}
    budget: Budget = Budget()
    settings: dict[str, Any] = {}
    target: Any = None  # a number, "calibrate", or None (the task's own target)
    margin: float = Field(
        DEFAULT_MARGIN,
        ge=0.0,
        le=100.0,  # a target 100 times the baseline's value is no target; 1e308 overflowed
        description="calibrate only: the target is the baseline's median best value, relaxed by "
        "this fraction of its size (0 to 100)",
    )

    @field_validator("target")
    @classmethod
    def _target(cls, value: Any) -> float | str | None:
        if value is None or value == "calibrate":
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ValueError("expected a finite number or 'calibrate'")

    @property
    def key(self) -> str:
        return self.id or self.name


class OptimizerEntry(_Strict):
    name: SafeName
    hparams: dict[str, Any] = {}
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}


#: a run's seed: a whole number (not true/false), as torch.manual_seed takes it
Seed = Annotated[StrictInt, Field(ge=0, lt=2**63)]


class Tier(_Strict):
    description: str = ""
    seeds: list[Seed] | None = Field(None, min_length=1)
    budget: Budget = Budget()
    tasks: dict[str, Budget] = {}


class Tuning(_Strict):
    """How configurations are chosen before scoring (``bench_cli.protocol``)."""

    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        description="seeds of the tuning runs (default: one seed, above `seeds`)",
    )
    calibration_seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        description="seeds of the baseline's calibration runs (default: as many as `seeds`, "
        "above the tuning seeds)",
    )
    budget: Literal["equal", "unequal"] = Field(
        "equal",
        description="`equal` refuses optimizers with different numbers of configurations; "
        "`unequal` allows it and the tables mark it",
    )


class SlurmSettings(_Strict):
    """Where SLURM jobs go (``--executor slurm``); passed to submitit."""

    cluster: Literal["slurm", "local", "debug"] | None = Field(
        None, description="submitit's cluster: slurm (default), or local for one machine"
    )
    partition: str | None = None
    time_minutes: int = Field(60, ge=1, strict=True, description="time limit of each job")
    gpus_per_node: int | None = Field(None, ge=0, strict=True)
    cpus_per_task: int | None = Field(None, ge=1, strict=True)
    mem_gb: float | None = Field(None, gt=0)
    account: str | None = None
    array_parallelism: int = Field(
        64, ge=1, strict=True, description="jobs of the array running at once"
    )
    extra: dict[str, Any] = Field({}, description="more sbatch flags, e.g. {qos: high}")


class ExecutorSettings(_Strict):
    """How cells run (``--executor`` and its options override these)."""

    kind: Literal["local", "ray", "slurm"] = "local"
    jobs: int = Field(1, ge=1, le=256, strict=True, description="CPU: runs at once")
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        strict=True,
        description="CPU: torch threads per run (default: cores // jobs); results depend on it "
        "at the level of float rounding, so fix it to compare runs across --jobs",
    )
    gpus: list[StrictInt] | None = Field(
        None, description="CUDA: which GPUs (default: all visible)"
    )
    runs_per_gpu: int | None = Field(
        None,
        ge=1,
        le=16,
        strict=True,
        description="CUDA: runs sharing a GPU (default: from memory, <= 4)",
    )
    mps: bool | None = Field(
        None,
        description="CUDA: start NVIDIA's Multi-Process Service for the runs sharing a GPU, so "
        "they run at once rather than time-sliced (default: on when runs share a GPU and "
        "nvidia-cuda-mps-control is installed)",
    )
    ray_address: str | None = Field(
        None,
        min_length=1,  # "$RAY_HEAD" unset: not a silent local Ray
        description="an existing Ray cluster (default: local)",
    )
    slurm: SlurmSettings = SlurmSettings()


#: the command line's options that only one executor takes: option -> (key, executor)
_ONE_EXECUTORS = {  # an option -> its setting, and the executors that take it
    "--jobs": ("jobs", ("local",)),
    "--gpus": ("gpus", ("local",)),
    "--mps": ("mps", ("local",)),
    "--runs-per-gpu": ("runs_per_gpu", ("local", "ray")),
    "--ray-address": ("ray_address", ("ray",)),
    **{
        f"--slurm-{flag}": (f"slurm.{key}", ("slurm",))
        for flag, key in (
            ("cluster", "cluster"), ("partition", "partition"), ("time", "time_minutes"),
            ("gpus", "gpus_per_node"), ("account", "account"), ("flag", "extra"),
        )
    },
}  # fmt: skip


def executor_settings(base: ExecutorSettings, overrides: dict[str, Any]) -> ExecutorSettings:
    """The suite file's executor settings with the command line's on top. An option of the
    command line that another executor takes is refused (a suite file may keep settings for
    several, to run where each is at hand)."""
    data = base.model_dump()
    given = {**overrides, **{f"slurm.{k}": v for k, v in overrides.get("slurm", {}).items()}}
    slurm = {**data.pop("slurm"), **overrides.pop("slurm", {})}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = ExecutorSettings(**data, slurm=slurm)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "executor setting")) from exc
    for flag, (key, kinds) in _ONE_EXECUTORS.items():
        if given.get(key) is not None and settings.kind not in kinds:
            takes = " or ".join(f"--executor {k}" for k in kinds)
            raise ConfigError(
                f"{flag} is an option of {takes}, and the runs go to the "
                f"{settings.kind} executor; add {takes.split(' or ')[0]}, or leave {flag} out"
            )
    return settings


class SuiteFile(_Strict):
    name: SafeName | None = None
    description: str = ""
    tasks: list[TaskEntry] = Field(min_length=1)
    optimizers: list[OptimizerEntry] = Field(min_length=1)
    seeds: list[Seed] = Field([0], min_length=1)
    baseline: str = "adamw"
    device: str | None = None
    plugins: list[str] = []
    tiers: dict[SafeName, Tier] = {}
    default_tier: str | None = None
    tuning: Tuning = Tuning()
    executor: ExecutorSettings = ExecutorSettings()
    log: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        [], description="trackers every run logs to"
    )


def _problems(suite: SuiteFile) -> list[str]:
    """What the schema cannot say about one field alone, each with its key path."""
    out = []
    ids = [t.key for t in suite.tasks]
    for i, t in enumerate(suite.tasks):
        if ids.index(t.key) != i:
            out.append(f"tasks[{i}].id: {t.key!r} is used twice; give one of them an id")
        for key in t.settings:
            if key in _OWN_KEYS:
                out.append(f"tasks[{i}].settings.{key}: write it as {_OWN_KEYS[key]}")
            elif key not in RunSettings.model_fields:
                known = ", ".join(k for k in RunSettings.model_fields if k not in _OWN_KEYS)
                out.append(f"tasks[{i}].settings.{key}: unknown run setting; known: {known}")
        if "margin" in t.model_fields_set and t.target != "calibrate":
            out.append(f"tasks[{i}].margin: only applies with target: calibrate")
    for j, o in enumerate(suite.optimizers):
        for key in sorted(set(o.hparams) & set(o.sweep)):
            out.append(f"optimizers[{j}].sweep.{key}: also set in hparams; keep one")
    for where, seeds in [("seeds", suite.seeds)] + [
        (f"tiers.{n}.seeds", t.seeds or []) for n, t in suite.tiers.items()
    ]:
        out += [
            f"{where}: seed {s} is listed twice" for s in sorted(set(seeds)) if seeds.count(s) > 1
        ]
    if suite.default_tier is not None and suite.default_tier not in suite.tiers:
        out.append(f"default_tier: no tier named {suite.default_tier!r}")
    for name, tier in suite.tiers.items():
        for key in tier.tasks:
            if key not in ids:
                out.append(f"tiers.{name}.tasks.{key}: no task with that id ({', '.join(ids)})")
    return out


def parse_suite(text: str, source: str = "suite") -> SuiteFile:
    """Validate a suite's YAML text; every error names its key path (``optimizers[2].sweep``)."""
    data = read_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite is a mapping with tasks and optimizers")
    try:
        suite = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {schema_message(exc)}") from exc
    problems = _problems(suite)
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    return suite


def load_suite(path: str | Path) -> SuiteFile:
    """Read and validate a suite file. Relative paths in it (plug-in files, task ``data`` and
    ``val_data``) are relative to the suite file's folder, not to the current directory."""
    suite = parse_suite(read_text_file(path, "suite file"), str(path))
    here = Path(path).resolve().parent

    def local(value: Any) -> Any:
        if not isinstance(value, str) or Path(value).expanduser().is_absolute():
            return value
        candidate = here / value
        return str(candidate) if candidate.exists() else value

    plugins = [local(p) if p.endswith(".py") or "/" in p else p for p in suite.plugins]
    tasks = [
        t.model_copy(
            update={
                "options": {
                    k: local(v) if k in ("data", "val_data") else v for k, v in t.options.items()
                }
            }
        )
        for t in suite.tasks
    ]
    return suite.model_copy(update={"plugins": plugins, "tasks": tasks})


# -- YAML suites: sweeps and tiers --------------------------------------------------------------


def expand_grid(hparams: dict[str, Any], sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the Cartesian product of ``sweep`` (keys in order), over ``hparams``."""
    keys = list(sweep)
    return [
        {**hparams, **dict(zip(keys, values))}
        for values in itertools.product(*(sweep[k] for k in keys))
    ]


def apply_tier(suite: SuiteFile, tier: str | None = None) -> tuple[str | None, SuiteFile]:
    """(the tier's name, the suite with its seeds and budgets applied and no tiers left)."""
    name = tier if tier is not None else suite.default_tier
    bare = {"tiers": {}, "default_tier": None}
    if name is None:
        return None, suite.model_copy(update=bare)
    if name not in suite.tiers:
        have = ", ".join(suite.tiers) or "none"
        raise ConfigError(f"no tier named {name!r} in this suite; tiers: {have}")
    t = suite.tiers[name]
    tasks = [
        e.model_copy(update={"budget": e.budget.over(t.budget).over(t.tasks.get(e.key))})
        for e in suite.tasks
    ]
    return name, suite.model_copy(update={**bare, "tasks": tasks, "seeds": t.seeds or suite.seeds})
