"""Golden vectors of OPTIMIZERS.md section 11: final parameters after 25 steps on a fixed quadratic.

The values were produced by the official code of each optimizer in float64 on CPU. Each case
names the registry optimizer, its arguments, whether the lr follows the cosine schedule, and (for
Schedule-Free) which sequence the values are of: y (train mode) or x (after ``eval()``).
"""

from __future__ import annotations

import math

import torch

A = 0.5 * torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
C = torch.tensor([[0.1, -0.2, 0.3], [-0.4, 0.5, -0.6]], dtype=torch.float64)
a = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
c = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
W0 = [[0.5, -1.0, 2.0], [0.1, -0.3, 0.8]]
B0 = [0.2, -0.4, 0.6]
STEPS = 25

# name -> (optimizer, hparams, cosine lr, mode, expected W row-major then b)
CASES: dict[str, tuple[str, dict, bool, str, list[float]]] = {
    "adamw_torch": (
        "adamw",
        dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
        True,
        "y",
        [
            3.657436446090225e-01,
            -8.586868467029741e-01,
            1.845419198526496e00,
            2.053842931112030e-01,
            -1.913961738110389e-01,
            6.622013274882760e-01,
            7.023352716303566e-02,
            -2.672932912243207e-01,
            4.644671180381253e-01,
        ],
    ),
    "ademamix_sched": (
        "ademamix",
        dict(
            lr=1e-2,
            betas=(0.9, 0.999, 0.9999),
            alpha=8.0,
            beta3_warmup=10,
            alpha_warmup=10,
            weight_decay=0.1,
        ),
        False,
        "y",
        [
            2.431243790898437e-01,
            -7.272561269487632e-01,
            1.700595097362222e00,
            2.191450779975696e-01,
            -1.795131481253715e-01,
            5.377589386304792e-01,
            -4.566107564464102e-02,
            -1.471692088923078e-01,
            3.407475859401001e-01,
        ],
    ),
    "ademamix_b1zero": (
        "ademamix",
        dict(lr=1e-2, betas=(0.0, 0.999, 0.999), alpha=2.0, weight_decay=0.1),
        False,
        "y",
        [
            2.583574631693370e-01,
            -7.362697572636804e-01,
            1.705588316450905e00,
            1.996057051599117e-01,
            -1.985757550209213e-01,
            5.561924664692622e-01,
            -2.493785470025036e-02,
            -1.648255852832010e-01,
            3.561460522866939e-01,
        ],
    ),
    "simademamix_default": (
        "simplified-ademamix",
        dict(
            lr=1e-3, betas=(0.99, 0.95), alpha=2.0, beta1_warmup=10, min_beta1=0.9, weight_decay=0.1
        ),
        False,
        "y",
        [
            1.534247246097491e-01,
            -6.512528828096588e-01,
            1.648558251262012e00,
            2.753013241827595e-01,
            -1.247718577605455e-01,
            4.533365665544128e-01,
            -1.439448275740003e-01,
            -5.431973134537536e-02,
            2.531774499108208e-01,
        ],
    ),
    "simademamix_bc1": (
        "simplified-ademamix",
        dict(
            lr=1e-3,
            betas=(0.99, 0.95),
            alpha=2.0,
            beta1_warmup=10,
            min_beta1=0.9,
            weight_decay=0.1,
            bias_correction1=True,
        ),
        False,
        "y",
        [
            4.658525728633100e-01,
            -9.645998307679402e-01,
            1.962100281500516e00,
            1.325449418856991e-01,
            -2.664610933020349e-01,
            7.651055165408472e-01,
            1.666059467900487e-01,
            -3.661040537240184e-01,
            5.656029262827438e-01,
        ],
    ),
    "aggmo": (
        "aggmo",
        dict(lr=1e-2, betas=(0.0, 0.9, 0.99), weight_decay=0.1),
        False,
        "y",
        [
            -2.435876139773699e-02,
            4.083291992176488e-01,
            -1.121680645359608e00,
            2.390188082788003e-01,
            -1.324836537924022e-01,
            -1.171692269287148e-01,
            -3.633316796870593e-01,
            4.570494718807663e-02,
            -4.682497899318335e-01,
        ],
    ),
    "lion": (
        "lion",
        dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.5),
        True,
        "y",
        [
            4.837996314559967e-01,
            -9.805595577471963e-01,
            1.974079410329594e00,
            1.123122800934426e-01,
            -2.850956609395168e-01,
            7.818555872307165e-01,
            1.857436756812770e-01,
            -3.844476461977569e-01,
            5.831516167142365e-01,
        ],
    ),
    "mars_opt1d_false": (
        "mars",
        dict(
            lr=1e-2,
            betas=(0.95, 0.99),
            weight_decay=0.1,
            gamma=0.025,
            lr_1d=5e-3,
            betas_1d=(0.9, 0.95),
            weight_decay_1d=0.05,
        ),
        True,
        "y",
        [
            3.645977738300795e-01,
            -8.578939607079828e-01,
            1.844842298672228e00,
            2.106053281238645e-01,
            -1.862216249846837e-01,
            6.608670346381913e-01,
            1.346891633776330e-01,
            -3.339977718242341e-01,
            5.333196067953577e-01,
        ],
    ),
    "mars_opt1d_true": (
        "mars",
        dict(lr=1e-2, betas=(0.95, 0.99), weight_decay=0.1, gamma=0.025, optimize_1d=True),
        True,
        "y",
        [
            3.645977738300795e-01,
            -8.578939607079828e-01,
            1.844842298672228e00,
            2.106053281238645e-01,
            -1.862216249846837e-01,
            6.608670346381913e-01,
            6.841189532586565e-02,
            -2.656887746518840e-01,
            4.630147057189190e-01,
        ],
    ),
    "mars_lion_opt1d": (
        "mars",
        dict(
            lr=1e-3,
            betas=(0.95, 0.99),
            weight_decay=0.1,
            gamma=0.025,
            mars_type="mars-lion",
            optimize_1d=True,
        ),
        False,
        "y",
        [
            4.737814758632769e-01,
            -9.725329747139090e-01,
            1.970035972415173e00,
            1.247203227574818e-01,
            -2.742808763230241e-01,
            7.730323751736562e-01,
            1.745305765528976e-01,
            -3.740311760931505e-01,
            5.735317756334034e-01,
        ],
    ),
    "sf_w5_y": (
        "schedule-free",
        dict(
            lr=1e-2,
            betas=(0.9, 0.999),
            weight_decay=0.1,
            warmup_steps=5,
            r=0.0,
            weight_lr_power=2.0,
        ),
        False,
        "y",
        [
            3.652005138620091e-01,
            -8.562863405505227e-01,
            1.841522480660191e00,
            1.907009632568533e-01,
            -2.062450540784354e-01,
            6.623635822117235e-01,
            7.131653049597547e-02,
            -2.674431577063615e-01,
            4.639200644827607e-01,
        ],
    ),
    "sf_w5_x": (
        "schedule-free",
        dict(
            lr=1e-2,
            betas=(0.9, 0.999),
            weight_decay=0.1,
            warmup_steps=5,
            r=0.0,
            weight_lr_power=2.0,
        ),
        False,
        "x",
        [
            3.754589863850668e-01,
            -8.673870903579808e-01,
            1.853871402404617e00,
            1.863054145278756e-01,
            -2.107054925911397e-01,
            6.727693615177758e-01,
            8.095839446918317e-02,
            -2.774671266167097e-01,
            4.742755713851330e-01,
        ],
    ),
    "sf_r075_y": (
        "schedule-free",
        dict(
            lr=1e-2,
            betas=(0.9, 0.999),
            weight_decay=0.1,
            warmup_steps=5,
            r=0.75,
            weight_lr_power=2.0,
        ),
        False,
        "y",
        [
            3.460607941065002e-01,
            -8.352966285845225e-01,
            1.817988913103207e00,
            1.958833928997599e-01,
            -2.010956236136592e-01,
            6.430635528073595e-01,
            5.357829316551803e-02,
            -2.488476980312631e-01,
            4.445999667289850e-01,
        ],
    ),
    "sf_r075_x": (
        "schedule-free",
        dict(
            lr=1e-2,
            betas=(0.9, 0.999),
            weight_decay=0.1,
            warmup_steps=5,
            r=0.75,
            weight_lr_power=2.0,
        ),
        False,
        "x",
        [
            3.539639820799427e-01,
            -8.439183033105054e-01,
            1.827625006833960e00,
            1.933426817326644e-01,
            -2.036350969411397e-01,
            6.510507949840982e-01,
            6.094242416185881e-02,
            -2.565431225710882e-01,
            4.525776800669826e-01,
        ],
    ),
}


def run_case(build, hparams: dict, cosine: bool, mode: str, foreach: bool | None) -> torch.Tensor:
    """Run 25 steps with fresh gradients of the quadratic; return final W (row-major) then b."""
    W = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    extra = {} if foreach is None else {"foreach": foreach}
    opt = build([W, b], **hparams, **extra)
    lr0 = hparams["lr"]
    if hasattr(opt, "train") and getattr(opt, "has_train_eval_modes", False):
        opt.train()
    for t in range(STEPS):
        if cosine:
            for group in opt.param_groups:
                group["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * t / STEPS))
        with torch.no_grad():
            W.grad = A * W + C  # a fresh tensor every step
            b.grad = a * b + c
        opt.step()
    if mode == "x":
        opt.eval()
    return torch.cat([W.detach().flatten(), b.detach()])
