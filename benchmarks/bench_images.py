"""Sampling speed on the shipped image U-Nets: n images at ~20 NFE for a few solvers through
ex.sample, and the same U-Net driven by a peer, diffusers' DPMSolverMultistepScheduler
(DPM-Solver++(2M), v-prediction, the same cosine table), on the same grid from the same noise:
the wall times side by side and the largest pixel difference between the two 2M runs.

    .venv/bin/python benchmarks/bench_images.py [--model digits] [--n 64] [--nfe 20] [--threads 2]

Grid: diffusers' integer timesteps (linspace spacing) and, with final_sigmas_type="sigma_min",
a last step to t = 0, so ours is ts = [*scheduler.timesteps, 0]; lower_order_final=False and
euler_at_final=False make its order sequence 1, 2, 2, ... like ours. Times are the best of
--repeats runs (wall clock; on shared cores read them as upper bounds), with the process CPU
time of that run (summed over threads: what the run costs when the cores are free).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import explorer as ex

SOLVERS = ["ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "deis"]


def peer_scheduler(n_steps: int):
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=False,
        euler_at_final=False, final_sigmas_type="sigma_min", timestep_spacing="linspace")
    scheduler.set_timesteps(n_steps)
    return scheduler


def run_peer(model, x_T, scheduler):
    """diffusers' sampling loop: one U-Net call per timestep, scheduler.step on its raw v output."""
    sample = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = model.net(sample, torch.full((len(sample),), float(t)))
            sample = scheduler.step(v, t, sample).prev_sample
    return sample


def best_time(fn, repeats: int):
    """fn's result, its best wall time and the process CPU time of that run (all threads)."""
    out, best, cpu = None, float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - cpu_start
    return out, best, cpu


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="digits")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = ex.models.load_pretrained(args.model)
    x_T = model.prior_sample(args.n, rng=0)
    print(f"{model!r}: {args.n} images {model.image_shape}, ~{args.nfe} NFE, {torch.get_num_threads()} torch threads")

    with torch.no_grad():  # warm-up
        model.denoise(x_T, 500.0)
    print(f"{'solver':<12}{'steps':>6}{'nfe':>5}{'wall s':>9}{'CPU s':>8}")
    for solver in SOLVERS:
        n_steps = max(1, args.nfe // ex.solvers.info(solver)["nfe_per_step"])
        ts = ex.timesteps(model.schedule, n_steps)
        traj, wall, cpu = best_time(lambda: ex.sample(model, x_T, ts, solver), args.repeats)
        assert torch.isfinite(traj.x[-1]).all(), solver
        print(f"{solver:<12}{n_steps:>6}{traj.nfe:>5}{wall:>9.3f}{cpu:>8.3f}")

    scheduler = peer_scheduler(args.nfe)
    ts = np.concatenate([scheduler.timesteps.numpy().astype(np.float64), [0.0]])
    ours, wall_ours, cpu_ours = best_time(lambda: ex.sample(model, x_T, ts, "dpmpp-2m"), args.repeats)
    peer, wall_peer, cpu_peer = best_time(lambda: run_peer(model, x_T, peer_scheduler(args.nfe)), args.repeats)
    diff = (ours.x[-1] - peer).abs().max().item()
    table = np.abs(scheduler.alphas_cumprod.double().numpy() - model.schedule.alphas_cumprod).max()
    print(f"\nsame grid ({args.nfe} diffusers timesteps + t=0), same noise, DPM-Solver++(2M):")
    print(f"  ours    ex.sample(..., 'dpmpp-2m')          {wall_ours:.3f} s wall, {cpu_ours:.3f} s CPU, nfe {ours.nfe}")
    print(f"  peer    diffusers DPMSolverMultistepScheduler {wall_peer:.3f} s wall, {cpu_peer:.3f} s CPU, nfe {len(scheduler.timesteps)}")
    print(f"  max |ours - peer| over all pixels: {diff:.2e} (pixel range [-1, 1]; diffusers keeps its table "
          f"in float32: max |abar diffusers - abar ours| = {table:.1e})")


if __name__ == "__main__":
    main()
