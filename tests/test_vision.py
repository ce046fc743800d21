"""vit-small: the loaders against the real Fashion-MNIST files, checksum and missing-file errors,
the CIFAR-10 pickle reader, deterministic batches, augmentation, and tiny runs through the CLI."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.errors import DataError
from bench_cli.tasks.data import RemoteFile, sha256_of
from bench_cli.tasks.vision import (
    CIFAR10_NAME,
    FASHION_MNIST,
    VisionOptions,
    ViTSmall,
    cifar10_source,
    crop_flip,
    epoch_orders,
    fashion_mnist_files,
    read_cifar10,
    read_idx,
)

FMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
NAMES = [r.name for r in FASHION_MNIST]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fmnist_task() -> ViTSmall:
    """The tiny task with the real files loaded once for the module (on the CPU)."""
    if not all((FMNIST / n).is_file() for n in NAMES):
        pytest.skip(f"Fashion-MNIST not found at {FMNIST}")
    task = ViTSmall(VisionOptions(preset="tiny", data=str(FMNIST)))
    task.prepare(torch.device("cpu"))
    return task


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path: Path) -> None:
    """Hide /usr/share/datasets/fashion-mnist and make every download fail at once."""
    monkeypatch.setattr("bench_cli.tasks.vision.task.SYSTEM_FASHION_MNIST", tmp_path / "no-system")
    unreachable = tuple(
        RemoteFile(r.name, "http://127.0.0.1:9/" + r.name, r.sha256) for r in FASHION_MNIST
    )
    monkeypatch.setattr("bench_cli.tasks.vision.task.FASHION_MNIST", unreachable)


# -- Fashion-MNIST files ------------------------------------------------------------------------


def test_real_files_have_the_published_checksums_shapes_and_labels(fmnist_task) -> None:
    for remote in FASHION_MNIST:
        assert sha256_of(FMNIST / remote.name) == remote.sha256
    t = fmnist_task
    # validation: the last 6,000 training images; the official test set apart
    assert t.train_x.shape == (54000, 1, 28, 28) and t.train_x.dtype == torch.uint8
    assert t.val_x.shape == (6000, 1, 28, 28) and t.test_x.shape == (10000, 1, 28, 28)
    assert t.train_y.shape == (54000,) and t.val_y.shape == (6000,) and t.test_y.shape == (10000,)
    train = torch.cat([t.train_y, t.val_y])
    for y in (train, t.test_y):
        assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9
        assert torch.bincount(y).tolist() == [len(y) // 10] * 10  # balanced classes
    assert 0.27 < t.train_x.float().mean() / 255 < 0.30  # the normalisation's mean, 0.286


def _copy_with(folder: Path, corrupt: str | None = None) -> Path:
    """The four files linked into ``folder``; ``corrupt`` is copied with one byte flipped."""
    folder.mkdir()
    for name in NAMES:
        if name == corrupt:
            data = bytearray((FMNIST / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (folder / name).write_bytes(bytes(data))
        else:
            os.symlink(FMNIST / name, folder / name)
    return folder


def test_corrupt_file_is_a_checksum_error_naming_it(fmnist_task, tmp_path: Path) -> None:
    folder = _copy_with(tmp_path / "fm", corrupt="train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        fashion_mnist_files(str(folder))
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(err.value)
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "vit-small",
        "--set",
        "preset=tiny",
        "--data",
        str(folder),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert res.exit_code == 1
    assert "checksum mismatch" in res.output and "train-labels-idx1-ubyte.gz" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_missing_file_says_which_and_how_to_supply_it(fmnist_task, tmp_path: Path) -> None:
    folder = _copy_with(tmp_path / "fm")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as err:
        fashion_mnist_files(str(folder))
    assert "--data" in str(err.value) and "BENCH_DATA_DIR" in str(err.value)


def test_offline_without_any_copy_says_how_to_supply_the_files(no_system_copy, tmp_path) -> None:
    res = invoke(
        "run", "--opt", "adamw", "--task", "vit-small", "--out", str(tmp_path / "o"), "--quiet"
    )
    assert res.exit_code == 1
    assert "--data" in res.output and "BENCH_DATA_DIR" in res.output
    assert not (tmp_path / "o").exists()


def test_data_dir_and_cache_are_searched(
    fmnist_task, no_system_copy, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(FMNIST.parent))  # holds fashion-mnist/
    assert fashion_mnist_files(None) == [FMNIST / n for n in NAMES]
    monkeypatch.setenv("BENCH_DATA_DIR", str(FMNIST))  # holds the files themselves
    assert fashion_mnist_files(None) == [FMNIST / n for n in NAMES]
    monkeypatch.delenv("BENCH_DATA_DIR")
    cache = Path(os.environ["BENCH_CACHE_DIR"]) / "fashion-mnist"
    cache.parent.mkdir(parents=True)
    _copy_with(cache)  # conftest points the cache into tmp_path
    assert fashion_mnist_files(None) == [cache / n for n in NAMES]


def test_idx_with_a_bad_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 1, 2]))  # says 3 dimensions, reader wants 1
    with pytest.raises(DataError, match="bad-idx1-ubyte"):
        read_idx(path, 1)
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))  # says 5 values, holds 2
    with pytest.raises(DataError, match="holds 2 values"):
        read_idx(path, 1)


# -- CIFAR-10 -----------------------------------------------------------------------------------

N_PER_BATCH = 16


def _cifar_batches(n: int = N_PER_BATCH) -> dict[str, bytes]:
    """Pickles in the release's format: b"data" (n, 3072) uint8, b"labels" a list of ints."""
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = np.full((n, 3072), i, dtype=np.uint8)
        data[0, 1024 + 5 * 32 + 7] = 200  # channel 1 (green), row 5, column 7
        labels = [(i + j) % 10 for j in range(n)]
        blob = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data}, 2)
        # name numpy's reconstructor as the release (pickled by Python 2 and numpy 1) does
        out[name] = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return out


def _write_cifar_tar(path: Path, blobs: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _write_cifar_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, blob in _cifar_batches().items():
        (folder / name).write_bytes(blob)
    return root


def test_cifar_reader_on_a_tarball_and_a_folder(tmp_path: Path) -> None:
    tar = _write_cifar_tar(tmp_path / "small.tar.gz", _cifar_batches())
    for source in (tar, _write_cifar_folder(tmp_path / "extracted")):
        tr_x, tr_y, te_x, te_y = read_cifar10(source)
        assert tr_x.shape == (5 * N_PER_BATCH, 3, 32, 32) and tr_x.dtype == torch.uint8
        assert te_x.shape == (N_PER_BATCH, 3, 32, 32) and te_y.shape == (N_PER_BATCH,)
        assert tr_y.dtype == torch.int64 and int(tr_y.max()) <= 9
        assert int(tr_x[0, 1, 5, 7]) == 200 and int(tr_x[0, 0, 5, 7]) == 0  # channel-major rows
        assert int(te_x[1, 2, 0, 0]) == 5  # the test batch is the sixth pickle


def test_cifar_reader_errors_name_the_problem(tmp_path: Path) -> None:
    blobs = _cifar_batches()
    del blobs["data_batch_3"]
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar10(_write_cifar_tar(tmp_path / "missing.tar.gz", blobs))
    blobs = _cifar_batches()
    blobs["test_batch"] = pickle.dumps(shutil.rmtree)  # a pickle that would import code
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10(_write_cifar_tar(tmp_path / "evil.tar.gz", blobs))


def test_cifar_tarball_with_a_wrong_md5_is_refused(tmp_path: Path) -> None:
    _write_cifar_tar(tmp_path / CIFAR10_NAME, _cifar_batches())
    with pytest.raises(DataError, match=f"checksum mismatch.*{CIFAR10_NAME}"):
        cifar10_source(str(tmp_path))


def test_cifar10_tiny_run_with_augmentation_and_a_held_out_split(tmp_path: Path) -> None:
    root = _write_cifar_folder(tmp_path / "cifar")
    task = ViTSmall(VisionOptions(preset="tiny", dataset="cifar10", data=str(root), val_split=0.25))
    task.prepare(torch.device("cpu"))
    assert len(task.train_x) == 60 and len(task.val_x) == 20 and task.pad == 4
    assert len(task.test_x) == N_PER_BATCH  # the official test batch, apart
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "vit-small",
        "--set",
        "preset=tiny",
        "--set",
        "dataset=cifar10",
        "--set",
        "batch_size=8",
        "--steps",
        "3",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "o").glob("*.json")]
    assert rec["status"] == "done" and rec["tokens_done"] == 3 * 8


# -- data order and augmentation ----------------------------------------------------------------


def test_epoch_orders_are_permutations_fixed_by_the_seed() -> None:
    a, b, c = epoch_orders(50, 0, 2), epoch_orders(50, 0, 2), epoch_orders(50, 1, 2)
    for _ in range(3):  # epochs
        (pa, aa), (pb, ab), (pc, _) = next(a), next(b), next(c)
        assert sorted(pa.tolist()) == list(range(50))
        assert torch.equal(pa, pb) and torch.equal(aa, ab) and not torch.equal(pa, pc)
        assert aa[:, :2].min() >= 0 and aa[:, :2].max() <= 4 and set(aa[:, 2].tolist()) == {0, 1}
    first, second = next(epoch_orders(50, 0, 2))[0], next(a)[0]
    assert not torch.equal(first, second)  # each epoch is a new permutation


def test_crop_flip_shifts_and_mirrors_as_a_batch() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    pad = 2
    centre = torch.tensor([[pad, pad, 0], [pad, pad, 1]])
    out = crop_flip(x, centre, pad)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    down = crop_flip(x, torch.tensor([[pad + 1, pad, 0]] * 2), pad)  # one row lower
    assert torch.equal(down[:, :, :-1], x[:, :, 1:]) and not down[:, :, -1].any()


def test_batches_are_the_same_for_a_seed_and_differ_across_seeds(fmnist_task) -> None:
    def take(seed: int, n: int = 3):
        it = fmnist_task.batches(seed)
        return [next(it) for _ in range(n)]

    a, b, c = take(0), take(0), take(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1])
    x, y = a[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    assert abs(float(x.mean())) < 0.5  # normalised on the fly


# -- the task through the CLI -------------------------------------------------------------------


def test_tiny_run_through_the_cli_writes_a_record(fmnist_task, tmp_path: Path) -> None:
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "vit-small",
        "--set",
        "preset=tiny",
        "--data",
        str(FMNIST),
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert rec["status"] == "done" and rec["unit"] == "images"
    assert rec["steps_done"] == 30 and rec["tokens_done"] == 30 * 32
    assert rec["target"] == {"metric": "val_accuracy", "value": 0.2, "direction": "max"}
    for point in rec["curve"]:
        assert 0.0 <= point["metrics"]["val_accuracy"] <= 1.0
        assert math.isfinite(point["metrics"]["val_loss"])
        assert 0.0 <= point["metrics"]["test_accuracy"] <= 1.0
    assert rec["curve"][-1]["metrics"]["val_loss"] < rec["curve"][0]["metrics"]["val_loss"]


def test_validation_and_test_metrics_come_from_their_own_images(fmnist_task) -> None:
    import torch.nn.functional as F

    task = fmnist_task
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        got = task.evaluate(model)
        n = task.options.eval_batches * task.options.eval_batch_size  # the first 1,000 of each
        for split, x, y in (("val", task.val_x, task.val_y), ("test", task.test_x, task.test_y)):
            pixels = (x[:n].float() / 255 - 0.2860) / 0.3530
            logits = model(pixels)
            assert got[f"{split}_loss"] == pytest.approx(
                float(F.cross_entropy(logits, y[:n])), rel=1e-4
            )
            accuracy = float((logits.argmax(1) == y[:n]).float().mean())
            assert got[f"{split}_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert got["val_loss"] != got["test_loss"]


def test_show_documents_defaults_target_and_unit() -> None:
    res = invoke("show", "vit-small")
    assert res.exit_code == 0
    assert "unit: images" in res.output and "val_accuracy >= 0.89" in res.output
    assert "steps=2350" in res.output and "val_split" in res.output


@pytest.mark.parametrize(
    ("setting", "message"),
    [("patch_size=5", "patch_size 5"), ("heads=5", "heads 5"), ("pool=max", "pool")],
)
def test_bad_shapes_are_refused_before_anything_runs(
    no_system_copy, tmp_path: Path, setting, message
) -> None:
    res = invoke(
        "run",
        "--opt",
        "adamw",
        "--task",
        "vit-small",
        "--set",
        setting,
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "o").exists()
