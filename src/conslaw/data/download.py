"""Download a dataset archive, check its md5 and unpack it (needs internet)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

from ..errors import ConslawError


def fetch(url: str, md5: str, folder: str | Path) -> Path:
    """``url`` into ``folder`` (kept for reuse), md5-checked and extracted; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / url.rsplit("/", 1)[-1]
    if not archive.exists():
        # download under another name, then rename: an interrupted download leaves no archive that looks complete
        partial = archive.with_name(archive.name + ".part")
        try:
            urllib.request.urlretrieve(url, partial)
            os.replace(partial, archive)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != md5:
        raise ConslawError(f"{archive} has md5 {digest}, expected {md5}", "delete it and download again")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder
