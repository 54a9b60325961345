"""Peer libraries loaded for comparison, without their heavy package imports.

k-diffusion's package __init__ imports torchvision (and its models), which fails next
to the CPU torch we pin. Its samplers need none of that: `k_diffusion_sampling()` loads
`k_diffusion/sampling.py` alone, under stub `k_diffusion` and `k_diffusion.utils`
modules that provide the one helper it uses (`append_dims`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

_STUB_ATTR = "__explorer_stub__"


def _append_dims(x, target_dims):
    """Appends dimensions to the end of a tensor until it has target_dims dimensions
    (k_diffusion.utils.append_dims, same semantics)."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


def _torchdiffeq_stub() -> types.ModuleType:
    # sampling.py imports torchdiffeq at the top for log_likelihood only; the samplers
    # never call it. Used only when the real package is absent.
    def odeint(*args, **kwargs):
        raise NotImplementedError("torchdiffeq is not installed (stub loaded by tests/peers.py)")

    mod = types.ModuleType("torchdiffeq")
    mod.odeint = odeint
    setattr(mod, _STUB_ATTR, True)
    return mod


def k_diffusion_dir() -> Path:
    """The installed k_diffusion package directory (found without importing it)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def k_diffusion_sampling() -> types.ModuleType:
    """The module k_diffusion.sampling, loaded on its own (no torchvision import)."""
    loaded = sys.modules.get("k_diffusion.sampling")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("torchdiffeq") is None:
        sys.modules.setdefault("torchdiffeq", _torchdiffeq_stub())

    root = k_diffusion_dir()
    package = sys.modules.get("k_diffusion")
    if package is None:
        package = types.ModuleType("k_diffusion")
        package.__path__ = [str(root)]
        setattr(package, _STUB_ATTR, True)
        sys.modules["k_diffusion"] = package
    utils = sys.modules.get("k_diffusion.utils")
    if utils is None:
        utils = types.ModuleType("k_diffusion.utils")
        utils.append_dims = _append_dims
        setattr(utils, _STUB_ATTR, True)
        sys.modules["k_diffusion.utils"] = utils
        package.utils = utils

    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", root / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["k_diffusion.sampling"]
        raise
    package.sampling = module
    return module
