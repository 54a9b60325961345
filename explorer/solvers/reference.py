"""The reference path: an adaptive Runge-Kutta solve at tight tolerance.

Integrated in lambda for y = x / sigma, where dy/dlambda = e^lambda x0_hat is smooth
even where the drift in t is stiff (near the data and at high noise). The states on the
grid come from the integrator's dense output: the steps do not depend on the grid.

How the particles share steps follows what the model declares about its field
(DenoiserModel.smooth and .times_per_particle):

- A smooth field (an exact mixture, its guidance): all particles are one flat system on
  one step sequence (scipy's solve_ivp). Every particle's local error is alike, so the
  system's RMS error norm speaks for each, and method "auto" takes DOP853: its 8th order
  needs about 40% fewer evaluations than RK45 at 1e-10 and lands closer to a 1e-13 solve.
- A field with kinks (dynamic thresholding's per-sample clip), when the model takes one
  time per particle: scipy's RK45 run on each particle alone (its initial step, step-size
  control and dense output), all particles advanced together, one model call per stage
  evaluating every particle at its own time. On one flat system every particle's kink
  shrinks everyone's steps (evaluations grew with N: 4,000 at N = 50, 8,400 at N = 400,
  against about 1,400 here at any N), and a particle's error, diluted in the RMS over all
  particles, slipped past the tolerance (2e-6 off a 1e-13 solve, measured). Here a
  particle's reference is its own, whatever else is in the batch. A high order does not
  pay across kinks: "auto" takes RK45.
- Otherwise (a model that takes one time per call, or declares nothing): one flat system,
  RK45 under "auto".

flow() is the same solve for rows that each start at their own time and stop at their own
time: the one-step problems of a whole trajectory in one solve (experiments.local_errors).
"""

from __future__ import annotations

import numpy as np

from .registry import Option, solver


@solver(
    "rk45", order=5, nfe_per_step=None,
    reference="Score-Based Generative Modeling through Stochastic Differential Equations",
    summary="Adaptive Runge-Kutta (scipy's RK45 / DOP853) in lambda at tight tolerance: the reference path.",
    options=[
        Option("rtol", "float", 1e-10, "relative tolerance of the adaptive steps", 1e-13, 1e-2),
        Option("atol", "float", 1e-10, "absolute tolerance on x / sigma", 1e-14, 1e-2),
        Option("method", "choice", "auto",
               "scipy integrator; auto: DOP853 on a smooth field (model.smooth), RK45 otherwise",
               choices=("auto", "RK45", "DOP853")),
    ],
)
def rk45(model, x, ts, rng, record, rtol=1e-10, atol=1e-10, method="auto"):
    s = model.schedule
    ts = np.asarray(ts, dtype=np.float64)
    field = _Field(model, x, float(ts[-1]), float(ts[0]))
    lam = np.asarray(s.lambda_(ts), dtype=np.float64)
    ys = _integrate(field, lam, field.rows(x) / float(s.sigma(ts[0])), rtol, atol, method)
    sigmas = np.asarray(s.sigma(ts), dtype=np.float64)
    for i in range(len(ts) - 1):
        d = field.denoise(ys[i] * sigmas[i], float(ts[i]))  # the x0-prediction on the grid, for display
        record(i, field.state(ys[i + 1] * sigmas[i + 1]), field.state(d))


def flow(model, x, t_from, t_to, rtol: float = 1e-10, atol: float = 1e-10, method: str = "auto") -> np.ndarray:
    """The reference ODE's flow, row by row: row k of x (a state at time t_from[k]) carried down to
    t_to[k] < t_from[k] by the rk45 solve (t_from, t_to: scalars or one time per row). Rows that share
    their two times are the same problem as ex.reference from them; with per-particle steps (see the
    module docstring) every row is its own problem anyway. Returns a numpy array shaped like x.
    Raises FloatingPointError if the solve blows up."""
    x = np.asarray(x, dtype=np.float64)
    s = model.schedule
    t_from, t_to = (np.broadcast_to(np.asarray(t, dtype=np.float64), (len(x),)) for t in (t_from, t_to))
    if not np.all(t_to < t_from):
        raise ValueError("flow runs from t_from down to t_to: every t_to must be below its t_from")
    field = _Field(model, x, float(t_to.min()), float(t_from.max()))
    lam = np.stack([s.lambda_(t_from), s.lambda_(t_to)], axis=1).astype(np.float64)
    with np.errstate(all="ignore"):
        ys = _integrate(field, lam, field.rows(x) / np.asarray(s.sigma(t_from))[:, None], rtol, atol, method)
    return (ys[-1] * np.asarray(s.sigma(t_to))[:, None]).reshape(x.shape)


class _Field:
    """dy/dlambda = e^lambda x0_hat(y sigma, t(lambda)) on rows y (n, F) of states shaped like x, at one
    lambda for all rows or one per row. States go to the model as x is (numpy, or torch tensors of x's
    dtype and device); times stay in [t_lo, t_hi] (round-off never leaves the grid)."""

    def __init__(self, model, x, t_lo: float, t_hi: float):
        self.model, self.s = model, model.schedule
        self.smooth = bool(getattr(model, "smooth", False))
        self.times_per_particle = bool(getattr(model, "times_per_particle", False))
        self.like = None if isinstance(x, np.ndarray) else x
        self.tail = tuple(x.shape[1:])
        self.t_lo, self.t_hi = t_lo, t_hi

    def rows(self, x) -> np.ndarray:
        x_np = x if self.like is None else x.detach().cpu().numpy()
        return np.asarray(x_np, dtype=np.float64).reshape(len(x_np), -1)

    def state(self, rows):
        out = rows.reshape((len(rows),) + self.tail)
        if self.like is None:
            return out
        import torch

        return torch.as_tensor(out, dtype=self.like.dtype, device=self.like.device)

    def denoise(self, rows, t) -> np.ndarray:
        out = self.model.denoise(self.state(rows), t)
        if self.like is not None:
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float64).reshape(rows.shape)

    def __call__(self, l, y):
        if not np.all(np.isfinite(l)):  # scipy's step-size guess can leave the reals when the state blows up
            raise FloatingPointError(f"the adaptive step reached lambda={l}")
        if np.ndim(l) and np.any(l != l[0]):  # one time per row
            t = np.minimum(np.maximum(self.s.t_of_lambda(l), self.t_lo), self.t_hi)  # np.clip, without its overhead
            return np.exp(l)[:, None] * self.denoise(y * np.asarray(self.s.sigma(t))[:, None], t)
        l = float(np.ravel(l)[0])
        t = min(max(float(self.s.t_of_lambda(l)), self.t_lo), self.t_hi)
        return np.exp(l) * self.denoise(y * float(self.s.sigma(t)), t)  # numpy's exp: math.exp's last bit differs


def _integrate(field, lam, y0, rtol, atol, method) -> np.ndarray:
    """Rows y0 (n, F) from lam[..., 0] to lam[..., -1]: lam (G,) is one grid for all rows, (n, G) one per
    row. Returns the rows at every grid point, (G, n, F)."""
    if method == "auto":
        method = "DOP853" if field.smooth else "RK45"
    if method == "RK45" and not field.smooth and field.times_per_particle:
        return _each_particle_rk45(field, np.broadcast_to(lam, (len(y0), lam.shape[-1])), y0, rtol, atol)
    if lam.ndim == 1:
        return _one_system(field, lam, y0, rtol, atol, method)
    out = np.empty((lam.shape[1],) + y0.shape)
    grids, which = np.unique(lam, axis=0, return_inverse=True)
    for k, grid in enumerate(grids):  # the rows on one grid: one flat system
        rows = which.ravel() == k
        out[:, rows] = _one_system(field, grid, y0[rows], rtol, atol, method)
    return out


def _one_system(f, lam, y0, rtol, atol, method) -> np.ndarray:
    """All rows as one flat system on one step sequence: scipy's solve_ivp. (len(lam), n, F)."""
    from scipy.integrate import solve_ivp  # 0.5 s to import: paid by the first reference run, not by `import explorer`

    shape = y0.shape
    sol = solve_ivp(lambda l, y: f(l, y.reshape(shape)).ravel(), (lam[0], lam[-1]), y0.ravel(),
                    method=method, t_eval=lam, rtol=rtol, atol=atol)
    if not sol.success:
        raise FloatingPointError(f"rk45 failed: {sol.message}")
    return sol.y.T.reshape((len(lam),) + shape)


def _each_particle_rk45(f, lam, y0, rtol, atol) -> np.ndarray:
    """scipy's RK45 (Dormand-Prince 5(4): its tableau, initial step, step-size control and dense
    output) on every row of y0 alone, from lam[k, 0] to lam[k, -1], all rows advanced together: an
    attempt evaluates every unfinished row at its own lambda, one call of f per stage.
    Returns the rows at their grid points (G, n, F)."""
    from scipy.integrate import RK45

    A, B, C, E, P = RK45.A, RK45.B, RK45.C, RK45.E, RK45.P
    exponent = -1.0 / (RK45.error_estimator_order + 1)

    def rms(v):
        return np.sqrt(np.mean(v * v, axis=1))

    n, G = lam.shape
    out = np.empty((G,) + y0.shape)
    out[0] = y0
    l, end, y, fy = lam[:, 0].copy(), lam[:, -1], y0.copy(), f(lam[:, 0], y0)
    # The first step (scipy's select_initial_step): a trial Euler step sizes it from the field's variation.
    scale = atol + np.abs(y) * rtol
    d0, d1 = rms(y / scale), rms(fy / scale)
    h0 = np.minimum(np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1), end - l)
    d2 = rms((f(l + h0, y + h0[:, None] * fy) - fy) / scale) / h0
    h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3), (0.01 / np.maximum(d1, d2)) ** -exponent)
    h = np.minimum(np.minimum(100 * h0, h1), end - l)

    rejected = np.zeros(n, dtype=bool)  # the row's current step was rejected before
    next_out = np.ones(n, dtype=int)  # the next grid point of each row
    rows = np.arange(n)  # the unfinished rows
    K = np.empty((RK45.n_stages + 1,) + y0.shape)
    while len(rows):
        li, yi, hi = l[rows], y[rows], h[rows]
        min_step = 10 * (np.nextafter(li, np.inf) - li)
        if np.any(rejected[rows] & (hi < min_step)):
            raise FloatingPointError("rk45 failed: Required step size is less than spacing between numbers.")
        l_new = np.minimum(li + np.maximum(hi, min_step), end[rows])
        hi = l_new - li
        k = K[:, : len(rows)]
        k[0] = fy[rows]
        for st in range(1, RK45.n_stages):
            k[st] = f(li + C[st] * hi, yi + hi[:, None] * _weighted(A[st, :st], k[:st]))
        y_new = yi + hi[:, None] * _weighted(B, k[:-1])
        k[-1] = f(l_new, y_new)
        err = rms(hi[:, None] * _weighted(E, k) / (atol + np.maximum(np.abs(yi), np.abs(y_new)) * rtol))
        if not np.all(np.isfinite(err)):
            raise FloatingPointError(f"the state became NaN or inf near lambda={float(li[~np.isfinite(err)][0]):.6g}")
        ok = err < 1
        grow = np.where(err == 0, 10.0, np.minimum(10.0, 0.9 * err ** exponent))
        grow = np.where(rejected[rows], np.minimum(1.0, grow), grow)
        h[rows] = hi * np.where(ok, grow, np.maximum(0.2, 0.9 * err ** exponent))
        rejected[rows] = ~ok
        # The accepted rows move on; the grid points they passed come from the step's dense output
        # y(l_old + x h) = y_old + h sum_j Q_j x^(j + 1).
        acc = ok.nonzero()[0]
        moved = rows[acc]
        Q = np.einsum("snf,sj->njf", k[:, acc], P)
        while True:
            g = np.minimum(next_out[moved], G - 1)
            due = (next_out[moved] < G) & (lam[moved, g] <= l_new[acc])
            if not due.any():
                break
            who, a = moved[due], acc[due]
            x = (lam[who, g[due]] - li[a]) / hi[a]
            powers = np.cumprod(np.repeat(x[:, None], P.shape[1], axis=1), axis=1)
            out[g[due], who] = yi[a] + hi[a, None] * np.einsum("nj,njf->nf", powers, Q[due])
            next_out[who] += 1
        l[moved], y[moved], fy[moved] = l_new[acc], y_new[acc], k[-1, acc]
        rows = rows[l[rows] < end[rows]]
    return out


def _weighted(w, k) -> np.ndarray:
    """sum_j w[j] k[j] over the first axis of k: np.tensordot(w, k, axes=1)'s own product, a (1, J) @ (J, rest)
    matrix product (the same bits), without its argument handling (several microseconds a call)."""
    return np.dot(w.reshape(1, -1), k.reshape(len(w), -1)).reshape(k.shape[1:])
