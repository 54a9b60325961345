"""POT (the `ot` package) as the explorer uses it: on numpy arrays only.

POT imports torch at its own import when torch is installed, to offer a torch backend; that costs about
2 s, which a notebook or app page that never touches torch should not pay for an exact OT solve on numpy
arrays. So unless torch is already loaded, POT is imported with its torch backend switched off
(POT_BACKEND_DISABLE_PYTORCH, set for the import only). POT keeps the backends it found when first
imported: after that, the same process hands POT numpy arrays (as everything here does), not torch tensors."""

from __future__ import annotations

import os
import sys

_DISABLE_TORCH = "POT_BACKEND_DISABLE_PYTORCH"


def pot():
    """The `ot` module, imported without its torch backend unless torch is already imported."""
    if "ot" not in sys.modules and "torch" not in sys.modules:
        saved = os.environ.get(_DISABLE_TORCH)
        os.environ[_DISABLE_TORCH] = "1"
        try:
            import ot  # noqa: F401
        finally:
            if saved is None:
                os.environ.pop(_DISABLE_TORCH, None)
            else:
                os.environ[_DISABLE_TORCH] = saved
    import ot

    return ot
