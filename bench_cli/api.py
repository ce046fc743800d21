"""What the CLI calls. Each function validates everything first, then does the work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from bench_cli.config import (
    Budget,
    OptimizerEntry,
    RunSettings,
    SuiteFile,
    TaskEntry,
    parse_sets,
    sort_overrides,
    validation_message,
)
from bench_cli.datafiles import DATA_OPTIONS
from bench_cli.errors import BenchError, ConfigError
from bench_cli.plugins import load_plugin, normalize
from bench_cli.registry import OPTIMIZERS, check_optimizer, optimizer_defaults
from bench_cli.registry.recipes import recommended_hparams
from bench_cli.results.record import RunRecord
from bench_cli.spec import RunSpec
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Task


@dataclass
class RunRequest:
    """What a user asks for at the terminal (or a suite asks for, one cell at a time)."""

    task: str
    optimizers: list[str]
    #: the task variant's name in tables (a suite's task id); default: derived from the options
    task_id: str | None = None
    sets: list[str] = field(default_factory=list)
    steps: int | None = None
    seed: int = 0
    data: str | None = None
    device: str | None = None
    plugins: list[str] = field(default_factory=list)
    #: structured overrides (suites use these; ``sets`` is the terminal's spelling)
    hparams: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: several seeds (``bench run --seed 0,1,2``); ``seed`` when empty
    seeds: list[int] = field(default_factory=list)
    #: why the run exists (a suite's phase) and its grid point's swept values
    role: str = "score"
    config: dict[str, Any] = field(default_factory=dict)


def load_plugins(plugins: list[str]) -> None:
    for spec in plugins:
        load_plugin(spec)


def run_id_for(payload: dict[str, Any]) -> str:
    """Readable and unique: task, optimizer, seed and a hash of everything that changes training.

    The target is left out: it decides only where a curve is read, so a run scored against a
    calibrated target is the same run as before calibration (its record is rescored, not rerun).
    So is how often a run checkpoints, which never changes what it computes.
    """
    from bench_cli.config import NEUTRAL_SETTINGS
    from bench_cli.datafiles import with_identities

    payload = {k: v for k, v in payload.items() if k != "target"}
    payload["task_options"] = with_identities(payload["task_options"])
    payload["settings"] = {
        k: v for k, v in payload["settings"].items() if k != "target" and k not in NEUTRAL_SETTINGS
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:10]
    return f"{payload['task']}__{payload['optimizer']}__seed{payload['seed']}__{digest}"


def task_label(task: Task) -> str:
    """The task's name with its preset and the options that differ from the preset's defaults:
    ``lm-small(preset=tiny)``, ``rosenbrock(x0=-3.0)``. Tables group runs by it, so a tiny and a
    full-size run of one task never mix. A data path is named by its file or folder name only
    (``data=train.bin``): the full path differs from machine to machine, and the record keeps it.
    """
    options = task.options.model_dump()
    defaults = type(task).Options(preset=options.get("preset", "default")).model_dump()
    changed = (
        [f"preset={options['preset']}"] if options.get("preset", "default") != "default" else []
    )
    changed += [
        f"{k}={v}"
        for k, v in options.items()
        if k not in ("preset", *DATA_OPTIONS) and v != defaults.get(k)
    ]
    changed += [f"{k}={Path(options[k]).name}" for k in DATA_OPTIONS if options.get(k)]
    return f"{task.registry_name}({','.join(changed)})" if changed else task.registry_name


def check_device(name: str) -> None:
    """A device this machine has: ``auto``, ``cpu``, or an available ``cuda[:N]``/``mps``."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but this torch sees no CUDA GPU; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available; use cpu")


def host_memory_gib() -> float | None:
    """Memory the host has available (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(task: Task, device: str) -> None:
    """Refuse a CPU run whose task estimates more than twice the memory the host has: sizes
    that cannot fit fail here with the options to lower, not in the out-of-memory killer."""
    if device not in ("cpu", "auto") or (device == "auto" and torch.cuda.is_available()):
        return
    have = host_memory_gib()
    need = task.memory_gib
    if have is not None and need > 2 * have:
        sizes = ", ".join(
            f"{k}={v}" for k, v in task.options.model_dump().items() if isinstance(v, int)
        )
        raise ConfigError(
            f"task {task.registry_name!r} needs about {need:,.1f} GiB but this machine has "
            f"{have:,.1f} GiB available; lower its sizes ({sizes})"
        )


def check_settings(settings: RunSettings, task: Task) -> None:
    """Settings that are valid alone but not together, or not on this machine."""
    check_device(settings.device)
    check_memory(task, settings.device)
    if settings.eval_interval > settings.steps:
        raise ConfigError(
            f"eval_interval ({settings.eval_interval}) is larger than steps ({settings.steps}): "
            "tokens-to-target is interpolated between evaluations, so evaluate at least once "
            "mid-run; set eval_interval <= steps"
        )
    probe = getattr(task.options, "probe_batch_step", None)
    if probe is not None and probe >= settings.steps:
        raise ConfigError(
            f"probe_batch_step ({probe}) must be below steps ({settings.steps}) for the probe "
            "batch to be trained on"
        )


def make_task(name: str, options: dict[str, Any]) -> Task:
    cls = TASKS.get(name)
    try:
        return cls(cls.Options(**options))
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, f"task {cls.registry_name!r} option")) from exc


def resolve_hparams(
    optimizer: str, task: Task, given: dict[str, Any], settings: RunSettings
) -> dict[str, Any]:
    """Defaults <- the optimizer's recipe for this task <- the user's values <- run horizons."""
    cls = OPTIMIZERS.get(optimizer)
    defaults = optimizer_defaults(cls)
    recipe = recommended_hparams(optimizer, task.BASELINE, set(defaults), task=task)
    hparams = {**defaults, **recipe, **given}
    for key in getattr(cls, "horizon_hparams", ()):
        if hparams.get(key) is None:
            hparams[key] = settings.steps  # warmups over the whole run, as the authors advise
    if (
        getattr(cls, "owns_warmup", False)
        and "warmup_steps" in defaults
        and "warmup_steps" not in given
    ):
        hparams["warmup_steps"] = settings.warmup_steps  # the optimizer warms up, not the loop
    hparams = {k: list(v) if isinstance(v, tuple) else v for k, v in hparams.items()}
    check_optimizer(optimizer, **hparams)  # a bad value fails now, before anything is written
    return hparams


@dataclass
class _Sorted:
    """A request's names checked and its ``--set`` values sorted into their places."""

    task_cls: type
    names: list[str]
    hparams: dict[str, dict[str, Any]]  # optimizer -> its given values
    options: dict[str, Any]  # task options
    settings: dict[str, Any]  # run settings


def _sort_request(req: RunRequest) -> _Sorted:
    load_plugins(req.plugins)
    task_cls = TASKS.get(req.task)
    names = [normalize(OPTIMIZERS.get(o).registry_name) for o in req.optimizers]
    if not names:
        raise ConfigError("no optimizer given; pass --opt NAME[,NAME...]")
    if len(set(names)) < len(names):
        raise ConfigError(
            f"--opt names an optimizer twice ({', '.join(names)}); to compare settings of "
            "one optimizer, run a suite with a sweep"
        )
    for seed in req.seeds or [req.seed]:
        if not 0 <= seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2**63), got {seed}")
    if len(set(req.seeds)) < len(req.seeds):
        raise ConfigError(f"--seed lists a seed twice ({req.seeds}); give each once")
    accepted = {o: set(optimizer_defaults(OPTIMIZERS.get(o))) for o in names}
    over = sort_overrides(parse_sets(req.sets), accepted, set(task_cls.Options.model_fields))
    for name in names:
        unknown = sorted(set(req.hparams) - accepted[name])
        if unknown:
            raise ConfigError(
                f"optimizer {name!r} has no hyperparameter {unknown[0]!r}; it accepts "
                f"{', '.join(sorted(accepted[name]))}"
            )
    settings = {**req.settings}
    for key, flag, given in (("steps", "--steps", req.steps), ("device", "--device", req.device)):
        if given is not None and key in over.settings and over.settings[key] != given:
            raise ConfigError(
                f"{flag} {given} and --set {key}={over.settings[key]} disagree; give one of them"
            )
        if given is not None:
            settings[key] = given
    if settings.get("compile") and over.settings.get("compile", True) is not True:
        raise ConfigError(
            f"--compile and --set compile={over.settings['compile']} disagree; give one of them"
        )
    settings.update(over.settings)
    options = {**req.task_options, **over.task}
    if req.data is not None:
        if "data" not in task_cls.Options.model_fields:
            raise ConfigError(f"task {task_cls.registry_name!r} reads no data file; drop --data")
        if "data" in over.task and over.task["data"] != req.data:
            raise ConfigError(
                f"--data {req.data} and --set data={over.task['data']} disagree; give one of them"
            )
        options["data"] = req.data
    hparams = {n: {**req.hparams, **over.hparams[n]} for n in names}
    return _Sorted(task_cls, names, hparams, options, settings)


def plan_runs(req: RunRequest) -> tuple[Task, list[RunSpec]]:
    """Validate the request and resolve one ``RunSpec`` per optimizer (nothing runs yet)."""
    sorted_ = _sort_request(req)
    task_cls, opt_names, task_options = sorted_.task_cls, sorted_.names, sorted_.options
    task = make_task(task_cls.registry_name, task_options)
    settings_in = {**task.default_settings(), **sorted_.settings}
    explicit = "eval_interval" in sorted_.settings
    steps = settings_in.get("steps")
    if not explicit and isinstance(steps, int) and settings_in.get("eval_interval", 0) > steps > 0:
        settings_in["eval_interval"] = max(1, steps // 10)  # a shortened run still gets a curve
    try:
        settings = RunSettings(**settings_in)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "run setting")) from exc
    check_settings(settings, task)
    target = task.default_target()
    if target is not None and settings.target is not None:
        target = target.model_copy(update={"value": settings.target})
    options = task.options.model_dump()
    task_id = req.task_id or task_label(task)
    specs = []
    for name in opt_names:
        hparams = resolve_hparams(name, task, sorted_.hparams[name], settings)
        payload = dict(
            task=task.registry_name,
            task_options=options,
            optimizer=name,
            hparams=hparams,
            settings=settings.model_dump(),
            seed=req.seed,
            target=target.model_dump() if target else None,
        )
        specs.append(
            RunSpec(
                run_id=run_id_for(payload),
                task_id=task_id,
                role=req.role,
                config=req.config,
                **{**payload, "settings": settings, "target": target},
            )
        )
    return task, specs


def request_suite(req: RunRequest) -> SuiteFile:
    """``bench run``'s request as a one-task suite (its ``--set`` values sorted into place)."""
    sorted_ = _sort_request(req)
    task_cls, names, options = sorted_.task_cls, sorted_.names, sorted_.options
    settings = dict(sorted_.settings)
    budget = {
        k: settings.pop(k) for k in ("steps", "max_seconds", "eval_interval") if k in settings
    }
    target = settings.pop("target", None)
    device = settings.pop("device", None)
    try:
        return SuiteFile(
            name=f"run-{task_cls.registry_name}",
            tasks=[
                TaskEntry(
                    name=task_cls.registry_name,
                    id=req.task_id,
                    options=options,
                    budget=Budget(**budget),
                    settings=settings,
                    target=target,
                )
            ],
            optimizers=[OptimizerEntry(name=n, hparams=sorted_.hparams[n]) for n in names],
            seeds=req.seeds or [req.seed],
            device=device,
            plugins=list(req.plugins),
        )
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "run setting")) from exc


def run(
    req: RunRequest,
    out_dir: Path,
    progress: Any = None,
    executor: dict[str, Any] | None = None,
    rerun: bool = False,
    log: dict[str, Any] | None = None,
) -> list[RunRecord]:
    """Run every optimizer of ``req`` on its task, as a one-task suite through the same planner
    and executors as ``bench suite run``; records already in ``out_dir`` are reused (``rerun``
    replaces them). Returns the scored records (``.ran`` of the summary says how many ran)."""
    return run_summary(req, out_dir, progress, executor, rerun, log).scored


def run_summary(req, out_dir, progress=None, executor=None, rerun=False, log=None):
    from bench_cli.config import executor_settings
    from bench_cli.executors import check_settings
    from bench_cli.executors.worker import _prepared
    from bench_cli.folder import RUNS, Folder
    from bench_cli.plan import build_plan
    from bench_cli.progress import Progress
    from bench_cli.protocol import resolved_text, run_plan

    suite = request_suite(req)
    settings = executor_settings(suite.executor, dict(executor or {}))
    plan = build_plan(suite)
    first = (plan.calibrate_cells({}) or plan.score_cells({}, {}))[0].spec  # its first phase
    prepared = _prepared(first)  # a missing data file fails here, before anything is written
    if isinstance(prepared, BenchError):
        raise prepared
    folder = Folder(out_dir)
    folder.check_for_run()
    text = resolved_text(plan)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    log = {"kinds": [], "group": suite.name, **(log or {})}
    check_settings(settings, log["kinds"], first.settings.device, log.get("mlflow_uri"))
    folder.claim_suite(text, name=f"{RUNS}/{suite.name}-{digest}.yaml")
    with folder, progress or Progress(quiet=True) as bar:
        return run_plan(plan, folder, settings, bar, rerun=rerun, log=log)


def summary(records: list[RunRecord]):
    from bench_cli.results.tables import run_summary

    return run_summary(records)
