"""Durable writes: a file replaced atomically, and a directory entry made to stick.

A rename is durable only once the directory holding it is fsynced too; both the manifest
and the shard files rely on that, so it lives here once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written one after another, so that
    a big file is never held whole) so that a reader sees the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                for piece in data:
                    f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
