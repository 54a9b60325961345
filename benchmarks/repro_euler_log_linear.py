"""EulerDiscreteScheduler(interpolation_type="log_linear") makes n + 1 log-spaced sigmas but keeps
the timesteps of the spacing: the model is told a timestep whose noise level is up to 5x off the
sigma the update uses, and with the final zero appended the sigmas are n + 2 long, so the last
step ends at sigma_min and never reaches the zero final_sigmas_type asks for.

    .venv/bin/python benchmarks/repro_euler_log_linear.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from diffusers import EulerDiscreteScheduler  # noqa: E402

import explorer as ex  # noqa: E402

s = EulerDiscreteScheduler(interpolation_type="log_linear")
s.set_timesteps(10)
table = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt().numpy()
told = np.interp(s.timesteps.numpy(), np.arange(len(table)), table)  # the sigma of the timestep the model gets
used = s.sigmas.numpy()
print(f"10 steps: {len(s.timesteps)} timesteps, {len(used)} sigmas (the last step goes to sigmas[10] = {used[10]:.4f};"
      f" sigmas[11] = {used[11]} is never reached)")
print("timestep        ", " ".join(f"{t:7.1f}" for t in s.timesteps.numpy()))
print("its sigma       ", " ".join(f"{v:7.3f}" for v in told))
print("sigma used      ", " ".join(f"{v:7.3f}" for v in used[:10]))
print(f"largest ratio: {np.max(np.maximum(told / used[:10], used[:10] / told)):.2f}")

nfes = (5, 10, 20, 40)
for row in ex.audit.diffusers(schedulers=["EulerDiscreteScheduler"], nfes=nfes,
                              configs=[{}, {"interpolation_type": "log_linear"}]):
    print(f"{row['config']:29s} error at sigma 0: " + " ".join(f"{row[f'error0_{n}']:.2e}" for n in nfes)
          + f"   flags {row['flags']}")
