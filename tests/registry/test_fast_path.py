"""The CUDA fast path against the per-tensor reference: fp32, and bf16 parameters with fp32 state.

Runs on a CUDA GPU with Triton; on a CPU with ``TRITON_INTERPRET=1`` the same kernels run in
Triton's interpreter. Skipped elsewhere.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench_cli.registry import _fast, build_optimizer

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    not (CUDA or INTERPRET), reason="needs a CUDA GPU (or TRITON_INTERPRET=1 on a CPU)"
)
DEVICE = torch.device("cuda" if CUDA else "cpu")

# one configuration per optimizer that exercises every term of its update
CONFIGS = {
    "adamw": dict(lr=1e-2, weight_decay=0.1),
    "ademamix": dict(lr=1e-2, alpha=5.0, beta3_warmup=4, alpha_warmup=4, weight_decay=0.1),
    "ademamix-b1zero": dict(lr=1e-2, betas=(0.0, 0.999, 0.99), alpha=2.0, weight_decay=0.1),
    "simplified-ademamix": dict(
        lr=1e-3, alpha=2.0, beta1_warmup=4, weight_decay=0.1, bias_correction1=True
    ),
    "aggmo-adam": dict(lr=1e-2, weight_decay=0.1),
    "aggmo": dict(lr=1e-2, weight_decay=0.1),
    "lion": dict(lr=1e-3, weight_decay=0.5),
    "schedule-free": dict(lr=1e-2, weight_decay=0.1, warmup_steps=3, r=0.75),
    "mars": dict(lr=1e-2, weight_decay=0.1, lr_1d=5e-3),
    "mars-1d": dict(lr=1e-2, weight_decay=0.1, optimize_1d=True),
    "mars-lion": dict(lr=1e-3, weight_decay=0.1, mars_type="mars-lion"),
}
# the last spans two chunks of a program and part of a third, and ends inside a block
SHAPES = [(67, 33), (33,), (2, 3, 4, 5), (), (5000,), (2 * _fast.CONFIG["chunk"] + 1000 + 37,)]
STEPS = 8


def _make(case: str, dtype: torch.dtype, path: str):
    name = case.split("-b1zero")[0].replace("-1d", "").replace("mars-lion", "mars")
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(s, generator=gen, dtype=torch.float32).to(DEVICE, dtype).requires_grad_()
        for s in SHAPES
    ]
    impl = {"fast": dict(fused=True), "reference": dict(foreach=False, fused=False)}[path]
    opt = build_optimizer(name, params, **CONFIGS[case], **impl)
    if getattr(opt, "has_train_eval_modes", False):
        opt.train()
    return params, opt


def _run(case: str, dtype: torch.dtype, path: str, steps: int = STEPS):
    params, opt = _make(case, dtype, path)
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = CONFIGS[case]["lr"] * (1.0 - 0.05 * t)  # a schedule on the lr
        for p in params:
            scale = 3.0 if t == 0 else 0.5  # large first gradients: MARS clips
            g = torch.randn(p.shape, generator=gen) * scale
            p.grad = g.to(DEVICE, dtype)
        opt.step()
    if getattr(opt, "has_train_eval_modes", False):
        opt.eval()
    return params, opt


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_fast_matches_reference_fp32(case: str) -> None:
    fast, _ = _run(case, torch.float32, "fast")
    ref, _ = _run(case, torch.float32, "reference")
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_fast_bf16_params_keep_fp32_state(case: str) -> None:
    fast, opt = _run(case, torch.bfloat16, "fast", steps=5)
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 or key in ("exp_avg",):
                assert value.dtype == torch.float32, key
    # the reference in fp32 from the same (bf16-rounded) start, on the same gradients
    ref, _ = _run_from_bf16(case)
    for a, b in zip(fast, ref):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.detach().float(), b.detach(), rtol=5e-2, atol=2e-2)


def _run_from_bf16(case: str):
    params, opt = _make(case, torch.bfloat16, "reference")
    params32 = [p.detach().float().requires_grad_() for p in params]
    name = type(opt).registry_name
    opt = build_optimizer(name, params32, **CONFIGS[case], foreach=False, fused=False)
    if getattr(opt, "has_train_eval_modes", False):
        opt.train()
    gen = torch.Generator().manual_seed(1)
    for t in range(5):
        for group in opt.param_groups:
            group["lr"] = CONFIGS[case]["lr"] * (1.0 - 0.05 * t)
        for p in params32:
            scale = 3.0 if t == 0 else 0.5
            g = torch.randn(p.shape, generator=gen) * scale
            p.grad = g.to(DEVICE, torch.bfloat16).float()  # the gradients the bf16 run saw
        opt.step()
    if getattr(opt, "has_train_eval_modes", False):
        opt.eval()
    return params32, opt


def test_default_path_on_cuda_is_fast() -> None:
    if not CUDA:
        pytest.skip("the automatic choice is for CUDA tensors")
    p = [torch.zeros(4, 4, device="cuda", requires_grad=True)]
    assert build_optimizer("adamw", p).use_fast(build_optimizer("adamw", p).param_groups[0], p)
    assert not build_optimizer("adamw", p, foreach=True).use_fast(
        build_optimizer("adamw", p, foreach=True).param_groups[0], p
    )


def test_a_chunk_that_is_not_whole_blocks_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(_fast.CONFIG, "chunk", 1536)
    params, opt = _make("adamw", torch.float32, "fast")
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="must be a multiple of its block"):
        opt.step()
