"""Other libraries' samplers and schedulers on explorer models; conventions converted exactly.

from_kdiffusion: a k-diffusion sampler as a registered solver (explorer/adapters/kdiffusion.py).
"""

from .kdiffusion import from_kdiffusion

__all__ = ["from_kdiffusion"]
