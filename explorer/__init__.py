"""diffusion-explorer's core: exact Gaussian-mixture targets, schedules, time grids,
samplers and metrics. Pure numpy/torch: no UI imports here.

How it is laid out (each layer imports only the ones above it in this list):
  foundations/  exact mixtures, targets, schedules, time grids, the trajectory record, the exact model
  solvers/      every solver, one short file each, and ex.sample, which dispatches to them
  learned/      networks trained here (MLPs, U-Nets, datasets, training) and any outside network
  adapters/     k-diffusion samplers and diffusers schedulers, run on our models and grids
  analyses/     metrics and experiments: orders, stability, hallucination, guidance, grid search, audit
  figures/      pure functions from results to plotly figures, shared by the app and the notebooks
The modules beside this file (models, plugins, __main__) only gather names or load user code.
"""

import importlib

from . import adapters, models, plugins, solvers
from .analyses import (audit, experiments, grid_search, guidance, hallucination, metrics, schedule_experiments, solver_sweep,
                       stability, sweeps)
from .analyses import solver_search
from .analyses import guidance_methods, minority, posterior, svdd, tilted
from .analyses import boundary, dmcmc, gauge, terminal_snr
from .analyses import dpm_ot, few_step_compare, few_steps, lightsb, reflow, reflow_mlp
from .foundations import conversion, interpolants, schedules, targets
from .foundations.analytic import AnalyticModel, DenoiserModel
from .foundations.conversion import convert_path
from .foundations.mixture import GaussianMixture
from .foundations.timesteps import SPACINGS, grid_from_sigmas, sigmas_of, timesteps
from .foundations.trajectory import Trajectory
from .learned import datasets, image_models
from .solvers import sampling
from .solvers.sampling import reference, sample

# Modules that lived at the top level before the package was grouped (ex.<name> and
# `from explorer import <name>` keep working); imported on first use.
_MOVED = {
    "data_files": "foundations.data_files", "mixture": "foundations.mixture", "random": "foundations.random",
    "trajectory": "foundations.trajectory", "image_quality": "analyses.image_quality",
    "image_training": "learned.image_training", "shapes_analysis": "analyses.shapes_analysis",
    "unet": "learned.unet", "wrapped": "learned.wrapped",
}


def __getattr__(name):
    if name in _MOVED:
        module = importlib.import_module(f"{__name__}.{_MOVED[name]}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")


__all__ = [
    "AnalyticModel", "DenoiserModel", "GaussianMixture", "SPACINGS", "Trajectory",
    "adapters", "audit", "conversion", "convert_path", "datasets", "experiments", "grid_from_sigmas", "grid_search",
    "guidance", "hallucination", "interpolants", "image_models", "metrics", "models", "plugins", "reference", "sample",
    "schedule_experiments", "schedules", "sigmas_of", "solver_search", "solver_sweep", "solvers", "stability", "sweeps",
    "targets", "timesteps",
    "guidance_methods", "minority", "posterior", "svdd", "tilted",
    "boundary", "dmcmc", "gauge", "terminal_snr",
    "dpm_ot", "few_step_compare", "few_steps", "lightsb", "reflow", "reflow_mlp",
]
