"""A sweep in this process against the same sweep on a Dask LocalCluster of 2 worker processes.

The sweep: 10 solvers x 8 NFE values x 3 targets x 4 seeds = 960 cells of ex.solver_sweep (error
against the rk45 solve from the same start, sliced W2 to the target), at each cell size in
--particles. For each size it prints the wall time in-process and on the cluster (started once,
before the timings: its start and the workers' first import are printed apart) and the speed-up
T_in_process / T_cluster; and the CPU time of each (this process, which also hosts the LocalCluster's
scheduler and nannies, plus the worker processes): CPU per cell, and the cluster's overhead per cell
(its CPU beyond the in-process CPU: Dask's messages, pickling, the starts each worker remakes). CPU
times hold on a busy machine, where wall times measure the contention too. The cells are checked to
give the same rows on both. Then the smallest size with one cell per task, to show what batching saves.

--check also runs the scheduler audit and quality against NFE (whose workers must import diffusers
or torch first, too slow for the test suite) in-process and on the cluster, and checks they agree to
the bit.

    .venv/bin/python benchmarks/bench_sweeps.py [--particles 100 1000 10000] [--workers 2] [--check]
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

SOLVERS = ["euler", "heun", "ddim", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s", "dpmpp-2m", "dpmpp-3m", "deis", "unipc"]
NFES = [6, 12, 18, 24, 30, 36, 48, 60]  # multiples of 1, 2 and 3 evaluations per step
TARGETS = ["gmm-1d-3modes", "gmm-2d-ring8", "gmm-2d-grid25"]
SEEDS = [0, 1, 2, 3]


def spec(particles: int) -> dict:
    return dict(targets=TARGETS, schedules=["edm"], spacings=["karras"], solvers=SOLVERS, nfes=NFES, seeds=SEEDS,
                particles=particles, metrics=["error", "distance"])


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "wall_time")} for r in rows]


def same(a, b) -> bool:
    """Every value pickles to the same bytes (NaN equals NaN, floats to the bit)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return pickle.dumps(a) == pickle.dumps(b)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process (client, scheduler and nannies of a LocalCluster) and its children (the workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def measured(fn):
    """(result, wall seconds, CPU seconds)."""
    cpu = cpu_seconds()
    out, wall = timed(fn)
    return out, wall, cpu_seconds() - cpu


def check(ex, client):
    """The audit and quality against NFE, in-process and on the cluster."""
    from explorer.analyses import audit, image_quality

    digits = ex.models.load_pretrained("digits")
    images = ex.datasets.digits()[0][:500]
    runs = {
        "audit (4 schedulers x 2 configurations, nfes 5-20)": lambda e: untimed(audit.diffusers(
            schedulers=["EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler",
                        "EulerAncestralDiscreteScheduler"], configs=[{}, {"use_karras_sigmas": True}],
            nfes=(5, 10, 20), n_particles=500, executor=e)),
        "quality against NFE (digits U-Net, 3 solvers x 3 NFE, 64 images)": lambda e: untimed(
            image_quality.quality_vs_nfe(digits, ["ddim", "heun", "dpmpp-2m"], [4, 8, 12], "digits", images, n=64,
                                         train_images=images, executor=e)),
    }
    for name, run in runs.items():
        here, t_here = timed(lambda: run(None))
        there, t_there = timed(lambda: run(client))
        print(f"  {name}: {len(here)} rows, in-process {t_here:.1f} s, cluster {t_there:.1f} s (first use: imports), "
              f"{'the same to the bit' if same(here, there) else 'DIFFERENT'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[100, 1000, 10000], help="cell sizes")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (one thread each)")
    parser.add_argument("--check", action="store_true", help="also check the audit and quality against NFE")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in-process and workers: one math thread each
    import explorer as ex
    from explorer.analyses import solver_sweep

    cells = solver_sweep.cells(spec(args.particles[0]))
    print(f"{len(SOLVERS)} solvers x {len(NFES)} NFE x {len(TARGETS)} targets x {len(SEEDS)} seeds = {len(cells)} "
          f"cells (EDM schedule, karras grid); {os.cpu_count()} cores; LocalCluster({args.workers})")
    client, t_start = timed(lambda: ex.sweeps.local_cluster(args.workers))
    _, t_warm = timed(lambda: ex.sweeps.run(range(2 * args.workers), abs, client, batch_size=1))
    print(f"cluster start {t_start:.1f} s; the workers' first task (they import explorer) {t_warm:.1f} s")
    print("wall: elapsed time; CPU: this process and the workers; overhead/cell: the cluster's CPU beyond the "
          "in-process CPU, per cell")
    print(f"{'particles':>9} {'wall here':>9} {'cluster':>8} {'speed-up':>8} {'CPU here':>9} {'cluster':>8} "
          f"{'CPU/cell':>9} {'overhead/cell':>13}")
    times = {}
    try:
        for n in args.particles:
            s = spec(n)
            solver_sweep._start.cache_clear()
            solver_sweep._reference_final.cache_clear()
            here, t_here, c_here = measured(lambda: solver_sweep.run(s))
            there, t_there, c_there = measured(lambda: solver_sweep.run(s, executor=client))
            assert same(untimed(here), untimed(there)), "the cluster's rows differ from the in-process ones"
            times[n] = (t_here, t_there, c_here, c_there)
            print(f"{n:>9} {t_here:>8.2f}s {t_there:>7.2f}s {t_here / t_there:>7.2f}x {c_here:>8.2f}s {c_there:>7.2f}s "
                  f"{1e3 * c_here / len(here):>7.2f}ms {1e3 * (c_there - c_here) / len(here):>11.2f}ms")
        n = args.particles[0]
        _, t_one, c_one = measured(lambda: solver_sweep.run(spec(n), executor=client, batch_size=1))
        print(f"{n} particles with one cell per task: {t_one:.2f} s wall, {c_one:.2f} s CPU on the cluster "
              f"(batched: {times[n][1]:.2f} s, {times[n][3]:.2f} s): "
              f"{1e3 * (c_one - times[n][2]) / len(cells):.2f} ms of CPU overhead per cell")
        if args.check:
            print("agreement of the other sweeps on the cluster:")
            check(ex, client)
    finally:
        client.shutdown()


if __name__ == "__main__":
    main()
