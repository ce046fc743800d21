"""THE run loop: the one place where a model is trained.

nanoGPT's order: set the lr; evaluate at the interval (model and optimizer in eval mode, clock
stopped); forward; backward; clip; step; ``zero_grad(set_to_none=True)``. ``loss.item()`` is read
only at log points (it is a host sync). A non-finite loss or metric ends the run as ``diverged``;
any other exception inside the loop ends it as ``error``; both are records, not crashes.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from bench_cli.config import RunSettings
from bench_cli.registry import build_optimizer
from bench_cli.registry._base import state_bytes
from bench_cli.results.metrics import best_metrics, to_target
from bench_cli.results.record import Env, EvalPoint, ParamGroupInfo, RunRecord, Target
from bench_cli.tasks.base import Task


class RunSpec(BaseModel):
    """A fully resolved run: what the record stores and what the run id hashes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    task: str
    task_id: str
    task_options: dict[str, Any]
    optimizer: str
    hparams: dict[str, Any]
    settings: RunSettings
    seed: int
    target: Target | None


class RunCallback:
    """Progress hooks; the loop calls them, they never change the run."""

    def on_start(self, spec: RunSpec, unit: str) -> None: ...
    def on_log(self, step: int, loss: float, tokens_per_second: float) -> None: ...
    def on_eval(self, point: EvalPoint) -> None: ...
    def on_end(self, record: RunRecord) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def lr_multiplier(step: int, s: RunSettings, warmup: bool, decay: bool) -> float:
    """Linear warmup over ``warmup_steps``, then cosine or linear decay to ``min_lr_ratio``."""
    if warmup and step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    if not decay or s.schedule == "constant":
        return 1.0
    start = s.warmup_steps if warmup else 0
    progress = min(1.0, (step - start) / max(1, s.steps - start))
    if s.schedule == "cosine":
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - s.min_lr_ratio) * progress


def environment(device: torch.device) -> Env:
    import platform
    import subprocess
    from pathlib import Path

    import bench_cli

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine() or device.type
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(bench_cli.__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    return Env(
        device=str(device),
        device_name=device_name,
        torch=torch.__version__,
        bench=bench_cli.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        git_sha=sha,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _finite(x: float) -> bool:
    return math.isfinite(x)


def run(
    spec: RunSpec, task: Task, device: torch.device, callback: RunCallback | None = None
) -> RunRecord:
    """Train once as ``spec`` says and return the record (never raises for a failed run)."""
    cb = callback or RunCallback()
    s = spec.settings
    started = _now()
    cb.on_start(spec, task.unit)

    curve: list[EvalPoint] = []
    status, error = "done", None
    train_seconds = eval_seconds = 0.0
    step = 0
    per_step = task.units_per_step
    model = opt = None
    modes = False

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluate() -> bool:
        """Append an eval point; False if a metric is not finite."""
        nonlocal eval_seconds
        t0 = time.perf_counter()
        model.eval()
        if modes:
            opt.eval()  # Schedule-Free: evaluate at x, not y
        task.steps_done = step
        with torch.no_grad():
            metrics = task.evaluate(model)
        if modes:
            opt.train()
        model.train()
        eval_seconds += time.perf_counter() - t0
        point = EvalPoint(step=step, tokens=step * per_step, seconds=train_seconds, metrics=metrics)
        curve.append(point)
        cb.on_eval(point)
        return all(_finite(v) for v in metrics.values())

    try:  # set-up failures (out of memory, a plug-in's bug) are recorded like any other
        torch.manual_seed(spec.seed)  # model init and dropout depend on the seed only
        model = task.build_model().to(device)
        opt = build_optimizer(spec.optimizer, task.param_groups(model), **spec.hparams)
        train_model = torch.compile(model) if s.compile else model
        base_lrs = [g["lr"] for g in opt.param_groups]
        modes = getattr(opt, "has_train_eval_modes", False)
        warmup = not (getattr(opt, "owns_warmup", False) or getattr(opt, "owns_lr_schedule", False))
        decay = not getattr(opt, "owns_lr_schedule", False)
        lookahead = getattr(opt, "needs_lookahead_grad", False)
        batches: Iterator[Any] = task.batches(spec.seed)
        pending = None  # MARS exact: the batch drawn ahead, trained on at the next step

        model.train()
        if modes:
            opt.train()
        if not evaluate():
            status = "diverged"
        sync()
        t_start = time.perf_counter()
        while status == "done" and step < s.steps:
            mult = lr_multiplier(step, s, warmup, decay)
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * mult
            batch = next(batches) if pending is None else pending
            if lookahead:  # MARS exact: grad of the next batch at the current point
                pending = next(batches)
                task.loss(train_model, pending).backward()
                if s.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                opt.store_lookahead_grad()
                opt.zero_grad(set_to_none=True)
            loss = task.loss(train_model, batch)
            loss.backward()
            if s.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1

            at_eval = step % s.eval_interval == 0 or step == s.steps
            if step % s.log_interval == 0 or at_eval:
                loss_value = loss.item()  # sync point
                elapsed = train_seconds + time.perf_counter() - t_start
                cb.on_log(step, loss_value, step * per_step / max(elapsed, 1e-9))
                if not _finite(loss_value):
                    status = "diverged"
                    at_eval = True
                if s.max_seconds is not None and elapsed >= s.max_seconds:
                    at_eval = True
            if at_eval:
                sync()
                train_seconds += time.perf_counter() - t_start  # clock stops for evaluation
                if not evaluate() and status == "done":
                    status = "diverged"
                if s.max_seconds is not None and train_seconds >= s.max_seconds:
                    break
                t_start = time.perf_counter()
    except Exception as exc:  # a failed run is a result: record it, let the suite go on
        status = "error"
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"

    directions = dict(task.metric_directions)
    reached = to_target(curve, spec.target) if spec.target and status != "error" else None
    record = RunRecord(
        run_id=spec.run_id,
        task=spec.task,
        task_id=spec.task_id,
        task_options=spec.task_options,
        optimizer=spec.optimizer,
        hparams=spec.hparams,
        settings=s.model_dump(),
        seed=spec.seed,
        unit=task.unit,
        status=status,
        error=error,
        target=spec.target,
        tokens_to_target=reached[0] if reached else None,
        seconds_to_target=reached[1] if reached else None,
        steps_to_target=reached[2] if reached else None,
        metric_directions=directions,
        final_metrics=curve[-1].metrics if curve else {},
        best_metrics=best_metrics(curve, directions),
        curve=curve,
        probe_curve=[p for p in curve if "probe_loss" in p.metrics] or None,
        steps_done=step,
        tokens_done=step * per_step,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        tokens_per_second=step * per_step / train_seconds if train_seconds > 0 else None,
        optimizer_state_bytes=state_bytes(opt) if opt is not None else 0,
        param_groups=[
            ParamGroupInfo(
                name=str(g.get("name", f"group{i}")),
                tensors=len(g["params"]),
                numel=sum(p.numel() for p in g["params"]),
                weight_decay=g.get("weight_decay"),
            )
            for i, g in enumerate(opt.param_groups if opt is not None else [])
        ],
        env=environment(device),
        started_at=started,
        finished_at=_now(),
    )
    cb.on_end(record)
    return record
