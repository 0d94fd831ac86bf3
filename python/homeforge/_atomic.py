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
import shutil
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


@contextlib.contextmanager
def staged_files(out_dir: str | os.PathLike[str], name: str) -> Iterator[Path]:
    """All or nothing for a set of files: yield a staging folder inside ``out_dir`` (created if
    missing); on success rename every file written there into ``out_dir`` (other files in it are
    left alone), on failure remove the staging folder, and ``out_dir`` too if this call created it
    and it is still empty. Staging folders of the same ``name`` left by a crash are removed first."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OSError(f"{out} exists and is not a directory")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{name}.staging.*"):  # a hard kill skips the cleanup below
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.staging.", dir=out))
    done = False
    try:
        yield tmp
        for p in sorted(tmp.iterdir()):
            os.replace(p, out / p.name)
        fsync_dir(out)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not done and not any(out.iterdir()):
            out.rmdir()
