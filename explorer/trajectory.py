"""The record of one sampling run (a plain object: compute once, then draw)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trajectory:
    """States on the time grid and the model's x0-prediction at every step.

    t: (n_steps + 1,) the grid; x: (n_steps + 1, N, D) states, x[-1] the sample;
    denoised: (n_steps, N, D) the x0-prediction at (x[i], t[i]); nfe: model evaluations
    spent; diverged_at: index of the step whose result was NaN/inf (later states are NaN),
    or None.
    """

    t: np.ndarray
    x: object
    denoised: object
    nfe: int
    solver: str
    options: dict = field(default_factory=dict)
    diverged_at: int | None = None
    diverged_reason: str | None = None
    wall_time: float = 0.0

    @property
    def n_steps(self) -> int:
        return len(self.t) - 1

    @property
    def sample(self):
        """The final state x[-1]."""
        return self.x[-1]

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def __repr__(self) -> str:
        shape = tuple(self.x.shape)
        status = f", diverged_at={self.diverged_at}" if self.diverged else ""
        return f"Trajectory(solver={self.solver!r}, steps={self.n_steps}, x={shape}, nfe={self.nfe}{status})"
