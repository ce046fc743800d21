"""THE run loop: the one place where a model is trained.

nanoGPT's order: set the lr; evaluate at the interval (model and optimizer in eval mode, clock
stopped); forward; backward; clip; step; ``zero_grad(set_to_none=True)``. ``loss.item()`` is read
only at log points (it is a host sync). A non-finite loss or metric ends the run as ``diverged``;
any other exception inside the loop ends it as ``error``; both are records, not crashes. So does
a target metric (to minimise) that rises above ``task.divergence_factor`` (default 10) times its
value at step 0: the run is ``diverged``, its record holds the bound and the reason.

The clock: ``train_seconds`` counts training steps only. Building the model and optimizer, and the
first training step (where ``torch.compile`` compiles and allocators warm up), are one-time costs
recorded apart in ``setup_seconds``; the clock starts after the first step. Evaluation is never
timed. Under ``torchrun`` the loop trains with DistributedDataParallel (``bench_cli.distributed``).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench_cli import distributed as ddp
from bench_cli.checkpoint import Checkpointer, rng_state, set_rng_state
from bench_cli.config import RunSettings
from bench_cli.environment import environment, resolve_device  # noqa: F401 - re-exported
from bench_cli.errors import Terminated, describe
from bench_cli.registry import build_optimizer
from bench_cli.registry._base import state_bytes
from bench_cli.results.metrics import best_metrics, to_target
from bench_cli.results.record import EvalPoint, ParamGroupInfo, RunRecord, TrainPoint
from bench_cli.spec import RunCallback, RunSpec, record_fields  # noqa: F401 - re-exported
from bench_cli.tasks.base import Task


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


def checkpoint_minutes(s: RunSettings, device: torch.device) -> float | None:
    """``checkpoint_minutes`` as set; by default 10 on a GPU and off on a CPU; 0 turns it off."""
    if s.checkpoint_minutes is None:
        return 10.0 if device.type == "cuda" else None
    return s.checkpoint_minutes or None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def run(
    spec: RunSpec,
    task: Task,
    device: torch.device,
    callback: RunCallback | None = None,
    checkpoint_dir: Path | None = None,
) -> RunRecord:
    """Train once as ``spec`` says and return the record (never raises for a failed run).

    With ``checkpoint_dir``, the run saves a checkpoint there every ``checkpoint_minutes`` and
    starts from the last one it finds; the checkpoint is removed once the record exists.
    """
    cb = callback or RunCallback()
    s = spec.settings
    started = _now()
    t_setup = time.perf_counter()
    cb.on_start(spec, task.unit)

    curve: list[EvalPoint] = []
    train_curve: list[TrainPoint] = []
    status, error = "done", None
    train_seconds = eval_seconds = setup_seconds = 0.0
    step = drawn = 0
    per_step = task.units_per_step
    model = opt = None
    modes = False
    grad_evals_per_step = 1
    watch = spec.target or task.default_target()
    factor = getattr(task, "divergence_factor", None)
    bound: float | None = None
    ckpt = Checkpointer(checkpoint_dir, spec.run_id, checkpoint_minutes(s, device))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluate() -> bool:
        """Append an eval point (rank 0 evaluates); False if a metric is not finite or the
        watched metric crossed the divergence bound."""
        nonlocal eval_seconds, bound, error
        t0 = time.perf_counter()
        metrics = None
        if ddp.rank() == 0:
            model.eval()
            if modes:
                opt.eval()  # Schedule-Free: evaluate at x, not y
            task.steps_done = step
            with torch.no_grad():
                metrics = task.evaluate(model)
            if modes:
                opt.train()
            model.train()
        metrics = ddp.from_rank0(metrics)
        eval_seconds += time.perf_counter() - t0
        point = EvalPoint(step=step, tokens=step * per_step, seconds=train_seconds, metrics=metrics)
        curve.append(point)
        cb.on_eval(point)
        if not all(math.isfinite(v) for v in metrics.values()):
            return False
        value = metrics.get(watch.metric) if watch and watch.direction == "min" else None
        if value is not None and factor and bound is None and step == 0:
            bound = factor * max(abs(value), 1e-12)
        if value is not None and bound is not None and value > bound:
            error = (
                f"diverged: {watch.metric} {value:.4g} is above {factor:g} x its value at step 0 "
                f"(the divergence bound {bound:.4g})"
            )
            return False
        return True

    try:  # set-up failures (out of memory, a plug-in's bug) are recorded like any other
        torch.manual_seed(spec.seed)  # model init and dropout depend on the seed only
        model = task.build_model().to(device)
        opt = build_optimizer(spec.optimizer, task.param_groups(model), **spec.hparams)
        params = [p for g in opt.param_groups for p in g["params"]]
        train_model = model
        if ddp.active():
            ids = [device.index] if device.type == "cuda" else None
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=ids, gradient_as_bucket_view=True
            )
        train_model = torch.compile(train_model) if s.compile else train_model
        base_lrs = [g["lr"] for g in opt.param_groups]
        modes = getattr(opt, "has_train_eval_modes", False)
        warmup = not (getattr(opt, "owns_warmup", False) or getattr(opt, "owns_lr_schedule", False))
        decay = not getattr(opt, "owns_lr_schedule", False)
        lookahead = getattr(opt, "needs_lookahead_grad", False)
        grad_evals_per_step = 2 if lookahead else getattr(opt, "grad_evals_per_step", 1)

        saved = ckpt.load()
        if saved is not None:  # resume: weights, state, data position, randomness, clock
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            step, drawn = saved["step"], saved["drawn"]
            curve = [EvalPoint(**p) for p in saved["curve"]]
            train_curve = [TrainPoint(**p) for p in saved["train_curve"]]
            train_seconds, eval_seconds = saved["train_seconds"], saved["eval_seconds"]
            bound = saved.get("bound")
            setup_seconds = saved["setup_seconds"]
            set_rng_state(saved["rng"], device)
        pending = None  # MARS exact: the batch drawn ahead, trained on at the next step
        batches: Iterator[Any] = task.batches_from(
            spec.seed, max(0, drawn - 1) if lookahead and step else drawn
        )
        if lookahead and step:
            pending = next(batches)

        def draw() -> Any:
            nonlocal drawn
            drawn += 1
            return ddp.shard(next(batches))

        model.train()
        if modes:
            opt.train()
        if saved is None and not evaluate():
            status = "diverged"
        sync()
        t_start = time.perf_counter()
        first_step = saved is None
        while status == "done" and step < s.steps:
            mult = lr_multiplier(step, s, warmup, decay)
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * mult
            batch = draw() if pending is None else pending
            if lookahead:  # MARS exact: grad of the next batch at the current point
                pending = draw()
                task.loss(train_model, pending).backward()
                if s.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                opt.store_lookahead_grad()
                opt.zero_grad(set_to_none=True)
            loss = task.loss(train_model, batch)
            loss.backward()
            step += 1
            log_now = step % s.log_interval == 0 or step % s.eval_interval == 0 or step == s.steps
            norm = None
            if s.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            elif log_now:
                norm = _grad_norm(params)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if first_step:  # compilation and warm-up are one-time costs, not training time
                sync()
                setup_seconds += time.perf_counter() - t_setup
                t_start, first_step = time.perf_counter(), False

            at_eval = step % s.eval_interval == 0 or step == s.steps
            if log_now:
                loss_value = ddp.mean(loss.detach()).item()  # sync point
                elapsed = train_seconds + time.perf_counter() - t_start
                point = TrainPoint(
                    step=step,
                    loss=loss_value,
                    lr=opt.param_groups[0]["lr"],
                    grad_norm=float(norm) if norm is not None else None,
                )
                train_curve.append(point)
                cb.on_log(point, step * per_step / max(elapsed, 1e-9))
                if not math.isfinite(loss_value):
                    status = "diverged"
                    at_eval = True
                if s.max_seconds is not None and elapsed >= s.max_seconds:
                    at_eval = True
                if s.max_seconds is not None:  # rank 0's clock decides for every rank
                    at_eval = ddp.from_rank0(at_eval)
            if at_eval:
                sync()
                train_seconds += time.perf_counter() - t_start  # clock stops for evaluation
                if not evaluate() and status == "done":
                    status = "diverged"
                if ddp.from_rank0(s.max_seconds is not None and train_seconds >= s.max_seconds):
                    break
                if status == "done" and step < s.steps and ddp.from_rank0(ckpt.due()):
                    if ddp.rank() == 0:
                        ckpt.save(
                            {
                                "model": model.state_dict(),
                                "optimizer": opt.state_dict(),
                                "step": step,
                                "drawn": drawn,
                                "curve": [p.model_dump() for p in curve],
                                "train_curve": [p.model_dump() for p in train_curve],
                                "train_seconds": train_seconds,
                                "eval_seconds": eval_seconds,
                                "setup_seconds": setup_seconds,
                                "bound": bound,
                                "rng": rng_state(device),
                            }
                        )
                t_start = time.perf_counter()
    except Terminated:
        raise
    except (Exception, SystemExit) as exc:  # a failed run is a result: record it, go on
        status = "error"
        error = f"{describe(exc)}\n{traceback.format_exc(limit=3)}"

    record = _record(spec, task, device, status, error, curve, train_curve, opt)
    record = record.model_copy(
        update=dict(
            steps_done=step,
            tokens_done=step * per_step,
            grad_evals=step * grad_evals_per_step,
            grad_evals_per_step=grad_evals_per_step,
            divergence_bound=bound,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            setup_seconds=setup_seconds,
            tokens_per_second=step * per_step / train_seconds if train_seconds > 0 else None,
            started_at=started,
        )
    )
    cb.on_end(record)
    return record


def _branches(opt) -> dict[str, int] | None:
    branches = getattr(opt, "branches", None) if opt is not None else None
    return dict(branches() if callable(branches) else branches) if branches else None


def _record(spec, task, device, status, error, curve, train_curve, opt) -> RunRecord:
    directions = dict(task.metric_directions)
    reached = to_target(curve, spec.target) if spec.target and status != "error" else None
    return RunRecord(
        **record_fields(spec),
        seed_independent=task.seed_independent,
        unit=task.unit,
        status=status,
        error=error,
        tokens_to_target=reached[0] if reached else None,
        seconds_to_target=reached[1] if reached else None,
        steps_to_target=reached[2] if reached else None,
        metric_directions=directions,
        final_metrics=curve[-1].metrics if curve else {},
        best_metrics=best_metrics(curve, directions),
        curve=curve,
        train_curve=train_curve or None,
        probe_curve=[p for p in curve if "probe_loss" in p.metrics] or None,
        optimizer_state_bytes=state_bytes(opt) if opt is not None else 0,
        optimizer_branches=_branches(opt),
        param_groups=[
            ParamGroupInfo(
                name=str(g.get("name", f"group{i}")),
                tensors=len(g["params"]),
                numel=sum(p.numel() for p in g["params"]),
                weight_decay=g.get("weight_decay"),
            )
            for i, g in enumerate(opt.param_groups if opt is not None else [])
        ],
        env=environment(device, ddp.world_size()),
        started_at=_now(),
        finished_at=_now(),
    )
