"""Language-model tasks: token shards, your own text, lm-medium and lm-gpt2, the forgetting probe,
and data order that depends on the seed alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench_cli import api
from bench_cli.cli import app
from bench_cli.errors import DataError
from bench_cli.runner import run as run_loop
from bench_cli.tasks import TASKS
from bench_cli.tasks.lm import read_shard, shard_files, write_shard

TINY_STEPS, TINY_BATCH, TINY_BLOCK = 20, 4, 32


def shard_bytes(tokens, magic: int = 20240520, version: int = 1, count: int | None = None) -> bytes:
    """The llm.c / modded-nanogpt format, written here independently of the package."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = (magic, version, len(tokens) if count is None else count)
    return header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes()


def pattern(n: int, seed: int, vocab: int = 50257) -> np.ndarray:
    """A learnable token stream: one random 40-token phrase repeated, 10% of tokens replaced."""
    phrase = np.random.default_rng(123).integers(0, vocab, 40)
    rng = np.random.default_rng(seed)
    out = np.tile(phrase, n // 40 + 1)[:n]
    noise = rng.random(n) < 0.1
    out[noise] = rng.integers(0, vocab, int(noise.sum()))
    return out


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    folder = tmp_path / "fineweb10B"
    folder.mkdir()
    for name, n, seed in (("train_000", 6000, 1), ("train_001", 6000, 2), ("val_000", 3000, 3)):
        (folder / f"fineweb_{name}.bin").write_bytes(shard_bytes(pattern(n, seed)))
    return folder


def make(name: str, **options):
    cls = TASKS.get(name)
    task = cls(cls.Options(**options))
    task.prepare(torch.device("cpu"))
    return task


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", "--opt", "adamw", *args, "--quiet"])


def only_record(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())


def first(task, seed: int, n: int) -> list[torch.Tensor]:
    return [x for (x, _), _ in zip(task.batches(seed), range(n))]


# -- the shard reader ------------------------------------------------------------------------------


def test_shard_reader_reads_what_the_test_wrote(tmp_path: Path) -> None:
    tokens = np.array([0, 1, 50256, 65535, 7, 7, 300], dtype=np.uint16)
    (tmp_path / "a.bin").write_bytes(shard_bytes(tokens))
    np.testing.assert_array_equal(read_shard(tmp_path / "a.bin"), tokens)
    write_shard(tmp_path / "b.bin", tokens)  # the package's writer makes the same bytes
    assert (tmp_path / "b.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (shard_bytes([1, 2, 3], magic=20240801), "magic number 20240801"),
        (shard_bytes([1, 2, 3], version=7), "version 7"),
        (shard_bytes([1, 2, 3], count=10), "truncated"),
        (shard_bytes([1, 2, 3], count=2), "longer than its header says"),
        (b"\x00" * 100, "shorter than the 1024-byte header"),
    ],
)
def test_corrupt_shard_is_a_clear_error_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "broken_train.bin"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_shard(path)
    assert str(path) in str(info.value)


def test_a_folder_gives_train_and_val_shards_by_name(shards: Path) -> None:
    train, val = shard_files(shards)
    assert [p.name for p in train] == ["fineweb_train_000.bin", "fineweb_train_001.bin"]
    assert [p.name for p in val] == ["fineweb_val_000.bin"]


def test_shards_without_val_files_split_off_the_last_tokens(tmp_path: Path) -> None:
    tokens = pattern(5000, 0)
    write_shard(tmp_path / "data_00.bin", tokens[:3000])
    write_shard(tmp_path / "data_01.bin", tokens[3000:])
    task = make("lm-small", preset="tiny", data=str(tmp_path), val_fraction=0.2)
    joined = np.concatenate([*task.train.parts, *task.val.parts])
    np.testing.assert_array_equal(joined, tokens)
    assert sum(map(len, task.val.parts)) == 1000 and task.vocab_size == 50304


def test_shards_and_a_separate_validation_shard(shards: Path, tmp_path: Path) -> None:
    other = tmp_path / "heldout.bin"
    write_shard(other, pattern(2000, 9))
    task = make("lm-gpt2", preset="tiny", data=str(shards), val_data=str(other))
    assert len(task.train.parts) == 2
    np.testing.assert_array_equal(task.val.parts[0], pattern(2000, 9))


def test_token_outside_the_vocabulary_is_a_clear_error(tmp_path: Path) -> None:
    write_shard(tmp_path / "x_train.bin", np.full(4000, 60000))
    write_shard(tmp_path / "x_val.bin", np.full(1000, 60000))
    task = make("lm-small", preset="tiny", data=str(tmp_path))
    with pytest.raises(DataError, match="vocab_size"):
        next(iter(task.batches(0)))


# -- lm-gpt2 and lm-medium through the CLI ---------------------------------------------------------


def test_lm_gpt2_tiny_trains_on_shards_the_test_wrote(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = invoke(
        "--task", "lm-gpt2", "--set", "preset=tiny", "--data", str(shards), "--out", str(out)
    )
    assert res.exit_code == 0, res.output
    rec = only_record(out)
    assert rec["status"] == "done" and rec["unit"] == "tokens"
    assert rec["tokens_done"] == TINY_STEPS * TINY_BATCH * TINY_BLOCK
    losses = [p["metrics"]["val_loss"] for p in rec["curve"]]
    assert losses[-1] < losses[0] < 11.5  # starts near ln(50304) = 10.8, then learns


@pytest.mark.parametrize("data", [None, "text"])
def test_lm_gpt2_without_shards_is_a_clear_error(data, tmp_path: Path) -> None:
    args = ["--task", "lm-gpt2", "--out", str(tmp_path / "out")]
    if data == "text":
        (tmp_path / "t.txt").write_text("hello world\n" * 100)
        args += ["--data", str(tmp_path / "t.txt")]
    res = invoke(*args)
    assert res.exit_code == 1
    assert "token shards" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_lm_medium_tiny_runs_through_the_cli(shared_data: Path, tmp_path: Path) -> None:
    args = ["--task", "lm-medium", "--set", "preset=tiny", "--data", str(shared_data)]
    res = invoke(*args, "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rec = only_record(tmp_path)
    assert rec["status"] == "done" and rec["tokens_done"] == TINY_STEPS * TINY_BATCH * TINY_BLOCK
    assert rec["task_options"]["dropout"] == 0.2 and rec["settings"]["eval_interval"] == 10
    # nanoGPT decays every matrix, the (tied) token and the position embeddings included
    decay = rec["param_groups"][0]
    assert decay["name"] == "decay" and decay["numel"] == 65 * 32 + 32 * 32 + 12 * 32 * 32


def test_lm_medium_defaults_are_nanogpts_shakespeare_char() -> None:
    cls = TASKS.get("lm-medium")
    task = cls(cls.Options())
    o, s = task.options, task.default_settings()
    assert (o.n_layer, o.n_head, o.n_embd, o.block_size, o.batch_size) == (6, 6, 384, 256, 64)
    # 96 validation batches (6,144 windows), not nanoGPT's 200 per split: evaluation's cost
    assert (o.dropout, o.eval_batches) == (0.2, 96)
    assert (s["steps"], s["warmup_steps"], s["eval_interval"], s["grad_clip"]) == (
        5000,
        100,
        250,
        1,
    )
    assert s["min_lr_ratio"] * task.BASELINE["lr"] == pytest.approx(1e-4)
    assert task.BASELINE["betas"] == (0.9, 0.99) and task.BASELINE["weight_decay"] == 0.1
    assert task.default_target().value == 1.55


# -- your own text ---------------------------------------------------------------------------------


def test_bytes_tokenizer_reads_any_file(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 40 + "naïve café\n".encode() * 50
    (tmp_path / "blob.dat").write_bytes(raw)
    with pytest.raises(DataError, match="tokenizer=bytes"):
        make("lm-small", preset="tiny", data=str(tmp_path / "blob.dat"))
    task = make("lm-small", preset="tiny", data=str(tmp_path / "blob.dat"), tokenizer="bytes")
    assert task.vocab_size == 256
    data = torch.cat([task.train.parts[0], task.val.parts[0]])
    assert bytes(data.to(torch.uint8).tolist()) == raw
    args = ["--task", "lm-small", "--set", "preset=tiny", "--set", "tokenizer=bytes"]
    res = invoke(
        *args, "--steps", "2", "--data", str(tmp_path / "blob.dat"), "--out", str(tmp_path)
    )
    assert res.exit_code == 0, res.output


def test_separate_validation_text_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    (tmp_path / "val.txt").write_text("PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS!\n" * 10)
    task = make(
        "lm-small",
        preset="tiny",
        data=str(tmp_path / "train.txt"),
        val_data=str(tmp_path / "val.txt"),
    )
    chars = sorted(set((tmp_path / "train.txt").read_text() + (tmp_path / "val.txt").read_text()))
    assert task.vocab_size == len(chars)  # one vocabulary for both files
    decoded = "".join(chars[i] for i in task.val.parts[0].tolist())
    assert decoded == (tmp_path / "val.txt").read_text()
    assert len(task.train.parts[0]) == len((tmp_path / "train.txt").read_text())


def test_missing_or_too_short_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        make("lm-small", preset="tiny", data=str(tmp_path / "nope.txt"))
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(DataError, match="too short"):
        make("lm-small", preset="tiny", data=str(tmp_path / "short.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .bin token shards"):
        make("lm-small", preset="tiny", data=str(tmp_path / "empty"))


# -- the forgetting probe --------------------------------------------------------------------------


def test_probe_loss_is_recorded_before_and_after_its_injection(
    shared_data: Path, tmp_path: Path
) -> None:
    req = api.RunRequest(
        task="lm-small",
        optimizers=["adamw"],
        sets=["preset=tiny", "probe_batch_step=5", "eval_interval=5"],
        data=str(shared_data),
        device="cpu",
    )
    (rec,) = api.run(req, tmp_path)
    assert [p.step for p in rec.curve] == [0, 5, 10, 15, 20]
    # from the start, so the curve shows the dip after step 6 (the batch is the 6th, index 5)
    assert [p.step for p in rec.probe_curve] == [0, 5, 10, 15, 20]
    # at step 0 it is the loss of the freshly initialised model on the probe batch
    task = make("lm-small", preset="tiny", data=str(shared_data), probe_batch_step=5)
    task.batches(0)
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        x, y = task.train.batch(task._probe)
        logits = model(x)
        expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
    assert rec.probe_curve[0].metrics["probe_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert (
        "probe_loss"
        in json.loads(next(tmp_path.glob("*.json")).read_text())["probe_curve"][0]["metrics"]
    )


def test_val_loss_standard_error_and_train_loss_from_the_steps(shared_data: Path) -> None:
    """val_loss: one window start in each of 12 equal strata of the split, the losses weighted by
    the strata's sizes; val_loss_se: strata paired in order, each pair's variance as a sample of
    its union (the collapsed-strata estimator), computed here by hand."""
    task = make("lm-small", preset="tiny", data=str(shared_data), eval_batches=3)
    torch.manual_seed(0)
    model = task.build_model()
    stream = task.batches(0)
    losses = [task.loss(model, next(stream)).item() for _ in range(3)]  # grad on: training
    n_starts, n = task.val.n_starts, 3 * 4
    bounds = [h * n_starts // n for h in range(n + 1)]
    starts = task.eval_starts.tolist()
    assert len(starts) == n and all(bounds[h] <= s < bounds[h + 1] for h, s in enumerate(starts))
    with torch.no_grad():
        metrics = task.evaluate(model.eval())
        per_window = []
        for s in starts:
            x, y = task.val.batch(torch.tensor([s]))
            per_window.append(float(torch.nn.functional.cross_entropy(model(x)[0], y[0])))
    w = [(bounds[h + 1] - bounds[h]) / n_starts for h in range(n)]
    mean = sum(wi * yi for wi, yi in zip(w, per_window))
    var = 0.0
    for g in range(0, n, 2):
        ys, share = per_window[g : g + 2], w[g] + w[g + 1]
        m = sum(ys) / 2
        var += share**2 * (sum((v - m) ** 2 for v in ys) / 1) / 2
    assert metrics["val_loss"] == pytest.approx(mean, rel=1e-5)
    assert metrics["val_loss_se"] == pytest.approx(var**0.5, rel=1e-4)
    assert metrics["train_loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    with torch.no_grad():
        assert "train_loss" not in task.evaluate(model)  # no step since the last evaluation


def test_batches_from_resumes_the_stream(shared_data: Path) -> None:
    plain = make("lm-small", preset="tiny", data=str(shared_data))
    probed = make("lm-small", preset="tiny", data=str(shared_data), probe_batch_step=3)
    for task in (plain, probed):
        whole = first(task, 2, 9)
        resumed = [x for (x, _), _ in zip(task.batches_from(2, 2), range(7))]
        assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed))


def test_probe_batch_replaces_step_k_and_nothing_else(shared_data: Path) -> None:
    plain = make("lm-small", preset="tiny", data=str(shared_data))
    probed = make("lm-small", preset="tiny", data=str(shared_data), probe_batch_step=3)
    a, b = first(plain, 0, 30), first(probed, 0, 30)
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if not torch.equal(x, y)]
    assert differ == [3]
    x_probe, _ = probed.train.batch(probed._probe)
    assert torch.equal(b[3], x_probe)
    # the held-out batch depends on the seed
    probed.batches(1)
    assert not torch.equal(probed.train.batch(probed._probe)[0], x_probe)


def test_windows_touching_the_probe_batch_are_redrawn(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_text("".join(chr(97 + i % 26) for i in range(4000)))
    task = make("lm-small", preset="tiny", data=str(tmp_path / "small.txt"), probe_batch_step=2)
    seen: list[torch.Tensor] = []
    batch = task.train.batch
    task.train.batch = lambda starts: (seen.append(starts), batch(starts))[1]
    first(task, 0, 200)
    window = task.train.window

    def touches(starts: torch.Tensor) -> bool:
        return bool(((starts[:, None] - task._probe[None, :]).abs() < window).any())

    assert torch.equal(seen[2], task._probe)
    assert not any(touches(starts) for i, starts in enumerate(seen) if i != 2)
    # ... while the stream without the probe would have touched it many times
    gen = torch.Generator().manual_seed(0)
    plain = [torch.randint(task.train.n_starts, (TINY_BATCH,), generator=gen) for _ in range(200)]
    assert sum(map(touches, plain)) > 20


# -- data order ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["text", "shards"])
def test_same_seed_same_batches_other_seed_other_batches(
    source: str, shared_data: Path, shards: Path
) -> None:
    data = str(shared_data) if source == "text" else str(shards)
    task = make("lm-small", preset="tiny", data=data)
    a, b, c = first(task, 0, 5), first(task, 0, 5), first(task, 1, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))


def test_batches_do_not_depend_on_the_optimizer(shared_data: Path) -> None:
    req = api.RunRequest(
        task="lm-small",
        optimizers=["adamw", "lion"],
        sets=["preset=tiny", "steps=5"],
        data=str(shared_data),
        device="cpu",
    )
    task, specs = api.plan_runs(req)
    task.prepare(torch.device("cpu"))
    make_stream = task.batches_from  # what the runner draws from
    seen: dict[str, list[torch.Tensor]] = {}

    for spec in specs:
        got = seen[spec.optimizer] = []

        def recording(seed: int, start: int, got=got):
            for batch in make_stream(seed, start):
                got.append(batch[0])
                yield batch

        task.batches_from = recording
        assert run_loop(spec, task, torch.device("cpu")).status == "done"
    assert len(seen["adamw"]) == 5
    assert all(torch.equal(x, y) for x, y in zip(seen["adamw"], seen["lion"]))
