"""The exact posterior p(x0 | x_t) of a noised Gaussian mixture, which is again a Gaussian mixture.

For x0 ~ sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps, with P_k = (alpha^2 S_k + sigma^2 I)^-1:

    p(x0 | x_t) = sum_k rho_k(x_t) N(x0; m_k(x_t), C_k),
    m_k = mu_k + alpha S_k P_k (x_t - alpha mu_k),    C_k = S_k - alpha^2 S_k P_k S_k,

rho_k the responsibilities of the noised mixture. C_k does not depend on x_t. Guidance methods need
more of this posterior than its mean (the denoiser): expectations of other functions of x0 (a class
indicator, exp(reward)), draws from it, and its covariance, the Jacobian of the denoiser
(dD/dx_t = alpha / sigma^2 Cov[x0 | x_t])."""

from __future__ import annotations

import numpy as np

from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator


def _gains(gm: GaussianMixture, alpha: float, sigma: float):
    """(K, D, D) gains G_k = alpha S_k P_k and covariances C_k = S_k - alpha G_k S_k (symmetrised)."""
    eye = np.eye(gm.dim)
    P = np.linalg.inv(alpha * alpha * gm.covs + sigma * sigma * eye)
    G = alpha * np.einsum("kij,kjl->kil", gm.covs, P)
    C = gm.covs - alpha * np.einsum("kij,kjl->kil", G, gm.covs)
    return G, 0.5 * (C + np.swapaxes(C, 1, 2))


def components(gm: GaussianMixture, x, alpha: float, sigma: float):
    """The posterior's parts at every x_t: responsibilities rho (N, K), means m (N, K, D) and the
    covariances C (K, D, D)."""
    x = np.asarray(x, dtype=np.float64)
    alpha, sigma = float(alpha), float(sigma)
    resp = gm.noised(x, alpha, sigma, need=("resp",))["resp"]
    G, C = _gains(gm, alpha, sigma)
    shift = x[:, None, :] - alpha * gm.means[None]  # (N, K, D)
    means = gm.means[None] + np.einsum("kij,nkj->nki", G, shift)
    return resp, means, C


def sqrt_covs(C) -> np.ndarray:
    """(K, D, D) symmetric square roots of the covariances (eigenvalues clipped at 0: C_k is only
    positive semi-definite to round-off at sigma -> 0)."""
    vals, vecs = np.linalg.eigh(C)
    return np.einsum("kij,kj,klj->kil", vecs, np.sqrt(np.clip(vals, 0.0, None)), vecs)


def sample(gm: GaussianMixture, x, alpha: float, sigma: float, m: int, rng):
    """(N, m, D) exact draws of x0 ~ p(x0 | x_t) for every x_t, with their components (N, m)."""
    rng = as_generator(rng)
    resp, means, C = components(gm, x, alpha, sigma)
    N, K, D = means.shape
    u = rng.random((N, int(m)))
    comp = np.minimum((np.cumsum(resp, axis=1)[:, None, :] < u[:, :, None]).sum(axis=2), K - 1)
    z = rng.standard_normal((N, int(m), D))
    L = sqrt_covs(C)
    draws = means[np.arange(N)[:, None], comp] + np.einsum("nmij,nmj->nmi", L[comp], z)
    return draws, comp


def covariance(gm: GaussianMixture, x, alpha: float, sigma: float) -> np.ndarray:
    """(N, D, D) Cov[x0 | x_t] = sum_k rho_k (C_k + m_k m_k^T) - D D^T, D = sum_k rho_k m_k."""
    resp, means, C = components(gm, x, alpha, sigma)
    mean = np.einsum("nk,nkd->nd", resp, means)
    second = np.einsum("nk,kde->nde", resp, C) + np.einsum("nk,nkd,nke->nde", resp, means, means)
    return second - np.einsum("nd,ne->nde", mean, mean)


def reverse_step(gm: GaussianMixture, schedule, x, t: float, s: float, rng) -> np.ndarray:
    """One exact draw x_s ~ p(x_s | x_t) (s < t) of the noised mixture, with no discretisation error.

    Given x0 and x_t, x_s is Gaussian (DDPM's posterior q(x_s | x_t, x0) = N(a x0 + b x_t, v I) with
    a = alpha_s sigma_{t|s}^2 / sigma_t^2, b = alpha_{t|s} sigma_s^2 / sigma_t^2, v = sigma_s^2 sigma_{t|s}^2 / sigma_t^2,
    alpha_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2); averaged over the posterior
    component k: N(a m_k + b x_t, a^2 C_k + v I). A draw picks k by rho_k, then draws that Gaussian."""
    rng = as_generator(rng)
    x = np.asarray(x, dtype=np.float64)
    a_t, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
    a_s, s_s = float(schedule.alpha(s)), float(schedule.sigma(s))
    a_ts = a_t / a_s
    s2_ts = max(s_t * s_t - a_ts * a_ts * s_s * s_s, 0.0)
    a = a_s * s2_ts / (s_t * s_t)
    b = a_ts * s_s * s_s / (s_t * s_t)
    v = s_s * s_s * s2_ts / (s_t * s_t)
    resp, means, C = components(gm, x, a_t, s_t)
    N, K, D = means.shape
    u = rng.random(N)
    comp = np.minimum((np.cumsum(resp, axis=1) < u[:, None]).sum(axis=1), K - 1)
    L = sqrt_covs(a * a * C + v * np.eye(D))
    z = rng.standard_normal((N, D))
    return a * means[np.arange(N), comp] + b * x + np.einsum("nij,nj->ni", L[comp], z)
