"""Each optimizer's update on the CUDA fast path, with its ``_multi_tensor_*`` signature.

The scalars of each equation (bias corrections, schedules) are computed here in float64 exactly
as the reference computes them; the kernels in ``_fast.py`` apply them in one pass. Tensors of
one launch share device, dtype and step (buckets as in the foreach path).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch


def _fast():
    from bench_cli.registry import _fast as module  # Triton is imported on first use

    return module


def _buckets(keys: Sequence[Hashable]) -> list[list[int]]:
    out: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        out[key].append(i)
    return list(out.values())


def _pick(seq: Sequence, idx: Sequence[int]) -> list:
    return [seq[i] for i in idx]


def adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2,
          eps, weight_decay, amsgrad) -> None:  # fmt: skip
    if amsgrad:
        raise NotImplementedError("amsgrad takes the foreach path")
    for idx in _buckets([(p.dtype, t) for p, t in zip(params, steps)]):
        t = steps[idx[0]]
        lists = [_pick(x, idx) for x in (params, grads, exp_avgs, exp_avg_sqs)]
        _fast().launch(
            _fast()._adamw_kernel,
            lists,
            lr,
            beta1,
            beta2,
            eps,
            1.0 - lr * weight_decay,
            lr / (1.0 - beta1**t),
            1.0 / math.sqrt(1.0 - beta2**t),
        )


def lion(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay) -> None:
    for idx in _buckets([p.dtype for p in params]):
        lists = [_pick(x, idx) for x in (params, grads, exp_avgs)]
        _fast().launch(_fast()._lion_kernel, lists, lr, beta1, beta2, 1.0 - lr * weight_decay)


def ademamix(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps, *, lr, beta1,
             beta2, beta3, alpha, alpha_warmup, beta3_warmup, eps, weight_decay) -> None:  # fmt: skip
    from bench_cli.registry.ademamix import _schedules

    for idx in _buckets([(p.dtype, t) for p, t in zip(params, steps)]):
        t = steps[idx[0]]
        alpha_t, beta3_t = _schedules(t, alpha, beta1, beta3, alpha_warmup, beta3_warmup)
        ps = _pick(params, idx)
        fasts = ps if beta1 == 0.0 else _pick(exp_avg_fasts, idx)  # placeholder when absent
        lists = [ps, _pick(grads, idx), fasts, _pick(exp_avg_slows, idx), _pick(exp_avg_sqs, idx)]
        _fast().launch(
            _fast()._ademamix_kernel,
            lists,
            lr,
            beta1,
            beta2,
            beta3_t,
            alpha_t,
            eps,
            weight_decay,
            1.0 / (1.0 - beta1**t),
            1.0 / math.sqrt(1.0 - beta2**t),
            HAS_M1=beta1 != 0.0,
        )


def simplified_ademamix(params, grads, exp_avgs, exp_avg_sqs, steps, num_sums, den_sums, *, lr,
                        beta1, beta2, alpha, beta1_warmup, min_beta1, eps, weight_decay,
                        bias_correction1, bias_correction2):  # fmt: skip
    from bench_cli.registry.simplified_ademamix import _beta1_at

    new_nums, new_dens = list(num_sums), list(den_sums)
    keys = [(p.dtype, t, n, d) for p, t, n, d in zip(params, steps, num_sums, den_sums)]
    for idx in _buckets(keys):
        t, n, d = steps[idx[0]], num_sums[idx[0]], den_sums[idx[0]]
        beta1_t = _beta1_at(t, beta1, min_beta1, beta1_warmup)
        n = beta1_t * n + 1.0
        d = beta2 * d + (1.0 - beta2)
        scale = (1.0 / n if bias_correction1 else 1.0) * (math.sqrt(d) if bias_correction2 else 1.0)
        lists = [_pick(x, idx) for x in (params, grads, exp_avgs, exp_avg_sqs)]
        _fast().launch(
            _fast()._simplified_ademamix_kernel,
            lists,
            lr,
            beta1_t,
            beta2,
            alpha,
            eps * math.sqrt(d),
            scale,
            weight_decay,
        )
        for i in idx:
            new_nums[i], new_dens[i] = n, d
    return new_nums, new_dens


def schedule_free(params, grads, zs, exp_avg_sqs, *, lr, ckp1, beta1, beta2, bias_correction2,
                  eps, weight_decay) -> None:  # fmt: skip
    for idx in _buckets([p.dtype for p in params]):
        lists = [_pick(x, idx) for x in (params, grads, zs, exp_avg_sqs)]
        _fast().launch(
            _fast()._schedule_free_kernel,
            lists,
            lr,
            ckp1,
            beta2,
            1.0 / bias_correction2,
            eps,
            weight_decay,
            lr * (beta1 * (1.0 - ckp1) - 1.0),
        )


def mars(params, grads, exp_avgs, exp_avg_sqs, last_grads, next_last_grads, steps, *, lr, beta1,
         beta2, eps, weight_decay, gamma, mars_type) -> None:  # fmt: skip
    scale = gamma * (beta1 / (1.0 - beta1))
    lion = mars_type == "mars-lion"
    for idx in _buckets([(p.dtype, t) for p, t in zip(params, steps)]):
        t = steps[idx[0]]
        ps, gs, prevs = _pick(params, idx), _pick(grads, idx), _pick(last_grads, idx)
        squares = torch.zeros(len(idx), dtype=torch.float32, device=ps[0].device)
        _fast().launch(_fast()._mars_norm_kernel, [gs, prevs], squares, scale)
        vs = ps if lion else _pick(exp_avg_sqs, idx)  # placeholder for mars-lion
        nexts = _pick(next_last_grads, idx)
        lists = [ps, gs, _pick(exp_avgs, idx), vs, prevs, nexts]
        _fast().launch(
            _fast()._mars_kernel,
            lists,
            squares,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            scale,
            1.0 - beta1**t,
            1.0 / math.sqrt(1.0 - beta2**t),
            LION=lion,
            NEXT_IS_G=nexts[0] is gs[0],  # the approximate variant passes the gradients
        )


def _mix(lists: list, coefs: list[tuple[float, float, float]], scalars: list, adam: bool) -> None:
    """Launch the AggMo/AggMo-Adam kernel with up to three buffers (padding with placeholders)."""
    nb = len(coefs)
    placeholders = 3 - nb
    lists = lists + [lists[0]] * placeholders
    flat = [x for c in coefs + [(0.0, 0.0, 0.0)] * placeholders for x in c]
    _fast().launch(_fast()._mix_kernel, lists, *scalars, *flat, NB=nb, ADAM=adam)


def aggmo_adam(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, betas, beta2, eps,
               weight_decay, weights, bias_correct) -> None:  # fmt: skip
    for idx in _buckets([(p.dtype, t) for p, t in zip(params, steps)]):
        t = steps[idx[0]]
        ps, gs = _pick(params, idx), _pick(grads, idx)
        lists, coefs, c_g = [ps, gs, _pick(exp_avg_sqs, idx)], [], 0.0
        for beta, w, bc, bufs in zip(betas, weights, bias_correct, exp_avgs):
            scale = w / (1.0 - beta**t) if bc else w
            if beta == 0.0:
                c_g += scale
            else:
                lists.append(_pick(bufs, idx))
                coefs.append((beta, 1.0 - beta, scale))
        scalars = [1.0 - lr * weight_decay, beta2, eps, 1.0 / math.sqrt(1.0 - beta2**t), lr, c_g]
        _mix(lists, coefs, scalars, adam=True)


def aggmo(params, grads, momentum_buffers, *, lr, betas, weight_decay) -> None:
    k = len(betas)
    for idx in _buckets([p.dtype for p in params]):
        ps = _pick(params, idx)
        lists = [ps, _pick(grads, idx), ps] + [_pick(bufs, idx) for bufs in momentum_buffers]
        coefs = [(beta, 1.0, 1.0) for beta in betas]
        _mix(lists, coefs, [1.0, 0.0, 0.0, 1.0, lr / k, weight_decay], adam=False)


def supports(name: str, group: dict) -> bool:
    """Whether the fast path covers this group's configuration (else the foreach path runs)."""
    if name == "adamw":
        return not group.get("amsgrad", False)
    if name == "aggmo-adam":
        return sum(1 for b in group["betas"] if b != 0.0) <= 3
    if name == "aggmo":
        return len(group["betas"]) <= 3
    return True
