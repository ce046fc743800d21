"""``bench perf loop``: the run loop against a bare hand-written loop, evaluation, start-up.

What is measured, in one process:

- **tokens/s of the run loop**: ``runner.run`` on the task's AdamW run (the same ``RunSpec`` that
  ``bench run --opt adamw`` plans, evaluation at the task's interval). Its clock is the record's
  ``train_seconds``: it starts after the first step and stops for every evaluation.
- **tokens/s of the bare loop**: ``benchmarks/bare_loop.py``, nanoGPT's loop with torch's own
  AdamW on the same model, data, batches, schedule and clipping, timed the same way (after the
  first step, until a sync at the end). Both figures count the ``steps - 1`` timed steps only.
- The two loops alternate for ``rounds`` rounds (bench then bare, then bare then bench, ...), so
  that drifting clocks, temperatures and neighbours hit both alike; each figure is the total
  tokens over the total seconds of its rounds. **ratio** = run loop / bare loop.
- **evaluation share**: the run loop's ``eval_seconds / train_seconds`` over its rounds; and
  the share of a run of the task's default length (seconds per evaluation and per step as
  measured, evaluations counted at that length), since a short run over-weights evaluation.
- **start-up**: a fresh ``python -m bench_cli run --steps 1`` subprocess with the same task,
  options and device. Its wall time minus the record's ``eval_seconds`` and ``train_seconds`` is
  the time from the command to the end of the first training step (imports, planning, data,
  model and optimizer, the first step and its warm-up), plus writing the record and the
  interpreter's exit, which no in-process clock can see; so it is an upper bound. The record's
  ``setup_seconds`` (model build to the end of the first step) is reported beside it.

On a CPU both loops run on a fixed number of threads (``--threads``, default 1): a small model
gains little from more, and with several threads on a busy machine the timings swing with the
other load (measured on 2 cores: ratios from 0.04 to 7.9 with 2 threads, 0.97 to 1.01 with 1).
The ratio means most on a GPU at the task's real size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench_cli import api, runner
from bench_cli.environment import resolve_device
from bench_cli.errors import BenchError, ConfigError

BARE_LOOP = Path(__file__).resolve().parents[1] / "benchmarks" / "bare_loop.py"
#: settings of the start-up run that the one-step run must set itself
_STARTUP_DROPS = ("steps", "eval_interval", "max_seconds", "compile")


def load_bare_loop():
    """``benchmarks/bare_loop.py`` as a module (it lives beside the package, in the source tree)."""
    if not BARE_LOOP.is_file():
        raise BenchError(
            f"{BARE_LOOP} not found: bench perf loop needs the source checkout, which keeps the "
            "bare loop in benchmarks/"
        )
    spec = importlib.util.spec_from_file_location("bench_bare_loop", BARE_LOOP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def plan(task: str, steps: int, device: str, data: str | None, sets: list[str]):
    """The task and the AdamW ``RunSpec`` of ``bench run --opt adamw`` with these arguments."""
    from bench_cli.tasks.lm.text import CharLM
    from bench_cli.tasks.lm.tokens import is_shards

    req = api.RunRequest(
        task=task, optimizers=["adamw"], steps=steps, data=data, device=device, sets=list(sets)
    )
    task_obj, [spec] = api.plan_runs(req)
    if not isinstance(task_obj, CharLM):
        raise ConfigError(
            f"bench perf loop compares text LM tasks with the bare loop; {task!r} is not one "
            "(use lm-small or lm-medium)"
        )
    o = task_obj.options
    if o.data and is_shards(Path(o.data).expanduser()):
        raise ConfigError(
            "the bare loop reads text files only; pass --data a UTF-8 text file, not token shards"
        )
    if o.probe_batch_step is not None or o.val_data is not None:
        raise ConfigError("drop --set probe_batch_step / val_data: the bare loop has neither")
    if spec.settings.steps < 2:
        raise ConfigError("--steps must be at least 2: the first step is not timed")
    if spec.settings.max_seconds is not None:
        raise ConfigError(
            "drop --set max_seconds: both loops are timed over the same --steps, and a run "
            "stopped by the clock would train fewer"
        )
    return task_obj, spec


def bare_config(bare, task, spec):
    """The bare loop's configuration for the run loop's task options, settings and AdamW."""
    o, s, h = task.options, spec.settings, spec.hparams
    model = task.build_model()
    groups = task.param_groups(model)
    decayed = {id(p) for g in groups if "weight_decay" not in g for p in g["params"]}
    autocast = o.autocast == "bf16" or (o.autocast == "auto" and task.device.type == "cuda")
    return bare.BareConfig(
        n_layer=o.n_layer,
        n_head=o.n_head,
        n_embd=o.n_embd,
        block_size=o.block_size,
        batch_size=o.batch_size,
        dropout=o.dropout,
        tokenizer=o.tokenizer,
        vocab_size=task.vocab_size,
        val_fraction=o.val_fraction,
        steps=s.steps,
        warmup_steps=s.warmup_steps,
        schedule=s.schedule,
        min_lr_ratio=s.min_lr_ratio,
        grad_clip=s.grad_clip,
        log_interval=s.log_interval,
        lr=h["lr"],
        betas=tuple(h["betas"]),
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        amsgrad=h.get("amsgrad", False),
        decay_embeddings=id(model.wte.weight) in decayed,
        autocast=autocast,
        compile=s.compile,
        seed=spec.seed,
    )


def text_path(task) -> Path:
    from bench_cli.tasks.data import TINY_SHAKESPEARE, locate

    return locate(TINY_SHAKESPEARE, task.options.data)


def startup(task: str, device: str, data: str | None, sets: list[str]) -> dict[str, float]:
    """Wall time of a fresh one-step ``bench run`` and where its record says the time went."""
    kept = [x for x in sets if x.split("=", 1)[0].split(".")[-1].strip() not in _STARTUP_DROPS]
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "bench_cli",
            "run",
            "--task",
            task,
            "--opt",
            "adamw",
            "--steps",
            "1",
            "--device",
            device,
            "--out",
            out,
            "--quiet",
        ]
        cmd += [arg for x in kept for arg in ("--set", x)]
        cmd += ["--data", data] if data else []
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BenchError(f"the start-up run failed: {tail[0]}")
        [path] = list(Path(out).glob("*.json"))
        record = json.loads(path.read_text())
    if record["status"] != "done":
        raise BenchError(f"the start-up run {_ended(record['status'], record.get('error'))}")
    return {
        "wall_seconds": wall,
        "setup_seconds": record["setup_seconds"],
        "eval_seconds": record["eval_seconds"],
        "train_seconds": record["train_seconds"],
        "startup_seconds": wall - record["eval_seconds"] - record["train_seconds"],
    }


def perf_loop(
    task: str,
    steps: int,
    device: str = "auto",
    data: str | None = None,
    sets: list[str] | None = None,
    rounds: int = 2,
    threads: int | None = None,
    measure_startup: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run both loops ``rounds`` times each, alternating, then the start-up run; the figures."""
    sets = list(sets or [])
    say = progress or (lambda line: None)
    task_obj, spec = plan(task, steps, device, data, sets)
    dev = resolve_device(spec.settings.device)
    if dev.type == "cpu":
        torch.set_num_threads(threads or 1)
    bare = load_bare_loop()
    task_obj.prepare(dev)
    cfg = bare_config(bare, task_obj, spec)
    path = text_path(task_obj)
    per_step = task_obj.units_per_step
    timed = spec.settings.steps - 1

    bench_rounds: list[dict[str, Any]] = []
    bare_rounds: list[dict[str, Any]] = []

    def run_bench() -> None:
        record = runner.run(spec, task_obj, dev)
        if record.status != "done":
            raise BenchError(f"the run loop {_ended(record.status, record.error)}")
        bench_rounds.append(
            {
                "train_seconds": record.train_seconds,
                "eval_seconds": record.eval_seconds,
                "evaluations": len(record.curve),
                "tokens_per_second": timed * per_step / record.train_seconds,
                "losses": {p.step: p.loss for p in record.train_curve},
            }
        )
        say(f"run loop:  {bench_rounds[-1]['tokens_per_second']:,.0f} tokens/s")

    def run_bare() -> None:
        out = bare.train(cfg, path, dev)
        bare_rounds.append(out)
        say(f"bare loop: {out['tokens_per_second']:,.0f} tokens/s")

    for r in range(rounds):
        for fn in (run_bench, run_bare) if r % 2 == 0 else (run_bare, run_bench):
            fn()
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    train_s = sum(b["train_seconds"] for b in bench_rounds)
    eval_s = sum(b["eval_seconds"] for b in bench_rounds)
    bench_tps = rounds * timed * per_step / train_s
    bare_tps = rounds * timed * per_step / sum(b["seconds"] for b in bare_rounds)
    result: dict[str, Any] = {
        "task": task_obj.registry_name,
        "task_id": spec.task_id,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "compile": spec.settings.compile,
        "steps": spec.settings.steps,
        "steps_timed": timed,
        "rounds": rounds,
        "tokens_per_step": per_step,
        "eval_interval": spec.settings.eval_interval,
        "bench_tokens_per_second": bench_tps,
        "bare_tokens_per_second": bare_tps,
        "ratio": bench_tps / bare_tps,
        "bench_rounds_tokens_per_second": [b["tokens_per_second"] for b in bench_rounds],
        "bare_rounds_tokens_per_second": [b["tokens_per_second"] for b in bare_rounds],
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "evaluations": sum(b["evaluations"] for b in bench_rounds),
        "eval_share": eval_s / train_s,
        "eval_share_default_run": default_run_share(task_obj, spec, eval_s, train_s, bench_rounds),
        "bench_losses": bench_rounds[-1]["losses"],
        "bare_losses": bare_rounds[-1]["losses"],
        "startup": None,
        "startup_seconds": None,
    }
    if measure_startup:
        say("start-up: a fresh `bench run --steps 1`")
        st = startup(task, spec.settings.device, data, sets)
        result["startup"] = st
        result["startup_seconds"] = st["startup_seconds"]
    return result


def evaluations_in(steps: int, interval: int) -> int:
    """Evaluations of a run of ``steps``: at step 0, every ``interval`` steps and at the end."""
    return 1 + steps // interval + (1 if steps % interval else 0)


def default_run_share(task, spec, eval_s: float, train_s: float, rounds: list[dict]) -> float:
    """The evaluation share of a run of the task's default length at this evaluation interval,
    from the measured seconds per evaluation and per timed step (a short run evaluates at step 0
    and at its end, so its own share overstates a full run's)."""
    n_evals = sum(r["evaluations"] for r in rounds)
    n_steps = len(rounds) * (spec.settings.steps - 1)
    steps = task.default_settings()["steps"]
    per_eval, per_step = eval_s / n_evals, train_s / n_steps
    return per_eval * evaluations_in(steps, spec.settings.eval_interval) / (per_step * steps)


def as_markdown(r: dict[str, Any]) -> str:
    n = r["threads"]
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    lines = [
        f"{r['task_id']} on {r['device']}{threads}, torch {r['torch']}, "
        f"{r['steps']} steps ({r['steps_timed']} timed) x {r['rounds']} rounds, "
        f"{r['tokens_per_step']:,} tokens/step" + (", compiled" if r["compile"] else ""),
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| bench run tokens/s | {r['bench_tokens_per_second']:,.0f} |",
        f"| bare loop tokens/s | {r['bare_tokens_per_second']:,.0f} |",
        f"| ratio (bench / bare) | {r['ratio']:.3f} |",
        f"| evaluation share (eval / train seconds) | {r['eval_share']:.1%} "
        f"({r['eval_seconds']:.2f} s / {r['train_seconds']:.2f} s, "
        f"{r['evaluations']} evaluations, every {r['eval_interval']} steps) |",
        f"| evaluation share of a default-length run (estimated) | "
        f"{r['eval_share_default_run']:.1%} |",
    ]
    st = r.get("startup")
    if st:
        lines.append(
            f"| start-up to the first step (s) | {st['startup_seconds']:.2f} "
            f"(wall {st['wall_seconds']:.2f}, of which set-up {st['setup_seconds']:.2f}) |"
        )
    return "\n".join(lines)


def _ended(status: str, error: str | None) -> str:
    """How a timed run ended that should have finished: its error, or that it diverged."""
    if status == "diverged":
        return "diverged (its loss became NaN or inf): a timing needs a run that trains; lower lr"
    return f"ended {status}: {(error or 'no error recorded').splitlines()[0]}"
