"""Load the shared libraries that homeforge._core links against, before importing it.

oneDNN (``onednn-cpu-tbb``), oneTBB (``tbb``) and Intel's math runtime (``intel-cmplr-lib-rt``)
are PyPI wheels that install their ``.so`` files as wheel *data* into ``<prefix>/lib``. The
extension carries an RPATH of ``$ORIGIN/../../..`` which finds them in an ordinary virtual
environment; for layouts where that guess is wrong (``--target`` installs, user installs with a
different prefix) we locate each library through its wheel's RECORD and load it with
RTLD_GLOBAL, so the dynamic loader resolves ``_core``'s dependencies without LD_LIBRARY_PATH.
"""

from __future__ import annotations

import ctypes
import os
from importlib import metadata

# (distribution, library file) in dependency order: libimf needs libintlc; libdnnl needs both and libtbb.
_LIBRARIES = (
    ("intel-cmplr-lib-rt", "libintlc.so.5"),
    ("intel-cmplr-lib-rt", "libimf.so"),
    ("tbb", "libtbb.so.12"),
    ("onednn-cpu-tbb", "libdnnl.so.3"),
)


def _find(dist_name: str, filename: str) -> str | None:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == filename:
            path = str(dist.locate_file(f))
            if os.path.exists(path):
                return path
    return None


def preload() -> dict[str, str]:
    """Load each dependency once; return {library: path} for those found through their wheel."""
    found: dict[str, str] = {}
    for dist_name, filename in _LIBRARIES:
        path = _find(dist_name, filename)
        if path is None:
            continue  # fall back to the RPATH / system search when _core is imported
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        found[filename] = path
    return found


LOADED = preload()
