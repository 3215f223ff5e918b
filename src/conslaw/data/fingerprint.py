"""Fingerprints of dataset files: what a cached run was computed from, cheap to recompute.

A fingerprint hashes, for every file, its name relative to the dataset root, its size, its
modification time (ns) and, where asked, the SHA-256 of its first MB. A changed, added, removed
or touched file changes the fingerprint, so runs computed from the old files are not reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

#: bytes of each file hashed when ``head`` is asked for
HEAD_BYTES = 2**20


def files_fingerprint(root: Path, files: Iterable[Path], head: bool = True) -> str:
    """SHA-256 over (relative name, size, mtime_ns[, SHA-256 of the first MB]) of ``files``, sorted by name.

    Args:
        root: the dataset root (names are taken relative to it).
        files: the files that the reader uses.
        head: also hash the first MB of every file's content.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        if head:
            with open(path, "rb") as fh:
                digest.update(hashlib.sha256(fh.read(HEAD_BYTES)).digest())
    return digest.hexdigest()
