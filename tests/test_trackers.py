"""Trackers: a real tiny run logs to TensorBoard, MLflow and W&B; each is read back with its own
reader and compared with the run's record (the per-step curve, the evaluations, the hparams)."""

from __future__ import annotations

import glob
import multiprocessing
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli import api, runner
from bench_cli.cli import app
from bench_cli.errors import ConfigError
from bench_cli.trackers import tracker_callback

pytest.importorskip("tensorboard", reason="needs the tensorboard extra")
pytest.importorskip("mlflow", reason="needs the mlflow extra")
pytest.importorskip("wandb", reason="needs the wandb extra")

GROUP = "tracker-test"


def tiny_runs(cb, optimizers=("adamw", "lion")):
    req = api.RunRequest(
        task="rosenbrock",
        optimizers=list(optimizers),
        steps=20,
        settings={"eval_interval": 10, "log_interval": 5},
    )
    task, specs = api.plan_runs(req)
    device = runner.resolve_device("cpu")
    task.prepare(device)
    return [runner.run(spec, task, device, cb) for spec in specs]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("trackers")
    records = tiny_runs(tracker_callback(["tensorboard", "mlflow", "wandb"], GROUP, out))
    assert all(r.status == "done" and r.train_curve for r in records)
    return out, records


def test_tensorboard_events_hold_the_curves_and_hparams(logged) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, records = logged
    for rec in records:
        acc = EventAccumulator(str(out / "tensorboard" / GROUP / rec.run_id))
        acc.Reload()
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == [p.step for p in rec.train_curve]
        assert [e.value for e in loss] == pytest.approx([p.loss for p in rec.train_curve])
        lr = [e.value for e in acc.Scalars("train/lr")]
        assert lr == pytest.approx([p.lr for p in rec.train_curve])
        assert len(acc.Scalars("train/grad_norm")) == len(rec.train_curve)
        assert len(acc.Scalars("train/steps_per_second")) == len(rec.train_curve)
        dist = acc.Scalars("eval/distance")
        assert [e.value for e in dist] == pytest.approx([p.metrics["distance"] for p in rec.curve])
        summary = acc.Scalars("summary/best_distance")
        assert summary[0].value == pytest.approx(rec.best_metrics["distance"])
        assert f"| opt.lr | {rec.hparams['lr']} |" in str(acc.Tensors("params/text_summary")[0])


def test_mlflow_file_store_holds_one_run_per_cell(logged) -> None:
    from mlflow.tracking import MlflowClient

    out, records = logged
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(GROUP)
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {r.run_id for r in records}
    for rec in records:
        run = by_name[rec.run_id]
        assert run.info.status == "FINISHED" and run.data.tags["bench.status"] == "done"
        assert run.data.params["optimizer"] == rec.optimizer
        assert run.data.params["opt.lr"] == str(rec.hparams["lr"])
        assert run.data.params["run.steps"] == "20"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        # float64 end to end: the values come back exactly
        assert sorted((m.step, m.value) for m in history) == [
            (p.step, p.loss) for p in rec.train_curve
        ]
        evals = client.get_metric_history(run.info.run_id, "eval/distance")
        assert sorted(m.value for m in evals) == sorted(p.metrics["distance"] for p in rec.curve)
        assert run.data.metrics["summary/steps_done"] == rec.steps_done


@pytest.mark.parametrize("form", ["file-uri", "path"])
def test_mlflow_logs_to_a_folder_given_by_uri_or_path(tmp_path, monkeypatch, form) -> None:
    """--mlflow-uri file:///PATH (the form the error suggests) or a plain path: a folder store,
    as the default under --out is (MLflow 3 refused it without its opt-in)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "store"
    uri = store.as_uri() if form == "file-uri" else str(store)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--set", "preset=tiny",
              "--out", "out", "--log", "mlflow", "--mlflow-uri", uri, "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("run-rosenbrock").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["optimizer"] == "adamw"
    assert not (tmp_path / "out" / "mlruns").exists()


def wandb_records(path: str) -> list:
    """The records of an offline W&B run file: a LevelDB-style log of protobuf ``Record``s
    (a 7-byte file header, 32 KiB blocks, 7-byte chunk headers: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, out, buf = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left  # block trailer
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _items(items) -> dict:
    """W&B keeps a key with a slash as a nested key: ["train", "loss"]."""
    import json

    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_offline_run_files_hold_history_config_and_summary(logged) -> None:
    out, records = logged
    files = glob.glob(str(out / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == len(records)
    seen = {}
    for path in files:
        items = wandb_records(path)
        [run] = [r.run for r in items if r.WhichOneof("record_type") == "run"]
        history = [
            _items(r.history.item) for r in items if r.WhichOneof("record_type") == "history"
        ]
        config = _items(run.config.update)
        summary = {}
        for r in items:
            if r.WhichOneof("record_type") == "summary":
                summary.update(_items(r.summary.update))
        seen[run.display_name] = (run, history, config, summary)
    assert set(seen) == {r.run_id for r in records}
    for rec in records:
        run, history, config, summary = seen[rec.run_id]
        assert run.run_group == GROUP and run.project == "bench"
        assert config["optimizer"] == rec.optimizer
        assert config["opt.lr"] == rec.hparams["lr"]
        train = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
        assert train == [(p.step, p.loss) for p in rec.train_curve]  # JSON keeps float64
        evals = [h["eval/distance"] for h in history if "eval/distance" in h]
        assert evals == pytest.approx([p.metrics["distance"] for p in rec.curve])
        assert summary["status"] == "done" and summary["steps_done"] == rec.steps_done


def _worker(out: str) -> None:
    tiny_runs(tracker_callback(["tensorboard"], GROUP, Path(out)), optimizers=("adamw",))


def test_a_worker_process_builds_its_tracker_from_plain_arguments(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = multiprocessing.get_context("spawn").Process(target=_worker, args=(str(tmp_path),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    [run_dir] = (tmp_path / "tensorboard" / GROUP).iterdir()
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [5, 10, 15, 20]


def test_unknown_tracker_and_missing_extra_are_one_line_errors(monkeypatch, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'; choose from"):
        tracker_callback(["tensorbord"], GROUP, tmp_path)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        tracker_callback(["tensorboard", "wandb"], GROUP, tmp_path)
    assert str(err.value) == '--log wandb needs the wandb package: pip install "bench-cli[wandb]"'
    assert not any(tmp_path.iterdir())  # nothing written
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--log", "wandb",
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1 and "--log wandb needs the wandb package" in res.output
    assert not (tmp_path / "out").exists()  # refused before the folder is claimed
