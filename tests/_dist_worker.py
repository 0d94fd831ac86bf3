"""Worker run under `mpirun -np N python tests/_dist_worker.py SPEC_JSON` by tests/test_distributed*.py.

Each scenario trains a small homeforge.Model with homeforge.distributed and writes, per rank,
OUT/rank{r}.npz with the final parameters and what the scenario measured; the tests compare those
files with a single-process reference computed in the test process.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _dist_common import batches_for, build_model, save_state, load_state  # noqa: E402

from homeforge import distributed as hd  # noqa: E402


def main() -> None:
    spec = json.loads(sys.argv[1])
    out = spec["out"]
    if spec.get("max_chunk"):
        hd._MAX_CHUNK = int(spec["max_chunk"])
    model = build_model(spec, perturb_rank=True)
    if spec.get("late_rank") is not None:
        from mpi4py import MPI  # initialised (MPI_Init waits for every rank), then one rank dawdles

        if MPI.COMM_WORLD.Get_rank() == spec["late_rank"]:
            time.sleep(spec.get("late_s", 30))  # arrives late at the strategy's first collective
    strat = hd.make_strategy(spec["dist"], model)
    r, W = strat.rank, strat.world_size
    if spec.get("slow_rank") == r:  # computes slowly (inside the step, before any collective)
        fb = model.forward_backward

        def slow_forward_backward(*a, **k):
            time.sleep(spec.get("slow_s", 0.3))
            return fb(*a, **k)

        model.forward_backward = slow_forward_backward
    if spec.get("resume"):
        load_state(spec["resume"], model, strat)
    start = strat.step_count
    losses, slowest = [], []
    for step in range(start, start + spec["steps"]):
        if spec.get("kill_rank") is not None and r == spec["kill_rank"] and step == spec.get("kill_step", 2):
            if spec.get("hang"):
                time.sleep(120)  # bounded: mpirun kills it once rank 0 aborts
            os.kill(os.getpid(), 9)
        mb = batches_for(spec, step, r, W)
        if spec.get("extra_micro_rank") == r:
            mb = mb + mb  # a rank that passes more micro-batches than the others
        res = strat.train_step(mb, spec["dist"].get("lr", 1e-3))  # (nan_rank: see _dist_common._NaNOnStep)
        losses.append(res["loss"])
        slowest.append(res.get("slowest_rank", -1))
        if spec.get("drift_rank") is not None and r == spec["drift_rank"] and step == spec.get("drift_step", 1):
            model.flat_params()[7] += 1e-3
    sd = strat.state_dict() if spec.get("save") else None
    if spec.get("save") and r == 0:
        save_state(spec["save"], model, sd)
    np.savez(os.path.join(out, f"rank{r}.npz"), params=model.flat_params(), losses=np.array(losses),
             slowest=np.array(slowest), opt_nbytes=strat.optimizer_state_nbytes(), world=W, threads=__import__("homeforge").get_num_threads())


if __name__ == "__main__":
    main()
