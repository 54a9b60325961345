"""A full work-precision sweep, and what each solver costs besides the model.

1. The sweep: 10 deterministic solvers x 8 NFE values (each solver at NFE / k steps for k model
   evaluations per step), 10,000 particles on a 2D mixture, under the EDM schedule on a karras grid:
   explorer.analyses.experiments.work_precision, with the rk45 reference and the distances to the target.
   Prints the total wall time (target: < 10 s on 2 cores), split into model evaluations, the rest of
   the solvers' work, and the measurements (reference solve, errors, distances).
2. Overhead per step: everything a solver does that is not the model, as a fraction of the model's
   time, measured with a timed denoiser: ours (ex.sample: the solver and its trajectory bookkeeping)
   against k-diffusion's loop (k_diffusion/sampling.py, loaded by tests/peers.py) driving the very
   same numpy denoiser through a zero-copy torch float64 wrapper, for the solvers both have:
   euler, heun, dpm-solver-2 (sample_dpm_2), dpmpp-2s (sample_dpmpp_2s_ancestral, eta = 0),
   dpmpp-2m. Best of --repeats runs.

    .venv/bin/python benchmarks/bench_sweep.py [--particles 10000] [--repeats 3] [--target gmm-2d-grid25]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# the test suite's loader of k-diffusion's sampling.py (its package __init__ needs torchvision)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import explorer as ex  # noqa: E402
from explorer import experiments  # noqa: E402
from peers import k_diffusion_sampling  # noqa: E402

SWEEP_SOLVERS = ["euler", "heun", "ddim", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s", "dpmpp-2m", "dpmpp-3m", "deis", "unipc"]
NFES = (6, 12, 18, 24, 30, 36, 48, 60)  # multiples of 1, 2 and 3 evaluations per step
PEERS = {  # ours -> (k-diffusion sampler, its extra arguments)
    "euler": ("sample_euler", {}),
    "heun": ("sample_heun", {}),
    "dpm-solver-2": ("sample_dpm_2", {}),
    "dpmpp-2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    "dpmpp-2m": ("sample_dpmpp_2m", {}),
}
SEED = 2024


class Timed:
    """The model, with the wall time spent inside denoise added up."""

    def __init__(self, model):
        self.model, self.schedule, self.target = model, model.schedule, model.target
        self.seconds, self.calls = 0.0, 0

    @property
    def dim(self):
        return self.model.dim

    def denoise(self, x, t):
        start = time.perf_counter()
        out = self.model.denoise(x, t)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def reset(self):
        self.seconds, self.calls = 0.0, 0


class TorchWrap:
    """k-diffusion's model(x, sigma) over the timed numpy denoiser: float64 tensors shared with numpy
    (no copies), so that both loops pay for exactly the same model."""

    def __init__(self, timed):
        self.timed = timed

    def __call__(self, x, sigma):
        return torch.from_numpy(self.timed.denoise(x.numpy(), float(sigma[0])))


def overhead(timed, run, repeats: int):
    """(best wall time, model time of that run, calls) over repeats runs after a warm-up."""
    run()
    best = None
    for _ in range(repeats):
        timed.reset()
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, timed.seconds, timed.calls)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", default="gmm-2d-grid25")
    args = parser.parse_args(argv)

    gm = ex.targets.get(args.target)
    schedule = ex.schedules.get("edm")
    timed = Timed(ex.AnalyticModel(gm, schedule))
    x_T = timed.model.prior_sample(args.particles, np.random.default_rng(SEED))
    solvers = [s for s in SWEEP_SOLVERS if s in ex.solvers.names()]
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    print(f"{args.target}: K={gm.n_components}, D={gm.dim}; N={args.particles}; EDM schedule, karras grid; "
          f"os.cpu_count() = {os.cpu_count()}; thread variables: {threads or 'none set'}")

    # 1. The sweep.
    print(f"\n1. work-precision sweep: {len(solvers)} solvers x {len(NFES)} NFE values {NFES}")
    timed.reset()
    start = time.perf_counter()
    records = experiments.work_precision(timed, x_T, {s: s for s in solvers}, NFES, "karras", seed=SEED)
    total = time.perf_counter() - start
    solving = sum(r["wall_time"] for r in records)
    model_in_runs = sum(r["nfe_spent"] for r in records)
    print(f"   {len(records)} runs, {model_in_runs} model evaluations in the runs, {timed.calls} in all (with rk45)")
    print(f"   total {total:.2f} s  (target < 10 s: {'met' if total < 10 else 'MISSED'})")
    print(f"   of which sampling runs {solving:.2f} s, model evaluations (all) {timed.seconds:.2f} s, "
          f"reference + errors + distances {total - solving:.2f} s")
    orders = experiments.orders(records)
    print("   fitted orders: " + ", ".join(f"{s} {orders[s]:.2f}" for s in solvers))
    diverged = [f"{r['label']}@{r['nfe']}" for r in records if r["diverged_at"] is not None]
    print(f"   diverged runs: {', '.join(diverged) or 'none'}")

    # 2. Overhead per step against k-diffusion.
    k_sampling = k_diffusion_sampling()
    n_steps = 24
    print(f"\n2. solver overhead (everything but the model), {n_steps * 2} NFE, best of {args.repeats}:")
    print(f"   {'solver':14s}{'steps':>7s}{'model/step (ms)':>17s}{'ours: overhead/step':>22s}{'/ model':>9s}"
          f"{'k-diffusion: overhead/step':>29s}{'/ model':>9s}{'max |ours - theirs|':>21s}")
    for name in solvers:
        steps = experiments.steps_for(name, 2 * n_steps)
        ts = ex.timesteps(schedule, steps, "karras")
        wall, model_s, calls = overhead(timed, lambda: ex.sample(timed, x_T, ts, name), args.repeats)
        ours = (wall - model_s) / steps
        line = f"   {name:14s}{steps:7d}{1e3 * model_s / steps:17.2f}{1e3 * ours:19.3f} ms{(wall - model_s) / model_s:9.1%}"
        if name in PEERS:
            fn_name, extra = PEERS[name]
            fn = getattr(k_sampling, fn_name)
            sigmas = torch.tensor(ts, dtype=torch.float64)  # our grid, ending at t_min > 0: no appended zero
            wrap = TorchWrap(timed)
            final = {}

            def theirs():
                with torch.inference_mode():
                    final["x"] = fn(wrap, torch.tensor(x_T), sigmas, disable=True, **extra)

            twall, tmodel, _ = overhead(timed, theirs, args.repeats)
            diff = np.abs(ex.sample(timed.model, x_T, ts, name).sample - final["x"].numpy()).max()
            line += f"{1e3 * (twall - tmodel) / steps:26.3f} ms{(twall - tmodel) / tmodel:9.1%}{diff:21.2e}"
        print(line)
    print("\n   overhead/step: (wall time - time inside the model) / steps; '/ model': that overhead over the model's time."
          "\n   Multi-threaded timings swing when other work shares the cores: rerun on a quiet machine before quoting.")


if __name__ == "__main__":
    main()
