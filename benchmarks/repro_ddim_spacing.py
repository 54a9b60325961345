"""DDIMScheduler steps to timestep - T // n whatever the spacing: with "linspace" (any n) and
"trailing" (n not dividing T) a step lands at one noise level and the next step treats the sample
as being at another, and the error stops converging (upstream: huggingface/diffusers#12633, #11347).

    .venv/bin/python benchmarks/repro_ddim_spacing.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

from diffusers import DDIMScheduler  # noqa: E402

import explorer as ex  # noqa: E402

# 1. The bookkeeping: where step() lands (prev_timestep) and where the next step starts.
for spacing, n in (("linspace", 10), ("trailing", 7)):
    s = DDIMScheduler(timestep_spacing=spacing)
    s.set_timesteps(n)
    ts = [int(t) for t in s.timesteps]
    lands = [t - s.config.num_train_timesteps // n for t in ts]
    print(f"{spacing}, {n} steps: timesteps {ts}")
    print(f"  step() lands at      {lands}  (below 0: final_alpha_cumprod = 1, the data)")
print("  -> linspace: every step lands 11 timesteps above the next start; trailing: 857 vs 856, and the last step\n"
      "     lands at timestep 0 (sigma 0.01), not at the data, although set_alpha_to_one=True")

# 2. The effect: DDIM against Euler, which makes the same first-order update with consistent noise
# levels (EulerDiscreteScheduler == our ddim, tests/test_adapters_diffusers.py), from the same exact
# start, measured against the exact probability-flow ODE at sigma = 0 (ex.audit, 1D mixture).
nfes = (10, 20, 40, 80)
for spacing in ("linspace", "trailing", "leading"):
    ddim, euler = ex.audit.diffusers(schedulers=["DDIMScheduler", "EulerDiscreteScheduler"], nfes=nfes, configs={
        "DDIMScheduler": [{"timestep_spacing": spacing, "clip_sample": False}],
        "EulerDiscreteScheduler": [{"timestep_spacing": spacing}]})
    print(f"{spacing:9s} error at sigma 0, n = {nfes}:  DDIM " + " ".join(f"{ddim[f'error0_{n}']:.2e}" for n in nfes)
          + "   Euler " + " ".join(f"{euler[f'error0_{n}']:.2e}" for n in nfes)
          + f"   DDIM landing mismatch {100 * ddim['landing_mismatch']:.1f}% (in sigma)")
