"""The CUDA fast path: one Triton kernel launch per optimizer step and parameter group (the
kernels are in ``_fast_kernels.py``; this module lays out the launch).

Every tensor of a list (parameters, gradients, each state buffer) is addressed as an element
offset from the list's first tensor, so one launch covers all of a group's tensors: a program
takes one chunk of ``CONFIG["chunk"]`` elements of one tensor, ``CONFIG["block"]`` at a time,
reads each operand once, computes the whole update in fp32 registers and writes each result once. That is the least memory traffic the update
allows (``bench perf optimizers`` counts it), against several passes over memory for the foreach
path.

State dtype: on this path the state buffers are fp32 whatever the parameter dtype (bf16
parameters keep fp32 moments, so small EMA increments are not rounded away); parameters and
gradients keep their own dtype, and the arithmetic is fp32. The foreach and per-tensor paths keep
the official codes' state in the parameter dtype.

The path is taken automatically for parameters on a CUDA device when Triton is importable
(``fused=None``); ``fused=False`` keeps the foreach path (the fallback), ``foreach=False`` the
per-tensor reference.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor

try:  # pragma: no cover - exercised where Triton is installed
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

#: the launch shape: each program takes ``chunk`` consecutive elements of one tensor and walks
#: them ``block`` elements at a time, with ``num_warps`` warps (set from measurements with
#: ``benchmarks/fast_path_shapes.py``; PERFORMANCE.md has the table)
CONFIG = {"chunk": 2048, "block": 1024, "num_warps": 8}
#: bytes of alignment that let a program use 16-byte loads
_ALIGN_BYTES = 32


def available() -> bool:
    """Triton is importable (a CUDA device is checked per parameter list)."""
    return triton is not None


def usable(params: Sequence[Tensor]) -> bool:
    """CUDA tensors; or CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which
    runs the same kernels on the CPU for tests."""
    if not (available() and params):
        return False
    if all(p.is_cuda for p in params):
        return True
    return os.environ.get("TRITON_INTERPRET") == "1" and all(p.device.type == "cpu" for p in params)


@functools.lru_cache(maxsize=64)
def _chunks(
    numels: tuple[int, ...], device: torch.device, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(tensor index, first element) of every chunk, and each tensor's size, on ``device``."""
    which, start = [], []
    for i, n in enumerate(numels):
        for s in range(0, n, chunk):
            which.append(i)
            start.append(s)
    return (
        torch.tensor(which, dtype=torch.int32, device=device),
        torch.tensor(start, dtype=torch.int64, device=device),
        torch.tensor(numels, dtype=torch.int64, device=device),
    )


_OFFSETS: dict[tuple[int, ...], Tensor] = {}


def _offsets(lists: Sequence[Sequence[Tensor]], device: torch.device) -> tuple[Tensor, bool]:
    """Element offsets of every tensor from its list's first tensor, one row per list; and
    whether every tensor starts on a 32-byte boundary."""
    ptrs = tuple(t.data_ptr() for lst in lists for t in lst)
    table = _OFFSETS.get(ptrs)
    n = len(lists[0])
    aligned = all(ptr % _ALIGN_BYTES == 0 for ptr in ptrs)
    if table is None:
        offs = []
        for k, lst in enumerate(lists):
            base, size = ptrs[k * n], lst[0].element_size()
            offs.extend((ptrs[k * n + j] - base) // size for j in range(n))
        table = torch.tensor(offs, dtype=torch.int64).to(device, non_blocking=True)
        if len(_OFFSETS) > 256:  # grads that move every step: keep the cache small
            _OFFSETS.clear()
        _OFFSETS[ptrs] = table
    return table, aligned


def _check(lists: Sequence[Sequence[Tensor]]) -> None:
    for lst in lists:
        for t in lst:
            if not t.is_contiguous():
                raise RuntimeError("the fast path needs contiguous tensors; pass fused=False")


def launch(kernel, lists: Sequence[Sequence[Tensor]], *scalars, **constexprs) -> None:
    """Run ``kernel`` over every element of the tensors in ``lists`` (equal lengths, equal
    sizes position by position)."""
    _check(lists)
    first = lists[0]
    device = first[0].device
    chunk, block = CONFIG["chunk"], CONFIG["block"]
    if chunk % block:  # else a program's last block would run into the next program's chunk
        raise ValueError(
            f"the fast path's chunk ({chunk}) must be a multiple of its block ({block})"
        )
    which, start, numels = _chunks(tuple(t.numel() for t in first), device, chunk)
    table, aligned = _offsets(lists, device)
    bases = [lst[0] for lst in lists]
    grid = (which.numel(),)
    kernel[grid](
        *bases,
        table,
        which,
        start,
        numels,
        len(first),
        *scalars,
        ALIGN=aligned,
        BLOCK=block,
        CHUNK=chunk,
        num_warps=CONFIG["num_warps"],
        **constexprs,
    )


if triton is not None:  # pragma: no cover - compiled only where Triton is installed
    from bench_cli.registry._fast_kernels import (  # noqa: E402, F401 - launched by _fast_steps
        _adamw_kernel,
        _ademamix_kernel,
        _lion_kernel,
        _mars_kernel,
        _mars_norm_kernel,
        _mix_kernel,
        _schedule_free_kernel,
        _simplified_ademamix_kernel,
    )
