"""thresholding=True fails on samples without spatial dimensions, (batch, channels): the shared
_threshold_sample reshapes to channels * np.prod(remaining_dims), and np.prod([]) is the float 1.0.
13 schedulers (DDIM, DDPM, DPM-Solver, UniPC, DEIS, SA-Solver, ...) share it.

    .venv/bin/python benchmarks/repro_thresholding_2d.py
"""

import argparse

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

import torch  # noqa: E402
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler  # noqa: E402

for cls in (DDIMScheduler, DPMSolverMultistepScheduler):
    for shape in ((4, 2), (4, 2, 1)):
        s = cls(thresholding=True)
        s.set_timesteps(10)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        try:
            s.step(torch.zeros(shape), s.timesteps[0], x)
            result = "ok"
        except Exception as err:  # noqa: BLE001
            result = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
        print(f"{cls.__name__:28s} sample {str(shape):10s} {result}")
