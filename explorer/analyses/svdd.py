"""Derivative-free guidance by soft values ("Derivative-Free Guidance in Continuous and Discrete Diffusion
Models with Soft Value-Based Decoding", SVDD; official code masa-ue/SVDD-image), on exact mixtures.

Goal: sample the reward-tilted target p_alpha(x0) proportional to p(x0) exp(r(x0) / alpha). The soft value

    v_t(x_t) = alpha log E[exp(r(x0) / alpha) | x_t]

makes the optimal sampler the pre-trained one reweighted: p*(x_s | x_t) proportional to p(x_s | x_t) exp(v_s(x_s) / alpha).
SVDD (the paper's Algorithm 1) draws M candidates x_s from the pre-trained kernel p(x_s | x_t), weighs each by
exp(v_s / alpha) and keeps one drawn with those weights; SVDD-PM approximates v_s(x_s) by r(E[x0 | x_s]), the
reward of the posterior mean (no training, no derivative). The official image code keeps the candidate of
largest value (argmax: the alpha -> 0 limit of the selection, `selection="argmax"` here) and makes no
selection at the last step.

On a Gaussian mixture with a linear or concave quadratic reward r(x) = b.x - (x - c)^T A (x - c) / 2 every piece
is closed form: each component N(mu, S) tilted by exp(r / alpha) is N(mu', S') with
S'^-1 = S^-1 + A / alpha, mu' = S' (S^-1 mu + (b + A c) / alpha), its weight multiplied by the Gaussian integral
of exp(r / alpha); and the exact soft value is v_t = alpha (log Z + log p'_t(x_t) - log p_t(x_t)), p'_t the
tilted mixture noised, Z = E_p[exp(r / alpha)]. Gradient guidance follows grad log p_t + grad v_t / alpha,
which is exactly the score of the tilted mixture (`exact_guided_model`); its usual approximation
grad r(E[x0 | x_t]) / alpha (DPS-like, `gradient_guided_model`) needs the denoiser's Jacobian,
alpha / sigma^2 Cov[x0 | x_t], also exact here.
"""

from __future__ import annotations

import numpy as np

from ..foundations.analytic import AnalyticModel, DenoiserModel
from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample as _sample
from . import posterior
from .metrics import mode_coverage, sliced_wasserstein
from .tilted import check_scale
from .tilted import floor as _floor

STEPS = 50  # reverse steps of every run (the exact kernel has no discretisation error, only the guidance's)
ALPHA_MIN = 0.02  # temperatures below this tilt the target into a spike: refused


class Reward:
    """r(x) = b.x - (x - c)^T A (x - c) / 2 (b, c of shape (D,), A (D, D) symmetric positive semi-definite:
    linear when A = 0, a concave bowl around c otherwise)."""

    def __init__(self, dim: int, b=None, A=None, c=None):
        self.dim = int(dim)
        self.b = np.zeros(self.dim) if b is None else np.asarray(b, dtype=np.float64).reshape(self.dim)
        self.A = np.zeros((self.dim, self.dim)) if A is None else np.asarray(A, dtype=np.float64).reshape(self.dim, self.dim)
        self.c = np.zeros(self.dim) if c is None else np.asarray(c, dtype=np.float64).reshape(self.dim)
        for name, v in (("b", self.b), ("A", self.A), ("c", self.c)):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"reward {name} must be finite, got {v!r}")
        if not np.allclose(self.A, self.A.T) or np.linalg.eigvalsh(self.A).min() < -1e-12:
            raise ValueError("reward A must be symmetric positive semi-definite (a concave reward)")

    @property
    def zero(self) -> bool:
        return not (np.any(self.b) or np.any(self.A))

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        d = x - self.c
        return x @ self.b - 0.5 * np.einsum("ni,ij,nj->n", d, self.A, d)

    def grad(self, x) -> np.ndarray:
        return self.b - (np.asarray(x, dtype=np.float64) - self.c) @ self.A

    def __repr__(self) -> str:
        return f"Reward(b={self.b.tolist()}, A={self.A.tolist()}, c={self.c.tolist()})"


def tilted(gm: GaussianMixture, reward: Reward, alpha: float):
    """(p_alpha, log Z): the mixture proportional to p(x) exp(r(x) / alpha), in closed form, and
    log Z = log E_p[exp(r / alpha)]. Labels are kept."""
    alpha = check_scale(alpha, "alpha", low=ALPHA_MIN, high=1e6)
    Q = reward.A / alpha
    g = (reward.b + reward.A @ reward.c) / alpha
    const = -0.5 * reward.c @ reward.A @ reward.c / alpha
    S_inv = np.linalg.inv(gm.covs)
    P = S_inv + Q
    if np.linalg.eigvalsh(P).min() <= 0:
        raise ValueError("reward: p(x) exp(r(x) / alpha) is not normalisable")
    S_new = np.linalg.inv(P)
    h = np.einsum("kij,kj->ki", S_inv, gm.means) + g
    mu_new = np.einsum("kij,kj->ki", S_new, h)
    _, logdet_S = np.linalg.slogdet(gm.covs)
    _, logdet_P = np.linalg.slogdet(P)
    # log of the integral of N(x; mu, S) exp(-x^T Q x / 2 + g.x + const)
    log_int = (-0.5 * logdet_S - 0.5 * logdet_P + 0.5 * np.einsum("ki,ki->k", h, mu_new)
               - 0.5 * np.einsum("ki,kij,kj->k", gm.means, S_inv, gm.means) + const)
    logw = np.log(gm.weights) + log_int
    top = logw.max()
    log_Z = float(top + np.log(np.sum(np.exp(logw - top))))
    S_new = 0.5 * (S_new + np.swapaxes(S_new, 1, 2))
    return GaussianMixture(mu_new, S_new, np.exp(logw - top), labels=gm.labels), log_Z


def exact_value(gm: GaussianMixture, schedule, reward: Reward, alpha: float, x, t: float) -> np.ndarray:
    """(N,) the soft value v_t(x) = alpha log E[exp(r(x0) / alpha) | x_t = x], exact:
    alpha (log Z + log p'_t(x) - log p_t(x))."""
    tilt, log_Z = tilted(gm, reward, alpha)
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    lp_tilt = tilt.noised(x, a, s, need=("log_prob",))["log_prob"]
    lp = gm.noised(x, a, s, need=("log_prob",))["log_prob"]
    return alpha * (log_Z + lp_tilt - lp)


def posterior_mean_value(model, reward: Reward, x, t: float) -> np.ndarray:
    """(N,) SVDD-PM's value: r(E[x0 | x_t = x]), the reward of the denoiser's prediction."""
    return reward(model.denoise(x, t))


def svdd(gm: GaussianMixture, schedule, reward: Reward, alpha: float, M: int, n: int = 1000, seed: int = 0,
         value: str = "pm", selection: str = "sample", steps: int = STEPS) -> np.ndarray:
    """(n, D) SVDD samples (Algorithm 1): from the prior, at every step M candidates from the exact reverse
    kernel of the mixture (posterior.reverse_step: the pre-trained model with no discretisation error),
    one kept per particle with probabilities proportional to exp(v_s(candidate) / alpha) (selection "sample",
    the paper's) or the best (selection "argmax", the official code's). value: "pm" (SVDD-PM) or "exact".
    M = 1 is the unguided sampler exactly (same draws)."""
    alpha = check_scale(alpha, "alpha", low=ALPHA_MIN, high=1e6)
    if isinstance(M, bool) or int(M) != M or not 1 <= int(M) <= 1024:
        raise ValueError(f"M must be an integer in [1, 1024], got {M!r}")
    if value not in ("pm", "exact"):
        raise ValueError(f"value must be 'pm' or 'exact', got {value!r}")
    if selection not in ("sample", "argmax"):
        raise ValueError(f"selection must be 'sample' or 'argmax', got {selection!r}")
    M, n = int(M), int(n)
    model = AnalyticModel(gm, schedule)
    rng = np.random.default_rng([seed, 0])
    x = model.prior_sample(n, rng)
    ts = timesteps(schedule, int(steps), "uniform-lambda")
    pick = np.random.default_rng([seed, 1])
    for i in range(len(ts) - 1):
        cand = posterior.reverse_step(gm, schedule, np.repeat(x, M, axis=0), ts[i], ts[i + 1], rng)
        if M == 1:
            x = cand
            continue
        if value == "pm":
            v = posterior_mean_value(model, reward, cand, ts[i + 1])
        else:
            v = exact_value(gm, schedule, reward, alpha, cand, ts[i + 1])
        logits = (v / alpha).reshape(n, M)
        if selection == "argmax":
            choice = np.argmax(logits, axis=1)
        else:
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            choice = np.minimum((np.cumsum(p, axis=1) < pick.random(n)[:, None]).sum(axis=1), M - 1)
        x = cand.reshape(n, M, -1)[np.arange(n), choice]
    return x


class GradientGuidedModel(DenoiserModel):
    """Reward-gradient guidance at the posterior mean (DPS-like): the score plus grad_x r(D(x, t)) / alpha, i.e.

        D_g(x, t) = D(x, t) + Cov[x0 | x_t] grad r(D(x, t)) / alpha

    (grad_x r(D) = J_D^T grad r, J_D = alpha_t / sigma_t^2 Cov[x0 | x_t]). Exact for one Gaussian and a linear
    reward; a zero reward is the base model exactly."""

    def __init__(self, gm: GaussianMixture, schedule, reward: Reward, alpha: float):
        self.alpha = check_scale(alpha, "alpha", low=ALPHA_MIN, high=1e6)
        self.base = AnalyticModel(gm, schedule)
        self.reward, self.schedule, self.target = reward, schedule, gm

    @property
    def dim(self) -> int:
        return self.target.dim

    def denoise(self, x, t):
        d = self.base.denoise(x, t)
        if self.reward.zero:
            return d
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        cov = posterior.covariance(self.target, x, a, s)
        return d + np.einsum("nij,nj->ni", cov, self.reward.grad(d)) / self.alpha


def exact_guided_model(gm: GaussianMixture, schedule, reward: Reward, alpha: float) -> AnalyticModel:
    """Gradient guidance with the exact soft value, grad log p_t + grad v_t / alpha: the exact model of the
    tilted mixture."""
    return AnalyticModel(tilted(gm, reward, alpha)[0], schedule)


def gradient_samples(gm: GaussianMixture, schedule, reward: Reward, alpha: float, n: int = 1000, seed: int = 0,
                     exact: bool = False, steps: int = 2 * STEPS) -> np.ndarray:
    """(n, D) samples of gradient guidance: DDPM ancestral steps on GradientGuidedModel (exact=False) or the
    exact reverse kernel of the tilted mixture (exact=True)."""
    rng = np.random.default_rng([seed, 0])
    if exact:
        tilt = tilted(gm, reward, alpha)[0]
        x = AnalyticModel(gm, schedule).prior_sample(int(n), rng)
        ts = timesteps(schedule, STEPS, "uniform-lambda")
        for i in range(len(ts) - 1):
            x = posterior.reverse_step(tilt, schedule, x, ts[i], ts[i + 1], rng)
        return x
    model = GradientGuidedModel(gm, schedule, reward, alpha)
    x_T = model.base.prior_sample(int(n), rng)
    traj = _sample(model, x_T, timesteps(schedule, int(steps), "uniform-lambda"), "ddpm", rng=np.random.default_rng([seed, 1]))
    return np.asarray(traj.sample) if not traj.diverged else np.full((int(n), gm.dim), np.nan)


METHODS = {
    "svdd-exact": "SVDD, exact soft value",
    "svdd-pm": "SVDD-PM (value = reward of the posterior mean)",
    "gradient-pm": "gradient guidance at the posterior mean (DPS-like)",
    "gradient-exact": "gradient guidance with the exact soft value",
}


def compare(gm: GaussianMixture, schedule, reward: Reward, alphas=(1.0, 0.5, 0.25), Ms=(1, 4, 16),
            methods=tuple(METHODS), n: int = 1000, seed: int = 0, progress=None) -> list[dict]:
    """Every method at every temperature alpha (SVDD methods at every M) against the closed-form tilted
    target. One record per run: method, alpha, M (None for gradient methods), distance (sliced W2 to exact
    draws of p_alpha), floor (tilted.floor: sets of n exact draws), reward (mean r of the samples),
    target_reward (E_{p_alpha}[r], exact draws), base_reward (E_p[r]), masses (K,), target_masses (K,)."""
    out, jobs = [], []
    for alpha in alphas:
        for method in methods:
            if method not in METHODS:
                raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
            for M in (Ms if method.startswith("svdd") else (None,)):
                jobs.append((alpha, method, M))
    base_reward = float(np.mean(reward(gm.sample(20000, np.random.default_rng([seed, 2])))))
    cache = {}
    for done, (alpha, method, M) in enumerate(jobs, 1):
        if alpha not in cache:
            tilt = tilted(gm, reward, alpha)[0]
            draws = tilt.sample(max(4 * n, 5000), np.random.default_rng([seed, 3]))
            floor = _floor(tilt.sample, draws, n, np.random.default_rng([seed, 4]))
            cache[alpha] = (draws, floor, float(np.mean(reward(draws))), mode_coverage(draws, gm))
        draws, floor, target_reward, target_masses = cache[alpha]
        if method.startswith("svdd"):
            x = svdd(gm, schedule, reward, alpha, M, n, seed, value=method[5:])
        else:
            x = gradient_samples(gm, schedule, reward, alpha, n, seed, exact=method == "gradient-exact")
        ok = bool(np.all(np.isfinite(x)))
        out.append(dict(method=method, alpha=float(alpha), M=M, floor=floor, target_reward=target_reward,
                        base_reward=base_reward, target_masses=target_masses,
                        distance=sliced_wasserstein(x, draws, 64, 0) if ok else np.nan,
                        reward=float(np.mean(reward(x))) if ok else np.nan,
                        masses=mode_coverage(x, gm) if ok else np.full(gm.n_components, np.nan),
                        samples=x if ok else None))
        if progress is not None:
            progress(done, len(jobs), f"{METHODS[method]} at alpha = {alpha:g}" + (f", M = {M}" if M else ""))
    return out
