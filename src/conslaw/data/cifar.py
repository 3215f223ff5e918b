"""CIFAR-10 in its published "python version" format, and a synthetic stand-in of the same shape.

The format (https://www.cs.toronto.edu/~kriz/cifar.html): a folder ``cifar-10-batches-py`` with
pickled dicts ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (keys b"data": uint8 (10000, 3072),
channel-major 32x32 images, and b"labels": list of ints) and ``batches.meta`` (b"label_names").

The batches are pickles, and unpickling runs whatever the file names: a data
file must never do that. They are read by :class:`BatchUnpickler`, which
builds only what the format needs (dicts, lists, bytes, numbers, and uint8
numpy arrays through numpy's array-reconstruction functions) and refuses any
other global with a one-line error; the content is then validated (N x 3072
uint8 images, N labels in 0..9) before use.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import ConslawError
from ..io import atomic_write
from .fingerprint import files_fingerprint

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def find_root(folder: str | Path) -> Path:
    """The folder holding the CIFAR-10 python batches: ``folder`` or its ``cifar-10-batches-py``, else an error."""
    folder = Path(folder)
    for candidate in (folder, folder / "cifar-10-batches-py"):
        if (candidate / "batches.meta").exists():
            return candidate
    raise ConslawError(f"no CIFAR-10 python batches in {folder}: batches.meta is missing",
                       "pass the folder that holds cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta), "
                       "or download it with conslaw.data.cifar.download(folder)")


#: the only globals a CIFAR-10 python batch may name: numpy's array and dtype reconstruction (numpy 1 and 2
#: module names, in-band protocol-5 buffers) and ``_codecs.encode`` (bytes in protocol-2 pickles of Python 3)
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})

CLASSES = 10
PIXELS = 3 * 32 * 32


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data and numpy arrays only: any other global is refused.

    ``find_class`` is the one place an unpickler turns a name from the file into something callable;
    this one answers only for :data:`ALLOWED_GLOBALS` (``numpy.core`` names are resolved in
    ``numpy._core`` where that exists, as numpy 2 does) and raises ``UnpicklingError`` for anything
    else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...), before it is called.
    """

    def find_class(self, module: str, name: str):
        """The allowed numpy / codecs callable named ``module.name``; UnpicklingError for any other."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        for candidate in (module.replace("numpy.core", "numpy._core", 1), module):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"global {module}.{name} is not available in this numpy")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3072) uint8, labels (N,) int64) of one python batch, unpickled safely and validated.

    Raises:
        ConslawError: the file is truncated or not a pickle, names a global other than numpy's array
            reconstruction (a malicious or foreign pickle), or holds the wrong keys, shapes, types or labels.
    """
    fix = "download the python version of CIFAR-10 again (conslaw.data.cifar.download(folder))"
    try:
        with open(path, "rb") as fh:
            batch = BatchUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "refused" in str(exc):
            raise ConslawError(f"{path} is not a CIFAR-10 python batch: it asks to load code ({exc}); it was not "
                               "run", fix) from None
        raise ConslawError(f"{path} is not a readable CIFAR-10 python batch (UnpicklingError: {exc})", fix) from None
    except Exception as exc:  # truncated files (EOFError), garbage, numpy refusing a malformed array
        raise ConslawError(f"{path} is not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})",
                           fix) from None
    if not isinstance(batch, dict):
        raise ConslawError(f"{path} holds a {type(batch).__name__}, expected the dict of a CIFAR-10 python batch", fix)
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ConslawError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels' keys)",
                           "use the python version of CIFAR-10 (" + fix.split("(", 1)[1])
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConslawError(f"{path}: b'data' is a {got}, expected uint8 of shape (N, {PIXELS})", fix)
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ConslawError(f"{path}: b'labels' is not a list of integers", fix)
    if len(labels) != len(data):
        raise ConslawError(f"{path}: {len(data)} images but {len(labels)} labels", fix)
    bad = [v for v in labels if not 0 <= v < CLASSES]
    if bad:
        raise ConslawError(f"{path}: labels must be in 0..{CLASSES - 1}, found {bad[0]}", fix)
    if not len(data):
        raise ConslawError(f"{path} holds no images", fix)
    return data, np.asarray(labels, dtype=np.int64)


def batch_files(folder: str | Path, train: bool = True) -> tuple[Path, list[Path]]:
    """(root, the batch files of the split) under ``folder``; an error naming a missing file."""
    root = find_root(folder)
    paths = [root / name for name in ([f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"])]
    for path in paths:
        if not path.is_file():
            raise ConslawError(f"CIFAR-10 file {path} is missing", "download the complete dataset")
    return root, paths


def fingerprint(folder: str | Path, train: bool = True) -> str:
    """A fingerprint of the batch files of the split (names, sizes, mtimes, SHA-256 of the first MB)."""
    root, paths = batch_files(folder, train)
    return "cifar10-python:" + files_fingerprint(root, paths)


def load_cifar10(folder: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) float32 normalized, labels (N,) int64) from the python-batch files (read safely)."""
    _, paths = batch_files(folder, train)
    images, labels = [], []
    for path in paths:
        data, targets = read_batch(path)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    x = torch.from_numpy(np.concatenate(images)).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(np.concatenate(labels))


def synthetic_cifar10(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """SYNTHETIC stand-in with CIFAR-10's shapes: 10 classes, class-dependent smooth patterns plus noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    prototypes = torch.nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=gen), size=32, mode="bilinear")
    return prototypes[labels] + 0.5 * torch.randn(n, 3, 32, 32, generator=gen), labels


def write_python_batches(folder: Path, images: np.ndarray, labels: np.ndarray, per_batch: int) -> None:
    """Write data in the published format (used by tests and to cache subsets)."""
    root = Path(folder) / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1).astype(np.uint8)
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        atomic_write(root / f"data_batch_{i + 1}",
                     pickle.dumps({b"data": flat[part], b"labels": np.asarray(labels[part]).tolist()}))
    atomic_write(root / "test_batch",
                 pickle.dumps({b"data": flat[:per_batch], b"labels": np.asarray(labels[:per_batch]).tolist()}))
    atomic_write(root / "batches.meta", pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]}))


def download(folder: str | Path) -> Path:
    """Download and check (md5) the python version of CIFAR-10 into ``folder`` (needs internet)."""
    from .download import fetch

    return find_root(fetch(URL, MD5, folder))
