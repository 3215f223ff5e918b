"""Files that are either whole or absent: atomic writes, standard JSON, folders checked before the work.

Every file conslaw writes (run records, results JSON, figures, monitor
exports, rebalanced checkpoints) goes through :func:`atomic_write`: the bytes
go to a temporary file in the same folder, are flushed and fsynced, and the
temporary file is renamed over the target with ``os.replace`` (atomic on
POSIX and Windows). An interrupted or failing write leaves the previous file
as it was and no partial file behind, so a rerun starts from a consistent
state.

JSON written for people and other tools is standard (RFC 8259): NaN and
infinities, which Python's ``json`` would write as the non-standard ``NaN`` /
``Infinity``, become ``null`` (:func:`json_safe`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConslawError

__all__ = ["atomic_write", "dumps_json", "ensure_dir", "json_safe", "save_figure", "save_torch"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of the files written: what ``open(path, "w")`` would give (mkstemp alone gives 0600)
_FILE_MODE = 0o666 & ~_current_umask()


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically: the old content or the new one, never a partial file.

    Temp file in the same folder, flush, fsync, ``os.replace`` onto ``path``, fsync of the folder.
    On any failure the temporary file is removed and the previous ``path`` is left untouched.

    Args:
        path: the target file.
        data: bytes, or text encoded with ``encoding``.
        encoding: the encoding of text data.

    Raises:
        ConslawError: when the folder is missing or not writable, or the disk is full (the cause is named).
    """
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    folder = path.parent
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            with contextlib.suppress(OSError, AttributeError):
                os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ConslawError(f"cannot write {path}: {exc.strerror or exc}",
                           "check that its folder exists and is writable and that the disk has space") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def json_safe(obj):
    """``obj`` with NaN / +-inf floats replaced by None and numpy scalars / arrays as Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return json_safe(float(obj))
    return obj


def dumps_json(data, indent: int | None = None, sort_keys: bool = False) -> str:
    """Standard JSON text of ``data``: non-finite numbers as null, other objects by ``str``."""
    return json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check that files can be written there, before any work.

    Raises:
        ConslawError: ``path`` is under a file, or it cannot be created or written to.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except (FileExistsError, NotADirectoryError) as exc:
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise ConslawError(f"cannot use {path} as {what}: {blocking} is a file, not a folder",
                           "pass a folder path (--out DIR) that is not under a file") from exc
    except OSError as exc:
        raise ConslawError(f"cannot write to {what} {path}: {exc.strerror or exc}",
                           "pass a writable folder (--out DIR), or fix its permissions") from exc
    return path


def _probe_write(folder: Path) -> None:
    """Create and delete a temporary file in ``folder`` (OSError when files cannot be written there)."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def check_parent(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` when its folder exists and is a folder, before any work; else a one-line error.

    Raises:
        ConslawError: the folder is missing or is a file.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ConslawError(f"cannot write {what} {path}: folder {folder} does not exist",
                           f"create it first (mkdir -p {folder}) or pass a path in an existing folder")
    if path.is_dir():
        raise ConslawError(f"cannot write {what} {path}: it is a folder", "pass a file path, e.g. model.pt")
    return path


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Render a matplotlib figure to bytes (format from the suffix, PNG by default), then write atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` serialized in memory, then written atomically to ``path``."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())
