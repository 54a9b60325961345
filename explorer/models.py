"""ex.models: every model a sampler runs, in one namespace.

The interface and the exact model of a mixture come from the foundations
(explorer/foundations/analytic.py); learned models, outside networks and the registry plug-ins
declare to come from explorer/learned/registry.py. Nothing here but the names users reach."""

from .foundations.analytic import AnalyticModel, DenoiserModel
from .learned.registry import (
    KINDS, ModelSpec, get, info, load_pretrained, load_weights, register, registered, save, spec, train,
    unregister, wrap,
)

__all__ = [
    "AnalyticModel", "DenoiserModel", "KINDS", "ModelSpec", "get", "info", "load_pretrained", "load_weights",
    "register", "registered", "save", "spec", "train", "unregister", "wrap",
]
