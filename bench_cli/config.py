"""Run configuration: settings, ``--set key=value`` overrides, and YAML suite files.

A run is (task + options, optimizer + hyperparameters, settings, seed). Overrides go to one of
three places: ``opt.KEY`` (optimizer hyperparameters; ``OPTNAME.KEY`` for one optimizer only),
``task.KEY`` (task options) and ``run.KEY`` (settings). An unprefixed key goes wherever it is
known; a key known in two places must be prefixed; an unknown key is an error naming it.

A suite file (more in ``suites/*.yaml``)::

    name: example
    baseline: adamw                      # targets are calibrated from it (default adamw)
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
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from bench_cli.errors import ConfigError, clip
from bench_cli.results.store import (
    MAX_NAME,
    NAME_PATTERN,
    UnreadableRecord,
    name_problem,
    read_regular_text,
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
        None, ge=0.0, description="minutes between checkpoints (default: 10 on GPU, off on CPU; 0: off)"
    )


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
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{what} {loc}: {err['msg']} (got {clip(repr(err.get('input')))})")
    return "; ".join(lines)


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
        description="calibrate only: the target is the baseline's median best value, relaxed by "
        "this fraction of its size",
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


class Tier(_Strict):
    description: str = ""
    seeds: list[int] | None = Field(None, min_length=1)
    budget: Budget = Budget()
    tasks: dict[str, Budget] = {}


class Tuning(_Strict):
    """How configurations are chosen before scoring (``bench_cli.protocol``)."""

    seeds: list[int] | None = Field(
        None, min_length=1, description="seeds of the tuning runs (default: one seed, above `seeds`)"
    )
    calibration_seeds: list[int] | None = Field(
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
    time_minutes: int = Field(60, ge=1, description="time limit of each job")
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    account: str | None = None
    array_parallelism: int = Field(64, ge=1, description="jobs of the array running at once")
    extra: dict[str, Any] = Field({}, description="more sbatch flags, e.g. {qos: high}")


class ExecutorSettings(_Strict):
    """How cells run (``--executor`` and its options override these)."""

    kind: Literal["local", "ray", "slurm"] = "local"
    jobs: int = Field(1, ge=1, le=256, description="CPU: runs at once")
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU: torch threads per run (default: cores // jobs); results depend on it "
        "at the level of float rounding, so fix it to compare runs across --jobs",
    )
    gpus: list[int] | None = Field(None, description="CUDA: which GPUs (default: all visible)")
    runs_per_gpu: int | None = Field(
        None, ge=1, le=16, description="CUDA: runs sharing a GPU (default: from memory, <= 4)"
    )
    mps: bool = Field(
        False,
        description="CUDA: start NVIDIA's Multi-Process Service for the runs sharing a GPU, so "
        "they run at once rather than time-sliced",
    )
    ray_address: str | None = Field(None, description="an existing Ray cluster (default: local)")
    slurm: SlurmSettings = SlurmSettings()


class SuiteFile(_Strict):
    name: str | None = None
    description: str = ""
    tasks: list[TaskEntry] = Field(min_length=1)
    optimizers: list[OptimizerEntry] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
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


# -- YAML suites: loading -----------------------------------------------------------------------


#: a document may use at most this many aliases (``*name``) and expand to this many values
MAX_ALIASES = 100
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a number (YAML 1.1 needs a dot), refuses a key given
    twice in one mapping (PyYAML would keep the last silently), a key that is not a plain value,
    and documents whose aliases expand beyond ``MAX_NODES`` values (an "alias bomb")."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name); write the values out",
                    self.peek_event().start_mark,
                )
        return super().compose_node(parent, index)

    def get_single_node(self):  # noqa: ANN201
        node = super().get_single_node()
        if node is not None:
            _count_nodes(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain name, not a list or mapping",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {clip(repr(key))} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _count_nodes(root: yaml.Node) -> int:
    """How many values ``root`` expands to, aliases repeated; refuses a cycle or too many."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a value that contains it", node.start_mark
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document expands to more than {MAX_NODES} values (aliases repeat their "
                "anchor's content); write it without nested aliases",
                node.start_mark,
            )
        sizes[key] = total
        return total

    return size(root)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:

        def at(mark: yaml.Mark | None) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"

        message = f"{source}: invalid YAML at {at(exc.problem_mark)}: {clip(exc.problem, 160)}"
        if exc.context and exc.context_mark:
            message += f" ({clip(exc.context)} at {at(exc.context_mark)})"
        raise ConfigError(message) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {clip(exc, 160)}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from exc


def key_path(loc: tuple) -> str:
    """``('optimizers', 2, 'hparams', 'lr')`` -> ``optimizers[2].hparams.lr``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            lines.append(f"{key_path(err['loc'])}: unknown key")
        else:
            got = repr(err.get("input"))
            got = got if len(got) < 60 else got[:57] + "..."
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key_path(err['loc'])}: {msg} (got {got})")
    return "; ".join(lines)


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


def read_text_file(path: str | Path, what: str, limit: int = 2**20) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (a ``ConfigError`` else)."""
    try:
        return read_regular_text(Path(path), limit)
    except UnreadableRecord as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: it {exc.reason}") from exc


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
