"""What every optimizer in the registry shares: declarations for the runner, validation, dispatch."""

from __future__ import annotations

import functools
import math
import sys
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

# Measured with benchmarks/optimizer_step.py on a 2-core CPU: the foreach path is faster than the
# per-tensor loop for every optimizer here (fewer Python round trips), so it is the CPU default too.
FOREACH_ON_CPU = True


class OptimizerInfo:
    """Declarations the runner reads; it never guesses what an optimizer needs."""

    #: call ``.train()``/``.eval()`` next to the model's (Schedule-Free)
    has_train_eval_modes: ClassVar[bool] = False
    #: the optimizer warms up its own lr; the runner must not also warm up
    owns_warmup: ClassVar[bool] = False
    #: the optimizer needs no lr schedule at all; the runner keeps the lr constant
    owns_lr_schedule: ClassVar[bool] = False
    #: hyperparameters filled with the run's total number of steps when left as None
    horizon_hparams: ClassVar[tuple[str, ...]] = ()
    #: the run loop must supply the gradient of the next batch at the current point (MARS exact)
    needs_lookahead_grad: bool = False  # may be set per instance (MARS is_approx=False)
    #: forward/backward passes per optimizer step (2 for exact MARS); the runner records it
    grad_evals_per_step: int = 1  # may be set per instance
    #: the paper (and official code) this implementation follows
    paper: ClassVar[str] = ""
    #: state buffers, as a formula of the parameter size, for ``bench show``
    state_memory: ClassVar[str] = ""


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def is_number(value: Any) -> bool:
    """A finite int or float; ``True``/``False`` are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor):
        lr = lr.item()
    check(is_number(lr) and lr >= 0.0, f"lr must be a finite number >= 0, got {lr!r}")


def check_beta(name: str, value: Any) -> None:
    check(
        is_number(value) and 0.0 <= value < 1.0,
        f"{name} must be a number in [0, 1), got {value!r}",
    )


def check_betas(betas: Any, count: int) -> None:
    check(
        isinstance(betas, (tuple, list)) and len(betas) == count,
        f"betas must be a sequence of {count} numbers, got {betas!r}",
    )
    for i, beta in enumerate(betas):
        check_beta(f"betas[{i}]", beta)


def check_nonneg(name: str, value: Any) -> None:
    check(
        is_number(value) and value >= 0.0,
        f"{name} must be a finite number >= 0, got {value!r}",
    )


def check_optional_steps(name: str, value: Any) -> None:
    check(
        value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
        f"{name} must be None or an integer > 0, got {value!r}",
    )


def halflife_interpolation(beta_start: float, beta_end: float, t: int, horizon: int) -> float:
    """Momentum warmup that interpolates half-lives linearly (AdEMAMix's beta3 scheduler).

    h(b) = ln(0.5) / ln(b + 1e-8) - 1 is the half-life of an EMA with factor b, in steps, and
    h^-1(x) = 0.5^(1/(x+1)). For t < T: h^-1((1 - t/T) h(beta_start) + (t/T) h(beta_end)).
    The 1e-8 keeps ln(0) finite for beta_start = 0 and is part of the official schedule.
    """
    if t >= horizon:
        return beta_end

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    frac = t / horizon
    mixed = (1.0 - frac) * half_life(beta_start) + frac * half_life(beta_end)
    return math.pow(0.5, 1.0 / (mixed + 1))


def default_foreach(params: Sequence[Tensor]) -> bool:
    if all(p.device.type == "cpu" for p in params):
        return FOREACH_ON_CPU
    return all(p.device.type in ("cuda", "xpu") for p in params)


#: on CPU, a foreach bucket holds at most this many elements (1 MiB of fp32): every op of the
#: update then runs over data that is still in cache, which makes the foreach path about twice
#: as fast as the per-tensor loop there (benchmarks/optimizer_step.py); a larger tensor is cut
#: into views of this size
CPU_BLOCK_NUMEL = 1 << 18


class Bucket(list):
    """Indices of one foreach bucket; ``slices[k]`` is None or the flat range of tensor
    ``self[k]`` this bucket covers (the same index can appear in several buckets)."""

    def __init__(self) -> None:
        super().__init__()
        self.slices: list[slice | None] = []
        self.numel = 0

    def add(self, i: int, sl: slice | None, numel: int) -> None:
        self.append(i)
        self.slices.append(sl)
        self.numel += numel


def _splittable(p: Tensor) -> bool:
    return p.is_contiguous() and (p.grad is None or p.grad.is_contiguous())


def group_by(
    keys: Sequence[Hashable], params: Sequence[Tensor], block: bool = True
) -> list[Bucket]:
    """Foreach buckets: indices of equal keys (device, dtype, step, ...), in first-seen order.

    On CPU (with ``block``) buckets are cut to at most ``CPU_BLOCK_NUMEL`` elements, splitting
    large contiguous tensors into flat views. Pass ``block=False`` for an update that reduces
    over whole tensors (a per-tensor norm).
    """
    buckets: dict[Hashable, list[Bucket]] = defaultdict(list)
    for i, (key, p) in enumerate(zip(keys, params)):
        chunks = buckets[key]
        n = p.numel()
        cpu = block and p.device.type == "cpu"
        if cpu and n > CPU_BLOCK_NUMEL and _splittable(p):
            for start in range(0, n, CPU_BLOCK_NUMEL):
                piece = Bucket()
                piece.add(i, slice(start, min(start + CPU_BLOCK_NUMEL, n)), CPU_BLOCK_NUMEL)
                chunks.append(piece)
            continue
        if (
            not chunks
            or chunks[-1].slices[-1] is not None
            or (cpu and chunks[-1].numel + n > CPU_BLOCK_NUMEL)
        ):
            chunks.append(Bucket())
        chunks[-1].add(i, None, n)
    return [chunk for chunks in buckets.values() for chunk in chunks]


def pick(seq: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    """The entries of ``seq`` in bucket ``idx``; tensors cut to the bucket's flat views."""
    slices = getattr(idx, "slices", None)
    if slices is None:
        return [seq[i] for i in idx]
    out = []
    for i, sl in zip(idx, slices):
        x = seq[i]
        out.append(x.view(-1)[sl] if sl is not None and isinstance(x, Tensor) else x)
    return out


def params_with_grad(group: dict) -> list[Tensor]:
    """Parameters that take part in this step: ``grad is None`` is skipped entirely."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("sparse gradients are not supported; use a dense embedding")
        out.append(p)
    return out


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in tensors of the optimizer state (what ``optimizer_state_bytes`` reports)."""
    total = 0
    seen: set[int] = set()
    for state in optimizer.state.values():
        for value in state.values():
            if not isinstance(value, Tensor) or value.data_ptr() in seen:
                continue
            if value.numel():
                seen.add(value.data_ptr())
            total += value.numel() * value.element_size()
    return total


def _without_loading_dynamo(name: str):
    """torch's ``Optimizer.<name>``, which torch marks with ``torch._disable_dynamo``: the mark's
    first call imports ``torch._dynamo`` (1-2 s, more on a cold file cache), only to keep
    ``torch.compile`` from tracing the method. While ``torch._dynamo`` is not loaded nothing can be
    compiling, so the plain method is called; once it is loaded, torch's marked one."""
    marked = getattr(torch.optim.Optimizer, name)
    plain = getattr(marked, "__wrapped__", marked)

    def method(self, *args, **kwargs):
        return (marked if "torch._dynamo" in sys.modules else plain)(self, *args, **kwargs)

    return functools.update_wrapper(method, plain)  # its name, documentation and signature


class BenchOptimizer(OptimizerInfo, torch.optim.Optimizer):
    """Base of the project's own optimizers: closure handling and foreach dispatch.

    Subclasses implement ``_step_group(group, params)`` for the parameters that have a gradient.
    """

    add_param_group = _without_loading_dynamo("add_param_group")
    zero_grad = _without_loading_dynamo("zero_grad")
    state_dict = _without_loading_dynamo("state_dict")  # a checkpoint's
    load_state_dict = _without_loading_dynamo("load_state_dict")  # a resumed run's

    def use_foreach(self, group: dict, params: Sequence[Tensor]) -> bool:
        flag = group.get("foreach")
        return default_foreach(params) if flag is None else bool(flag)

    def use_fast(self, group: dict, params: Sequence[Tensor]) -> bool:
        """The CUDA fast path (``_fast.py``): by default for CUDA tensors when Triton is there
        and ``foreach`` was left unset; ``fused=True`` insists, ``fused=False`` declines."""
        flag = group.get("fused")
        if flag is False or (flag is None and group.get("foreach") is not None):
            return False
        if not flag and not (params and all(p.is_cuda for p in params)):
            return False  # Triton is imported only where it can be used
        from bench_cli.registry import _fast, _fast_steps

        ok = _fast.usable(params) and _fast_steps.supports(
            getattr(self, "registry_name", ""), group
        )
        if flag and not ok:
            raise RuntimeError(
                "fused=True needs every parameter on a CUDA device, Triton installed, and a "
                "configuration the fast path covers; pass fused=None to fall back to foreach"
            )
        return ok

    def begin_group(self, group: dict, params: Sequence[Tensor]) -> bool:
        """Choose this group's path for this step; state created next follows it."""
        self._fast_now = self.use_fast(group, params)
        return self._fast_now

    def new_state(self, p: Tensor) -> Tensor:
        """A zero state buffer for ``p``: fp32 on the fast path for 16-bit parameters, else in
        ``p``'s dtype as the official codes keep it."""
        if getattr(self, "_fast_now", False) and p.dtype in (torch.bfloat16, torch.float16):
            return torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def implementation(self, fast: bool, group: dict, params, fast_fn, multi_fn, single_fn):
        if fast:
            return fast_fn
        return multi_fn if self.use_foreach(group, params) else single_fn

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - documented on torch.optim.Optimizer
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = params_with_grad(group)
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError
