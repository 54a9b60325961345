"""Sample-path conversion between schedules (Damsholt, Frellsen & Ditlevsen, "Fast Sampling for
Flows and Diffusions with Lazy and Point Mass Stochastic Interpolants").

Derivation in our time (t grows toward the noise; see explorer/foundations/interpolants.py). Write
z = x / alpha and rho = sigma / alpha = e^{-lambda}. Under a schedule (alpha, sigma) the SDE
dx = [v - eps s] dt + sqrt(2 eps) dW_bar becomes, in z and with rho as the clock,

    dz = [1/rho + kappa/rho^2] (z - x0_hat(z, rho)) d rho + sqrt(2 kappa) dB_rho,
    kappa(rho) = eps(t) / (alpha(t)^2 rho'(t)),

where x0_hat is the schedule-free denoiser E[x0 | x0 + rho eps = z]. Nothing else depends on
the schedule. So a path (t, x) under schedule A is the path (t', x') under B with

    lambda_B(t') = lambda_A(t),   x' = alpha_B(t') / alpha_A(t) x    (equal signal-to-noise),

and, for the SDE, the diffusion coefficient under B is the one with the same kappa:
eps_B(t') = eps_A(t) alpha_B^2 lambda_B'(t') / (alpha_A^2 lambda_A'(t)), its Brownian motion the
time change dW_B = (alpha_B / alpha_A) sqrt(eps_A / eps_B) dW_A. The optimal coefficient has
kappa = rho under every schedule, so c eps*_A converts to c eps*_B: statistically optimal sampling
stays optimal. The ODE (eps = 0) maps to the ODE.
"""

from __future__ import annotations

import math

import numpy as np

from .analytic import DenoiserModel
from .interpolants import diffusion_coefficient
from .schedules import Schedule
from .trajectory import Trajectory


def _lambda_dot(s: Schedule, t):
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return s.d_alpha(t) / s.alpha(t) - s.d_sigma(t) / s.sigma(t)


def convert_time(from_schedule: Schedule, to_schedule: Schedule, t):
    """t' with lambda_B(t') = lambda_A(t) (ValueError where B never reaches that lambda)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lam = np.asarray(from_schedule.lambda_(t), dtype=np.float64)
        lo_lam, hi_lam = (float(to_schedule.lambda_(to_schedule.t_hi)), float(to_schedule.lambda_(to_schedule.t_lo)))
    span = max(abs(lo_lam) if math.isfinite(lo_lam) else 1.0, abs(hi_lam) if math.isfinite(hi_lam) else 1.0)
    tol = 1e-12 * span
    if np.any(lam < lo_lam - tol) or np.any(lam > hi_lam + tol):
        raise ValueError(
            f"to_schedule: its lambda spans [{lo_lam:.6g}, {hi_lam:.6g}], the path's [{lam.min():.6g}, {lam.max():.6g}]; "
            "a path converts only where both schedules reach the same signal-to-noise ratio"
        )
    out = np.asarray(to_schedule.t_of_lambda(np.clip(lam, lo_lam, hi_lam)), dtype=np.float64)
    return out if out.ndim else float(out)


def state_scale(from_schedule: Schedule, to_schedule: Schedule, t, t_new):
    """alpha_B(t') / alpha_A(t) (= sigma_B(t') / sigma_A(t) at equal lambda; the sigma ratio where alpha = 0)."""
    t, t_new = np.asarray(t, dtype=np.float64), np.asarray(t_new, dtype=np.float64)
    a, a1 = from_schedule.alpha(t), to_schedule.alpha(t_new)
    s, s1 = from_schedule.sigma(t), to_schedule.sigma(t_new)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a1 / np.where(a > 0, a, 1.0), s1 / np.where(s > 0, s, 1.0))


def converted_diffusion(from_schedule: Schedule, to_schedule: Schedule, diffusion="zero", scale: float = 1.0):
    """The diffusion coefficient under to_schedule whose path is the converted one: (name, scale) for
    "zero" and "optimal" (they map to themselves), else a callable eps_B(t') with the same kappa."""
    if not callable(diffusion) and diffusion in ("zero", "optimal"):
        return diffusion, scale

    def eps_b(t_new):
        t_new = np.asarray(t_new, dtype=np.float64)
        t = convert_time(to_schedule, from_schedule, t_new)
        eps_a = diffusion_coefficient(from_schedule, t, diffusion, scale)
        ratio = to_schedule.alpha(t_new) ** 2 * _lambda_dot(to_schedule, t_new) / (
            from_schedule.alpha(t) ** 2 * _lambda_dot(from_schedule, t))
        return eps_a * ratio

    return eps_b, 1.0


def convert_path(traj: Trajectory, to_schedule, from_schedule=None, diffusion="zero", scale: float = 1.0,
                 start: int = 0) -> Trajectory:
    """The same sample path under another schedule: t'_i with lambda_B(t'_i) = lambda_A(t_i),
    x'_i = alpha_B(t'_i) / alpha_A(t_i) x_i; denoised (E[x0 | x_t], schedule-free) carried over.

    from_schedule: the schedule traj was sampled under (default traj.schedule). diffusion, scale: its SDE's
    coefficient (as for explorer.solvers.interpolant_sde.sample_sde); the result's options name the matching
    coefficient under to_schedule (see converted_diffusion): for the SDE the path is the one driven by
    the time-changed noise, for the ODE (diffusion "zero") the one of the probability-flow ODE.
    start: convert from this state on (a point-mass start, x = 0 at alpha = sigma = 0, has no image
    under a schedule with a Gaussian base)."""
    from .schedules import get

    if not isinstance(traj, Trajectory):
        raise ValueError(f"traj must be an ex.Trajectory, got {type(traj).__name__}")
    if from_schedule is None:
        from_schedule = traj.schedule
    if from_schedule is None:
        raise ValueError("from_schedule is required: this Trajectory does not record the schedule it was sampled "
                         "under (traj.schedule is None)")
    from_schedule, to_schedule = get(from_schedule), get(to_schedule)
    if isinstance(start, bool) or not float(start).is_integer() or not 0 <= int(start) < traj.n_steps:
        raise ValueError(f"start must be an integer step index in [0, {traj.n_steps}), got {start!r}")
    start = int(start)
    t = np.asarray(traj.t, dtype=np.float64)[start:]
    t_new = np.asarray(convert_time(from_schedule, to_schedule, t), dtype=np.float64)
    at_point = (from_schedule.sigma(t) == 0) & (from_schedule.alpha(t) == 0)
    target_point = (to_schedule.sigma(t_new) == 0) & (to_schedule.alpha(t_new) == 0)
    if np.any(at_point & ~target_point):
        raise ValueError(
            f"the path starts at a point-mass base (t = {t[at_point][0]}) whose state has no image under "
            f"{to_schedule!r}: convert from start=1 on"
        )
    scale_x = np.where(at_point, 0.0, state_scale(from_schedule, to_schedule, t, t_new))
    x = traj.x[start:]
    shape = (-1,) + (1,) * (x.ndim - 1)
    if isinstance(x, np.ndarray):
        x_new = x * scale_x.reshape(shape)
    else:
        import torch

        x_new = x * torch.as_tensor(scale_x.reshape(shape), dtype=x.dtype, device=x.device)
    eps_name, eps_scale = converted_diffusion(from_schedule, to_schedule, diffusion, scale)
    options = {**traj.options, "converted_from": repr(from_schedule), "schedule": repr(to_schedule),
               "diffusion": eps_name, "scale": eps_scale}
    diverged_at = None if traj.diverged_at is None else max(traj.diverged_at - start, 0)
    return Trajectory(
        t=t_new, x=x_new, denoised=traj.denoised[start:], nfe=traj.nfe, solver=traj.solver, options=options,
        diverged_at=diverged_at, diverged_reason=traj.diverged_reason, wall_time=traj.wall_time,
        schedule=to_schedule,
    )


class ConvertedModel(DenoiserModel):
    """A model trained under one schedule, seen under another without retraining:
    denoise_B(x, t') = denoise_A(alpha_A(t) / alpha_B(t') x, t) with lambda_A(t) = lambda_B(t')."""

    def __init__(self, model, to_schedule):
        from .schedules import get

        if not callable(getattr(model, "denoise", None)) or getattr(model, "schedule", None) is None:
            raise ValueError("model must have a denoise(x, t) method and a .schedule")
        self.model = model
        self.schedule = get(to_schedule)
        self.target = getattr(model, "target", None)
        self.dim = getattr(model, "dim", None)

    def __repr__(self) -> str:
        return f"ConvertedModel({self.model!r}, {self.schedule!r})"

    def denoise(self, x, t):
        if np.ndim(t) == 0:
            t_a = float(convert_time(self.schedule, self.model.schedule, float(t)))
            return self.model.denoise(x * float(state_scale(self.schedule, self.model.schedule, float(t), t_a)), t_a)
        # one time per particle: the scale as a column broadcasting over x's trailing dimensions
        t_a = np.asarray(convert_time(self.schedule, self.model.schedule, t), dtype=np.float64)
        (c,) = self._coeffs_like(np.asarray(state_scale(self.schedule, self.model.schedule, t, t_a)), x)
        return self.model.denoise(x * c, t_a)

    @staticmethod
    def _coeffs_like(values, x):
        out = np.reshape(values, (-1,) + (1,) * (x.ndim - 1))
        if not isinstance(x, np.ndarray):
            import torch

            out = torch.as_tensor(out, dtype=x.dtype, device=x.device)
        return (out,)
