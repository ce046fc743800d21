"""Experiment trackers as run callbacks: TensorBoard, MLflow and Weights & Biases.

``tracker_callback(["tensorboard", "mlflow"], group="my-suite", out_dir=Path("runs"))`` returns
one ``RunCallback`` that opens one tracker run per cell (``on_start`` .. ``on_end``), grouped by
``group`` (a suite's name), and logs:

- at every log point: the training loss, lr, gradient norm and throughput (``train/...``);
- at every evaluation: the task's metrics (``eval/...``);
- at the start: the resolved hyperparameters, run settings, task, optimizer and seed;
- at the end: the summary (status, tokens-, seconds- and steps-to-target, best and final
  metrics, throughput, optimizer-state memory).

Each tracker is an optional extra (``pip install "bench-cli[tensorboard]"``, ``[mlflow]``,
``[wandb]``). Everything stays on this machine: TensorBoard event files under
``OUT/tensorboard/GROUP/RUN``, an MLflow file store under ``OUT/mlruns`` (unless ``mlflow_uri``),
and W&B in offline mode under ``OUT/wandb`` (``wandb sync`` uploads it later). The callback is
built from plain arguments, so each worker process of a parallel suite builds its own.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from bench_cli.addresses import unanswered
from bench_cli.errors import ConfigError, clip
from bench_cli.results.record import EvalPoint, RunRecord, TrainPoint
from bench_cli.runner import RunCallback, RunSpec

TRACKERS = ("tensorboard", "mlflow", "wandb")
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


def run_params(spec: RunSpec) -> dict[str, Any]:
    """What a run was asked to do: identity, resolved hyperparameters and run settings."""
    head = {"task": spec.task, "task_id": spec.task_id, "optimizer": spec.optimizer}
    head["seed"] = spec.seed
    if spec.target is not None:
        sign = "<=" if spec.target.direction == "min" else ">="
        head["target"] = f"{spec.target.metric} {sign} {spec.target.value:g}"
    return {
        **head,
        **_flat("opt.", spec.hparams),
        **_flat("run.", spec.settings.model_dump()),
        **_flat("task.", spec.task_options),
    }


def summary(record: RunRecord) -> dict[str, float]:
    """The numbers of a finished run (finite ones only: trackers refuse NaN in places)."""
    values: dict[str, Any] = {
        "tokens_to_target": record.tokens_to_target,
        "seconds_to_target": record.seconds_to_target,
        "steps_to_target": record.steps_to_target,
        "steps_done": record.steps_done,
        "tokens_done": record.tokens_done,
        "train_seconds": record.train_seconds,
        "tokens_per_second": record.tokens_per_second,
        "optimizer_state_bytes": record.optimizer_state_bytes,
        "reached_target": float(record.tokens_to_target is not None),
        **_flat("best_", record.best_metrics),
        **_flat("final_", record.final_metrics),
    }
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def _text(value: Any) -> str | int | float | bool:
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, default=str)


class TensorBoardTracker(RunCallback):
    """Event files per run under ``OUT/tensorboard/GROUP/RUN_ID`` (TensorBoard groups folders)."""

    def __init__(self, group: str, out_dir: Path):
        self.root = Path(out_dir) / "tensorboard" / group
        self.writer = None

    def on_start(self, spec: RunSpec, unit: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.unit = unit
        self.writer = SummaryWriter(log_dir=str(self.root / spec.run_id))
        table = "\n".join(f"| {k} | {_text(v)} |" for k, v in run_params(spec).items())
        self.writer.add_text("params", "| key | value |\n| --- | --- |\n" + table, 0)
        self.params = {k: _text(v) for k, v in run_params(spec).items()}

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        self.writer.add_scalar("train/loss", point.loss, point.step)
        self.writer.add_scalar("train/lr", point.lr, point.step)
        if point.grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", point.grad_norm, point.step)
        self.writer.add_scalar(f"train/{self.unit}_per_second", tokens_per_second, point.step)

    def on_eval(self, point: EvalPoint) -> None:
        for key, value in point.metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, point.step)
        self.writer.add_scalar(f"eval/{self.unit}", point.tokens, point.step)

    def on_end(self, record: RunRecord) -> None:
        metrics = {f"summary/{k}": v for k, v in summary(record).items()}
        # the hparams plugin's table: one row per run, in this run's own folder
        self.writer.add_hparams(self.params, metrics, run_name=".")
        self.writer.add_text("status", record.status, record.steps_done)
        self.writer.close()


class MLflowTracker(RunCallback):
    """One MLflow run per cell in the experiment named ``group``."""

    def __init__(self, group: str, out_dir: Path, uri: str | None):
        from mlflow.tracking import MlflowClient

        allow_folder(uri)
        self.uri = uri or (Path(out_dir) / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.group = group
        self.run_id: str | None = None

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.group)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.group)
        except Exception:  # another worker created it first
            return self.client.get_experiment_by_name(self.group).experiment_id

    def on_start(self, spec: RunSpec, unit: str) -> None:
        from mlflow.entities import Param

        self.unit = unit
        tags = {"bench.run_id": spec.run_id, "bench.task": spec.task_id, "bench.group": self.group}
        run = self.client.create_run(self._experiment(), run_name=spec.run_id, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(_text(v))) for k, v in run_params(spec).items()]
        for k in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[k : k + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items() if math.isfinite(v)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        values = {"train/loss": point.loss, "train/lr": point.lr}
        if point.grad_norm is not None:
            values["train/grad_norm"] = point.grad_norm
        values[f"train/{self.unit}_per_second"] = tokens_per_second
        self._metrics(values, point.step)

    def on_eval(self, point: EvalPoint) -> None:
        self._metrics({f"eval/{k}": v for k, v in point.metrics.items()}, point.step)

    def on_end(self, record: RunRecord) -> None:
        self._metrics({f"summary/{k}": v for k, v in summary(record).items()}, record.steps_done)
        self.client.set_tag(self.run_id, "bench.status", record.status)
        status = "FINISHED" if record.status == "done" else "FAILED"
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker(RunCallback):
    """One W&B run per cell, offline, in project ``bench`` and group ``group``."""

    def __init__(self, group: str, out_dir: Path):
        self.dir = Path(out_dir) / "wandb"
        self.group = group
        self.run = None

    def on_start(self, spec: RunSpec, unit: str) -> None:
        import wandb

        self.unit = unit
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project="bench",
            group=self.group,
            name=spec.run_id,
            job_type=spec.task_id,
            config={k: _text(v) for k, v in run_params(spec).items()},
            dir=str(self.dir),
            mode="offline",
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.run.define_metric("*", step_metric="step")

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        values = {"step": point.step, "train/loss": point.loss, "train/lr": point.lr}
        if point.grad_norm is not None:
            values["train/grad_norm"] = point.grad_norm
        values[f"train/{self.unit}_per_second"] = tokens_per_second
        self.run.log(values)

    def on_eval(self, point: EvalPoint) -> None:
        self.run.log({"step": point.step, **{f"eval/{k}": v for k, v in point.metrics.items()}})

    def on_end(self, record: RunRecord) -> None:
        self.run.summary.update({**summary(record), "status": record.status})
        self.run.finish(exit_code=0 if record.status == "done" else 1)


class Trackers(RunCallback):
    """Several trackers as one callback, called in order."""

    def __init__(self, trackers: list[RunCallback]):
        self.trackers = trackers

    def on_start(self, spec: RunSpec, unit: str) -> None:
        for t in self.trackers:
            t.on_start(spec, unit)

    def on_log(self, point: TrainPoint, tokens_per_second: float) -> None:
        for t in self.trackers:
            t.on_log(point, tokens_per_second)

    def on_eval(self, point: EvalPoint) -> None:
        for t in self.trackers:
            t.on_eval(point)

    def on_end(self, record: RunRecord) -> None:
        for t in self.trackers:
            t.on_end(record)


def check_trackers(kinds: list[str], mlflow_uri: str | None = None) -> None:
    """Known names whose extra is installed, and an MLflow address it can use; else one error
    line saying how to fix it."""
    for kind in kinds:
        if kind not in TRACKERS:
            raise ConfigError(f"unknown tracker {kind!r}; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(_MODULES[kind]) is None:
            raise ConfigError(
                f'--log {kind} needs the {kind} package: pip install "bench-cli[{kind}]"'
            )
    if mlflow_uri is not None:
        if "mlflow" not in kinds:
            raise ConfigError(
                "--mlflow-uri is where --log mlflow sends the runs; add --log mlflow (or log: "
                "[mlflow] in the suite file), or leave it out"
            )
        _check_mlflow_uri(mlflow_uri)


def allow_folder(uri: str | None) -> None:
    """A folder store (the default under --out, a path or a file:// address): a folder per run,
    safe for parallel workers and readable without a server. MLflow 3 keeps that store in
    maintenance and asks for this opt-in to use it."""
    from urllib.parse import urlsplit

    if uri is None or urlsplit(uri).scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _check_mlflow_uri(uri: str) -> None:
    """An address MLflow can use and, for a server, one where something answers: MLflow's client
    would retry a silent server for minutes before the first run could log."""
    from urllib.parse import urlsplit

    from mlflow.tracking import MlflowClient

    allow_folder(uri)
    try:
        MlflowClient(tracking_uri=uri)
        parts = urlsplit(uri)
        port = parts.port
    except Exception as exc:  # noqa: BLE001 - MLflow's own, for a scheme it does not know
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"--mlflow-uri {uri}: MLflow cannot use it ({clip(first, 120)}); give a server "
            "(http://HOST:PORT), a database (sqlite:///FILE) or a folder (file:///PATH)"
        ) from None
    if parts.scheme in ("http", "https") and parts.hostname:
        port = port or (443 if parts.scheme == "https" else 80)
        if why := unanswered(parts.hostname, port):
            raise ConfigError(
                f"--mlflow-uri {uri}: nothing answers at {parts.hostname}:{port} ({why}); start "
                "the server there (mlflow server --port PORT), or leave the option out to log "
                "under --out"
            )


def tracker_callback(
    kinds: list[str], group: str, out_dir: Path, mlflow_uri: str | None = None
) -> RunCallback:
    """One callback logging every run to each tracker in ``kinds`` (duplicates count once)."""
    kinds = list(dict.fromkeys(kinds))
    check_trackers(kinds)
    made: list[RunCallback] = []
    for kind in kinds:
        if kind == "tensorboard":
            made.append(TensorBoardTracker(group, out_dir))
        elif kind == "mlflow":
            made.append(MLflowTracker(group, out_dir, mlflow_uri))
        else:
            made.append(WandbTracker(group, out_dir))
    return Trackers(made)
