"""Training checkpoints: one directory per step, written atomically, verified by checksum on load.

Layout of ``<root>/step_00000100/``:

- ``model.safetensors``: the model's parameters by name (transformers' Llama names);
- ``optimizer.safetensors``: every array of the optimizer / strategy state, keyed by its path in
  the state tree (``"m.3"``, ``"groups.0.v.1"`` ...); the tree itself, with scalars, is in state.json;
- ``state.json``: step, config, RNG state, data position, metrics, the optimizer tree (arrays replaced
  by ``{"__array__": key}``) and anything else the trainer stores;
- the tokenizer file, copied, when one is given;
- ``checkpoint.json``, written last: format, step, metric, and the sha256 and size of every other file.

Saving writes everything into ``<root>/.tmp-step_...`` (each file fsynced), fsyncs that directory,
renames it to ``step_...`` and fsyncs ``root``. A directory without ``checkpoint.json`` or with a
``.tmp-`` name is never a checkpoint, so a process killed at any point of a save leaves the previous
checkpoints intact and :func:`latest_checkpoint` keeps finding the last complete one. Loading
recomputes every checksum; a corrupt or truncated file raises ValueError naming it.

>>> import numpy as np, tempfile
>>> root = tempfile.mkdtemp()
>>> _ = save_checkpoint(root, 5, params={"w": np.ones((2, 3), np.float32)},
...                     optimizer={"step": 5, "m": [np.zeros(3, np.float32)]}, state={"note": "hi"})
>>> ck = load_checkpoint(root)   # the root resolves to its latest checkpoint
>>> ck.step, ck.params["w"].shape, ck.optimizer["step"], ck.optimizer["m"][0].dtype, ck.state["note"]
(5, (2, 3), 5, dtype('float32'), 'hi')
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import fsync_dir

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "best_checkpoint",
           "list_checkpoints", "resolve_checkpoint", "flatten_state", "unflatten_state"]

FORMAT = "homeforge-checkpoint/1"
MANIFEST = "checkpoint.json"
_STEP_RE = re.compile(r"^step_(\d{8,})$")


# ----------------------------------------------------------------------------------------------
# nested state <-> (json tree, flat arrays)


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """Split a nested dict/list state into a JSON-able tree and a dict of arrays.

    >>> tree, arrays = flatten_state({"a": np.zeros(2), "b": [1, np.float32(2.5)], "c": (0.9, 0.99)})
    >>> tree, sorted(arrays)
    ({'a': {'__array__': 'a'}, 'b': [1, 2.5], 'c': {'__tuple__': [0.9, 0.99]}}, ['a'])
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, np.ndarray):
            arrays[path] = x
            return {"__array__": path}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if not isinstance(k, str):
                    raise TypeError(f"state keys must be str, got {k!r} at {path or '<root>'}")
                out[k] = walk(v, f"{path}.{k}" if path else k)
            return out
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} in a checkpoint (at {path or '<root>'})")

    return walk(obj, prefix), arrays


def unflatten_state(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            key = tree["__array__"]
            if key not in arrays:
                raise ValueError(f"checkpoint is missing optimizer array {key!r}")
            return arrays[key]
        if set(tree) == {"__tuple__"}:
            return tuple(unflatten_state(v, arrays) for v in tree["__tuple__"])
        return {k: unflatten_state(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, arrays) for v in tree]
    return tree


# ----------------------------------------------------------------------------------------------
# files


def _to_storable(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """safetensors' numpy API has no bfloat16: store those as uint16 and note the dtype."""
    out: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for k, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name == "bfloat16":
            out[k] = a.view(np.uint16)
            dtypes[k] = "bfloat16"
        else:
            out[k] = a
    return out, dtypes


def _from_storable(arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    if dtypes:
        import ml_dtypes

        for k, name in dtypes.items():
            if name == "bfloat16":
                arrays[k] = arrays[k].view(ml_dtypes.bfloat16)
    return arrays


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _save_tensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    storable, dtypes = _to_storable(arrays)
    _write_bytes(path, save(storable, metadata={"homeforge_dtypes": json.dumps(dtypes)}))


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    return _from_storable(arrays, json.loads(meta.get("homeforge_dtypes", "{}")))


# ----------------------------------------------------------------------------------------------
# save / list / load


def _step_dir(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` (those with checkpoint.json), sorted by step."""
    r = Path(root)
    if not r.is_dir():
        return []
    out = []
    for p in r.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / MANIFEST).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the highest step, or None. Incomplete (.tmp-) directories are ignored."""
    cks = list_checkpoints(root)
    return cks[-1][1] if cks else None


def _metric_of(path: Path) -> float | None:
    try:
        m = json.loads((path / MANIFEST).read_text()).get("metric")
    except (OSError, json.JSONDecodeError):
        return None
    return float(m) if isinstance(m, (int, float)) and np.isfinite(m) else None


def best_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the lowest recorded metric (validation loss), or None."""
    best: tuple[float, int, Path] | None = None
    for step, p in list_checkpoints(root):
        m = _metric_of(p)
        if m is not None and (best is None or (m, step) < best[:2]):
            best = (m, step, p)
    return best[2] if best else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from a path that is one, a root or a run directory (its latest), or ``root/latest`` / ``root/best``."""
    p = Path(path)
    if p.name in ("latest", "best") and not p.exists():
        found = latest_checkpoint(p.parent) if p.name == "latest" else best_checkpoint(p.parent)
        if found is None:
            what = "complete checkpoint" if p.name == "latest" else "complete checkpoint with a recorded metric (validation loss)"
            raise FileNotFoundError(f"no {what} in {p.parent}")
        return found
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if (p / MANIFEST).is_file():
        return p
    if p.is_dir() and (p / "checkpoints").is_dir():  # a training run's out_dir
        p = p / "checkpoints"
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is not None:
            return found
        if p.name.startswith(".tmp-"):
            raise ValueError(f"{p} is an incomplete checkpoint (a save was interrupted)")
        raise FileNotFoundError(f"no complete checkpoint in {p} (no {MANIFEST} and no step_* directories)")
    raise ValueError(f"{p} is not a checkpoint directory")


def save_checkpoint(root: str | os.PathLike[str], step: int, *, params: dict[str, np.ndarray],
                    optimizer: Any = None, state: dict[str, Any] | None = None,
                    files: dict[str, str | os.PathLike[str]] | None = None, metric: float | None = None,
                    keep_last: int | None = None, keep_best: bool = True) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and return its directory.

    ``files`` maps names to files copied in (e.g. the tokenizer). ``metric`` (lower is better)
    marks the best checkpoint. With ``keep_last=K``, only the K newest (and the best, when
    ``keep_best``) complete checkpoints are kept.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    r = Path(root)
    r.mkdir(parents=True, exist_ok=True)
    for p in r.iterdir():  # leftovers of interrupted saves or deletions (one writer per root)
        if p.name.startswith((".tmp-", ".del-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    final = r / _step_dir(step)
    tmp = r / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        _save_tensors(tmp / "model.safetensors", dict(params))
        tree, arrays = flatten_state(optimizer if optimizer is not None else {})
        _save_tensors(tmp / "optimizer.safetensors", arrays)
        body = {"step": int(step), "optimizer": tree, **(state or {})}
        _write_bytes(tmp / "state.json", json.dumps(body, indent=1, default=_json_default).encode())
        for name, src in (files or {}).items():
            if "/" in name or name in (MANIFEST, "state.json", "model.safetensors", "optimizer.safetensors"):
                raise ValueError(f"bad checkpoint file name {name!r}")
            shutil.copyfile(src, tmp / name)
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        entries = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        finite = metric is not None and math.isfinite(float(metric))  # NaN/inf are not JSON
        manifest = {"format": FORMAT, "step": int(step), "metric": float(metric) if finite else None,
                    "files": entries}
        _write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsync_dir(tmp)
        if final.exists():
            old = r / f".del-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(r)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        _prune(r, keep_last, keep_best)
    return final


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot store {type(x).__name__} in state.json")


def _prune(root: Path, keep_last: int, keep_best: bool) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    cks = list_checkpoints(root)
    keep = {p for _, p in cks[-keep_last:]}
    if keep_best:
        b = best_checkpoint(root)
        if b is not None:
            keep.add(b)
    for _, p in cks:
        if p not in keep:
            gone = root / f".del-{p.name}-{os.getpid()}"
            os.replace(p, gone)  # it stops being a checkpoint at once, then is removed
            shutil.rmtree(gone, ignore_errors=True)
    fsync_dir(root)


@dataclass
class Checkpoint:
    path: Path
    step: int
    params: dict[str, np.ndarray]
    optimizer: Any
    state: dict[str, Any]
    metric: float | None

    def file(self, name: str) -> Path:
        """Path of a copied-in file (e.g. the tokenizer); FileNotFoundError if absent."""
        p = self.path / name
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {self.path} has no file {name!r}")
        return p


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file's size and sha256 against checkpoint.json; return the manifest."""
    p = Path(path)
    mpath = p / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p} is not a complete checkpoint (no {MANIFEST})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath}: corrupt checkpoint manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{mpath}: not a {FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(m, dict) and {"bytes", "sha256"} <= set(m) for m in files.values()):
        raise ValueError(f"{mpath}: corrupt checkpoint manifest (key \"files\" is missing or is not a mapping of "
                         "file names to their bytes and sha256)")
    for name, meta in files.items():
        f = p / name
        if not f.is_file():
            raise ValueError(f"corrupt checkpoint {p}: file {name} is missing")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise ValueError(f"corrupt checkpoint {p}: {name} has {size} bytes, expected {meta['bytes']} (truncated?)")
        if _sha256(f) != meta["sha256"]:
            raise ValueError(f"corrupt checkpoint {p}: {name} fails its sha256 checksum")
    return manifest


def load_checkpoint(path: str | os.PathLike[str], *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint directory (or the latest under a root), checking checksums unless ``verify=False``."""
    p = resolve_checkpoint(path)
    if verify:
        manifest = verify_checkpoint(p)
    else:
        manifest = json.loads((p / MANIFEST).read_text())
    params = _load_tensors(p / "model.safetensors")
    arrays = _load_tensors(p / "optimizer.safetensors")
    try:
        state = json.loads((p / "state.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p / 'state.json'}: corrupt ({e})") from None
    optimizer = unflatten_state(state.pop("optimizer", {}), arrays)
    step = int(state.pop("step"))
    return Checkpoint(p, step, params, optimizer, state, manifest.get("metric"))
