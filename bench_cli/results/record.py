"""The one record schema: a frozen ``RunRecord`` per run, stored as one JSON file.

This module (like all of ``bench_cli.results``) never imports torch: records are plain data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Status = Literal["done", "diverged", "error"]
#: why a run exists: ``score`` runs enter verdicts; ``tune`` runs choose a configuration;
#: ``calibrate`` runs set a calibrated target; none of the last two is ever scored
Role = Literal["score", "tune", "calibrate"]
Direction = Literal["min", "max"]


class _Frozen(BaseModel):
    # NaN/inf (a diverged run's metrics) are written as JSON's NaN/Infinity and read back
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class Target(_Frozen):
    """The metric a run must reach: ``metric`` <= ``value`` (min) or >= ``value`` (max)."""

    metric: str
    value: float
    direction: Direction = "min"

    def reached(self, x: float) -> bool:
        return x <= self.value if self.direction == "min" else x >= self.value


class EvalPoint(_Frozen):
    """One evaluation: after ``step`` optimizer steps, ``tokens`` units consumed, ``seconds`` of
    training (evaluation excluded)."""

    step: int = Field(ge=0)
    tokens: int = Field(ge=0)
    seconds: float = Field(ge=0, allow_inf_nan=False)
    metrics: dict[str, float]


class TrainPoint(_Frozen):
    """A training-loss reading at ``step`` (every ``log_interval`` steps)."""

    step: int
    loss: float
    lr: float
    grad_norm: float | None = None


class ParamGroupInfo(_Frozen):
    name: str
    tensors: int
    numel: int
    weight_decay: float | None = None


class Env(_Frozen):
    device: str
    device_name: str
    torch: str
    bench: str
    python: str
    platform: str
    git_sha: str | None = None
    #: CPU runs: torch's intra-op threads, the CPU model and the 1-minute load average at start
    threads: int | None = None
    cpu_model: str | None = None
    load_average: float | None = None
    #: DDP: how many processes trained this run together
    world_size: int = 1


class RunRecord(_Frozen):
    """Everything about one run of one optimizer on one task with one seed."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    task: str
    task_id: str = Field(
        "",
        description="which variant of the task: the suite's task id, or the task name and "
        "the options that differ from its defaults; tables group runs by it",
    )
    task_options: dict[str, Any]
    optimizer: str
    hparams: dict[str, Any] = Field(description="fully resolved, defaults included")
    settings: dict[str, Any] = Field(description="run settings: steps, schedule, clipping, ...")
    seed: int
    role: Role = "score"
    config: dict[str, Any] = Field(
        {}, description="the swept hyperparameter values of this run's grid point (a suite's)"
    )
    seed_independent: bool = Field(
        False, description="the task's outcome does not depend on the seed: seeds count as one"
    )
    unit: str = Field(description="what 'tokens' counts for this task: tokens, images or steps")
    status: Status
    error: str | None = None
    target: Target | None = None
    tokens_to_target: float | None = Field(None, ge=0, allow_inf_nan=False)
    seconds_to_target: float | None = Field(None, ge=0, allow_inf_nan=False)
    steps_to_target: float | None = Field(None, ge=0, allow_inf_nan=False)
    metric_directions: dict[str, Direction] = {}
    final_metrics: dict[str, float] = {}
    best_metrics: dict[str, float] = {}
    curve: list[EvalPoint] = []
    probe_curve: list[EvalPoint] | None = None
    steps_done: int = Field(0, ge=0)
    tokens_done: int = Field(0, ge=0)
    grad_evals: int = Field(0, ge=0, description="gradient evaluations (forward+backward passes)")
    optimizer_branches: dict[str, int] | None = Field(
        None,
        description="for an optimizer with branches (MARS): how many tensors took each update",
    )
    divergence_bound: float | None = Field(
        None,
        description="the value of the target metric above which the run counted as diverged "
        "(the task's divergence factor times its value at step 0)",
    )
    grad_evals_per_step: int = 1
    setup_seconds: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="one-time costs left out of the clock: data, model, compile, warm-up",
    )
    train_curve: list[TrainPoint] | None = Field(
        None, description="training loss and lr every log_interval steps"
    )
    train_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    eval_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    tokens_per_second: float | None = Field(None, ge=0, allow_inf_nan=False)
    optimizer_state_bytes: int = 0
    param_groups: list[ParamGroupInfo] = []
    env: Env
    started_at: str
    finished_at: str

    @property
    def task_key(self) -> str:
        """What tables and gates group runs by: one variant of one task."""
        return self.task_id or self.task
