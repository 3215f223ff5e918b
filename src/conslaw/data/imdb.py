"""IMDb reviews (Maas et al. 2011) in the published aclImdb folder format, and a synthetic stand-in.

Format: ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``, one review per file. The reader
lower-cases, removes ``<br />`` tags, splits on letters/digits/apostrophes, builds a vocabulary of
the most frequent words of the split it reads (``<pad>`` = 0, ``<unk>`` = 1), and pads/truncates
every review to ``length`` tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from ..errors import ConslawError
from .fingerprint import files_fingerprint

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of a review (HTML line breaks removed)."""
    return WORD.findall(text.lower().replace("<br />", " "))


def find_root(folder: str | Path) -> Path:
    """Read the aclImdb folder: (token ids (N, length), labels, vocabulary)."""
    folder = Path(folder)
    for candidate in (folder, folder / "aclImdb"):
        if (candidate / "train" / "pos").is_dir() and (candidate / "train" / "neg").is_dir():
            return candidate
    raise ConslawError(f"no IMDb reviews in {folder}: train/pos and train/neg are missing",
                       "pass the folder that holds aclImdb/{train,test}/{pos,neg}/*.txt, or download it with "
                       "conslaw.data.imdb.download(folder)")


def load_imdb(folder: str | Path, split: str = "train", vocab_size: int = 2000, length: int = 64,
              limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(token ids (N, length), labels (N,) with 1 = positive, vocabulary) from the aclImdb folders."""
    root = find_root(folder)
    texts, labels = [], []
    for label, sub in ((1, "pos"), (0, "neg")):
        directory = root / split / sub
        if not directory.is_dir():
            raise ConslawError(f"IMDb folder {directory} is missing", "download the complete dataset")
        files = sorted(directory.glob("*.txt"))[:limit]
        texts += [tokenize(f.read_text(encoding="utf-8", errors="replace")) for f in files]
        labels += [label] * len(files)
    if not texts:
        raise ConslawError(f"no review files (*.txt) under {root / split}", "check the dataset folder")
    counts = Counter(word for words in texts for word in words)
    vocab = ["<pad>", "<unk>"] + [w for w, _ in counts.most_common(vocab_size - 2)]
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for n, words in enumerate(texts):
        row = [index.get(w, 1) for w in words[:length]]
        ids[n, :len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, torch.tensor(labels), vocab


def fingerprint(folder: str | Path, split: str = "train") -> str:
    """A fingerprint of the review files of ``split`` (names, sizes, modification times; no content read)."""
    root = find_root(folder)
    files = [f for sub in ("pos", "neg") if (root / split / sub).is_dir() for f in (root / split / sub).glob("*.txt")]
    return "aclImdb:" + files_fingerprint(root, files, head=False)


def synthetic_imdb(n: int = 512, vocab_size: int = 200, length: int = 32, seed: int = 0):
    """SYNTHETIC stand-in: two classes of token sequences with different word frequencies."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    weights = torch.rand(2, vocab_size - 2, generator=gen) ** 3
    ids = torch.stack([torch.multinomial(weights[y], length, replacement=True, generator=gen) + 2 for y in labels])
    return ids, labels, ["<pad>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 2)]


def download(folder: str | Path) -> Path:
    """Download and check (md5) aclImdb_v1.tar.gz into ``folder`` (needs internet)."""
    from .download import fetch

    return find_root(fetch(URL, MD5, folder))
