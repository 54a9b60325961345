"""Other libraries' samplers and schedulers on explorer models; conventions converted exactly.
Imports foundations and solvers; analyses (the scheduler audit) build on it.

from_kdiffusion: a k-diffusion sampler as a registered solver (explorer/adapters/kdiffusion.py).
schedule_of, run_diffusers: a diffusers scheduler's table as a schedule, and the scheduler driving an
explorer model (explorer/adapters/diffusers.py).
"""

from .diffusers import run_diffusers, schedule_of
from .kdiffusion import from_kdiffusion

__all__ = ["from_kdiffusion", "run_diffusers", "schedule_of"]
