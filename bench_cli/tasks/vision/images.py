"""Image data sets on disk: Fashion-MNIST's IDX files and CIFAR-10's python batches, where to
find them (an explicit folder, ``$BENCH_DATA_DIR``, a system copy, the cache, a download) and
their published checksums. Readers return whole data sets as uint8 tensors."""

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
from pathlib import Path

import torch

from bench_cli.errors import DataError
from bench_cli.tasks.data import RemoteFile, cache_dir, check_data_path, download, sha256_of

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

Images = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train x, y, test x, y


# -- Fashion-MNIST ------------------------------------------------------------------------------


def _check_sha256(path: Path, remote: RemoteFile) -> None:
    got = sha256_of(path)
    if got != remote.sha256:
        raise DataError(
            f"checksum mismatch: {path} has sha256 {got}, expected {remote.sha256} "
            f"(Fashion-MNIST {remote.name}); the file is corrupt or another data set: replace it"
        )


def locate_fashion_mnist(
    files: tuple[RemoteFile, ...], system: Path, data: str | None
) -> list[Path]:
    """The four checked ``files`` (``FASHION_MNIST``): ``data``, else
    ``$BENCH_DATA_DIR/fashion-mnist`` or ``$BENCH_DATA_DIR``, else ``system`` (the Debian
    package's folder, ``SYSTEM_FASHION_MNIST``), else the cache (downloading what is missing
    there). A local file with the wrong sha256 is an error; a bad cached one is fetched again."""
    names = [r.name for r in files]
    if data:
        folder = Path(data).expanduser()
        if folder.exists():  # a device or FIFO is refused unread
            check_data_path(folder, "--data", folder_ok=True)
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
        candidates.append(system)
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            for remote in files:
                _check_sha256(folder / remote.name, remote)
            return [folder / n for n in names]
    paths = []
    for remote in files:
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


def read_fashion_mnist(paths: list[Path]) -> Images:
    """Train images (60000, 1, 28, 28) uint8, labels (60000,) int64, and the 10,000 test ones,
    from the four files in the order of ``FASHION_MNIST``."""
    tr_x, tr_y, te_x, te_y = paths
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
    if roots and roots[0].exists():  # a device or FIFO is refused unread
        check_data_path(roots[0], "--data", folder_ok=True)
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
