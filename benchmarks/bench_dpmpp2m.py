"""DPM-Solver++(2M) on a 25-mode 2D mixture: explorer against k-diffusion, same computation.

Both sides sample 100,000 particles in 20 karras steps under the EDM schedule and keep the
whole trajectory (states and x0-predictions at every step).
  ours:   ex.sample(AnalyticModel(grid25, edm), x_T, ts, "dpmpp-2m")
  theirs: k_diffusion.sampling.sample_dpmpp_2m driving the mixture denoiser written in torch
          the way a user would (logsumexp responsibilities over components), float32 and
          float64, the trajectory recorded through the callback.
Prints wall times (best and median of --repeats), time per model evaluation, the ratio
ours / theirs (target: <= 0.5) and the largest difference between the final samples.
Multi-threaded timings swing widely when other work shares the cores: compare best times,
and rerun on a quiet machine before quoting.

    .venv/bin/python benchmarks/bench_dpmpp2m.py [--particles 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# the test suite's loader of k-diffusion's sampling.py (its package __init__ needs torchvision)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import explorer as ex  # noqa: E402
from peers import k_diffusion_sampling  # noqa: E402

TARGET, STEPS, SPACING = "gmm-2d-grid25", 20, "karras"
SEED = 12345


class TorchMixtureDenoiser(torch.nn.Module):
    """E[x0 | x_sigma] for x0 ~ sum_k w_k N(mu_k, diag(var_k)), x_sigma = x0 + sigma eps, in torch.

    p(k | x) = softmax_k(log w_k + log N(x; mu_k, var_k + sigma^2)),
    E[x0 | x] = sum_k p(k | x) (mu_k + var_k / (var_k + sigma^2) (x - mu_k)).
    """

    def __init__(self, gm: ex.GaussianMixture, dtype: torch.dtype):
        super().__init__()
        if not gm.diagonal:
            raise ValueError("this denoiser handles axis-aligned covariances only")
        self.register_buffer("means", torch.tensor(gm.means, dtype=dtype))  # (K, D)
        self.register_buffer("var", torch.tensor(np.einsum("kdd->kd", gm.covs), dtype=dtype))  # (K, D)
        self.register_buffer("log_w", torch.tensor(np.log(gm.weights), dtype=dtype))  # (K,)
        self.nfe = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        v = self.var + sigma[:, None, None] ** 2  # (N, K, D)
        diff = x[:, None, :] - self.means  # (N, K, D)
        log_p = self.log_w - 0.5 * ((diff**2 / v).sum(-1) + v.log().sum(-1) + x.shape[-1] * math.log(2 * math.pi))
        resp = (log_p - log_p.logsumexp(dim=1, keepdim=True)).exp()  # (N, K)
        return (resp[:, :, None] * (self.means + self.var / v * diff)).sum(1)


def sample_ours(model, x_T, ts):
    return ex.sample(model, x_T, ts, "dpmpp-2m")


def sample_theirs(k_sampling, denoiser, x_T, ts, dtype):
    """k-diffusion's DPM++(2M) from x_T; the trajectory (states, x0-predictions) recorded by callback."""
    sigmas = torch.tensor(ts, dtype=dtype)  # our grid ends at t_min > 0: no appended zero
    xs, ds = [], []

    def callback(info):
        xs.append(info["x"])
        ds.append(info["denoised"])

    x = k_sampling.sample_dpmpp_2m(denoiser, torch.tensor(x_T, dtype=dtype), sigmas, callback=callback, disable=True)
    xs.append(x)
    return torch.stack(xs), torch.stack(ds)


def best_time(fn, repeats: int):
    """(best and median wall time over repeats after one warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times)), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)  # nothing here draws from torch; fixed anyway
    k_sampling = k_diffusion_sampling()
    gm = ex.targets.get(TARGET)
    schedule = ex.schedules.get("edm")
    model = ex.AnalyticModel(gm, schedule)
    ts = ex.timesteps(schedule, STEPS, spacing=SPACING)
    x_T = model.prior_sample(args.particles, np.random.default_rng(SEED))

    print(f"{TARGET}: K={gm.n_components}, D={gm.dim}; N={args.particles}; DPM++(2M), {STEPS} {SPACING} steps, EDM")
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}; numpy {np.__version__}; "
          f"os.cpu_count() = {os.cpu_count()}; thread variables: {threads or 'none set'}")
    print(f"best (and median) of {args.repeats} after a warm-up run\n")

    t_ours, med_ours, traj = best_time(lambda: sample_ours(model, x_T, ts), args.repeats)
    x_mid = traj.x[STEPS // 2]
    t_eval, _, _ = best_time(lambda: model.denoise(x_mid, ts[STEPS // 2]), args.repeats)
    rows = [("ours (numpy float64)", t_ours, med_ours, traj.nfe, traj.sample)]
    print(f"ours: {traj.nfe} model evaluations; one isolated denoise call (t = {ts[STEPS // 2]:.3g}) takes {1e3 * t_eval:.1f} ms")

    for dtype in (torch.float32, torch.float64):
        denoiser = TorchMixtureDenoiser(gm, dtype)
        with torch.inference_mode():
            t_theirs, med, (xs, _) = best_time(lambda: sample_theirs(k_sampling, denoiser, x_T, ts, dtype), args.repeats)
        assert xs.shape == traj.x.shape
        nfe = denoiser.nfe // (args.repeats + 1)
        rows.append((f"k-diffusion + torch {str(dtype).split('.')[-1]}", t_theirs, med, nfe, xs[-1].double().numpy()))

    print(f"\n{'':30s}{'wall (s)':>10s}{'median (s)':>12s}{'per NFE (ms)':>14s}{'ours/theirs':>13s}{'max |x_ours - x|':>18s}")
    for name, wall, med, nfe, final in rows:
        ratio = t_ours / wall
        diff = np.abs(traj.sample - final).max()
        print(f"{name:30s}{wall:10.3f}{med:12.3f}{1e3 * wall / nfe:14.1f}{ratio:13.2f}{diff:18.2e}")
    worst = max(t_ours / wall for _, wall, _, _, _ in rows[1:])
    print(f"\nratio ours/theirs (vs the faster of theirs): {worst:.2f}  (target <= 0.5: {'met' if worst <= 0.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
