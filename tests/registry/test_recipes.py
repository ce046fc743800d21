"""Recipes: each optimizer's values derived from a task's AdamW baseline, as its paper advises;
MARS's ``optimize_1d="auto"`` on vector-only tasks; what the runner reads off an optimizer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bench_cli.errors import ConfigError
from bench_cli.registry import OPTIMIZERS, build_optimizer, optimizer_defaults
from bench_cli.registry.recipes import RECIPES, recommended_hparams
from tests.registry.golden import B0, CASES, STEPS, W0, A, C, a, c

BASE = dict(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)


def _recipe(name: str, task=None) -> dict:
    accepted = set(optimizer_defaults(OPTIMIZERS.get(name)))
    return recommended_hparams(name, BASE, accepted, task=task)


def _lm_task(tokens: int):
    return SimpleNamespace(unit="tokens", units_per_step=tokens, seed_independent=False)


def test_mars_recipe_is_the_papers_gpt2_small_translation() -> None:
    # MARS GPT-2 small: AdamW 6e-4 / wd 0.1 -> MARS 6e-3 / wd 1e-2, lr_1d 3e-3, 1-D decay 0.1
    got = _recipe("mars")
    assert got["lr"] == pytest.approx(6e-3)
    assert got["lr_1d"] == pytest.approx(3e-3)
    assert got["weight_decay"] == pytest.approx(1e-2)
    assert got["weight_decay_1d"] == pytest.approx(0.1)
    assert got["betas"] == (0.95, 0.99)
    assert got["optimize_1d"] == "auto"
    assert got["lr"] * got["weight_decay"] == pytest.approx(BASE["lr"] * BASE["weight_decay"])


def test_lion_recipe_holds_lr_times_decay() -> None:
    got = _recipe("lion")
    assert got["lr"] == pytest.approx(2e-4)  # 3x smaller than AdamW's
    assert got["weight_decay"] == pytest.approx(0.3)  # 3x larger
    assert got["lr"] * got["weight_decay"] == pytest.approx(6e-5)


def test_simplified_ademamix_lr_scaling_and_decay() -> None:
    got = _recipe("simplified-ademamix", _lm_task(32768))
    scale = math.sqrt(0.1 * 0.01)  # sqrt((1 - min_beta1)(1 - beta1)) with 0.9 and 0.99
    assert got["lr"] == pytest.approx(6e-4 * scale)
    assert got["lr"] == pytest.approx(1.897366596e-5)
    assert got["betas"] == (0.99, 0.95)  # beta2 = Adam's
    assert got["min_beta1"] == 0.9  # = Adam's beta1
    assert got["lr"] * got["weight_decay"] == pytest.approx(6e-5)


@pytest.mark.parametrize(
    "task, alpha",
    [
        (_lm_task(32768), 100.0),  # the README's 32k-token point
        (_lm_task(4 * 32768), 25.0),  # linear in 1 / batch
        (_lm_task(1 << 20), 3.125),
        (_lm_task(1536), 100.0),  # below 32k: held at the largest reported value
        (SimpleNamespace(unit="steps", units_per_step=1, seed_independent=True), 0.02),
        (SimpleNamespace(unit="images", units_per_step=128, seed_independent=False), 0.0),
        (None, 0.0),
    ],
)
def test_simplified_ademamix_alpha_follows_the_batch(task, alpha: float) -> None:
    assert _recipe("simplified-ademamix", task)["alpha"] == pytest.approx(alpha)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds(name: str) -> None:
    hp = _recipe(name, _lm_task(4096))
    opt = build_optimizer(name, [torch.zeros(3, 2, requires_grad=True)], **hp)
    assert opt.param_groups[0]["lr"] == pytest.approx(hp["lr"])


# -- MARS on vector-only parameters ---------------------------------------------------------------


def _run_b_only(**hparams) -> torch.Tensor:
    """The golden quadratic's vector b alone, 25 steps, cosine lr from 1e-2."""
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    opt = build_optimizer("mars", [b], **hparams)
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = 1e-2 * 0.5 * (1 + math.cos(math.pi * t / STEPS))
        with torch.no_grad():
            b.grad = a * b + c
        opt.step()
    return b.detach()


def test_auto_runs_the_mars_update_on_a_vector_only_problem() -> None:
    hp = dict(lr=1e-2, betas=(0.95, 0.99), weight_decay=0.1, gamma=0.025)
    got = _run_b_only(**hp, optimize_1d="auto")
    mars_b = torch.tensor(CASES["mars_opt1d_true"][4][6:], dtype=torch.float64)
    torch.testing.assert_close(got, mars_b, rtol=1e-10, atol=0.0)
    # and it is not the AdamW branch (what optimize_1d=False gives on a vector)
    adamw_branch = _run_b_only(**hp, optimize_1d=False)
    assert (got - adamw_branch).abs().max() > 1e-3


def test_auto_keeps_the_official_rule_when_a_matrix_is_present() -> None:
    name, hparams, _, _, expected = CASES["mars_opt1d_false"]
    W = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    opt = build_optimizer(name, [W, b], **{**hparams, "optimize_1d": "auto"})
    assert opt.optimize_1d is False
    assert opt.branches == {"mars": 1, "adamw": 1}
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = 1e-2 * 0.5 * (1 + math.cos(math.pi * t / STEPS))
        with torch.no_grad():
            W.grad = A * W + C
            b.grad = a * b + c
        opt.step()
    got = torch.cat([W.detach().flatten(), b.detach()])
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)


def test_branches_report_what_ran() -> None:
    vec = [torch.zeros(4, requires_grad=True), torch.zeros((), requires_grad=True)]
    assert build_optimizer("mars", vec, optimize_1d="auto").branches == {"mars": 2, "adamw": 0}
    assert build_optimizer("mars", vec).branches == {"mars": 0, "adamw": 2}  # official default
    conv = [torch.zeros(2, 2, 3, 3, requires_grad=True), torch.zeros(3, 2, requires_grad=True)]
    assert build_optimizer("mars", conv, optimize_1d="auto").branches == {"mars": 1, "adamw": 1}


def test_optimize_1d_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match="optimize_1d must be True, False or 'auto'"):
        build_optimizer("mars", [torch.zeros(2, requires_grad=True)], optimize_1d="yes")


def test_grad_evals_per_step() -> None:
    p = [torch.zeros(2, 2, requires_grad=True)]
    assert build_optimizer("mars", p).grad_evals_per_step == 1
    assert build_optimizer("mars", p, is_approx=False).grad_evals_per_step == 2
    for name in OPTIMIZERS.names():
        if name == "mars":
            continue
        kw = {"lr": 1e-2} if optimizer_defaults(OPTIMIZERS.get(name)).get("lr") is None else {}
        opt = build_optimizer(name, [torch.zeros(2, 2, requires_grad=True)], **kw)
        assert getattr(opt, "grad_evals_per_step", 1) == 1
