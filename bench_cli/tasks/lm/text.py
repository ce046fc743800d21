"""GPTs on your data: a text file (characters or bytes) or llm.c-style token shards.

``--data`` takes a UTF-8 text file (Tiny Shakespeare by default), a ``.bin`` token shard, or a
folder of shards (``*train*.bin`` for training, ``*val*.bin`` for validation when present);
``bench data shards`` makes shards from any text. Reading is in ``tokens.py``.

Evaluation cost (see ``gpt.py``): a validation window costs about a third to a half of a
training window (no backward pass, no optimizer step), so the defaults hold few evaluations of
many windows, one start drawn in each of equal strata of the split (``sampling.py``).
lm-small: 2,400 windows every 500 steps; on a 2-core CPU (one thread) evaluation took 14.7% of
the training time in one run. After 2,000 steps the stratified windows give ``val_loss_se``
0.0034, where as many random windows gave 0.0046 (``benchmarks/eval_sampling.py``); at
lm-medium's 6,144 windows of 256 characters, 0.0004 against 0.0021.
lm-medium: 6,144 windows every 250 steps, 11.3% of the training time on an H200; with random
windows ``val_loss_se`` ended its default run at 0.0047 (0.0079 with 2,048 windows, as the model
overfits and its windows' losses spread). lm-gpt2: 3,200 windows every 500 steps, 7.5% on an
H200; on Python sources ``val_loss_se`` is 0.0005 with stratified windows, 0.014 with random
ones (PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from bench_cli.errors import DataError
from bench_cli.results.record import Target
from bench_cli.tasks import TASKS
from bench_cli.tasks.base import Preset, run_settings
from bench_cli.tasks.data import TINY_SHAKESPEARE
from bench_cli.tasks.lm.gpt import GPTOptions, GPTTask, nanogpt_param_groups
from bench_cli.tasks.lm.sampling import stratified_mean_se, stratified_starts
from bench_cli.tasks.lm.tokens import GPT2_VOCAB, TokenSplit, is_shards, load_splits

#: evaluation batches are the same for every run, seed and optimizer
EVAL_SEED = 1337
#: the probe batch, and windows redrawn to avoid it, come from their own streams, seeded with
#: these plus the run's seed (below 2**32: the CPU generator keeps only a seed's low 32 bits)
PROBE_SEED = 2_718_281_828
REDRAW_SEED = 3_141_592_653


class LMOptions(GPTOptions):
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
    eval_batches: int = Field(200, ge=1, description="validation batches per evaluation")
    probe_batch_step: int | None = Field(
        None, ge=0, description="inject a held-out batch at this step and track its loss"
    )


class CharLM(GPTTask):
    """A GPT on a text file or token shards: next-token prediction.

    With ``--set probe_batch_step=K`` (the AdEMAMix paper's forgetting probe), one training batch
    drawn from the run's seed is held out of the stream (windows that touch it are redrawn) and
    injected once as the K-th batch (0-based); its loss is reported as ``probe_loss`` at every
    evaluation, before the injection too, so the curve shows the dip and then the forgetting.
    """

    Options = LMOptions
    BASELINE = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    metric_directions = {**GPTTask.metric_directions, "probe_loss": "min"}

    def _vocab_for_memory(self) -> int:
        return getattr(self, "vocab_size", None) or self.options.vocab_size or 256

    def prepare(self, device: torch.device) -> None:
        o = self.options
        train, val, self.vocab_size = load_splits(
            o.data, o.val_data, o.tokenizer, o.vocab_size, o.val_fraction
        )
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
        self.eval_starts, self.eval_weights, self.eval_groups = stratified_starts(
            self.val.n_starts, o.eval_batches * o.batch_size, gen
        )
        self._probe: torch.Tensor | None = None
        self._yielded = 0

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of window starts drawn from ``seed`` alone (the optimizer never matters)."""
        return self.batches_from(seed, 0)

    def batches_from(self, seed: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        # reset now, not lazily: the runner evaluates before the first batch
        self._yielded = 0
        self._train_sum, self._train_count = 0.0, 0
        self._probe = None
        if o.probe_batch_step is not None:
            gen = torch.Generator().manual_seed(PROBE_SEED + seed)
            self._probe = torch.randint(self.train.n_starts, (o.batch_size,), generator=gen)
        return self._stream(seed, step)

    def _stream(self, seed: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        gen = torch.Generator().manual_seed(seed)
        side = torch.Generator().manual_seed(REDRAW_SEED + seed)
        if skip and self._probe is None:  # one draw of skip batches advances the generator
            torch.randint(self.train.n_starts, (skip, o.batch_size), generator=gen)
            self._yielded = skip
        while True:
            # always drawn, so that a run with the probe sees the same stream but at step K
            starts = torch.randint(self.train.n_starts, (o.batch_size,), generator=gen)
            if self._probe is not None:
                if self._yielded == o.probe_batch_step:
                    starts = self._probe
                else:
                    starts = self._avoid_probe(starts, side)
            self._yielded += 1
            if self._yielded > skip:
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

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        starts = self.eval_starts.split(self.eval_chunk())
        losses = torch.cat([self.window_losses(model, self.val.batch(s)) for s in starts])
        val_loss, se = stratified_mean_se(losses, self.eval_weights, self.eval_groups)
        out = {"val_loss": val_loss, "val_loss_se": se, **self.train_loss()}
        if self._probe is not None:
            out["probe_loss"] = float(
                self.window_losses(model, self.train.batch(self._probe)).mean()
            )
        return out


_TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_batches=2)
_TINY_RUN = run_settings(20, 10, warmup_steps=2, log_interval=5)


@TASKS.register("lm-small")
class LMSmall(CharLM):
    """Character-level GPT on Tiny Shakespeare, sized like nanoGPT's CPU configuration.

    4 layers, 4 heads, width 128, context 64, batch 12, no dropout; 2,000 steps, lr 1e-3 with 100
    warmup steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices;
    90/10 train/validation split; evaluation every 500 steps on 200 fixed batches (2,400
    windows).
    Target: validation loss 2.0. Unit: tokens (768 per step).
    Data: --data PATH, else $BENCH_DATA_DIR/tinyshakespeare.txt, else the cache, else a download.
    Any LM task also reads your own data: --data a UTF-8 text file (--set tokenizer=bytes for
    bytes), a .bin token shard or a folder of them (*train*.bin, *val*.bin); --set val_data=PATH
    for a separate validation set; --set probe_batch_step=K for the forgetting probe.
    """

    PRESETS = {
        "default": Preset(
            run_settings(2000, 500, warmup_steps=100, log_interval=10),
            Target(metric="val_loss", value=2.0),
        ),
        "tiny": Preset(_TINY_RUN, Target(metric="val_loss", value=3.5), _TINY),
    }


class LMMediumOptions(LMOptions):
    n_layer: int = Field(6, ge=1)
    n_head: int = Field(6, ge=1)
    n_embd: int = Field(384, ge=1)
    block_size: int = Field(256, ge=2)
    batch_size: int = Field(64, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    eval_batches: int = Field(96, ge=1)


@TASKS.register("lm-medium")
class LMMedium(CharLM):
    """Character-level GPT on Tiny Shakespeare: nanoGPT's shakespeare_char configuration.

    6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2 (10.7M parameters); 5,000
    steps, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99),
    weight decay 0.1 on every matrix (embeddings included, as nanoGPT), grad clip 1.0; 90/10
    split; evaluation every 250 steps on 96 fixed validation batches (6,144 windows). nanoGPT
    reports a best validation loss of 1.4697; target: validation loss 1.55. Unit: tokens
    (16,384 per step). A GPU task: bf16 autocast on CUDA, --compile for torch.compile. The data
    repeat (about 80 epochs): see lm-markov for a stream that never does.
    """

    Options = LMMediumOptions
    PRESETS = {
        "default": Preset(
            run_settings(5000, 250, warmup_steps=100, log_interval=10),
            Target(metric="val_loss", value=1.55),
        ),
        "tiny": Preset(_TINY_RUN, Target(metric="val_loss", value=3.5), _TINY),
    }

    def param_groups(self, model: nn.Module) -> list[dict]:
        return nanogpt_param_groups(model)


class LMGPT2Options(LMOptions):
    vocab_size: int | None = Field(GPT2_VOCAB, ge=2, description="GPT-2's 50,257, padded")
    n_layer: int = Field(12, ge=1)
    n_head: int = Field(12, ge=1)
    n_embd: int = Field(768, ge=1)
    block_size: int = Field(1024, ge=2)
    batch_size: int = Field(32, ge=1)
    eval_batches: int = Field(100, ge=1)


@TASKS.register("lm-gpt2")
class LMGPT2(CharLM):
    """GPT-2 small (124M) on your token shards, for GPUs, e.g. FineWeb as modded-nanogpt has it.

    12 layers, 12 heads, width 768, context 1,024, vocabulary 50,304, no dropout, tied
    embeddings; batch 32 (32,768 tokens per step, no gradient accumulation); 10,000 steps
    (328M tokens), lr 6e-4 with 500 warmup steps and cosine decay to 6e-5, AdamW betas
    (0.9, 0.95), weight decay 0.1 on every matrix, grad clip 1.0; evaluation every 500 steps on
    100 fixed validation batches. Target: validation loss 1.6, measured on GPT-2 shards of the
    Python 3.11 standard library (6.5M training tokens; PERFORMANCE.md), where AdamW at these
    defaults reaches 1.586 at step 1,000 (32.8M tokens). It holds for that data only: web text
    such as FineWeb stays far above it, so on other data set your own (--set run.target=X) or
    calibrate it in a suite (target: calibrate).
    Data (required): --data FOLDER of llm.c / modded-nanogpt .bin shards, *train*.bin for
    training and *val*.bin for validation (else the last 10% of the tokens); make them from any
    text with ``bench data shards SRC --out FOLDER``. Unit: tokens.
    """

    Options = LMGPT2Options
    BASELINE = dict(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    PRESETS = {
        "default": Preset(
            run_settings(10_000, 500, warmup_steps=500, log_interval=10),
            Target(metric="val_loss", value=1.6),
        ),
        "tiny": Preset(_TINY_RUN, Target(metric="val_loss", value=10.7), _TINY),
    }

    def prepare(self, device: torch.device) -> None:
        data = self.options.data
        if data is None:
            raise DataError(
                "lm-gpt2 trains on token shards that you supply: pass --data FOLDER holding "
                "llm.c / modded-nanogpt .bin shards (make them with `bench data shards`)"
            )
        if Path(data).expanduser().exists() and not is_shards(Path(data).expanduser()):
            raise DataError(
                f"{data} holds no .bin token shards; lm-gpt2 reads GPT-2 tokens in llm.c / "
                "modded-nanogpt .bin shards, not text (make them with `bench data shards`)"
            )
        super().prepare(device)

    def param_groups(self, model: nn.Module) -> list[dict]:
        return nanogpt_param_groups(model)
