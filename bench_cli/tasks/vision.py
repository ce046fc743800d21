"""Image classification with a small Vision Transformer: Fashion-MNIST by default, or CIFAR-10.

The whole data set lives on the device as one uint8 tensor; a training batch is a gather by
indices from a per-epoch permutation, normalised (and optionally cropped and flipped) as batched
tensor ops, so no Python touches single images while the clock runs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from bench_cli.errors import ConfigError, DataError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Task, TaskOptions
from bench_cli.tasks.data import RemoteFile, cache_dir, download, sha256_of

_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_SHA256 = {  # file name without "-ubyte.gz" -> sha256, in the order train x, y, test x, y
    "train-images-idx3": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
#: the Zalando release: gzipped IDX files
FASHION_MNIST = tuple(
    RemoteFile(f"{stem}-ubyte.gz", f"{_FMNIST_URL}{stem}-ubyte.gz", sha)
    for stem, sha in _FMNIST_SHA256.items()
)
#: where the Debian package dataset-fashion-mnist puts the same four files
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_NAME = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # the published checksum (no sha256 is)
_CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


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

Images = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train x, y, test x, y


# -- Fashion-MNIST ------------------------------------------------------------------------------


def _check_sha256(path: Path, remote: RemoteFile) -> None:
    got = sha256_of(path)
    if got != remote.sha256:
        raise DataError(
            f"checksum mismatch: {path} has sha256 {got}, expected {remote.sha256} "
            f"(Fashion-MNIST {remote.name}); the file is corrupt or another data set: replace it"
        )


def fashion_mnist_files(data: str | None) -> list[Path]:
    """The four checked files: ``data``, else ``$BENCH_DATA_DIR/fashion-mnist`` or
    ``$BENCH_DATA_DIR``, else the Debian package's folder, else the cache (downloading what is
    missing there). A local file with the wrong sha256 is an error; a bad cached one is fetched
    again."""
    names = [r.name for r in FASHION_MNIST]
    if data:
        folder = Path(data).expanduser()
        if folder.is_file():  # one of the four files: use its folder
            folder = folder.parent
        if (folder / "fashion-mnist").is_dir() and not (folder / names[0]).exists():
            folder = folder / "fashion-mnist"
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(
                f"Fashion-MNIST file {missing[0]} not found in {str(folder)!r} (from --data). "
                f"Pass --data FOLDER holding the four files {', '.join(names)}, or set "
                "BENCH_DATA_DIR to a folder holding them (or a fashion-mnist/ folder of them)"
            )
        candidates = [folder]
    else:
        env = os.environ.get("BENCH_DATA_DIR")
        candidates = (
            [Path(env).expanduser() / "fashion-mnist", Path(env).expanduser()] if env else []
        )
        candidates.append(SYSTEM_FASHION_MNIST)
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            for remote in FASHION_MNIST:
                _check_sha256(folder / remote.name, remote)
            return [folder / n for n in names]
    paths = []
    for remote in FASHION_MNIST:
        cached = cache_dir() / "fashion-mnist" / remote.name
        if cached.is_file() and sha256_of(cached) != remote.sha256:
            cached.unlink()  # a corrupt cache entry is replaced by a fresh download
        paths.append(cached if cached.is_file() else download(remote, cached))
    return paths


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """A uint8 IDX array (gzipped or not) with ``ndim`` dimensions, checked against its header."""
    raw = Path(path).read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc})") from exc
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise DataError(f"{path} is not a uint8 IDX file with {ndim} dimensions (bad header)")
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != torch.Size(shape).numel():
        raise DataError(f"{path} holds {len(body)} values, its header says {shape}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(shape)


def load_fashion_mnist(data: str | None) -> Images:
    """Train images (60000, 1, 28, 28) uint8, labels (60000,) int64, and the 10,000 test ones."""
    tr_x, tr_y, te_x, te_y = fashion_mnist_files(data)
    out = (read_idx(tr_x, 3), read_idx(tr_y, 1), read_idx(te_x, 3), read_idx(te_y, 1))
    for x, y, path in ((out[0], out[1], tr_y), (out[2], out[3], te_y)):
        if len(x) != len(y) or int(y.max()) > 9:
            raise DataError(f"{path} does not match its images (length or labels out of 0..9)")
    return out[0][:, None], out[1].long(), out[2][:, None], out[3].long()


# -- CIFAR-10 -----------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Loads dicts, lists, bytes and numpy arrays only: a pickle cannot run code here."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # the release (Python 2, numpy 1)
        ("numpy._core.multiarray", "_reconstruct"),  # re-pickled with numpy 2
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # Python 3 bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(blob: bytes, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    try:
        d = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
        x = torch.from_numpy(np.ascontiguousarray(d[b"data"], dtype=np.uint8))
        y = torch.tensor(list(d[b"labels"]), dtype=torch.long)
    except Exception as exc:  # any malformed pickle is a data problem, named by its source
        raise DataError(f"{source} is not a CIFAR-10 python batch ({exc})") from exc
    if x.dim() != 2 or x.shape[1] != 3072 or len(x) != len(y) or not len(y):
        raise DataError(f"{source} has data {tuple(x.shape)} and {len(y)} labels, not N x 3072")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{source} has labels outside 0..9")
    return x.view(-1, 3, 32, 32), y  # rows are 1024 red, 1024 green, 1024 blue, row-major


def read_cifar10(path: str | Path) -> Images:
    """The python release of CIFAR-10, from its tarball or its extracted folder (no checksum)."""
    path = Path(path)
    blobs: dict[str, bytes] = {}
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        blobs = {n: (folder / n).read_bytes() for n in _CIFAR_BATCHES if (folder / n).is_file()}
    else:
        try:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    name = member.name.rsplit("/", 1)[-1]
                    if name in _CIFAR_BATCHES and member.isfile():
                        blobs[name] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable tar file ({exc})") from exc
    missing = [n for n in _CIFAR_BATCHES if n not in blobs]
    if missing:
        raise DataError(f"{path} lacks the CIFAR-10 batch {missing[0]!r}")
    train = [_cifar_batch(blobs[n], f"{path}:{n}") for n in _CIFAR_BATCHES[:-1]]
    test_x, test_y = _cifar_batch(blobs["test_batch"], f"{path}:test_batch")
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path) -> Path:
    got = _md5_of(path)
    if got != CIFAR10_MD5:
        raise DataError(
            f"checksum mismatch: {path} has md5 {got}, expected {CIFAR10_MD5} ({CIFAR10_NAME}); "
            "the file is corrupt or incomplete: replace it"
        )
    return path


def _download_cifar10(dest: Path) -> Path:
    """Like ``data.download``, with the md5 that the CIFAR-10 page publishes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{CIFAR10_NAME}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(CIFAR10_URL, timeout=30) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(_check_md5(Path(tmp)), dest)
        return dest
    except OSError as exc:
        raise DataError(
            f"{CIFAR10_NAME} was not found locally and could not be downloaded from "
            f"{CIFAR10_URL} ({exc}). Pass --data to the tarball or its extracted folder, or set "
            "BENCH_DATA_DIR to a folder holding either."
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cifar10_source(data: str | None) -> Path:
    """``data`` (tarball, extracted folder, or a folder holding either), else the same in
    ``$BENCH_DATA_DIR``, else the cache, else a download. A tarball's md5 is always checked."""
    roots = [Path(data).expanduser()] if data else []
    if not data and os.environ.get("BENCH_DATA_DIR"):
        roots.append(Path(os.environ["BENCH_DATA_DIR"]).expanduser())
    for root in roots:
        for cand in (root, root / CIFAR10_NAME, root / "cifar-10-batches-py"):
            if cand.is_file():
                return _check_md5(cand)
            if cand.is_dir() and (cand / "test_batch").is_file():
                return cand
    if data:
        raise DataError(
            f"no CIFAR-10 found at {data!r} (from --data): give {CIFAR10_NAME}, its extracted "
            "cifar-10-batches-py folder, or a folder holding either"
        )
    cached = cache_dir() / CIFAR10_NAME
    if cached.is_file() and _md5_of(cached) != CIFAR10_MD5:
        cached.unlink()
    return cached if cached.is_file() else _download_cifar10(cached)


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


# -- the model ----------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """Patch embedding (a strided convolution), learned positions, a class token or mean
    pooling, pre-norm blocks, and a LayerNorm + linear head."""

    def __init__(self, o: VisionOptions, channels: int, side: int, classes: int = 10):
        super().__init__()
        tokens = (side // o.patch_size) ** 2 + (o.pool == "cls")
        self.pool = o.pool
        self.patch = nn.Conv2d(channels, o.dim, kernel_size=o.patch_size, stride=o.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, o.dim)) if o.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, o.dim))
        self.drop = nn.Dropout(o.dropout)
        self.blocks = nn.ModuleList(
            Block(o.dim, o.heads, o.mlp_ratio, o.dropout) for _ in range(o.depth)
        )
        self.ln_f = nn.LayerNorm(o.dim)
        self.head = nn.Linear(o.dim, classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # timm's ViT initialisation
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = self.drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


# -- the task -----------------------------------------------------------------------------------


class VisionOptions(TaskOptions):
    PRESETS = {
        "default": {},
        "tiny": dict(
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
    }

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
    eval_batches: int | None = Field(None, ge=1, description="None: the whole validation set")
    autocast: Literal["auto", "off", "bf16"] = "auto"
    val_split: Literal["test"] | float = Field(
        "test", description="'test': the official test set; a fraction: the training set's tail"
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> VisionOptions:
        side = DATASETS[self.dataset].side
        if side % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide {side}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not isinstance(self.val_split, str) and not 0 < self.val_split < 1:
            raise ValueError(f"val_split must be 'test' or in (0, 1), got {self.val_split}")
        return self


@TASKS.register("vit-small")
class ViTSmall(Task):
    """A small Vision Transformer on Fashion-MNIST (or CIFAR-10 with --set dataset=cifar10).

    Model: 4x4 patches (49 tokens on 28x28, plus a class token), width 192, 6 pre-norm blocks of 3
    heads, MLP ratio 4, dropout 0.1; 2.7M parameters. Batch 512, 2,350 steps (20 epochs of
    Fashion-MNIST), lr 1e-3 with 235 warmup steps and cosine decay to 1e-5, AdamW betas
    (0.9, 0.999), weight decay 0.05 on matrices (not on positions or the class token), gradient
    clip 1.0, bf16 autocast on CUDA. On one H100 this trains in about 37 s (50 s wall) and AdamW
    reaches a best val_accuracy of 0.898-0.907 (seeds 0-2), crossing the target after 1,400-1,700
    steps.
    Metrics: val_loss and val_accuracy over the whole validation set, evaluated every 118 steps
    (about one epoch). val_split=test (the default) validates on the official 10,000-image test
    set, as optimizer benchmarks usually do; val_split=0.1 holds out the last tenth of the
    training set instead. Target: val_accuracy >= 0.89 (cifar10: 0.70, provisional, not yet
    measured). Unit: images (batch_size per step). Augmentation (random crop of the 2- or
    4-pixel zero-padded image, horizontal flip) is off for Fashion-MNIST, on for CIFAR-10.
    Data: --data FOLDER, else $BENCH_DATA_DIR/fashion-mnist or $BENCH_DATA_DIR, else
    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), else the cache, else a
    download; every file's sha256 is checked. CIFAR-10: the python tarball (md5-checked) or its
    extracted cifar-10-batches-py folder, from --data, $BENCH_DATA_DIR, the cache or a download.
    """

    Options = VisionOptions
    unit = "images"
    metric_directions = {"val_loss": "min", "val_accuracy": "max"}
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    SETTINGS = {
        "default": dict(
            steps=2350,
            warmup_steps=235,
            schedule="cosine",
            min_lr_ratio=0.01,
            grad_clip=1.0,
            eval_interval=118,
            log_interval=50,
        ),
        "tiny": dict(
            steps=30,
            warmup_steps=3,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=10,
            log_interval=5,
        ),
    }
    TARGETS = {
        "default": Target(metric="val_accuracy", value=0.89, direction="max"),
        "tiny": Target(metric="val_accuracy", value=0.2, direction="max"),
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
            tr_x, tr_y, te_x, te_y = load_fashion_mnist(o.data)
        if o.val_split != "test":
            n_val = max(1, int(len(tr_x) * o.val_split))
            tr_x, tr_y, te_x, te_y = tr_x[:-n_val], tr_y[:-n_val], tr_x[-n_val:], tr_y[-n_val:]
        if o.batch_size > len(tr_x):
            raise ConfigError(f"batch_size {o.batch_size} exceeds the {len(tr_x)} training images")
        spec = DATASETS[o.dataset]
        self.device, self.channels, self.side = device, spec.channels, spec.side
        self.train_x, self.train_y = tr_x.to(device), tr_y.to(device)
        self.val_x, self.val_y = te_x.to(device), te_y.to(device)
        # x / 255 normalised by (mean, std) as one multiply-add per pixel
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -torch.tensor(spec.mean, device=device).view(1, -1, 1, 1) / std
        augment = o.augment if o.augment is not None else o.dataset == "cifar10"
        self.pad = spec.pad if augment else 0

    def build_model(self) -> nn.Module:
        return ViT(self.options, self.channels, self.side)

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

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        o = self.options
        n = len(self.val_x)
        if o.eval_batches is not None:
            n = min(n, o.eval_batches * o.eval_batch_size)
        # sums stay on the device: one host sync at the end
        sums = torch.zeros(2, device=self.device)  # loss sum, correct count
        for start in range(0, n, o.eval_batch_size):
            x = self._normalise(self.val_x[start : min(n, start + o.eval_batch_size)])
            y = self.val_y[start : start + len(x)]
            with self._autocast():
                logits = model(x).float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == y).sum()
        loss_sum, correct = sums.tolist()
        return {"val_loss": loss_sum / n, "val_accuracy": correct / n}
