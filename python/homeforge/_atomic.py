"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Write to a temporary file in the same directory, flush, fsync, rename over the target, then
fsync the directory so the rename itself survives a crash.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "x.txt"
>>> with atomic_write(path, "w") as f:
...     _ = f.write("hello")
>>> path.read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


def apply_default_mode(path: str | os.PathLike[str]) -> None:
    """Give a file or directory made by mkstemp/mkdtemp (0600/0700) the permissions an ordinary
    open()/mkdir() would have given it under the process umask."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_UMASK)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success rename it over ``path``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise OSError(f"cannot write {target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        apply_default_mode(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
