"""`bench data shards`: llm.c shards from text, a manifest with checksums, resume, and training."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench_cli import shards, tokenizers
from bench_cli.cli import app
from bench_cli.errors import DataError

TEXTS = {
    "a.txt": "First file: to be, or not to be.\n",
    "b.txt": "Second file, with ümlauts and more text than the first one has.\n",
    "sub/c.txt": "A third, in a sub-folder.\n",
    "sub/d.txt": "And the fourth: the last of them.\n",
    "notes.md": "not matched by the glob\n",
}


def read_bin(path: Path) -> np.ndarray:
    """The llm.c format read independently: 256 int32 header (magic, version, count), uint16."""
    header = np.frombuffer(path.read_bytes()[:1024], dtype="<i4")
    assert header[0] == 20240520 and header[1] == 1
    tokens = np.frombuffer(path.read_bytes()[1024:], dtype="<u2")
    assert len(tokens) == header[2]
    return tokens


def in_val(key: str, fraction: float) -> bool:
    """By the sha256 of the file's path under the folder given."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64 < fraction


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name, text in TEXTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def split_tokens(out: Path, manifest: dict, split: str) -> np.ndarray:
    files = [s["file"] for s in manifest["shards"] if s["split"] == split]
    return np.concatenate([read_bin(out / f) for f in files]) if files else np.zeros(0, int)


@pytest.mark.parametrize("jobs", [1, 3])
def test_char_shards_hold_the_files_in_order_split_by_path(
    corpus: Path, tmp_path: Path, jobs: int
) -> None:
    out = tmp_path / "shards"
    m = shards.build_shards(
        [str(corpus)], out, tokenizer="char", val_fraction=0.5, shard_tokens=40, jobs=jobs
    )
    files = sorted((corpus / n for n in TEXTS if n.endswith(".txt")), key=str)
    chars = sorted(set("".join(TEXTS[n] for n in TEXTS if n.endswith(".txt"))))
    assert m["vocabulary"]["chars"] == "".join(chars) and m["vocab_size"] == len(chars)
    for split in ("train", "val"):
        want = "".join(
            f.read_text()
            for f in files
            if in_val(f.relative_to(corpus).as_posix(), 0.5) == (split == "val")
        )
        got = "".join(chars[t] for t in split_tokens(out, m, split))
        assert got == want and m[f"{split}_tokens"] == len(want)
    assert m["train_tokens"] and m["val_tokens"]  # these names put files in both
    for shard in m["shards"]:
        path = out / shard["file"]
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert shard["tokens"] == len(read_bin(path))
    train = [s["tokens"] for s in m["shards"] if s["split"] == "train"]
    assert all(n == 40 for n in train[:-1]) and 0 < train[-1] <= 40
    assert m["complete"] and sorted(p.name for p in out.iterdir())[-1] == "manifest.json"


def test_bytes_shards_take_any_file(tmp_path: Path) -> None:
    (tmp_path / "raw.bin.txt").write_bytes(bytes([0, 255, 10, 200]) * 5)
    out = tmp_path / "out"
    m = shards.build_shards(
        [str(tmp_path / "raw.bin.txt")], out, tokenizer="bytes", val_fraction=0.0, shard_tokens=7
    )
    assert m["vocab_size"] == 256 and m["val_tokens"] == 0
    assert (
        split_tokens(out, m, "train").tobytes()
        == np.frombuffer(bytes([0, 255, 10, 200]) * 5, dtype=np.uint8).astype("<u2").tobytes()
    )


def test_many_files_tokenized_at_once_land_in_file_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    root.mkdir()
    texts = {}
    for k in range(60):  # sizes from 0 to 20,000 bytes, so threads finish out of order
        texts[f"f{k:03d}.txt"] = bytes(rng.integers(32, 127, int(rng.integers(0, 20_000))))
        (root / f"f{k:03d}.txt").write_bytes(texts[f"f{k:03d}.txt"])
    m = shards.build_shards(
        [str(root)], tmp_path / "out", tokenizer="bytes", val_fraction=0.2, shard_tokens=5_000,
        jobs=4,
    )  # fmt: skip
    for split in ("train", "val"):
        want = b"".join(t for n, t in sorted(texts.items()) if in_val(n, 0.2) == (split == "val"))
        got = split_tokens(tmp_path / "out", m, split).astype(np.uint8).tobytes()
        assert got == want


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_interrupted_build_resumes_to_the_same_shards(
    corpus: Path, tmp_path: Path, monkeypatch, jobs: int
) -> None:
    args = dict(tokenizer="char", val_fraction=0.3, shard_tokens=16, jobs=jobs)
    whole = shards.build_shards([str(corpus)], tmp_path / "whole", **args)
    write, calls = shards._write, []

    def failing(path, tokens):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(path.name)
        return write(path, tokens)

    monkeypatch.setattr(shards, "_write", failing)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        shards.build_shards([str(corpus)], out, **args)
    first = {n: (out / n).stat().st_mtime_ns for n in calls}
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    calls.clear()
    monkeypatch.setattr(
        shards, "_write", lambda path, tokens: (calls.append(path.name), write(path, tokens))[1]
    )
    again = shards.build_shards([str(corpus)], out, **args)
    assert not set(calls) & set(first)  # the finished shards were not written again
    assert all((out / n).stat().st_mtime_ns == t for n, t in first.items())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in whole["shards"]]
    assert sorted(s["file"] for s in again["shards"]) == sorted(s["file"] for s in whole["shards"])


#: GPT-2's pre-tokenizer, as its encoder.py publishes it
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture
def gpt2_ranks() -> Path:
    """A local copy of GPT-2's BPE ranks, where ``BENCH_GPT2_RANKS`` names one (``.ci/run``
    takes the copy in openai-whisper's source package, the same file by its sha256)."""
    pytest.importorskip("tiktoken")
    path = Path(os.environ.get("BENCH_GPT2_RANKS", "/nonexistent"))
    if not path.is_file():
        pytest.skip("no local copy of GPT-2's BPE ranks: set BENCH_GPT2_RANKS")
    return path


def test_gpt2_tokens_are_gpt2s(tmp_path: Path, gpt2_ranks: Path) -> None:
    from tiktoken import Encoding
    from tiktoken.load import load_tiktoken_bpe

    (tmp_path / "hello.txt").write_text("hello world")
    out = tmp_path / "out"
    args = dict(tokenizer="gpt2", val_fraction=0.0, bpe_ranks=gpt2_ranks)
    m = shards.build_shards([str(tmp_path / "hello.txt")], out, **args)
    # GPT-2: <|endoftext|> 50256, "hello" 31373, " world" 995
    assert split_tokens(out, m, "train").tolist() == [50256, 31373, 995]
    assert m["vocab_size"] == 50257
    # the text of a special token is text: the same tokens as tiktoken's own encoding's
    # encode_ordinary (its ranks read by tiktoken's loader from the same file)
    text = "a <|endoftext|> b\n" + "".join(chr(c) for c in range(32, 0x250)) + " don't 12345"
    (tmp_path / "special.txt").write_text(text)
    m = shards.build_shards([str(tmp_path / "special.txt")], tmp_path / "o2", **args)
    ranks = load_tiktoken_bpe(str(gpt2_ranks), tokenizers.GPT2_RANKS_SHA256)
    reference = Encoding(
        "reference",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    ordinary = reference.encode_ordinary(text)
    assert split_tokens(tmp_path / "o2", m, "train").tolist() == [50256, *ordinary]


def test_gpt2_tiny_shakespeare_has_nanogpts_token_count(
    tmp_path: Path, gpt2_ranks: Path, shared_data: Path
) -> None:
    """nanoGPT's shakespeare preparation counts 301,966 + 36,059 GPT-2 tokens in its two
    halves; one document of the whole file adds the leading <|endoftext|>."""
    src = shared_data / "tinyshakespeare.txt"
    m = shards.build_shards(
        [str(src)], tmp_path / "o", tokenizer="gpt2", val_fraction=0.0, bpe_ranks=gpt2_ranks
    )
    assert m["train_tokens"] == 1 + 301_966 + 36_059


def test_a_file_name_that_is_not_utf8_splits_by_its_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    names = [b"caf\xe9.txt", b"na\xefve.txt", b"plain.txt"]
    for i, name in enumerate(names):
        (src / os.fsdecode(name)).write_text(f"text number {i}\n")
    # a fraction between two names' sha256 fractions sends exactly the lower ones to validation
    fractions = sorted(int(hashlib.sha256(n).hexdigest()[:16], 16) / 2**64 for n in names)
    cut = (fractions[0] + fractions[1]) / 2
    m = shards.build_shards([str(src)], tmp_path / "o", tokenizer="char", val_fraction=cut)
    expected_val = [n for n in names if int(hashlib.sha256(n).hexdigest()[:16], 16) / 2**64 < cut]
    assert len(expected_val) == 1
    val_text = "".join(m["vocabulary"]["chars"][t] for t in split_tokens(tmp_path / "o", m, "val"))
    assert val_text == f"text number {names.index(expected_val[0])}\n"
    assert m["train_tokens"] + m["val_tokens"] == 3 * len("text number 0\n")


def test_gpt2_refuses_a_file_that_is_not_text_before_writing(
    tmp_path: Path, gpt2_ranks: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):  # text enough for several shards before the last file
        (src / f"a{i}.txt").write_text("to be or not to be " * 50)
    (src / "z.txt").write_bytes(b"caf\xe9\n")
    res = invoke(
        "data", "shards", str(src), "--out", str(tmp_path / "o"), "--shard-tokens", "100",
        "--val-fraction", "0", "--bpe-ranks", str(gpt2_ranks),
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    (line,) = res.output.splitlines()
    assert "z.txt is not UTF-8 text" in line and "--skip-undecodable" in line
    assert not (tmp_path / "o").exists()


def test_shards_inside_their_source_folder_are_not_read_back(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello world\n")
    (src / "b.md").write_text("more\n")
    args = dict(tokenizer="char", val_fraction=0.0, glob="*")
    first = shards.build_shards([str(src)], src / "shards", **args)
    again = shards.build_shards([str(src)], src / "shards", **args)  # the same build, resumed
    assert [Path(f).name for f, _ in again["settings"]["files"]] == ["a.txt", "b.md"]
    assert again == first and first["train_tokens"] == len("hello world\nmore\n")


def test_offline_without_ranks_names_the_file_and_the_option(tmp_path: Path, monkeypatch) -> None:
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name: str):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    (tmp_path / "a.txt").write_text("hello")
    res = invoke("data", "shards", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 1, res.output
    (line,) = res.output.splitlines()
    assert "could not load GPT-2's BPE" in line and "Failed to resolve" in line
    assert f"download {tokenizers.GPT2_RANKS_URL} elsewhere and pass --bpe-ranks FILE" in line
    assert not (tmp_path / "o").exists()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_builds_shards_that_an_lm_task_trains_on(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    res = invoke(
        "data",
        "shards",
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        "char",
        "--val-fraction",
        "0.5",
        "--shard-tokens",
        "64",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "training shards" in res.output and "bench run --task lm-small" in res.output
    again = invoke(
        "data",
        "shards",
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        "char",
        "--val-fraction",
        "0.5",
        "--shard-tokens",
        "64",
        "--quiet",
    )
    assert again.exit_code == 0 and again.output == res.output  # complete: nothing to do
    run = CliRunner().invoke(
        app,
        [
            "run",
            "--opt",
            "adamw",
            "--task",
            "lm-small",
            "--set",
            "preset=tiny",
            "--set",
            "block_size=8",
            "--steps",
            "3",
            "--data",
            str(out),
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
    )
    assert run.exit_code == 0, run.output
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json")]
    assert rec["status"] == "done"
    vocab = json.loads((out / "manifest.json").read_text())["vocab_size"]
    # the tied embedding has the manifest's vocabulary, not GPT-2's
    assert any(g["numel"] >= vocab * 32 for g in rec["param_groups"])


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("", ["missing"], "does not exist"),
        ("", ["corpus", "--glob", "*.rst"], "no files matching"),
        ("latin", ["corpus/latin.txt", "--tokenizer", "char"], "latin.txt is not UTF-8"),
        ("stray", ["corpus"], "no manifest.json"),
        ("", ["corpus", "--val-fraction", "1.5"], "--val-fraction"),
        ("", ["corpus", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    corpus: Path, tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    if setup == "latin":
        (corpus / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    if setup == "stray":
        out.mkdir()
        (out / "other.bin").write_bytes(b"x")
    full = [str(tmp_path / a) if i == 0 else a for i, a in enumerate(args)]
    res = invoke("data", "shards", *full, "--out", str(out), "--tokenizer", "char", "--quiet")
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (out / "manifest.json").exists()


def test_skip_undecodable_and_changed_settings(corpus: Path, tmp_path: Path) -> None:
    (corpus / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    out = tmp_path / "out"
    m = shards.build_shards([str(corpus)], out, tokenizer="bytes", val_fraction=0.0)
    assert m["skipped"] == [] and m["train_tokens"] == sum(
        len(p.read_bytes()) for p in corpus.rglob("*.txt")
    )
    with pytest.raises(DataError, match="other settings"):
        shards.build_shards([str(corpus)], out, tokenizer="bytes", val_fraction=0.2)
    with pytest.raises(DataError, match="latin.txt is not UTF-8"):
        shards.build_shards([str(corpus)], tmp_path / "c1", tokenizer="char", val_fraction=0.0)
    m = shards.build_shards(
        [str(corpus)], tmp_path / "c2", tokenizer="char", val_fraction=0.0, skip_undecodable=True
    )
    assert m["skipped"] == [str(corpus / "latin.txt")] and "é" not in m["vocabulary"]["chars"]
    threaded = shards.build_shards(
        [str(corpus)], tmp_path / "c3", tokenizer="char", val_fraction=0.0, skip_undecodable=True,
        jobs=3,
    )  # fmt: skip
    assert threaded["skipped"] == m["skipped"] and threaded["shards"] == m["shards"]
    with pytest.raises(DataError, match="latin.txt is not UTF-8"):
        shards.build_shards(
            [str(corpus)], tmp_path / "c4", tokenizer="char", val_fraction=0.0, jobs=3
        )
    assert m["train_tokens"] == sum(len(TEXTS[n]) for n in TEXTS if n.endswith(".txt"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["a.txt", "--out", "f"], ["'f' is a file", "--out"]),
        (["a.txt", "--out", "f/sub"], ["'f' is a file", "--out"]),
        (["a.txt", "--name", "a/b"], ["--name 'a/b'", "letters, digits"]),
        (["a.txt", "--name", "../evil"], ["--name '../evil'", "start with a letter or digit"]),
        (["a.txt", "--name", ""], ["--name ''", "must not be empty"]),
        (["a.txt", "--name", "interval"], ["--name 'interval' holds 'val'", "split"]),
        (["a.txt", "--name", "Trainset"], ["--name 'Trainset' holds 'train'", "split"]),
        (["empty.txt", "--val-fraction", "0"], ["holds no text", "empty.txt is empty"]),
        (["empty.txt", "empty.txt", "--tokenizer", "gpt2"], ["holds no text", "empty.txt"]),
        (["a.txt", "--val-fraction", "0.99999"], ["validation", "lower --val-fraction"]),
        (["docs", "--glob", "/x"], ["--glob '/x'", "'*.txt'"]),
        (["docs", "--glob", "a**"], ["--glob 'a**'", "'*.txt'"]),
        (["a.txt", "--tokenizer", "gpt2", "--val-fraction", "0", "--bpe-ranks", "f"],
         ["--bpe-ranks 'f' is not GPT-2's BPE ranks", "r50k_base.tiktoken"]),
        (["a.txt", "--tokenizer", "gpt2", "--val-fraction", "0", "--bpe-ranks", "nope"],
         ["--bpe-ranks 'nope': cannot read it", "r50k_base.tiktoken"]),
        (["a.txt", "--val-fraction", "0", "--bpe-ranks", "f"],
         ["--bpe-ranks is GPT-2's BPE, for --tokenizer gpt2, not 'char'"]),
    ],
    ids=[
        "out-is-a-file", "out-under-a-file", "name-with-slash", "name-leaving-out", "empty-name",
        "name-holding-val", "name-holding-train",
        "empty-file", "empty-files-gpt2", "all-to-validation", "absolute-glob", "invalid-glob",
        "ranks-not-gpt2s", "ranks-missing", "ranks-without-gpt2",
    ],
)  # fmt: skip
def test_bad_out_name_or_text_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch, args: list[str], words: list[str]
) -> None:
    work = tmp_path / "work"  # the command runs here, so "../evil" would land in tmp_path
    (work / "docs").mkdir(parents=True)
    (work / "a.txt").write_text(TEXTS["b.txt"] * 20)
    (work / "docs" / "a.txt").write_text(TEXTS["b.txt"])
    (work / "empty.txt").write_text("")
    (work / "f").write_text("hi\n")
    assert in_val("a.txt", 0.99999)  # the one file goes to validation
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*"))
    out = [] if "--out" in args else ["--out", "sh"]
    # no --quiet: the progress bar must not add a line either
    res = invoke("data", "shards", *args, *out, *(["--tokenizer", "char"] * ("gpt2" not in args)))
    assert res.exit_code == 1, res.output
    (line,) = res.output.splitlines()
    assert line.startswith("error:") and all(w in line for w in words), line
    assert sorted(tmp_path.rglob("*")) == before  # no folder, no shard, nothing outside --out


def test_an_out_that_cannot_be_created_is_one_line(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.txt").write_text(TEXTS["a.txt"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse as the system refuses other users

        def refuse(path, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(os, "mkdir", refuse)
    res = invoke(
        "data", "shards", str(tmp_path / "a.txt"), "--out", str(locked / "sh"), "--tokenizer",
        "char",
    )  # fmt: skip
    locked.chmod(0o755)
    assert res.exit_code == 1, res.output
    (line,) = res.output.splitlines()
    assert line.startswith("error: cannot create --out") and "Permission denied" in line, line
    assert "choose another --out" in line and not (locked / "sh").exists()


@pytest.mark.parametrize(
    "damage",
    [b"[1]", b"\xff\xfe", b'{"shards": [{"file": "x.bin"}]}', b"{not json"],
    ids=["a-list", "not-utf8", "a-shard-without-sha256", "not-json"],
)
def test_a_damaged_manifest_is_one_line_on_resume(
    corpus: Path, tmp_path: Path, damage: bytes
) -> None:
    out = tmp_path / "out"
    args = ["data", "shards", str(corpus), "--out", str(out), "--tokenizer", "char", "--quiet"]
    assert invoke(*args).exit_code == 0
    (out / "manifest.json").write_bytes(damage)
    res = invoke(*args)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = res.output.splitlines()
    assert line.startswith("error:") and "manifest.json is damaged" in line and "remove" in line


def test_a_folder_that_cannot_be_written_is_one_line(
    corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    import errno

    from bench_cli.tasks.lm import tokens

    def denied(path, _tokens):  # as a read-only folder answers a user who is not root
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(tokens, "write_shard", denied)
    out = tmp_path / "out"
    out.mkdir()
    res = invoke("data", "shards", str(corpus), "--out", str(out), "--tokenizer", "char")
    (line,) = res.output.splitlines()
    assert res.exit_code == 1 and line.startswith("error: cannot write "), res.output
    assert "(Permission denied); choose another --out" in line
