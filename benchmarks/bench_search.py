"""One solver search at NFE 5, timed, and what it buys on data it never saw.

On the three-mode 1D mixture under VP-linear (256 particles to fit on, 1000 held out from the next
seed), at NFE 5:
  1. every fixed solver (DDIM, Euler, Heun, DPM-Solver(++) 2/3, DEIS, PLMS, 12 UniPC variants) on every
     standard spacing, the best chosen on the held-out particles themselves (the strongest baseline);
  2. the USF / S^3 schedule search (800 runs; --seeds searches with different seeds, to show how much
     the gain depends on the search's own randomness);
  3. AutoDiffusion's time-step search for DPM-Solver++(2M) and the Nelder-Mead grid optimiser;
  4. DC-Solver's rho fitted on 16 trajectories.
Each searched sampler is then scored on the held-out particles, on a held-out target (gmm-1d-asym)
and under another schedule (EDM, the grid carried at equal relative lambda positions). Prints wall
times (target: one search in under 60 s on 2 cores) and gains = best fixed error / searched error
(> 1 better) on held-out data.

    .venv/bin/python benchmarks/bench_search.py [--nfe 5] [--budget 800] [--seeds 3] [--executor local-cluster]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import explorer as ex  # noqa: E402

S = ex.solver_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=int, default=5)
    parser.add_argument("--budget", type=int, default=800, help="runs per schedule search")
    parser.add_argument("--seeds", type=int, default=3, help="schedule searches with seeds 0..seeds-1")
    parser.add_argument("--n-fit", type=int, default=256)
    parser.add_argument("--executor", default=None, help="ex.sweeps executor for the searches (default: in-process)")
    args = parser.parse_args()

    began = time.perf_counter()
    prob = S.problem(("gmm-1d-3modes", "vp-linear"), args.n_fit, 1000, 0)
    held = S.problem(("gmm-1d-asym", "vp-linear"), args.n_fit, 1000, 0)
    edm = S.problem(("gmm-1d-3modes", "edm"), args.n_fit, 1000, 0)
    setup = time.perf_counter() - began
    print(f"particles and exact endpoints (rk45) for 3 settings: {setup:.1f} s")

    start = time.perf_counter()
    rows = S.baselines(prob, args.nfe, executor=args.executor)
    b = S.best(rows)
    print(f"{len(rows)} fixed runs in {time.perf_counter() - start:.1f} s; best at NFE {args.nfe}: {b['label']} on "
          f"{b['spacing']}: held-out {b['holdout_error']:.4g} (fit {b['fit_error']:.4g})")
    others = {"held-out target gmm-1d-asym": (held, S.baselines(held, args.nfe)),
              "other schedule edm": (edm, S.baselines(edm, args.nfe))}

    def report(found, label):
        moved = {k: S.score_on(found, p, r) for k, (p, r) in others.items()}
        print(f"{label:38s} fit {found.fit_error:.4g}  held-out {found.holdout_error:.4g}  gain x{found.gain:5.2f}  |  "
              + "  ".join(f"{k}: x{m['gain']:.2f}" for k, m in moved.items())
              + f"  ({found.n_evals} runs, {found.wall_time:.1f} s)")
        return found.gain, moved

    print(f"\ngains = best fixed held-out error / searched held-out error, at NFE {args.nfe}:")
    gains, moved_gains, times = [], {k: [] for k in others}, []
    for seed in range(args.seeds):
        found = S.search_schedule(prob, args.nfe, budget=args.budget, seed=seed, fixed_rows=rows, executor=args.executor)
        times.append(found.wall_time)
        g, moved = report(found, f"USF schedule search, seed {seed}")
        gains.append(g)
        for k in others:
            moved_gains[k].append(moved[k]["gain"])
        if seed == 0:
            print(f"    {found.options['schedule']}")
    report(S.search_grid(prob, "dpmpp-2m", args.nfe, fixed_rows=rows, executor=args.executor),
           "AutoDiffusion grid search, dpmpp-2m")
    report(S.nelder_mead_grid(prob, "dpmpp-2m", args.nfe, fixed_rows=rows), "Nelder-Mead grid, dpmpp-2m")
    dc = S.fit_dc(prob.model, args.nfe, ex.grid_search.particles(prob.model, 16, 2))
    report(S.dc_searched(prob.model, dc, prob, dc.rho, fixed_rows=rows), "DC-Solver, rho fitted on 16")
    unipc = S.errors(prob.model, prob.holdout, [S.cell("unipc", {}, dc.ts)])[0]
    print(f"{'UniPC (rho = 1), same grid':38s} held-out {unipc:.4g}  gain x{b['holdout_error'] / unipc:5.2f}")

    print(f"\nUSF over {args.seeds} seeds: held-out gain x{np.min(gains):.2f}-x{np.max(gains):.2f} "
          f"(median x{np.median(gains):.2f}); moved: "
          + "; ".join(f"{k} x{np.min(v):.2f}-x{np.max(v):.2f}" for k, v in moved_gains.items()))
    print(f"one schedule search ({args.budget} runs): {np.median(times):.1f} s (median); everything: "
          f"{time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
