"""The reference path: an adaptive Runge-Kutta solve at tight tolerance.

Integrated in lambda for y = x / sigma, where dy/dlambda = e^lambda x0_hat is smooth
even where the drift in t is stiff (near the data and at high noise).
"""

from __future__ import annotations

import numpy as np

from .registry import Option, solver


@solver(
    "rk45", order=5, nfe_per_step=None,
    reference="Score-Based Generative Modeling through Stochastic Differential Equations",
    summary="Adaptive Runge-Kutta (scipy solve_ivp) in lambda at tight tolerance: the reference path.",
    options=[
        Option("rtol", "float", 1e-10, "relative tolerance of the adaptive steps", 1e-13, 1e-2),
        Option("atol", "float", 1e-10, "absolute tolerance on x / sigma", 1e-14, 1e-2),
        Option("method", "choice", "RK45", "scipy integrator", choices=("RK45", "DOP853")),
    ],
)
def rk45(model, x, ts, rng, record, rtol=1e-10, atol=1e-10, method="RK45"):
    s = model.schedule
    ts = np.asarray(ts, dtype=np.float64)
    torch_state = not isinstance(x, np.ndarray)
    x_np = x.detach().cpu().numpy().astype(np.float64) if torch_state else x
    shape = x_np.shape
    lam = np.asarray(s.lambda_(ts), dtype=np.float64)

    def time_of(l):
        if not np.isfinite(l):  # scipy's step-size guess can leave the reals when the state blows up
            raise FloatingPointError(f"the adaptive step reached lambda={l}")
        return float(np.clip(s.t_of_lambda(l), ts[-1], ts[0]))  # round-off never leaves the grid

    def denoise(x_flat, t):
        xs = x_flat.reshape(shape)
        if torch_state:
            import torch

            out = model.denoise(torch.as_tensor(xs, dtype=x.dtype, device=x.device), t)
            return out.detach().cpu().numpy().astype(np.float64)
        return model.denoise(xs, t)

    def rhs(l, y):
        t = time_of(l)
        return np.exp(l) * denoise(y * float(s.sigma(t)), t).ravel()

    from scipy.integrate import solve_ivp  # 0.5 s to import: paid by the first reference run, not by `import explorer`

    sol = solve_ivp(
        rhs, (lam[0], lam[-1]), (x_np / float(s.sigma(ts[0]))).ravel(),
        method=method, t_eval=lam, rtol=rtol, atol=atol,
    )
    if not sol.success:
        raise FloatingPointError(f"rk45 failed: {sol.message}")
    sigmas = np.asarray(s.sigma(ts), dtype=np.float64)
    for i in range(len(ts) - 1):
        x_i = (sol.y[:, i] * sigmas[i]).reshape(shape)
        d = denoise(x_i.ravel(), float(ts[i]))  # the x0-prediction on the grid, for display
        x_next = (sol.y[:, i + 1] * sigmas[i + 1]).reshape(shape)
        if torch_state:
            import torch

            d, x_next = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in (d, x_next))
        record(i, x_next, d)
