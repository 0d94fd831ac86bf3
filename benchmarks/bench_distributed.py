"""Data parallelism over MPI: homeforge DDP / ZeRO-1 / DiLoCo vs torch DistributedDataParallel (gloo).

Run: ``PYTHONPATH=python:. python -m benchmarks.bench_distributed [--quick] [--ranks 8] [--threads-per-rank 2]``

The launcher runs ``mpirun -np R`` for R = 1 and R = --ranks (workers: this module with --worker).
Every rank trains the same homeforge.Model (preset --preset, default "1m", vocab 2048) on its own
batch of --batch x --seq tokens, with --threads-per-rank threads (default: cores / ranks) for ours
and torch alike, so weak scaling keeps per-rank resources fixed. It reports:

- step time and tokens/s (global) for ours (ddp, zero1) and torch DDP (gloo; transformers'
  LlamaForCausalLM built from the same config, torch.optim.AdamW), with the ratio;
- weak-scaling efficiency = tokens/s(R) / (R * tokens/s(1)), and the efficiency against the same R
  processes training with no data parallelism (isolates DP's cost from CPU contention);
- the fraction of communication hidden behind backward = 1 - exposed wait / the same bucketed
  allreduces timed alone (no compute);
- bytes on the wire per step and rank (bandwidth-optimal ring model: 2(R-1)/R x payload);
- DiLoCo (H inner steps, bf16 pseudo-gradients) vs synchronous DDP on a learnable synthetic corpus
  (a fixed random sparse bigram chain): bytes ratio (target >= 100x fewer) and final held-out loss
  (target: within 2%, read as DiLoCo's loss at most 2% above synchronous; a lower loss is
  reported with its sign), same number of steps and tokens.
- with --sweep-buckets: ours' step time for several bucket sizes (how DEFAULT_BUCKET_MB was chosen).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_info, parser, print_table, save_results

ROOT = Path(__file__).resolve().parents[1]
# The timed runs use torch.optim.AdamW's settings, as the torch DDP rows and the no-comm step do.
TIMED_OPTIM = {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01, "max_grad_norm": None}
# The DiLoCo comparison's inner AdamW (the protocol behind the figures in RESULTS.md); lr is set per run.
DILOCO_OPTIM = {"betas": (0.9, 0.999), "weight_decay": 0.0, "max_grad_norm": None}


# ------------------------------------------------------------------------------------------ worker
def bigram_chain(vocab: int, seed: int = 7, fanout: int = 4) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    nxt = g.integers(0, vocab, size=(vocab, fanout))
    p = g.dirichlet(np.ones(fanout) * 0.5, size=vocab)
    return nxt, p


def sample_chain(chain, g: np.random.Generator, b: int, t: int) -> np.ndarray:
    nxt, p = chain
    out = np.empty((b, t + 1), np.int32)
    out[:, 0] = g.integers(0, nxt.shape[0], size=b)
    cum = np.cumsum(p, axis=1)
    for j in range(1, t + 1):
        u = g.random(b)[:, None]
        k = (u > cum[out[:, j - 1]]).sum(1)
        out[:, j] = nxt[out[:, j - 1], np.minimum(k, nxt.shape[1] - 1)]
    return out


def _batch(args, step: int, rank: int, chain=None):
    g = np.random.default_rng(1_000_003 * step + rank)
    if chain is None:
        d = g.integers(0, args["vocab"], size=(args["batch"], args["seq"] + 1), dtype=np.int32)
    else:
        d = sample_chain(chain, g, args["batch"], args["seq"])
    return [(np.ascontiguousarray(d[:, :-1]), np.ascontiguousarray(d[:, 1:]))]


def worker(args: dict) -> None:
    import faulthandler
    import signal

    from mpi4py import MPI

    # When a peer's timeout aborts the job, mpirun kills every rank with SIGTERM: each rank then
    # prints where it was, which names the rank that hung and the call it hung in.
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)

    import homeforge
    from homeforge import distributed as hd

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    tpr = args["threads"]
    homeforge.set_num_threads(tpr)
    cfg = homeforge.ModelConfig.preset(args["preset"], args["vocab"])
    out: dict = {"world": world, "threads_per_rank": tpr}
    steps, warm = args["steps"], args["warmup"]
    tok_step = args["batch"] * args["seq"] * world

    def time_ours(mode: str, bucket_mb: float = hd.DEFAULT_BUCKET_MB, overlap: bool = True) -> dict:
        model = homeforge.Model(cfg, seed=0)
        st = hd.make_strategy({"mode": mode, "bucket_mb": bucket_mb, "overlap": overlap, "threads": 0, **TIMED_OPTIM,
                               "checksum_every": 0, "timeout_s": args["timeout_s"]}, model)
        rows = []
        for s in range(warm + steps):
            r = st.train_step(_batch(args, s, rank), 1e-3)
            if s >= warm:
                rows.append(r)
        res = {
            "step_s": statistics.median(r["step_time_max"] for r in rows),
            "wait_s": statistics.median(r["comm_wait_s"] for r in rows),
            "bytes": statistics.median(r["comm_bytes"] for r in rows),
            "buckets": rows[-1].get("buckets"), "overlapped": rows[-1].get("buckets_overlapped"),
        }
        if mode == "ddp" and world > 1:  # the same bucketed allreduces, alone (no compute to hide behind)
            ts = []
            for _ in range(max(5, steps)):
                comm.Barrier()
                t0 = time.perf_counter()
                reqs = []
                for a, b in st.buckets:
                    reqs += st.c.iallreduce_sum(st.flat_g[a:b])
                MPI.Request.Waitall(reqs)
                ts.append(time.perf_counter() - t0)
            res["comm_alone_s"] = statistics.median(ts)
            res["hidden"] = max(0.0, min(1.0, 1.0 - res["wait_s"] / res["comm_alone_s"])) if res["comm_alone_s"] > 0 else None
        res["opt_state_mb"] = st.optimizer_state_nbytes() / 2**20
        return res

    if args.get("diloco_only"):
        out["diloco"] = diloco_vs_sync(args, cfg, comm, rank, world)
        if rank == 0:
            Path(args["result"]).write_text(json.dumps(out))
        return
    def time_local() -> float:
        """The same training step with no data parallelism at all, in this same R-process job."""
        from homeforge import optim

        model = homeforge.Model(cfg, seed=0)
        ps, gs = model.named_parameters(), model.named_grads()
        groups = [{"params": [ps[k] for k in ps if ps[k].ndim >= 2], "grads": [gs[k] for k in ps if ps[k].ndim >= 2],
                   "weight_decay": 0.01},
                  {"params": [ps[k] for k in ps if ps[k].ndim < 2], "grads": [gs[k] for k in ps if ps[k].ndim < 2],
                   "weight_decay": 0.0}]
        opt = optim.AdamW(groups, lr=1e-3)
        ts = []
        for s in range(warm + steps):
            (x, y), = _batch(args, s, rank)
            comm.Barrier()
            t0 = time.perf_counter()
            model.zero_grad(overwrite_next=True)
            model.forward_backward(x, y)
            opt.step(1e-3)
            dt = np.array([time.perf_counter() - t0])
            comm.Allreduce(MPI.IN_PLACE, dt, MPI.MAX)
            if s >= warm:
                ts.append(float(dt[0]))
        return statistics.median(ts)

    out["ceiling"] = machine_ceiling(comm)
    out["ours_local_s"] = time_local()
    out["ours_ddp"] = time_ours("ddp")
    out["ours_zero1"] = time_ours("zero1")
    if args.get("sweep") and world > 1:
        out["sweep"] = {str(mb): time_ours("ddp", mb)["step_s"] for mb in (0.25, 0.5, 1.0, 2.0, 4.0, 25.0)}
        out["sweep_no_overlap_1mb"] = time_ours("ddp", 1.0, overlap=False)["step_s"]
    out["torch_ddp"] = None if args.get("no_torch") else time_torch(args, cfg, comm, rank, world, tpr)
    if args.get("diloco") and world > 1:
        out["diloco"] = diloco_vs_sync(args, cfg, comm, rank, world)
    for k in ("ours_ddp", "ours_zero1", "torch_ddp"):
        if out.get(k):
            out[k]["tokens_s"] = tok_step / out[k]["step_s"]
    if rank == 0:
        Path(args["result"]).write_text(json.dumps(out))


def machine_ceiling(comm) -> dict:
    """What R ranks running at once leave each rank: a oneDNN GEMM's GFLOP/s and a STREAM triad's
    GB/s, measured on every rank simultaneously (median over ranks). Dividing by the 1-rank figures
    gives the machine's own weak-scaling ceiling for compute-bound and bandwidth-bound work, which
    no data-parallel scheme can beat (shared turbo budget, L3 and memory channels)."""
    from homeforge import _core

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    c = np.empty_like(a)
    x, y, z = (np.ones(1 << 24) for _ in range(3))  # 3 x 128 MiB: far beyond any cache
    res = {}
    for name, fn, work in (("gemm_gflops", lambda: _core.gemm(a, a, c), 2 * n**3 / 1e9),
                           ("triad_gbs", lambda: _core.stream_triad(x, y, z, 3.0), 3 * 8 * (1 << 24) / 1e9)):
        fn()
        ts = []
        for _ in range(7):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        rate = np.array([work / min(ts)])
        rates = np.empty(comm.Get_size())
        comm.Allgather(rate, rates)
        res[name] = float(np.median(rates))
    return res


def time_torch(args, cfg, comm, rank, world, tpr) -> dict | None:
    try:
        import torch
        import torch.distributed as dist
        import torch.nn.functional as F
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        return {"error": f"torch/transformers missing: {e}"}
    import homeforge

    torch.set_num_threads(tpr)
    hf = homeforge.Model(cfg, seed=0).hf_config()
    hf = {k: v for k, v in hf.items() if k not in ("homeforge", "architectures", "model_type", "rope_parameters")}
    port_a = np.array([29500 + os.getpid() % 2000], np.int64)
    comm.Bcast(port_a, root=0)
    port = int(port_a[0])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    res = {}
    for wrap in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**hf, attn_implementation="sdpa"))
        ddp = torch.nn.parallel.DistributedDataParallel(model) if (world > 1 and wrap) else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        ts = []
        for s in range(args["warmup"] + args["steps"]):
            (x, y), = _batch(args, s, rank)
            dist.barrier()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            logits = ddp(torch.from_numpy(x.astype(np.int64))).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y.astype(np.int64)).reshape(-1))
            loss.backward()
            opt.step()
            dt = torch.tensor([time.perf_counter() - t0])
            if world > 1:
                dist.all_reduce(dt, op=dist.ReduceOp.MAX)
            if s >= args["warmup"]:
                ts.append(float(dt))
        res["step_s" if wrap else "local_s"] = statistics.median(ts)
    n = sum(p.numel() for p in model.parameters())
    dist.destroy_process_group()
    return {**res, "bytes": 2.0 * (world - 1) / world * 4 * n, "params": n}


def diloco_vs_sync(args, cfg, comm, rank, world) -> dict:
    import homeforge
    from homeforge import distributed as hd

    chain = bigram_chain(args["vocab"])
    dargs = {**args, "batch": args["diloco_batch"], "seq": args["diloco_seq"]}
    held = [_batch({**dargs, "batch": 16}, 10_000_000 + i, 0, chain)[0] for i in range(4)]
    res = {}
    warm = None
    if args.get("diloco_warm", 0):  # DiLoCo's protocol: both runs continue from one synchronously trained model
        model = homeforge.Model(cfg, seed=0)
        st = hd.make_strategy({"mode": "ddp", **DILOCO_OPTIM, "lr": args["diloco_lr"], "threads": 0,
                               "checksum_every": 0, "timeout_s": args["timeout_s"]}, model)
        for s in range(args["diloco_warm"]):
            st.train_step(_batch(dargs, 10**9 + s, rank, chain), args["diloco_lr"])
        warm = (model.flat_params().copy(), st.state_dict())
        res["warm_loss"] = float(np.mean([model.loss(x, y) for x, y in held]))
    for name, dc in (("sync", {"mode": "ddp"}),
                     ("diloco", {"mode": "diloco", "diloco_h": args["diloco_h"], "wire_dtype": args["wire"],
                                 "outer_lr": args["outer_lr"], "outer_momentum": args["outer_momentum"]})):
        model = homeforge.Model(cfg, seed=0)
        st = hd.make_strategy({**dc, **DILOCO_OPTIM, "lr": args["diloco_lr"], "threads": 0, "checksum_every": 0,
                               "timeout_s": args["timeout_s"]},
                              model)
        if warm is not None:
            model.flat_params()[:] = warm[0]
            st.load_state_dict(warm[1])
        total_bytes, t0 = 0.0, time.perf_counter()
        for s in range(args["diloco_steps"]):
            r = st.train_step(_batch(dargs, s, rank, chain), args["diloco_lr"])
            total_bytes += r["comm_bytes"]
        if name == "diloco" and st.inner_count:
            raise RuntimeError("diloco_steps must be a multiple of diloco_h")
        loss = float(np.mean([model.loss(x, y) for x, y in held]))
        res[name] = {"loss": loss, "bytes": total_bytes, "seconds": time.perf_counter() - t0}
    res["bytes_ratio"] = res["sync"]["bytes"] / max(1.0, res["diloco"]["bytes"])
    res["loss_rel_diff"] = res["diloco"]["loss"] / res["sync"]["loss"] - 1.0
    return res


# ---------------------------------------------------------------------------------------- launcher
def run_ranks(ranks: int, wargs: dict, timeout: float, bind: str = "auto") -> dict:
    from homeforge.distributed import find_mpirun

    mpirun = find_mpirun()
    if mpirun is None:
        raise SystemExit("mpirun not found: pip install 'homeforge[mpi]'")
    with tempfile.TemporaryDirectory() as td:
        wargs = {**wargs, "result": str(Path(td) / "r.json")}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), str(ROOT), env.get("PYTHONPATH", "")])
        env.setdefault("OMPI_MCA_btl", "self,vader,tcp")
        tpr, cores = wargs["threads"], len(os.sched_getaffinity(0))
        if bind == "auto":
            bind = "core" if ranks * tpr <= cores else "none"
        # Binding each rank to its own `tpr` cores keeps its threads and caches in place; with more
        # threads than cores it is impossible, and ranks float (--bind-to none). Ranks are dealt
        # round-robin over the sockets (packages), so on a multi-socket host they share every memory
        # controller instead of filling socket 0 first; on one socket this is plain slot order.
        place = (["--map-by", f"package:PE={tpr}", "--bind-to", "core"] if bind == "core"
                 else ["--oversubscribe", "--bind-to", "none"])
        cmd = [mpirun, "--allow-run-as-root", *place, "-np", str(ranks),
               sys.executable, "-m", "benchmarks.bench_distributed", "--worker", json.dumps(wargs)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"mpirun -np {ranks} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return json.loads(Path(wargs["result"]).read_text())


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2, help="largest world size (runs 1 and this)")
    ap.add_argument("--threads-per-rank", type=int, default=None, help="default: cores // ranks")
    ap.add_argument("--preset", default="1m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sweep-buckets", action="store_true")
    ap.add_argument("--diloco-h", type=int, default=64, help="inner steps (64 with bf16: 128x fewer bytes)")
    ap.add_argument("--diloco-steps", type=int, default=None)
    ap.add_argument("--diloco-batch", type=int, default=None, help="per-rank batch of the DiLoCo comparison")
    ap.add_argument("--diloco-only", action="store_true", help="only the DiLoCo vs synchronous comparison")
    ap.add_argument("--outer-lr", type=float, default=0.7)
    ap.add_argument("--outer-momentum", type=float, default=0.9)
    ap.add_argument("--wire", default="bf16", choices=("f32", "bf16"))
    ap.add_argument("--diloco-lr", type=float, default=1e-3)
    ap.add_argument("--diloco-seq", type=int, default=64)
    ap.add_argument("--diloco-warm", type=int, default=0, help="synchronous steps both runs start from")
    ap.add_argument("--bind", default="auto", choices=("auto", "core", "none"),
                    help="rank placement: each rank bound to its own cores (auto: when they fit), or floating")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a rank waits for its peers before aborting")
    ap.add_argument("--no-torch", action="store_true", help="skip torch DDP (e.g. where torch is absent)")
    ap.add_argument("--no-diloco", action="store_true", help="skip the DiLoCo comparison (e.g. for large presets)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    tpr = args.threads_per_rank or max(1, cores // args.ranks)
    if args.quick:
        args.batch, args.seq, args.diloco_seq = min(args.batch, 4), min(args.seq, 64), min(args.diloco_seq, 32)
    w = {"preset": args.preset, "vocab": 2048, "batch": args.batch, "seq": args.seq, "threads": tpr,
         "steps": args.steps or (3 if args.quick else 15), "warmup": 1 if args.quick else 3, "sweep": args.sweep_buckets,
         "diloco": not args.no_diloco, "diloco_h": args.diloco_h, "diloco_lr": args.diloco_lr,
         "outer_lr": args.outer_lr, "diloco_warm": args.diloco_warm, "outer_momentum": args.outer_momentum, "wire": args.wire,
         "diloco_steps": args.diloco_steps or (1 if args.quick else 6) * args.diloco_h,
         "diloco_only": args.diloco_only, "diloco_batch": args.diloco_batch or (1 if args.quick else 4),
         "diloco_seq": args.diloco_seq, "no_torch": args.no_torch, "timeout_s": args.timeout}
    print(f"# {machine_info()['cpu']}, {cores} cores; {tpr} thread(s) per rank; model {args.preset}, "
          f"batch {args.batch}x{args.seq} per rank; placement --bind {args.bind}")
    res = {1: run_ranks(1, {**w, "diloco": False, "sweep": False}, 900, args.bind)} if not args.diloco_only else {}
    if args.ranks > 1:
        res[args.ranks] = run_ranks(args.ranks, w, 1800, args.bind)
    base = {k: res[1][k]["tokens_s"] for k in ("ours_ddp", "ours_zero1", "torch_ddp") if (res.get(1, {}).get(k) or {}).get("tokens_s")}
    rows = []
    for R, r in res.items():
        for k in ("ours_ddp", "ours_zero1", "torch_ddp"):
            x = r.get(k) or {}
            if "step_s" not in x:
                continue
            local = x.get("local_s") if k == "torch_ddp" else r.get("ours_local_s")
            rows.append({"impl": k, "ranks": R, "step_ms": 1e3 * x["step_s"], "tokens_s": x["tokens_s"],
                         "nocomm_ms": 1e3 * local if local else None,
                         "eff_vs_nocomm": local / x["step_s"] if local else None,
                         "weak_eff": x["tokens_s"] / (R * base[k]) if k in base else None,
                         "vs_torch": (x["tokens_s"] / r["torch_ddp"]["tokens_s"]) if (r.get("torch_ddp") or {}).get("tokens_s") else None,
                         "hidden": x.get("hidden"), "exposed_ms": 1e3 * x["wait_s"] if "wait_s" in x else None,
                         "comm_alone_ms": 1e3 * x["comm_alone_s"] if x.get("comm_alone_s") else None,
                         "wire_MB": x["bytes"] / 1e6, "optstate_MB": x.get("opt_state_mb")})
    print_table(rows, ["impl", "ranks", "step_ms", "tokens_s", "weak_eff", "nocomm_ms", "eff_vs_nocomm", "vs_torch",
                       "hidden", "exposed_ms",
                       "comm_alone_ms", "wire_MB", "optstate_MB"])
    print("weak_eff = tokens/s(R) / (R x tokens/s(1)); nocomm_ms = the same R processes each training alone (no\n"
          "data parallelism): eff_vs_nocomm = nocomm / step isolates the cost of data parallelism from CPU\n"
          "contention on a machine that cannot give every rank its cores.")
    top = res.get(args.ranks, {})
    if res.get(1, {}).get("ceiling") and top.get("ceiling") and args.ranks > 1:
        c1, cr = res[1]["ceiling"], top["ceiling"]
        print(f"machine ceiling per rank, 1 -> {args.ranks} ranks running at once: oneDNN GEMM 1024^3 "
              f"{c1['gemm_gflops']:.1f} -> {cr['gemm_gflops']:.1f} GFLOP/s ({cr['gemm_gflops'] / c1['gemm_gflops']:.2f}x), "
              f"triad {c1['triad_gbs']:.1f} -> {cr['triad_gbs']:.1f} GB/s ({cr['triad_gbs'] / c1['triad_gbs']:.2f}x): the best "
              f"weak-scaling efficiency this machine allows compute- and bandwidth-bound work")
    if top.get("sweep"):
        print("bucket sweep (ours ddp, step ms):", {k: round(1e3 * v, 2) for k, v in top["sweep"].items()},
              "| no overlap @1MB:", round(1e3 * top["sweep_no_overlap_1mb"], 2))
    d = top.get("diloco")
    if d:
        print(f"DiLoCo H={args.diloco_h} {args.wire} vs sync, {w['diloco_steps']} steps, inner AdamW lr {args.diloco_lr}, "
              f"outer Nesterov lr {args.outer_lr} momentum {args.outer_momentum}, {w['diloco_batch']}x{args.diloco_seq} per rank: bytes ratio {d['bytes_ratio']:.1f}x "
              f"(target >= 100x: {'met' if d['bytes_ratio'] >= 100 else 'MISSED'}); held-out loss sync "
              f"{d['sync']['loss']:.4f} diloco {d['diloco']['loss']:.4f} ({100 * d['loss_rel_diff']:+.2f}%, target "
              f"at most 2% above sync: {'met' if d['loss_rel_diff'] <= 0.02 else 'MISSED'})")
    save_results("distributed", rows, out=args.out, extra={"raw": {str(k): v for k, v in res.items()}, "config": w})


if __name__ == "__main__":
    main()
