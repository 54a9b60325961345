"""Test doubles shared by the solver tests: a smooth mixture, and model wrappers that spy
on evaluation times, blow up on cue, or present the analytic model through torch tensors."""

import numpy as np

import explorer as ex


def smooth_mixture():
    """Three wide, overlapping modes: the flow is smooth, so measured orders reach theory early."""
    return ex.GaussianMixture(
        [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], [[0.3, 0.2], [0.2, 0.4], [0.25, 0.25]], [0.3, 0.4, 0.3]
    )


class Spy:
    """A model that records every time it is evaluated at."""

    def __init__(self, model):
        self.model, self.schedule, self.times = model, model.schedule, []

    def denoise(self, x, t):
        self.times.append(float(t))
        return self.model.denoise(x, t)


class BlowsUp:
    """Exact until the k-th evaluation, then returns inf for the first particle."""

    def __init__(self, model, k):
        self.model, self.schedule, self.k, self.calls = model, model.schedule, k, 0

    def denoise(self, x, t):
        self.calls += 1
        out = self.model.denoise(x, t)
        if self.calls >= self.k:
            out[0] = np.inf
        return out


class TorchModel:
    """The analytic model behind a torch-tensor interface (as a learned model presents itself)."""

    def __init__(self, model):
        self.model, self.schedule = model, model.schedule

    def denoise(self, x, t):
        import torch

        assert isinstance(x, torch.Tensor)
        return torch.from_numpy(self.model.denoise(x.numpy(), t))
