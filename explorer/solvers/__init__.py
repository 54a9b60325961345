"""Samplers: each one plain function fn(model, x, ts, rng, record, **options).

`record(i, x_next, denoised)` is called once per step with the state after step i
and the x0-prediction the step started from; `explorer.sample` turns the calls
into a Trajectory.
"""

from . import basic, exponential, reference  # noqa: F401  (registers the solvers)
from .registry import Option, SolverSpec, info, names, spec

__all__ = ["Option", "SolverSpec", "info", "names", "spec"]
