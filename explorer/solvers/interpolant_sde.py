"""The stochastic-interpolant SDE family dX = [v - eps(t) s] dt + sqrt(2 eps(t)) dW_bar with a
chosen diffusion coefficient (see explorer/foundations/interpolants.py for the time direction and eps*)."""

from __future__ import annotations

import math

import numpy as np

from ..foundations import interpolants
from ..foundations.interpolants import sde_coefficients, diffusion_coefficient
from .registry import Option, solver

SI = "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions"


@solver(
    "interpolant-sde", order=1, reference=SI,
    stochastic=lambda o: o["diffusion"] != "zero" and o["scale"] > 0,
    summary="The interpolant SDE family with diffusion eps(t): zero (the ODE), constant, or scale x the "
            "statistically optimal eps* = -sigma^2 lambda' (= g^2/2); Euler-Maruyama in t, or the exact "
            "linear-part (exponential) step for eps = scale eps*. Starts from a point-mass base.",
    options=[
        Option("diffusion", "choice", "optimal", "eps(t): zero (probability-flow ODE), constant, or optimal",
               choices=interpolants.DIFFUSIONS),
        Option("scale", "float", 1.0, "eps = scale (constant) or scale x eps* (optimal)", 0.0, 100.0),
        Option("method", "choice", "euler-maruyama", "Euler-Maruyama in t, or the exponential step (eps = scale eps*)",
               choices=("euler-maruyama", "exponential")),
    ],
)
def interpolant_sde(model, x, ts, rng, record, diffusion="optimal", scale=1.0, method="euler-maruyama"):
    s = model.schedule
    c = None
    if method == "exponential":
        if diffusion == "constant":
            raise ValueError("solver 'interpolant-sde': method 'exponential' needs diffusion 'optimal' or 'zero'")
        c = 0.0 if diffusion == "zero" else float(scale)
    integrate(
        model, x, ts, rng, record, lambda t: float(diffusion_coefficient(s, t, diffusion, scale)),
        method, c,
    )


# The steps, and the sampler for a callable diffusion or given noise.


def _at_point(schedule, t) -> bool:
    return float(schedule.sigma(t)) == 0.0


def em_step(schedule, x, d, t: float, t_next: float, eps: float, xi):
    """Euler-Maruyama: x + (alpha' x0_hat + k (x - alpha x0_hat)) dt + sqrt(2 eps |dt|) xi."""
    dt = t_next - t
    a, da, k = sde_coefficients(schedule, t, eps)
    if _at_point(schedule, t):
        out = x + dt * da * d  # x - alpha x0_hat = 0 at the point: only alpha' x0_hat is left
    else:
        out = x + dt * (da * d + k * (x - a * d))
    return out + math.sqrt(2.0 * eps * abs(dt)) * xi if eps > 0 else out


def exponential_step(schedule, x, d, t: float, t_next: float, c: float, xi):
    """The exact solve of the linear part for eps = c eps*, x0_hat frozen (h = lambda' - lambda):
    x' = alpha' x0_hat + (sigma'/sigma) e^{-c h} (x - alpha x0_hat) + sigma' sqrt(1 - e^{-2 c h}) xi.
    c = 0 is DDIM, c = 1 is DDPM's posterior step; in z = x / alpha it depends on lambda only,
    so converted grids give the same discrete path."""
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    a1, s1 = float(schedule.alpha(t_next)), float(schedule.sigma(t_next))
    if s == 0.0:  # from the point: nothing of x survives, the whole step is fresh noise
        return a1 * d + s1 * xi + 0.0 * x
    h = float(schedule.lambda_(t_next)) - float(schedule.lambda_(t))
    out = a1 * d + (s1 / s) * math.exp(-c * h) * (x - a * d)
    return out + s1 * math.sqrt(-math.expm1(-2.0 * c * h)) * xi if c > 0 else out


def _check_start(schedule, x, t0: float, eps0: float):
    if not _at_point(schedule, t0):
        return
    if float(schedule.alpha(t0)) != 0.0:
        raise ValueError(f"sigma({t0}) = 0 with alpha > 0: that is the data end, sampling cannot start there")
    if not (math.isfinite(eps0) and eps0 > 0):
        raise ValueError(
            f"ts[0] = {t0} is the point-mass base (alpha = sigma = 0): a deterministic flow cannot leave a "
            f"point; use a diffusion with eps(t) > 0 there (got eps = {eps0}), or start at t < {t0}"
        )
    flat = x.reshape(x.shape[0], -1)
    if (flat != 0).any():
        raise ValueError(f"x_T must be the point 0 at the point-mass base t = {t0}")


def integrate(model, x, ts, rng, record, eps_of_t, method="euler-maruyama", exponential_scale=None, noise=None):
    """Run the SDE family from ts[0] down to ts[-1]: record(i, x_next, x0_hat) after each step.

    eps_of_t: t -> eps(t) (float); method "euler-maruyama" (any eps) or "exponential" (eps =
    c eps*, c = exponential_scale). noise: optional (n_steps, *x.shape) standard normals
    (else drawn from rng)."""
    from ..foundations.random import standard_normal_like

    s = model.schedule
    eps0 = float(eps_of_t(ts[0]))
    _check_start(s, x, float(ts[0]), eps0)
    for i in range(len(ts) - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        eps = eps0 if i == 0 else float(eps_of_t(t))
        stochastic = (exponential_scale or 0.0) > 0 if method == "exponential" else eps > 0
        if stochastic:
            xi = noise[i] if noise is not None else standard_normal_like(x, rng)
        else:
            xi = 0.0
        d = model.denoise(x, t)
        if method == "exponential":
            # The exponential step is exact in the linear part.
            x_next = exponential_step(s, x, d, t, t_next, exponential_scale, xi)
        else:
            # Euler-Maruyama step.
            x_next = em_step(s, x, d, t, t_next, eps, xi)
        x = record(i, x_next, d)


def sample_sde(model, x_T, ts, diffusion="optimal", rng=None, scale: float = 1.0, method="euler-maruyama",
               noise=None):
    """Sample dX = [v - eps s] dt + sqrt(2 eps) dW_bar from x_T at ts[0] down to ts[-1] -> Trajectory.

    diffusion: "zero" | "constant" | "optimal" (with scale) or a callable eps(t) (Euler-Maruyama
    only). A named diffusion runs through ex.sample(solver="interpolant-sde"); a callable or an
    explicit noise array (n_steps, N, D) runs here with the same steps."""
    if not callable(diffusion) and noise is None:
        from .sampling import sample

        return sample(model, x_T, ts, solver="interpolant-sde", rng=rng, diffusion=diffusion, scale=scale,
                      method=method)
    from .sampling import _check_inputs, _stack
    from ..foundations.trajectory import Trajectory

    if method != "euler-maruyama" and callable(diffusion):
        raise ValueError("a callable diffusion runs with method='euler-maruyama' only")
    x_T, ts = _check_inputs(model, x_T, ts)
    s = model.schedule
    eps_of_t = lambda t: float(diffusion_coefficient(s, t, diffusion, scale))  # noqa: E731
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != (len(ts) - 1,) + tuple(x_T.shape):
            raise ValueError(f"noise must have shape {(len(ts) - 1,) + tuple(x_T.shape)}, got {noise.shape}")
    elif rng is None:
        raise ValueError("sample_sde draws noise: pass rng (a seed or numpy Generator) or noise")
    else:
        from ..foundations.random import as_generator

        rng = as_generator(rng)
    xs, ds = [x_T], []

    def record(i, x_next, d):
        xs.append(x_next)
        ds.append(d)
        return x_next

    c = float(scale) if method == "exponential" else None
    if method == "exponential" and diffusion not in ("zero", "optimal"):
        raise ValueError("method 'exponential' solves eps = scale * eps* exactly: diffusion must be 'optimal' or 'zero'")
    if method == "exponential" and diffusion == "zero":
        c = 0.0
    with np.errstate(all="ignore"):
        integrate(model, x_T, ts, rng, record, eps_of_t, method, c, noise)
    x = _stack(xs, x_T)
    bad = [i for i in range(1, len(xs)) if not np.all(np.isfinite(xs[i]))]
    diverged_at = bad[0] - 1 if bad else None
    return Trajectory(
        t=ts, x=x, denoised=_stack(ds, x_T), nfe=len(ds), solver="interpolant-sde",
        options={"diffusion": diffusion, "scale": scale, "method": method}, diverged_at=diverged_at,
        diverged_reason=None if diverged_at is None else f"step {diverged_at} produced NaN or inf",
    )
