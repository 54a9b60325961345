"""Which models exist: the shipped ones by name (load_pretrained), training and saving the
mixture MLPs, networks from outside (wrap, load_weights), and the registry of models that
plug-ins declare (register, registered, get), which the app's pages list. `ex.models` gathers
these with the exact model (explorer/foundations/analytic.py)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Callable

from ..foundations.mixture import GaussianMixture
from ..foundations.schedules import Schedule


# Learned models (torch, imported only when one of these is called).


def train(target, name=None, **options):
    """Train a small eps-prediction MLP on draws from a GaussianMixture with DDPM's loss
    (see explorer.learned.mlp.train for the options: steps, batch_size, lr, seed, n_train, progress)."""
    from . import mlp

    return mlp.train(target, name=name, **options)


def save(model, path, **options):
    """Write a learned model to path (state_dict + plain config; loads with weights_only=True;
    weights stored as float16 unless dtype=torch.float32 is passed)."""
    from . import mlp

    return mlp.save(model, path, **options)


def load_pretrained(name):
    """A shipped learned model by name ("gmm-1d-3modes", "gmm-2d-grid25": mixture MLPs;
    "digits", "shapes": image U-Nets) or a .pt path written by either trainer."""
    from . import image_models

    if str(name) in image_models.PRETRAINED or _is_image_checkpoint(name):
        return image_models.load(name)
    from . import mlp

    return mlp.load(name)


def _is_image_checkpoint(path) -> bool:
    """True for a .pt file whose config records an image model (a U-Net and its dataset)."""
    from pathlib import Path

    path = Path(str(path))
    if path.suffix != ".pt" or not path.is_file():
        return False
    import torch

    config = torch.load(path, map_location="cpu", weights_only=True).get("config", {})
    return "image_shape" in config


# Networks from outside (explorer/learned/wrapped.py, torch imported when called).


def wrap(net, schedule, prediction, **options):
    """Any torch module (or callable) net(x, c(t)) predicting "eps", "x0", "v" or "velocity" under a
    schedule, as a model with the four methods (see explorer.learned.wrapped.wrap for time_input, name, target,
    dim, image_shape, dataset, weights, dtype, device)."""
    from . import wrapped

    return wrapped.wrap(net, schedule, prediction, **options)


def load_weights(net, path, strict: bool = True):
    """Load a state dict into net from path with torch.load(weights_only=True) (explorer.learned.wrapped.load_weights)."""
    from . import wrapped

    return wrapped.load_weights(net, path, strict=strict)


# Registered models: what a plug-in declares, built on first use.

KINDS = {
    "mixture": "vectors (N, D) with a GaussianMixture .target: the Trajectories page measures it exactly",
    "image": "images (N, C, H, W) with .image_shape: the Images page",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: factory() builds it; kind says which pages show it; source is the module that registered it."""

    name: str
    factory: Callable
    kind: str
    summary: str = ""
    source: str = "?"


_REGISTRY: dict[str, ModelSpec] = {}
_BUILT: dict[str, tuple] = {}  # name -> (the factory that built it, the model)
_LOCK = threading.RLock()


def register(name, factory, *, kind, summary="", replace=False) -> str:
    """Declare the model `name`, built by factory() (no arguments) the first time it is asked for
    (get(name)), so that listing plug-ins loads no weights. kind: "mixture" (vectors, with a
    GaussianMixture .target) or "image" (.image_shape (C, H, W)). replace: overwrite a model of that
    name. Returns the name."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].source}); "
                         "choose another name or pass replace=True")
    if not callable(factory):
        raise ValueError(f"model {name!r}: factory must be callable with no arguments, got {factory!r}")
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: kind must be one of {list(KINDS)}, got {kind!r}")
    frame = sys._getframe(1)
    _REGISTRY[name] = ModelSpec(name, factory, kind, str(summary), frame.f_globals.get("__name__", "?"))
    return name


def unregister(name: str) -> None:
    """Remove a registered model."""
    spec(name)
    del _REGISTRY[name]
    _BUILT.pop(name, None)


def registered(kind: str | None = None) -> list[str]:
    """Names of the registered models (of one kind, "mixture" or "image", if given), in registration order."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)} or None, got {kind!r}")
    return [n for n, s in _REGISTRY.items() if kind is None or s.kind == kind]


def spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; registered: {registered()}") from None


def info(name: str) -> dict:
    """name, kind, summary and source (the declaring module) of a registered model."""
    s = spec(name)
    return {"name": s.name, "kind": s.kind, "summary": s.summary, "source": s.source}


def get(name: str):
    """The registered model `name`: factory() on the first call (then kept), checked against its
    kind. ValueError naming the model if the factory raises or builds the wrong thing."""
    s = spec(name)
    with _LOCK:
        built = _BUILT.get(name)
        if built is not None and built[0] is s.factory:
            return built[1]
        try:
            model = s.factory()
        except Exception as err:
            raise ValueError(f"model {name!r} failed to build ({s.source}): {type(err).__name__}: {err}") from err
        _check_built(s, model)
        if getattr(model, "name", name) != name:
            try:
                model.name = name  # messages about it use the name it is listed under
            except AttributeError:
                pass
        _BUILT[name] = (s.factory, model)
        return model


def _check_built(s: ModelSpec, model) -> None:
    problem = None
    if not callable(getattr(model, "denoise", None)) or not isinstance(getattr(model, "schedule", None), Schedule):
        problem = "is not a model: it needs a denoise(x, t) method and a .schedule (ex.models.wrap makes one)"
    elif s.kind == "mixture" and not isinstance(getattr(model, "target", None), GaussianMixture):
        problem = "is registered as kind='mixture' but has no GaussianMixture .target (pass target= to ex.models.wrap)"
    elif s.kind == "image" and (len(tuple(getattr(model, "image_shape", None) or ())) != 3
                                or not callable(getattr(model, "prior_sample", None))):
        problem = "is registered as kind='image' but has no .image_shape (C, H, W) and prior_sample (pass image_shape=)"
    if problem:
        raise ValueError(f"model {s.name!r} ({s.source}): what its factory built ({type(model).__name__}) {problem}")
