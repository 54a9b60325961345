"""Few-step sampling done exactly: the true reverse kernel q(x_s | x_t) of a Gaussian mixture, and the
probability-flow ODE's flow map as a one-step sampler.

For x0 ~ sum_k w_k N(mu_k, S_k) noised by x_t = alpha_t x0 + sigma_t eps, the reverse kernel is a
Gaussian mixture in closed form. Given x0 and x_t, x_s (s < t) is Gaussian (DDPM's posterior):

    q(x_s | x_t, x0) = N(a x0 + b x_t, v I),   a = alpha_s sigma_{t|s}^2 / sigma_t^2,
    b = alpha_{t|s} sigma_s^2 / sigma_t^2,     v = sigma_s^2 sigma_{t|s}^2 / sigma_t^2,

with alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2. Averaging over
the exact posterior p(x0 | x_t) = sum_k rho_k(x_t) N(m_k(x_t), C_k) (ex.posterior) gives

    q(x_s | x_t) = sum_k rho_k(x_t) N(a m_k(x_t) + b x_t, a^2 C_k + v I).

Chaining draws from it on any grid t_0 > ... > t_n, started from x_{t_0} ~ p_{t_0}, is exact in law at
every grid time, whatever the number of steps: a 1-step sampler is as good as a 1000-step one. DDPM
replaces the mixture by the one Gaussian N(a E[x0 | x_t] + b x_t, v I), which is exact only as the
steps shrink: at few steps it blurs the modes together (the premise of Denoising Diffusion GANs,
which learn the multimodal kernel with a GAN; here it is known).

The flow map Phi_{t->s} of the probability-flow ODE sends p_t to p_s exactly; one application of it
is the ideal one-step sampler that consistency models distil (computed here by ex.reference).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.trajectory import Trajectory
from ..solvers.sampling import reference
from . import posterior


def _check_times(schedule, t: float, s: float):
    t, s = float(t), float(s)
    if not (math.isfinite(t) and math.isfinite(s)) or not s < t:
        raise ValueError(f"s must be earlier than t (s < t, both finite), got t={t}, s={s}")
    if float(schedule.alpha(s)) <= 0.0 or float(schedule.sigma(t)) <= 0.0:
        raise ValueError(f"the kernel needs alpha(s) > 0 and sigma(t) > 0; got alpha(s)={schedule.alpha(s)}, "
                         f"sigma(t)={schedule.sigma(t)}")
    return t, s


def _bridge(schedule, t: float, s: float):
    """(a, b, v) of q(x_s | x_t, x0) = N(a x0 + b x_t, v I)."""
    a_t, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
    a_s, s_s = float(schedule.alpha(s)), float(schedule.sigma(s))
    a_ts = a_t / a_s
    s2_ts = max(s_t * s_t - a_ts * a_ts * s_s * s_s, 0.0)
    return a_s * s2_ts / (s_t * s_t), a_ts * s_s * s_s / (s_t * s_t), s_s * s_s * s2_ts / (s_t * s_t)


def reverse_kernel(target: GaussianMixture, schedule, x_t, t: float, s: float):
    """The exact reverse kernel q(x_s | x_t) = sum_k rho_k N(a m_k + b x_t, a^2 C_k + v I) at every x_t:
    weights (N, K), means (N, K, D), covariances (K, D, D)."""
    t, s = _check_times(schedule, t, s)
    x_t = np.asarray(x_t, dtype=np.float64)
    a, b, v = _bridge(schedule, t, s)
    resp, means, C = posterior.components(target, x_t, schedule.alpha(t), schedule.sigma(t))
    covs = a * a * C + v * np.eye(target.dim)
    return resp, a * means + b * x_t[:, None, :], covs


def gaussian_kernel(target: GaussianMixture, schedule, x_t, t: float, s: float):
    """DDPM's Gaussian kernel N(a E[x0 | x_t] + b x_t, v I) at every x_t: means (N, D), variance v."""
    t, s = _check_times(schedule, t, s)
    x_t = np.asarray(x_t, dtype=np.float64)
    a, b, v = _bridge(schedule, t, s)
    x0 = target.noised(x_t, schedule.alpha(t), schedule.sigma(t), need=("x0",))["x0"]
    return a * x0 + b * x_t, v


def kernel_log_prob(target: GaussianMixture, schedule, x_t, t: float, s: float, x_s, gaussian: bool = False):
    """log q(x_s[j] | x_t[i]), (N, M): the exact mixture kernel, or DDPM's Gaussian one (gaussian=True)."""
    x_s = np.asarray(x_s, dtype=np.float64)
    D = target.dim
    if gaussian:
        mean, v = gaussian_kernel(target, schedule, x_t, t, s)
        d2 = ((x_s[None, :, :] - mean[:, None, :]) ** 2).sum(-1)
        return -0.5 * d2 / v - 0.5 * D * math.log(2 * math.pi * v)
    w, means, covs = reverse_kernel(target, schedule, x_t, t, s)
    P = np.linalg.inv(covs)
    _, logdet = np.linalg.slogdet(covs)
    diff = x_s[None, :, None, :] - means[:, None, :, :]  # (N, M, K, D)
    quad = np.einsum("nmki,kij,nmkj->nmk", diff, P, diff)
    with np.errstate(divide="ignore"):
        logw = np.log(w)[:, None, :]
    comp = logw - 0.5 * quad - 0.5 * logdet - 0.5 * D * math.log(2 * math.pi)
    top = comp.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(-1, keepdims=True)))[..., 0]


def exact_kernels(target: GaussianMixture, schedule, x_T, ts, rng) -> Trajectory:
    """Sample by exact reverse-kernel draws x_{i+1} ~ q(x_{t_{i+1}} | x_{t_i}) on the grid ts.

    Exact in law at every grid time when x_T ~ p_{ts[0]} (AnalyticModel.prior_sample(exact=True)).
    One kernel draw is counted as one evaluation (it needs the posterior at x_t, as a denoiser call
    does). The Trajectory's denoised are E[x0 | x_t] at each step, as a solver's would be."""
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture, got {type(target).__name__}")
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or len(ts) < 2 or not np.all(np.diff(ts) < 0) or not np.all(np.isfinite(ts)):
        raise ValueError("ts must be a strictly decreasing 1-D grid of at least 2 finite times")
    x = np.asarray(x_T, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != target.dim or not np.all(np.isfinite(x)):
        raise ValueError(f"x_T must be a finite (N, {target.dim}) array, got shape {x.shape}")
    rng = as_generator(rng)
    start = time.perf_counter()
    xs, ds = [x], []
    for i in range(len(ts) - 1):
        _check_times(schedule, ts[i], ts[i + 1])
        ds.append(target.noised(x, schedule.alpha(ts[i]), schedule.sigma(ts[i]), need=("x0",))["x0"])
        # Exact multimodal step: a component by rho_k(x_t), then that component's Gaussian.
        x = posterior.reverse_step(target, schedule, x, ts[i], ts[i + 1], rng)
        xs.append(x)
    return Trajectory(t=ts, x=np.stack(xs), denoised=np.stack(ds), nfe=len(ts) - 1, solver="exact-kernels",
                      wall_time=time.perf_counter() - start, schedule=schedule)


def flow_map(model, x_T, t_start=None, t_end=None, rtol: float = 1e-10) -> Trajectory:
    """The probability-flow ODE's flow map Phi_{t_start -> t_end}(x_T) as a one-step sampler (the ideal
    consistency model): a Trajectory of one step, nfe = 1 (one use of the map); the adaptive solve that
    computes the map spent extras["rk45_nfe"] evaluations."""
    s = model.schedule
    t0 = s.t_max if t_start is None else float(t_start)
    t1 = s.t_min if t_end is None else float(t_end)
    ref = reference(model, x_T, np.array([t0, t1]), rtol=rtol, atol=rtol)
    return Trajectory(t=ref.t, x=ref.x, denoised=ref.denoised, nfe=1, solver="flow-map",
                      diverged_at=ref.diverged_at, diverged_reason=ref.diverged_reason, wall_time=ref.wall_time,
                      schedule=s, extras={"rk45_nfe": ref.nfe})
