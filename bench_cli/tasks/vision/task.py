"""vit-small: image classification with a small Vision Transformer, Fashion-MNIST or CIFAR-10.

The whole data set lives on the device as one uint8 tensor; a training batch is a gather by
indices from a per-epoch permutation, normalised (and optionally cropped and flipped) as batched
tensor ops, so no Python touches single images while the clock runs. The model is in
``model.py``; reading and finding the data files is in ``images.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from bench_cli.errors import ConfigError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Preset, Task, TaskOptions, run_settings
from bench_cli.tasks.vision.images import (
    FASHION_MNIST,
    SYSTEM_FASHION_MNIST,
    cifar10_source,
    locate_fashion_mnist,
    read_cifar10,
    read_fashion_mnist,
)
from bench_cli.tasks.vision.model import ViT

# -- data sets ----------------------------------------------------------------------------------


class ImageSet(NamedTuple):
    channels: int
    side: int
    pad: int  # zero padding before a random crop, when augmenting
    mean: tuple[float, ...]  # of the training pixels in [0, 1], per channel
    std: tuple[float, ...]


DATASETS = {
    "fashion-mnist": ImageSet(1, 28, 2, (0.2860,), (0.3530,)),
    "cifar10": ImageSet(3, 32, 4, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def fashion_mnist_files(data: str | None) -> list[Path]:
    """The four checked Fashion-MNIST files (``images.locate_fashion_mnist``) of this module's
    ``FASHION_MNIST`` and ``SYSTEM_FASHION_MNIST``, read at each call, so that they can be
    pointed elsewhere."""
    return locate_fashion_mnist(FASHION_MNIST, SYSTEM_FASHION_MNIST, data)


# -- data order and augmentation ----------------------------------------------------------------


def epoch_orders(n: int, seed: int, pad: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per epoch: a permutation of ``n`` and, per position, a crop offset pair in [0, 2 pad] and
    a flip bit (column 2). Drawn on the CPU from the seed alone, so every device and optimizer
    sees the same order."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        aug = torch.zeros(n, 3, dtype=torch.long)
        if pad:
            aug[:, :2] = torch.randint(2 * pad + 1, (n, 2), generator=gen)
            aug[:, 2] = torch.randint(2, (n,), generator=gen)
        yield perm, aug


def crop_flip(x: torch.Tensor, aug: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crops of the zero-padded batch and horizontal flips, as one batched gather.

    ``x`` is (B, C, H, W); ``aug[:, 0:2]`` are the top/left offsets into the padded image and
    ``aug[:, 2]`` says flip. Offsets (pad, pad) and no flip return ``x``."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    ar_h, ar_w = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    rows = aug[:, 0, None] + ar_h  # (B, H)
    cols = aug[:, 1, None] + torch.where(aug[:, 2, None].bool(), W - 1 - ar_w, ar_w)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]


# -- the task -----------------------------------------------------------------------------------


class VisionOptions(TaskOptions):
    data: str | None = Field(None, description="folder with the data set's files")
    dataset: Literal["fashion-mnist", "cifar10"] = "fashion-mnist"
    patch_size: int = Field(4, ge=1)
    dim: int = Field(192, ge=1)
    depth: int = Field(6, ge=1)
    heads: int = Field(3, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    pool: Literal["cls", "mean"] = "cls"
    batch_size: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    augment: bool | None = Field(None, description="crop+flip; None: on for cifar10 only")
    eval_batch_size: int = Field(2500, ge=1)
    eval_batches: int | None = Field(
        None, ge=1, description="None: the whole validation and test sets"
    )
    autocast: Literal["auto", "off", "bf16"] = "auto"
    val_split: float = Field(
        0.1, description="the tail of the training set held out for validation (tuning)"
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> VisionOptions:
        side = DATASETS[self.dataset].side
        if side % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide {side}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 0 < self.val_split < 1:
            raise ValueError(f"val_split must be in (0, 1), got {self.val_split}")
        return self


@TASKS.register("vit-small")
class ViTSmall(Task):
    """A small Vision Transformer on Fashion-MNIST (or CIFAR-10 with --set dataset=cifar10).

    Model: 4x4 patches (49 tokens on 28x28, plus a class token), width 192, 6 pre-norm blocks of 3
    heads, MLP ratio 4, dropout 0.1; 2.7M parameters. Batch 512, 2,350 steps (22 epochs of the
    54,000 training images), lr 1e-3 with 235 warmup steps and cosine decay to 1e-5, AdamW betas
    (0.9, 0.999), weight decay 0.05 on matrices (not on positions or the class token), gradient
    clip 1.0, bf16 autocast on CUDA.
    Validation and test: the last tenth of the training set (``val_split``, 6,000 images of
    Fashion-MNIST) is held out for validation: ``val_loss`` and ``val_accuracy``, which tuning
    and the target use. The official test set (10,000 images) is reported separately as
    ``test_loss`` and ``test_accuracy`` at every evaluation and never enters the target.
    Evaluation every 105 steps (about one epoch). Target: val_accuracy >= 0.89 (cifar10: 0.70,
    provisional, not yet measured). Unit: images (batch_size per step). Augmentation (random crop
    of the 2- or 4-pixel zero-padded image, horizontal flip) is off for Fashion-MNIST, on for
    CIFAR-10.
    Data: --data FOLDER, else $BENCH_DATA_DIR/fashion-mnist or $BENCH_DATA_DIR, else
    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), else the cache, else a
    download; every file's sha256 is checked. CIFAR-10: the python tarball (md5-checked) or its
    extracted cifar-10-batches-py folder, from --data, $BENCH_DATA_DIR, the cache or a download.
    """

    Options = VisionOptions
    unit = "images"
    metric_directions = {
        "val_loss": "min",
        "val_accuracy": "max",
        "test_loss": "min",
        "test_accuracy": "max",
    }
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    PRESETS = {
        "default": Preset(
            run_settings(2350, 105, warmup_steps=235, min_lr_ratio=0.01, log_interval=50),
            Target(metric="val_accuracy", value=0.89, direction="max"),
        ),
        "tiny": Preset(
            run_settings(30, 10, warmup_steps=3, log_interval=5),
            Target(metric="val_accuracy", value=0.2, direction="max"),
            dict(
                patch_size=4,
                dim=32,
                depth=1,
                heads=2,
                mlp_ratio=2.0,
                batch_size=32,
                dropout=0.0,
                eval_batch_size=100,
                eval_batches=10,
            ),
        ),
    }
    CIFAR10_TARGET = Target(metric="val_accuracy", value=0.70, direction="max")

    def default_target(self) -> Target | None:
        if self.options.dataset == "cifar10" and self.options.preset == "default":
            return self.CIFAR10_TARGET
        return super().default_target()

    @property
    def units_per_step(self) -> int:
        return self.options.batch_size

    def prepare(self, device: torch.device) -> None:
        o = self.options
        if o.dataset == "cifar10":
            tr_x, tr_y, te_x, te_y = read_cifar10(cifar10_source(o.data))
        else:
            tr_x, tr_y, te_x, te_y = read_fashion_mnist(fashion_mnist_files(o.data))
        n_val = max(1, int(len(tr_x) * o.val_split))
        tr_x, tr_y, va_x, va_y = tr_x[:-n_val], tr_y[:-n_val], tr_x[-n_val:], tr_y[-n_val:]
        if o.batch_size > len(tr_x):
            raise ConfigError(f"batch_size {o.batch_size} exceeds the {len(tr_x)} training images")
        spec = DATASETS[o.dataset]
        self.device, self.channels, self.side = device, spec.channels, spec.side
        self.train_x, self.train_y = tr_x.to(device), tr_y.to(device)
        self.val_x, self.val_y = va_x.to(device), va_y.to(device)
        self.test_x, self.test_y = te_x.to(device), te_y.to(device)
        # x / 255 normalised by (mean, std) as one multiply-add per pixel
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -torch.tensor(spec.mean, device=device).view(1, -1, 1, 1) / std
        augment = o.augment if o.augment is not None else o.dataset == "cifar10"
        self.pad = spec.pad if augment else 0

    def build_model(self) -> nn.Module:
        o = self.options
        return ViT(
            channels=self.channels,
            side=self.side,
            patch_size=o.patch_size,
            dim=o.dim,
            depth=o.depth,
            heads=o.heads,
            mlp_ratio=o.mlp_ratio,
            dropout=o.dropout,
            pool=o.pool,
        )

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Decay on weight matrices and the patch filter; none on biases, norms, positions and
        the class token (as in timm)."""
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            skip = p.dim() < 2 or name.split(".")[-1] in ("pos_embed", "cls_token")
            (no_decay if skip else decay).append(p)
        return [
            {"name": "decay", "params": decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        ]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self._scale + self._shift

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs, n = self.options.batch_size, len(self.train_x)
        for perm, aug in epoch_orders(n, seed, self.pad):
            # one host-to-device copy per epoch; the remainder of an epoch is dropped
            perm, aug = perm.to(self.device), aug.to(self.device)
            for start in range(0, n - bs + 1, bs):
                idx = perm[start : start + bs]
                x = self.train_x[idx]
                if self.pad:
                    x = crop_flip(x, aug[start : start + bs], self.pad)
                yield self._normalise(x), self.train_y[idx]

    def _autocast(self):
        mode = self.options.autocast
        if mode == "bf16" or (mode == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        with self._autocast():
            logits = model(x)
        return F.cross_entropy(logits.float(), y)

    def _split_metrics(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """(sum of losses, correct count, images) over a split (or its first eval_batches)."""
        o = self.options
        n = len(images)
        if o.eval_batches is not None:
            n = min(n, o.eval_batches * o.eval_batch_size)
        sums = torch.zeros(2, device=self.device)  # on the device: one host sync at the end
        for start in range(0, n, o.eval_batch_size):
            x = self._normalise(images[start : min(n, start + o.eval_batch_size)])
            y = labels[start : start + len(x)]
            with self._autocast():
                logits = model(x).float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == y).sum()
        return sums, n

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        val, n_val = self._split_metrics(model, self.val_x, self.val_y)
        test, n_test = self._split_metrics(model, self.test_x, self.test_y)
        v_loss, v_correct, t_loss, t_correct = torch.cat([val, test]).tolist()
        return {
            "val_loss": v_loss / n_val,
            "val_accuracy": v_correct / n_val,
            "test_loss": t_loss / n_test,
            "test_accuracy": t_correct / n_test,
        }

    @property
    def memory_gib(self) -> float:
        """Weights, gradients and up to three optimizer states (20 bytes a parameter), the
        activations of a training batch (about 40 bytes per block, token and width, in bf16),
        the data set in uint8, plus 20% and 0.75 GiB for the CUDA context."""
        o = self.options
        spec = DATASETS[o.dataset]
        tokens = (spec.side // o.patch_size) ** 2 + 1
        params = o.depth * (4 + 2 * o.mlp_ratio) * o.dim**2
        acts = 40 * o.depth * max(o.batch_size, o.eval_batch_size) * tokens * o.dim
        data = 70_000 * spec.channels * spec.side**2
        return round(1.2 * (20 * params + acts + data) / 2**30 + 0.75, 2)
