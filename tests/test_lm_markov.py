"""lm-markov: a deterministic never-repeating stream, and a floor checked by brute force."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.tasks import TASKS
from bench_cli.tasks.lm.markov import LMMarkov, MarkovSource


def make(**options) -> LMMarkov:
    cls = TASKS.get("lm-markov")
    task = cls(cls.Options(preset="tiny", **options))
    task.prepare(torch.device("cpu"))
    return task


def take(stream, n: int) -> list[torch.Tensor]:
    """Whole windows (inputs plus the last target) of the first ``n`` batches."""
    return [torch.cat([x, y[:, -1:]], dim=1) for (x, y), _ in zip(stream, range(n))]


class Oracle(nn.Module):
    """Predicts with the source's true conditionals (mixed with uniform by ``eps``)."""

    def __init__(self, source: MarkovSource, eps: float = 0.0):
        super().__init__()
        probs = source.log_probs().exp()
        self.table = ((1 - eps) * probs + eps / source.vocab).log().float()
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.source.order
        out = torch.zeros(*x.shape, self.source.vocab)
        # input position j predicts x[j + 1] from x[j - k + 1 .. j]
        # the contexts of positions k .. T of x and one more symbol: positions j = k-1 .. T-1
        padded = torch.cat([x, torch.zeros(len(x), 1, dtype=torch.long)], dim=1)
        ctx = self.source.contexts(padded)
        out[:, k - 1 :] = self.table[ctx]
        return out


def test_the_stream_is_deterministic_per_seed_and_resumes_at_any_step() -> None:
    task = make()
    a, b, c = take(task.batches(0), 4), take(task.batches(0), 4), take(task.batches(1), 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
    # a fresh task (a fresh process) draws the same stream
    assert all(torch.equal(x, y) for x, y in zip(a, take(make().batches(0), 4)))
    per = task._chunk_batches()
    start = per - 2  # across a chunk boundary
    whole = take(task.batches(3), start + 4)
    resumed = take(task.batches_from(3, start), 4)
    assert all(torch.equal(x, y) for x, y in zip(whole[start:], resumed))


def test_floor_matches_a_brute_force_computation_on_a_small_source() -> None:
    task = make(vocab=3, order=2, support=2, batch_size=4, block_size=10, eval_batches=3)
    # the components, drawn again as the source states: per order, symbols then gamma weights
    rng = np.random.default_rng(task.options.source_seed)
    parts = []
    for n in (3, 9):
        syms = rng.integers(3, size=(n, 2))
        parts.append(list(zip(syms, rng.gamma(task.options.concentration, size=(n, 2)) + 1e-12)))
    total, windows = 0.0, 0
    for w in torch.cat([b for b in task.val_batches]).tolist():
        nll = []
        for t in range(2, len(w)):
            context = w[t - 2] * 3 + w[t - 1]
            # the mixture by hand: order 1 (the last symbol) and order 2, in equal parts
            p = 0.0
            for share, rows in ((0.5, parts[0][w[t - 1]]), (0.5, parts[1][context])):
                syms, ws = rows
                p += share * sum(float(x) for s, x in zip(syms, ws / ws.sum()) if s == w[t])
            nll.append(-math.log(p))
        total += sum(nll) / len(nll)
        windows += 1
    assert windows == 12
    assert task.floor == pytest.approx(total / windows, rel=1e-12)


def test_generated_transitions_follow_the_true_conditionals() -> None:
    src = MarkovSource(vocab=4, order=2, support=3, concentration=1.0, seed=5)
    w = src.generate(4000, 40, torch.Generator().manual_seed(0))
    prev, cur = (w[:, :-2] * 4 + w[:, 1:-1]).reshape(-1), w[:, 2:].reshape(-1)
    counts = torch.bincount(prev * 4 + cur, minlength=64).view(16, 4).double()
    freq = counts / counts.sum(dim=1, keepdim=True)
    true = src.log_probs().exp()
    assert torch.all(counts[true == 0] == 0)  # nothing outside a context's support
    n = counts.sum(dim=1, keepdim=True)
    # within 5 binomial standard errors of every true probability
    assert torch.all((freq - true).abs() <= 5 * (true * (1 - true) / n).sqrt() + 1e-9)


def test_a_model_with_the_true_conditionals_reaches_the_floor() -> None:
    task = make()
    with torch.no_grad():
        exact = task.evaluate(Oracle(task.source))
        blurred = task.evaluate(Oracle(task.source, eps=0.2))
    assert abs(exact["gap"]) < 1e-5 and exact["val_loss"] == pytest.approx(exact["floor"], abs=1e-5)
    assert blurred["gap"] > 0.01 and blurred["floor"] == exact["floor"]
    # the standard error is that of the per-window mean losses
    x = torch.cat([b for b in task.val_batches])
    losses = task.window_losses(Oracle(task.source), (x[:, :-1], x[:, 1:]))
    assert exact["val_loss_se"] == pytest.approx(
        float(losses.std()) / math.sqrt(len(losses)), rel=1e-4
    )


def test_training_and_validation_streams_do_not_overlap() -> None:
    # a language rich enough that two independent windows never coincide by chance
    task = make(vocab=64, order=1, support=16, concentration=1.0)
    val = {tuple(w) for w in torch.cat(list(task.val_batches)).tolist()}
    train = [tuple(w) for b in take(task.batches(0), 300) for w in b.tolist()]
    assert len(val) == task.options.eval_batches * task.options.batch_size
    assert len(set(train)) == len(train)  # the training stream never repeats a window
    assert not val & set(train)


def test_tiny_run_through_the_cli_records_floor_and_gap(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--opt",
            "adamw",
            "--task",
            "lm-markov",
            "--set",
            "preset=tiny",
            "--out",
            str(tmp_path),
            "--quiet",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert rec["status"] == "done" and rec["target"]["metric"] == "gap"
    first, last = rec["curve"][0]["metrics"], rec["curve"][-1]["metrics"]
    for m in (first, last):
        assert m["gap"] == pytest.approx(m["val_loss"] - m["floor"], abs=1e-6)
        assert 0 < m["val_loss_se"] < 0.1
    assert last["gap"] < first["gap"] - 0.2 and "train_loss" in last
    assert first["floor"] == last["floor"]


def test_show_states_floor_unigram_and_bigram() -> None:
    task = TASKS.get("lm-markov")(TASKS.get("lm-markov").Options(preset="tiny"))
    (line,) = task.describe_preset()
    task.prepare(torch.device("cpu"))
    assert f"floor {task.floor:.4f}" in line and "bigram" in line and "unigram" in line
    ref = task.reference_losses()
    # a bigram model can only do better than a unigram one, and neither beats the floor
    assert ref["floor"] < ref["bigram"] < ref["unigram"] <= math.log(task.options.vocab) + 0.01
    shown = CliRunner().invoke(app, ["show", "lm-markov"])
    assert shown.exit_code == 0 and line in shown.output.splitlines()


def test_probe_batch_replaces_step_k_and_is_tracked_from_the_start() -> None:
    plain, probed = make(), make(probe_batch_step=3)
    a, b = take(plain.batches(0), 6), take(probed.batches(0), 6)
    assert [i for i in range(6) if not torch.equal(a[i], b[i])] == [3]
    assert torch.equal(b[3], probed._probe)
    assert torch.equal(take(probed.batches_from(0, 3), 1)[0], probed._probe)  # resumed at K
    with torch.no_grad():
        metrics = probed.evaluate(Oracle(probed.source))
    x = probed._probe
    expected = probed.source.nll(x).mean()  # the oracle's loss on the probe batch is its floor
    assert metrics["probe_loss"] == pytest.approx(float(expected), abs=1e-5)
