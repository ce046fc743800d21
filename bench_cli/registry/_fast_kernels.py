"""The Triton kernels of the CUDA fast path (``_fast.py`` launches them).

Each program finds its tensor and first element (``_locate``), the element offset of its tensor
in each list (``_off``), then walks its chunk ``BLOCK`` elements at a time: every operand is read
once, the update is computed in fp32 registers, every result is written once.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _locate(which, start, numels):
    """This program's tensor, its first element and the tensor's size."""
    pid = tl.program_id(0)
    i = tl.load(which + pid)
    return i, tl.load(start + pid), tl.load(numels + i)


@triton.jit
def _off(table, n_t, i, k: tl.constexpr, ALIGN: tl.constexpr):
    o = tl.load(table + k * n_t + i)
    if ALIGN:
        o = tl.multiple_of(o, 8)
    return o


@triton.jit
def _adamw_kernel(
    p_ptr, g_ptr, m_ptr, v_ptr, table, which, start, numels, n_t,
    lr, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    mp0 = m_ptr + _off(table, n_t, i, 2, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 3, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        mp = mp0 + idx
        vp = vp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        m = tl.load(mp, mask=mask).to(tl.float32)
        v = tl.load(vp, mask=mask).to(tl.float32)
        p = p * decay
        m = m + (1.0 - beta1) * (g - m)
        v = beta2 * v + (1.0 - beta2) * g * g
        denom = tl.sqrt(v) * inv_sqrt_bc2 + eps
        p = p - step_size * (m / denom)
        tl.store(mp, m.to(mp.dtype.element_ty), mask=mask)
        tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)


@triton.jit
def _lion_kernel(
    p_ptr, g_ptr, m_ptr, table, which, start, numels, n_t,
    lr, beta1, beta2, decay,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    mp0 = m_ptr + _off(table, n_t, i, 2, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        mp = mp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        m = tl.load(mp, mask=mask).to(tl.float32)
        c = beta1 * m + (1.0 - beta1) * g
        sign = tl.where(c > 0, 1.0, tl.where(c < 0, -1.0, 0.0))
        p = p * decay - lr * sign
        m = beta2 * m + (1.0 - beta2) * g
        tl.store(mp, m.to(mp.dtype.element_ty), mask=mask)
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)


@triton.jit
def _ademamix_kernel(
    p_ptr, g_ptr, m1_ptr, m2_ptr, v_ptr, table, which, start, numels, n_t,
    lr, beta1, beta2, beta3, alpha, eps, wd, inv_bc1, inv_sqrt_bc2,
    HAS_M1: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    m2p0 = m2_ptr + _off(table, n_t, i, 3, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 4, ALIGN)
    m1p0 = m1_ptr + _off(table, n_t, i, 2, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        m2p = m2p0 + idx
        vp = vp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        m2 = tl.load(m2p, mask=mask).to(tl.float32)
        v = tl.load(vp, mask=mask).to(tl.float32)
        if HAS_M1:
            m1p = m1p0 + idx
            m1 = tl.load(m1p, mask=mask).to(tl.float32)
            m1 = beta1 * m1 + (1.0 - beta1) * g
            tl.store(m1p, m1.to(m1p.dtype.element_ty), mask=mask)
        else:
            m1 = g
        m2 = beta3 * m2 + (1.0 - beta3) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        denom = tl.sqrt(v) * inv_sqrt_bc2 + eps
        u = (m1 * inv_bc1 + alpha * m2) / denom + wd * p
        p = p - lr * u
        tl.store(m2p, m2.to(m2p.dtype.element_ty), mask=mask)
        tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)


@triton.jit
def _simplified_ademamix_kernel(
    p_ptr, g_ptr, m_ptr, v_ptr, table, which, start, numels, n_t,
    lr, beta1, beta2, alpha, eps_d, scale, wd,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    mp0 = m_ptr + _off(table, n_t, i, 2, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 3, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        mp = mp0 + idx
        vp = vp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        m = tl.load(mp, mask=mask).to(tl.float32)
        v = tl.load(vp, mask=mask).to(tl.float32)
        m = beta1 * m + g
        v = beta2 * v + (1.0 - beta2) * g * g
        u = (m + alpha * g) / (tl.sqrt(v) + eps_d) * scale + wd * p
        p = p - lr * u
        tl.store(mp, m.to(mp.dtype.element_ty), mask=mask)
        tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)


@triton.jit
def _schedule_free_kernel(
    y_ptr, g_ptr, z_ptr, v_ptr, table, which, start, numels, n_t,
    lr, ckp1, beta2, inv_bc2, eps, wd, y_coef,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    yp0 = y_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    zp0 = z_ptr + _off(table, n_t, i, 2, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 3, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        yp = yp0 + idx
        gp = gp0 + idx
        zp = zp0 + idx
        vp = vp0 + idx
        y = tl.load(yp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        z = tl.load(zp, mask=mask).to(tl.float32)
        v = tl.load(vp, mask=mask).to(tl.float32)
        v = beta2 * v + (1.0 - beta2) * g * g
        u = g / (tl.sqrt(v * inv_bc2) + eps) + wd * y
        y = y + ckp1 * (z - y) + y_coef * u
        z = z - lr * u
        tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
        tl.store(zp, z.to(zp.dtype.element_ty), mask=mask)
        tl.store(yp, y.to(yp.dtype.element_ty), mask=mask)


@triton.jit
def _mars_norm_kernel(
    g_ptr, prev_ptr, table, which, start, numels, n_t,
    sq_ptr, scale,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """Adds this program's part of sum(c^2), c = g + scale (g - g_prev), to its tensor's."""
    i, s, n = _locate(which, start, numels)
    g0 = g_ptr + _off(table, n_t, i, 0, ALIGN)
    prev0 = prev_ptr + _off(table, n_t, i, 1, ALIGN)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        g = tl.load(g0 + idx, mask=mask).to(tl.float32)
        gp = tl.load(prev0 + idx, mask=mask).to(tl.float32)
        c = g + scale * (g - gp)
        acc += c * c
    tl.atomic_add(sq_ptr + i, tl.sum(acc, axis=0))


@triton.jit
def _mars_kernel(
    p_ptr, g_ptr, m_ptr, v_ptr, prev_ptr, next_ptr, table, which, start, numels, n_t,
    sq_ptr, lr, beta1, beta2, eps, wd, scale, bc1, inv_sqrt_bc2,
    LION: tl.constexpr, NEXT_IS_G: tl.constexpr,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    i, s, n = _locate(which, start, numels)
    clip = tl.maximum(tl.sqrt(tl.load(sq_ptr + i)), 1.0)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    mp0 = m_ptr + _off(table, n_t, i, 2, ALIGN)
    prevp0 = prev_ptr + _off(table, n_t, i, 4, ALIGN)
    nextp0 = next_ptr + _off(table, n_t, i, 5, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 3, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        mp = mp0 + idx
        prevp = prevp0 + idx
        nextp = nextp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        m = tl.load(mp, mask=mask).to(tl.float32)
        prev = tl.load(prevp, mask=mask).to(tl.float32)
        if NEXT_IS_G:  # the approximate variant: g_prev <- g
            nxt = g
        else:
            nxt = tl.load(nextp, mask=mask).to(tl.float32)
        c = (g + scale * (g - prev)) / clip
        m = beta1 * m + (1.0 - beta1) * c
        if LION:
            u = tl.where(m > 0, 1.0, tl.where(m < 0, -1.0, 0.0))
        else:
            vp = vp0 + idx
            v = tl.load(vp, mask=mask).to(tl.float32)
            v = beta2 * v + (1.0 - beta2) * c * c
            tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
            u = m / ((tl.sqrt(v) * inv_sqrt_bc2 + eps) * bc1)
        p = p - lr * (u + wd * p)
        tl.store(mp, m.to(mp.dtype.element_ty), mask=mask)
        tl.store(prevp, nxt.to(prevp.dtype.element_ty), mask=mask)
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)


@triton.jit
def _mix_kernel(
    p_ptr, g_ptr, v_ptr, b0_ptr, b1_ptr, b2_ptr, table, which, start, numels, n_t,
    decay, beta2, eps, inv_sqrt_bc2, lr_g, c_g,
    beta_a, inc_a, c_a, beta_b, inc_b, c_b, beta_c, inc_c, c_c,
    NB: tl.constexpr, ADAM: tl.constexpr,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """AggMo-Adam (ADAM) and AggMo: up to three momentum buffers, mixed with weights.

    AggMo-Adam: m_j <- beta_j m_j + (1 - beta_j) g (inc_j = 1 - beta_j);
    p <- p decay - lr_g (c_g g + sum c_j m_j) / (sqrt(v / bc2) + eps).
    AggMo: d = g + lambda p (c_g = lambda); b_j <- beta_j b_j + d (inc_j = 1);
    p <- p - lr_g sum c_j b_j.
    """
    i, s, n = _locate(which, start, numels)
    pp0 = p_ptr + _off(table, n_t, i, 0, ALIGN)
    gp0 = g_ptr + _off(table, n_t, i, 1, ALIGN)
    vp0 = v_ptr + _off(table, n_t, i, 2, ALIGN)
    ap0 = b0_ptr + _off(table, n_t, i, 3, ALIGN)
    bp0 = b1_ptr + _off(table, n_t, i, 4, ALIGN)
    cp0 = b2_ptr + _off(table, n_t, i, 5, ALIGN)
    for j in range(0, CHUNK, BLOCK):
        idx = s + j + tl.arange(0, BLOCK)
        mask = idx < n
        pp = pp0 + idx
        gp = gp0 + idx
        p = tl.load(pp, mask=mask).to(tl.float32)
        g = tl.load(gp, mask=mask).to(tl.float32)
        if ADAM:
            vp = vp0 + idx
            v = tl.load(vp, mask=mask).to(tl.float32)
            v = beta2 * v + (1.0 - beta2) * g * g
            tl.store(vp, v.to(vp.dtype.element_ty), mask=mask)
            d = g
            mix = c_g * g
        else:
            d = g + c_g * p
            mix = 0.0 * g
        if NB >= 1:
            ap = ap0 + idx
            a = tl.load(ap, mask=mask).to(tl.float32)
            a = beta_a * a + inc_a * d
            tl.store(ap, a.to(ap.dtype.element_ty), mask=mask)
            mix += c_a * a
        if NB >= 2:
            bp = bp0 + idx
            b = tl.load(bp, mask=mask).to(tl.float32)
            b = beta_b * b + inc_b * d
            tl.store(bp, b.to(bp.dtype.element_ty), mask=mask)
            mix += c_b * b
        if NB >= 3:
            cp = cp0 + idx
            c = tl.load(cp, mask=mask).to(tl.float32)
            c = beta_c * c + inc_c * d
            tl.store(cp, c.to(cp.dtype.element_ty), mask=mask)
            mix += c_c * c
        if ADAM:
            p = p * decay - lr_g * mix / (tl.sqrt(v) * inv_sqrt_bc2 + eps)
        else:
            p = p - lr_g * mix
        tl.store(pp, p.to(pp.dtype.element_ty), mask=mask)
