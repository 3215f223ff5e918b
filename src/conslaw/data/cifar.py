"""CIFAR-10 in its published "python version" format, and a synthetic stand-in of the same shape.

The format (https://www.cs.toronto.edu/~kriz/cifar.html): a folder ``cifar-10-batches-py`` with
pickled dicts ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (keys b"data": uint8 (10000, 3072),
channel-major 32x32 images, and b"labels": list of ints) and ``batches.meta`` (b"label_names").
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import ConslawError

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


def load_cifar10(folder: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) float32 normalized, labels (N,) int64) from the python-batch files."""
    root = find_root(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = root / name
        if not path.exists():
            raise ConslawError(f"CIFAR-10 file {path} is missing", "download the complete dataset")
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        if b"data" not in batch or b"labels" not in batch:
            raise ConslawError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels')",
                               "use the python version of CIFAR-10")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
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
        with open(root / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump({b"data": flat[part], b"labels": labels[part].tolist()}, fh)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": flat[:per_batch], b"labels": labels[:per_batch].tolist()}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, fh)


def download(folder: str | Path) -> Path:
    """Download and check (md5) the python version of CIFAR-10 into ``folder`` (needs internet)."""
    from .download import fetch

    return find_root(fetch(URL, MD5, folder))
