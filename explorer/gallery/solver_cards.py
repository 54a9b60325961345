"""Gallery cards of the Trajectories, Solver lab, Stability and Solver search pages: how solvers step."""

from __future__ import annotations

import numpy as np

import explorer as ex

from .card import Card


def _euler_paths():
    from explorer import figures

    model = ex.AnalyticModel(ex.targets.get("gmm-1d-3modes"), ex.schedules.get("edm"))
    ts = ex.timesteps(model.schedule, 10, ex.SPACINGS[0])
    x_T = model.prior_sample(2000, np.random.default_rng(0), t=ts[0])
    traj = ex.sample(model, x_T, ts, "euler", rng=np.random.default_rng([0, 1]))
    return figures.density_heatmap_1d(model, traj, height=440, title="Ten Euler steps over the exact p_t(x)")


CARDS: list[Card] = [
    Card(
        slug="euler-ten-steps",
        title="Ten Euler steps miss the exact flow",
        text=("Euler follows the probability-flow ODE's tangent, and the tangent turns fastest near the data, "
              "where the modes separate. With ten steps the paths overshoot there and end visibly off the exact "
              "ODE's endpoints from the same noise."),
        page="",
        params={"solver": "euler", "steps": 10},
        claim="Ten Euler steps end 0.29 from the exact ODE's samples (RMS over 2000 particles).",
        reads=r"Error vs reference: ([\d.]+)",
        expect=(0.2, 0.4),
        figure=_euler_paths,
    ),
]
