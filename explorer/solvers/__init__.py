"""Samplers: every solver, one short file each, and ex.sample (sampling.py), which runs any
registered solver on any model and grid. Imports foundations only.

Each solver is one plain function fn(model, x, ts, rng, record, **options).

`x = record(i, x_next, denoised)` is called once per step with the state after step i
and the x0-prediction the step started from; it returns the state to continue from
(x_next itself, or x_next moved by a corrector). `explorer.sample` turns the calls into a
Trajectory. Every module in this package registers its solvers on import.
"""

import importlib
import pkgutil

from .registry import Option, SolverSpec, info, names, order, register, spec, unregister

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "common", "sampling"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Option", "SolverSpec", "info", "names", "order", "register", "spec", "unregister"]
