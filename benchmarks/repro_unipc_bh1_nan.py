"""UniPCMultistepScheduler with its default final_sigmas_type="zero" returns NaN at the last step for
solver_type="bh1" (B(h) = h = -inf at sigma = 0, times a zero residual) and for
lower_order_final=False (the second-order predictor divides by r = h_prev / h = 0); any model output.
DPMSolverMultistepScheduler forces a first-order last step when final_sigmas_type is "zero".

    .venv/bin/python benchmarks/repro_unipc_bh1_nan.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import torch  # noqa: E402
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler  # noqa: E402


def run(scheduler, n=10):
    scheduler.set_timesteps(n)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    bad = None
    for i, t in enumerate(scheduler.timesteps):
        eps = 0.5 * x / (1 + x.abs())  # any model output will do
        x = scheduler.step(eps, t, x).prev_sample
        if bad is None and not torch.isfinite(x).all():
            bad = i
    return bad, float(x.abs().max())


for label, scheduler in [
    ("UniPC bh2 (default)", UniPCMultistepScheduler()),
    ("UniPC bh1", UniPCMultistepScheduler(solver_type="bh1")),
    ("UniPC lower_order_final=False", UniPCMultistepScheduler(lower_order_final=False)),
    ("UniPC bh1, final_sigmas_type=sigma_min",
     UniPCMultistepScheduler(solver_type="bh1", final_sigmas_type="sigma_min")),
    ("DPM-Solver++ lower_order_final=False", DPMSolverMultistepScheduler(lower_order_final=False)),
]:
    bad, size = run(scheduler)
    print(f"{label:42s} first non-finite step: {bad}   max |x| at the end: {size}")
