"""diffusion-explorer's core: exact Gaussian-mixture targets, schedules, time grids,
samplers and metrics. Pure numpy/torch: no UI imports here."""

from . import adapters, audit, conversion, datasets, experiments, grid_search, guidance, hallucination, image_models, interpolants, metrics, models, plugins, sampling, schedule_experiments, schedules, solvers, stability, targets
from .conversion import convert_path
from .mixture import GaussianMixture
from .models import AnalyticModel, DenoiserModel
from .sampling import reference, sample
from .timesteps import SPACINGS, grid_from_sigmas, sigmas_of, timesteps
from .trajectory import Trajectory

__all__ = [
    "AnalyticModel", "DenoiserModel", "GaussianMixture", "SPACINGS", "Trajectory",
    "adapters", "audit", "conversion", "convert_path", "datasets", "experiments", "grid_from_sigmas", "grid_search", "guidance", "hallucination", "interpolants", "image_models", "metrics", "models", "plugins", "reference", "sample", "schedule_experiments", "schedules", "sigmas_of", "solvers", "stability", "targets", "timesteps",
]
