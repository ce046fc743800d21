"""Language models on your data: a text file (characters or bytes) or llm.c-style token shards.

``--data`` takes a UTF-8 text file (Tiny Shakespeare by default), a ``.bin`` token shard, or a
folder of shards (``*train*.bin`` for training, ``*val*.bin`` for validation when present). A
shard is llm.c's / modded-nanogpt's format: a header of 256 little-endian int32 (magic 20240520,
version 1, token count, the rest unused), then the tokens as little-endian uint16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from bench_cli.errors import DataError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks._gpt import GPT
from bench_cli.tasks.base import Task, TaskOptions
from bench_cli.tasks.data import TINY_SHAKESPEARE, check_data_path, locate

#: evaluation batches are the same for every run, seed and optimizer
EVAL_SEED = 1337
#: the probe batch, and windows redrawn to avoid it, come from their own streams, seeded with
#: these plus the run's seed (below 2**32: the CPU generator keeps only a seed's low 32 bits)
PROBE_SEED = 2_718_281_828
REDRAW_SEED = 3_141_592_653
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_BYTES = 256 * 4
#: GPT-2's 50,257 tokens padded to a multiple of 64: the vocabulary of token shards by default
GPT2_VOCAB = 50304


class LMOptions(TaskOptions):
    data: str | None = Field(
        None, description="a UTF-8 text file, a .bin token shard or a folder of shards"
    )
    val_data: str | None = Field(
        None, description="a separate validation file or folder (default: split off --data)"
    )
    tokenizer: Literal["char", "bytes"] = "char"
    vocab_size: int | None = Field(
        None, ge=2, description="default: the text's, or 50,304 (GPT-2's, padded) for shards"
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=1)
    block_size: int = Field(64, ge=2)
    batch_size: int = Field(12, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    eval_batches: int = Field(20, ge=1)
    autocast: Literal["auto", "off", "bf16"] = "auto"
    probe_batch_step: int | None = Field(
        None, ge=0, description="inject a held-out batch at this step and track its loss"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LMOptions:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


# -- reading data ----------------------------------------------------------------------------------


def read_shard(path: Path) -> np.ndarray:
    """The tokens of one ``.bin`` shard, memory-mapped (uint16), after checking its header."""
    size = path.stat().st_size
    if size < SHARD_HEADER_BYTES:
        raise DataError(
            f"{path} is not a token shard: {size} bytes, shorter than the 1024-byte header"
        )
    magic, version, n_tokens = np.fromfile(path, dtype="<i4", count=3).tolist()
    if magic != SHARD_MAGIC:
        raise DataError(
            f"{path} is not a token shard: magic number {magic}, expected {SHARD_MAGIC} "
            "(llm.c / modded-nanogpt .bin format)"
        )
    if version != SHARD_VERSION:
        raise DataError(f"{path}: shard version {version} is not supported (expected 1)")
    expected = SHARD_HEADER_BYTES + 2 * n_tokens
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: the header says {n_tokens} tokens ({expected} bytes), "
            f"the file has {size} bytes"
        )
    return np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(n_tokens,))


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write ``tokens`` (ids below 65,536) as one ``.bin`` shard."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, len(tokens))
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        fh.write(np.asarray(tokens, dtype="<u2").tobytes())


def shard_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(training, validation) shards of a folder or of a single ``.bin`` file."""
    if path.is_file():
        return [path], []
    files = sorted(path.glob("*.bin"))
    val = [f for f in files if "val" in f.name]
    train = [f for f in files if "train" in f.name] or [f for f in files if f not in val]
    if not train:
        raise DataError(f"{path} holds no training shards (*.bin besides *val*.bin)")
    return train, val


def is_shards(path: Path) -> bool:
    return path.suffix == ".bin" or (path.is_dir() and any(path.glob("*.bin")))


def encode_texts(raws: list[tuple[bytes, str]], tokenizer: str) -> tuple[list[torch.Tensor], int]:
    """Token ids (int64) of each (raw, source) and the vocabulary: the sorted distinct characters
    of all texts together, or the 256 byte values."""
    if tokenizer == "bytes":
        return [torch.frombuffer(bytearray(r), dtype=torch.uint8).long() for r, _ in raws], 256
    texts = []
    for raw, source in raws:
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "use --set tokenizer=bytes for arbitrary bytes"
            ) from exc
    chars = sorted(set().union(*texts))
    lookup = {ch: i for i, ch in enumerate(chars)}
    return [torch.tensor([lookup[ch] for ch in t], dtype=torch.long) for t in texts], len(chars)


def encode_text(raw: bytes, tokenizer: str, source: str) -> tuple[torch.Tensor, int]:
    """Token ids (int64) and vocabulary size of one text: sorted distinct characters, or bytes."""
    (tokens,), vocab = encode_texts([(raw, source)], tokenizer)
    return tokens, vocab


def split_tail(parts: list, n_val: int) -> tuple[list, list]:
    """Split a sequence of 1-D arrays into all but the last ``n_val`` tokens, and those."""
    train, val = list(parts), []
    while n_val > 0 and train:
        last = train.pop()
        take = min(n_val, len(last))
        val.insert(0, last[len(last) - take :])
        if take < len(last):
            train.append(last[: len(last) - take])
        n_val -= take
    return train, val


class TokenSplit:
    """One split's tokens in windows of ``window`` tokens that never cross from part to part.

    Text lives on the device as one int64 tensor; shards stay memory-mapped on the host and a
    batch is gathered there and copied over. Window starts are numbered across the parts.
    """

    def __init__(self, parts: list, window: int, device: torch.device, vocab_size: int, name: str):
        # len - window starts, as before: the very last window of a part is never drawn
        counts = [max(0, len(p) - window) for p in parts]
        self.parts, self.window, self.device, self.name = parts, window, device, name
        self.on_device = bool(parts) and torch.is_tensor(parts[0])
        self.vocab_size = vocab_size
        self.n_starts = sum(counts)
        self._ends = np.cumsum(counts)
        self._counts = np.asarray(counts)
        self._arange = torch.arange(window, device=device)

    def windows(self, starts: torch.Tensor) -> torch.Tensor:
        """(len(starts), window) int64 token ids on the device."""
        if self.on_device:
            data = self.parts[0]
            return data[starts.to(self.device, non_blocking=True)[:, None] + self._arange]
        g = starts.numpy()
        part = np.searchsorted(self._ends, g, side="right")
        local = g - (self._ends[part] - self._counts[part])
        rows = np.stack([self.parts[p][i : i + self.window] for p, i in zip(part, local)])
        top = int(rows.max())
        if top >= self.vocab_size:
            raise DataError(
                f"token id {top} in the {self.name} shards is outside the vocabulary of "
                f"{self.vocab_size}; pass --set vocab_size=N with N > {top}"
            )
        out = torch.from_numpy(rows.astype(np.int64))
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.windows(starts)
        return chunk[:, :-1], chunk[:, 1:]


def _path(text: str, option: str) -> Path:
    return check_data_path(Path(text).expanduser(), option, folder_ok=True)


def load_splits(o: LMOptions) -> tuple[list, list, int]:
    """(training parts, validation parts, vocabulary size) as the options say."""
    path = _path(o.data, "--data") if o.data else None
    val_path = _path(o.val_data, "--set val_data") if o.val_data else None
    if path is not None and is_shards(path):
        train_files, val_files = shard_files(path)
        if val_path is not None:
            if not is_shards(val_path):
                raise DataError(f"{val_path}: token shards train with token shards (.bin) only")
            val_files = shard_files(val_path)[0]
        train = [read_shard(f) for f in train_files]
        val = [read_shard(f) for f in val_files]
        if not val:
            train, val = split_tail(train, int(sum(map(len, train)) * o.val_fraction))
        vocab = o.vocab_size or GPT2_VOCAB
        return train, val, vocab
    if path is not None and path.is_dir() and not (path / TINY_SHAKESPEARE.name).is_file():
        raise DataError(f"{path} holds no .bin token shards and no {TINY_SHAKESPEARE.name}")
    text = locate(TINY_SHAKESPEARE, o.data)
    sources = [text] if val_path is None else [text, val_path]
    if val_path is not None and (val_path.is_dir() or is_shards(val_path)):
        raise DataError(f"{val_path}: a text file trains with a text validation file only")
    tokens, vocab = encode_texts([(p.read_bytes(), str(p)) for p in sources], o.tokenizer)
    if o.vocab_size is not None:
        if o.vocab_size < vocab:
            raise DataError(f"{text} has {vocab} distinct tokens, more than vocab_size")
        vocab = o.vocab_size
    if val_path is not None:
        return tokens[:1], tokens[1:], vocab
    (data,) = tokens
    cut = len(data) - int(len(data) * o.val_fraction)
    return [data[:cut]], [data[cut:]], vocab


# -- the task --------------------------------------------------------------------------------------


class CharLM(Task):
    """A GPT on a text file or token shards: next-token prediction.

    With ``--set probe_batch_step=K`` (the AdEMAMix paper's forgetting probe), one training batch
    drawn from the run's seed is held out of the stream (windows that touch it are redrawn),
    injected once as the K-th batch (0-based), and its loss is reported as ``probe_loss`` at
    every evaluation after the stream has yielded it.
    """

    Options = LMOptions
    unit = "tokens"
    metric_directions = {"val_loss": "min", "train_loss": "min", "probe_loss": "min"}
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def prepare(self, device: torch.device) -> None:
        o = self.options
        train, val, self.vocab_size = load_splits(o)
        self.device = device
        window = o.block_size + 1
        if train and torch.is_tensor(train[0]):  # text: one tensor per split, kept on the device
            train, val = [train[0].to(device)], [val[0].to(device)]
        self.train = TokenSplit(train, window, device, self.vocab_size, "training")
        self.val = TokenSplit(val, window, device, self.vocab_size, "validation")
        for split in (self.train, self.val):
            if split.n_starts <= 0:
                n = sum(map(len, split.parts))
                raise DataError(
                    f"{o.data or TINY_SHAKESPEARE.name}: the {split.name} split is too short "
                    f"({n} tokens) for block_size {o.block_size}"
                )
        gen = torch.Generator().manual_seed(EVAL_SEED)
        self.eval_starts = {
            name: torch.randint(split.n_starts, (o.eval_batches, o.batch_size), generator=gen)
            for name, split in (("val", self.val), ("train", self.train))
        }
        self._probe: torch.Tensor | None = None
        self._yielded = 0

    @property
    def units_per_step(self) -> int:
        return self.options.batch_size * self.options.block_size

    def build_model(self) -> nn.Module:
        o = self.options
        return GPT(self.vocab_size, o.block_size, o.n_layer, o.n_head, o.n_embd, o.dropout)

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of window starts drawn from ``seed`` alone (the optimizer never matters)."""
        o = self.options
        self._yielded = 0  # reset now, not lazily: the runner evaluates before the first batch
        self._probe = None
        if o.probe_batch_step is not None:
            gen = torch.Generator().manual_seed(PROBE_SEED + seed)
            self._probe = torch.randint(self.train.n_starts, (o.batch_size,), generator=gen)
        return self._stream(seed)

    def _stream(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        gen = torch.Generator().manual_seed(seed)
        side = torch.Generator().manual_seed(REDRAW_SEED + seed)
        while True:
            # always drawn, so that a run with the probe sees the same stream but at step K
            starts = torch.randint(self.train.n_starts, (o.batch_size,), generator=gen)
            if self._probe is not None:
                if self._yielded == o.probe_batch_step:
                    starts = self._probe
                else:
                    starts = self._avoid_probe(starts, side)
            self._yielded += 1
            yield self.train.batch(starts)

    def _avoid_probe(self, starts: torch.Tensor, side: torch.Generator) -> torch.Tensor:
        """Redraw (from ``side``) any window that shares a token with the probe batch."""
        window = self.train.window
        for _ in range(1000):
            clash = ((starts[:, None] - self._probe[None, :]).abs() < window).any(dim=1)
            if not clash.any():
                return starts
            fresh = torch.randint(self.train.n_starts, (int(clash.sum()),), generator=side)
            starts = starts.clone()
            starts[clash] = fresh
        raise DataError("the training data is too small to hold a probe batch out of it")

    def _autocast(self):
        mode = self.options.autocast
        if mode == "bf16" or (mode == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        with self._autocast():
            logits = model(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {}
        for name, split in (("val", self.val), ("train", self.train)):
            losses = torch.stack(
                [self.loss(model, split.batch(starts)) for starts in self.eval_starts[name]]
            )
            out[f"{name}_loss"] = float(losses.mean())  # one sync per split
        # steps_done, not batches yielded: MARS exact draws one batch ahead of training
        if self._probe is not None and self.steps_done > self.options.probe_batch_step:
            out["probe_loss"] = float(self.loss(model, self.train.batch(self._probe)))
        return out


class LMSmallOptions(LMOptions):
    PRESETS = {
        "default": {},
        "tiny": dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_batches=2),
    }


@TASKS.register("lm-small")
class LMSmall(CharLM):
    """Character-level GPT on Tiny Shakespeare, sized like nanoGPT's CPU configuration.

    4 layers, 4 heads, width 128, context 64, batch 12, no dropout; 2,000 steps, lr 1e-3 with 100
    warmup steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices;
    90/10 train/validation split. Target: validation loss 2.0. Unit: tokens (768 per step).
    Data: --data PATH, else $BENCH_DATA_DIR/tinyshakespeare.txt, else the cache, else a download.
    Any LM task also reads your own data: --data a UTF-8 text file (--set tokenizer=bytes for
    bytes), a .bin token shard or a folder of them (*train*.bin, *val*.bin); --set val_data=PATH
    for a separate validation set; --set probe_batch_step=K for the forgetting probe.
    """

    Options = LMSmallOptions
    SETTINGS = {
        "default": dict(
            steps=2000,
            warmup_steps=100,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=100,
            log_interval=10,
        ),
        "tiny": dict(
            steps=20,
            warmup_steps=2,
            schedule="cosine",
            min_lr_ratio=0.1,
            grad_clip=1.0,
            eval_interval=10,
            log_interval=5,
        ),
    }
    TARGETS = {
        "default": Target(metric="val_loss", value=2.0),
        "tiny": Target(metric="val_loss", value=3.5),
    }
