"""KDPM2AncestralDiscreteScheduler returns NaN from the first step when one step spans a large
ratio of sigmas (squaredcos_cap_v2 betas: sigma_max = 20291, next sigma 2.44 at 5 steps): it computes
sigma_down = sqrt(sigma_to^2 - sigma_up^2) in float32, where the exact value sigma_to^2 / sigma_from
(2.9e-4) cancels to 0; log(0) in the interpolated sigma and torch.lerp give NaN, the timestep is NaN.

    .venv/bin/python benchmarks/repro_kdpm2_ancestral_nan.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from diffusers import KDPM2AncestralDiscreteScheduler  # noqa: E402

for n in (5, 10, 20):
    s = KDPM2AncestralDiscreteScheduler(beta_schedule="squaredcos_cap_v2")
    s.set_timesteps(n)
    sigma_from, sigma_to = float(s.sigmas[0]), float(s.sigmas[1])
    x = torch.randn(4, 1, generator=torch.Generator().manual_seed(0)) * s.init_noise_sigma
    g = torch.Generator().manual_seed(0)
    for t in s.timesteps:  # as a pipeline runs it; the "model" predicts zero noise
        s.scale_model_input(x, t)
        x = s.step(torch.zeros_like(x), t, x, generator=g).prev_sample
    down = float(s.sigmas_down[0])
    print(f"{n:2d} steps: first step sigma {sigma_from:.0f} -> {sigma_to:.4g}; sigma_down {down:.3g} "
          f"(exact {sigma_to ** 2 / sigma_from:.3g}); first timesteps {[round(float(t), 2) for t in s.timesteps[:3]]}; "
          f"output finite: {bool(torch.isfinite(x).all())}")
