"""Denoising MCMC ("Denoising MCMC for Accelerating Diffusion-Based Generative Models", Kim & Ye):
Gibbs sampling on (x, noise level), then a short solve from the chain's state to the data.

The joint pi(x, sigma) = pi(sigma) p_sigma(x) over a grid of noise levels (VE: x = x0 + sigma eps)
has both conditionals at hand: p(x | sigma) = p_sigma is what the score model describes, and
p(sigma | x) is proportional to pi(sigma) p_sigma(x), which the paper learns as a noise-level classifier
(trained on levels drawn uniformly from the grid) and which is exact here for a mixture.
A chain spends its time where x and sigma agree, so it starts the solve at a low level and the
solve needs few steps; samples from persistent chains are correlated and the chain's own bias
carries into the samples.

Read at the official code (1202kbs/DMCMC, `Demo.ipynb`, cell "DLG"; levels from `get_sigma`):
- levels: sigma_min (sigma_max / sigma_min)^u for u = linspace(1, 1e-3, L) (L = 1000 there);
- one sweep: x <- x + eta/2 score(x, sigma) + sqrt(eta) z with a fixed eta, then sigma <- the
  classifier's argmax level (`get_sigma(net(x).argmax(dim=1))`): variant "paper";
- over n_skip sweeps the state with the smallest level is kept (`x_min`, `s_min`), and EDM's
  sampler (`karras_alg2`: Karras grid rho = 7 from that level to sigma_min = 0.01, then 0, Heun with
  churn S_churn = 80 on [0.05, 1]) integrates from it; the chain itself goes on from its last state;
- chains start from a full 20-step run with 0.5 noise added, then burn-in sweeps.
Variant "gibbs" is exact Gibbs: the level is drawn from p(sigma | x) and the x-step is a
Metropolis-adjusted Langevin step with step eta sigma^2, so each half leaves pi(x, sigma) invariant
and the chain's level histogram is the prior. The paper's S_noise = 1.007 (a correction for learned
models) is 1 here, where the score is exact; its final Tweedie step is the Euler step onto sigma = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..foundations.analytic import AnalyticModel
from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.schedules import EDM
from .metrics import coverage_error, distance_to_target, mode_coverage

VARIANTS = {  # name -> (level update, x-step, Metropolis correction)
    "paper": dict(sigma_update="argmax", step_scale="fixed", metropolis=False),
    "gibbs": dict(sigma_update="sample", step_scale="sigma^2", metropolis=True),
}
SIGMA_MIN = 0.01
SIGMA_MAX = 80.0
CHURN = dict(S_churn=80.0, S_tmin=0.05, S_tmax=1.0)  # karras_alg2's settings in the official demo


def noise_levels(n: int = 100, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> np.ndarray:
    """The grid of levels, largest first: sigma_min (sigma_max / sigma_min)^u, u = linspace(1, 1e-3, n)."""
    if isinstance(n, bool) or not float(n).is_integer() or int(n) < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not 0 < sigma_min < sigma_max or not np.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    return sigma_min * (sigma_max / sigma_min) ** np.linspace(1.0, 1e-3, int(n))


def _model(target: GaussianMixture) -> AnalyticModel:
    return AnalyticModel(target, EDM(t_min=1e-4, t_max=1e4))  # alpha = 1, sigma = t: VE, as the paper


def log_joint(target: GaussianMixture, x, levels, prior=None) -> np.ndarray:
    """(N, L) log pi(sigma_l) + log p_{sigma_l}(x): the unnormalised log posterior of each level
    (uniform prior over the grid unless given). In each component's eigenbasis the noised
    covariance S_k + sigma^2 I is diagonal, so every level costs one broadcast, not a new solve."""
    x = np.asarray(x, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != target.dim:
        raise ValueError(f"x must have shape (N, {target.dim}), got {x.shape}")
    evals, evecs = np.linalg.eigh(target.covs)  # (K, D), (K, D, D)
    inv_var = 1.0 / (evals[:, :, None] + levels[None, None, :] ** 2)  # (K, D, L)
    const = 0.5 * np.log(inv_var).sum(axis=1) - 0.5 * target.dim * np.log(2 * np.pi)  # (K, L)
    with np.errstate(divide="ignore"):
        const = const + np.log(target.weights)[:, None]
    out = np.empty((len(x), len(levels)))
    chunk = max(1, 1_000_000 // (len(levels) * target.n_components))
    for lo in range(0, len(x), chunk):
        y = np.einsum("nd,kde->kne", x[lo:lo + chunk], evecs) - np.einsum("kd,kde->ke", target.means, evecs)[:, None]
        logits = const[:, None, :] - 0.5 * np.matmul(y * y, inv_var)  # (K, n, L): one product per component
        top = logits.max(axis=0)
        out[lo:lo + chunk] = np.log(np.exp(logits - top).sum(axis=0)) + top
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != levels.shape or np.any(prior < 0) or prior.sum() <= 0:
            raise ValueError(f"prior must be {len(levels)} non-negative weights, not all zero")
        with np.errstate(divide="ignore"):
            out += np.log(prior / prior.sum())
    return out


def level_posterior(target: GaussianMixture, x, levels, prior=None) -> np.ndarray:
    """(N, L) p(sigma_l | x) = pi(sigma_l) p_{sigma_l}(x) / sum_j pi(sigma_j) p_{sigma_j}(x), exact
    (the paper's noise classifier, trained on uniform levels, estimates this)."""
    lj = log_joint(target, x, levels, prior)
    lj -= lj.max(axis=1, keepdims=True)
    p = np.exp(lj)
    return p / p.sum(axis=1, keepdims=True)


def _draw_levels(logits: np.ndarray, rng) -> np.ndarray:
    """One categorical draw per row of logits (Gumbel-max)."""
    g = -np.log(-np.log(rng.uniform(size=logits.shape)))
    return np.argmax(logits + g, axis=1)


@dataclass
class Chains:
    """A run of persistent Gibbs chains on (x, level).

    x: (S + 1, C, D) states after each sweep (index 0: after burn-in); k: (S + 1, C) level indices;
    levels: (L,) the grid; picked_x, picked_k: (R, C, D), (R, C) the lowest-level state of each
    round of n_skip sweeps (where the solves start); nfe_per_sweep: score calls per sweep;
    burn_in_nfe: calls spent before index 0; accept: Metropolis acceptance rate (1 without)."""

    x: np.ndarray
    k: np.ndarray
    levels: np.ndarray
    picked_x: np.ndarray
    picked_k: np.ndarray
    n_skip: int
    nfe_per_sweep: int
    burn_in_nfe: int
    variant: str
    step: float
    accept: float = 1.0
    options: dict = field(default_factory=dict)

    @property
    def sigma(self) -> np.ndarray:
        return self.levels[self.k]

    @property
    def picked_sigma(self) -> np.ndarray:
        return self.levels[self.picked_k]


def _x_step(model, target, x, sigma, step, step_scale, metropolis, rng, score_x=None):
    """One Langevin step at per-particle levels sigma; with metropolis, accepted or rejected (MALA).
    Returns the new x, the number of score calls and the acceptance (per particle)."""
    h = step * sigma * sigma if step_scale == "sigma^2" else np.full_like(sigma, step)
    hc = h[:, None]
    s = model.score(x, sigma) if score_x is None else score_x
    calls = 1 if score_x is None else 0
    y = x + 0.5 * hc * s + np.sqrt(hc) * rng.standard_normal(x.shape)
    if not metropolis:
        return y, calls, np.ones(len(x))
    s_y = model.score(y, sigma)
    lp_x = target.noised(x, 1.0, sigma, need=("log_prob",))["log_prob"]
    lp_y = target.noised(y, 1.0, sigma, need=("log_prob",))["log_prob"]
    fwd = -np.sum((y - x - 0.5 * hc * s) ** 2, axis=1) / (2 * h)
    bwd = -np.sum((x - y - 0.5 * hc * s_y) ** 2, axis=1) / (2 * h)
    accept = np.log(rng.uniform(size=len(x))) < (lp_y + bwd) - (lp_x + fwd)
    return np.where(accept[:, None], y, x), calls + 1, accept.astype(float)


def run_chains(target: GaussianMixture, n_chains: int = 500, n_rounds: int = 4, n_skip: int = 10,
               variant: str = "paper", step: float | None = None, levels=None, burn_in: int = 20,
               init: str = "paper", pick: str = "lowest", seed: int = 0, **overrides) -> Chains:
    """Persistent chains: burn-in sweeps, then n_rounds rounds of n_skip sweeps, keeping each chain's
    lowest-level state per round.

    variant "paper" (argmax level, fixed step eta, default 0.05) or "gibbs" (drawn level, MALA with
    step eta sigma^2, default eta 0.5); overrides sigma_update ("argmax" | "sample"), step_scale
    ("fixed" | "sigma^2") and metropolis (bool) mix the two. init "paper": a 20-step Heun run from
    sigma_max, plus N(0, 0.5^2) noise, levels by the update rule; "exact": draws from pi(x, sigma).
    pick "lowest": each round's lowest-level state (the paper's); "last": the state the round ends in.
    Only "last" keeps exact Gibbs exact: choosing the lowest level of a round selects x too (toward
    regions where low levels are likely: on gmm-1d-asym the wide mode, whose p_sigma stays flat over more
    of the low levels, gets 36% of the samples instead of 25%)."""
    unknown = set(overrides) - {"sigma_update", "step_scale", "metropolis"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}: run_chains takes sigma_update, step_scale, metropolis")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    opts = {**VARIANTS[variant], **overrides}
    if opts["sigma_update"] not in ("argmax", "sample"):
        raise ValueError(f"sigma_update must be 'argmax' or 'sample', got {opts['sigma_update']!r}")
    if pick not in ("lowest", "last"):
        raise ValueError(f"pick must be 'lowest' or 'last', got {pick!r}")
    if opts["step_scale"] not in ("fixed", "sigma^2"):
        raise ValueError(f"step_scale must be 'fixed' or 'sigma^2', got {opts['step_scale']!r}")
    for name, value, low in (("n_chains", n_chains, 1), ("n_rounds", n_rounds, 1), ("n_skip", n_skip, 1), ("burn_in", burn_in, 0)):
        if isinstance(value, bool) or not float(value).is_integer() or int(value) < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if step is None:
        step = 0.05 if opts["step_scale"] == "fixed" else 0.5
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number, got {step!r}")
    levels = noise_levels() if levels is None else np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or len(levels) < 2 or np.any(levels <= 0):
        raise ValueError("levels must be a 1-D grid of at least 2 positive noise levels")
    rng = as_generator(seed)
    model = _model(target)
    C, L = int(n_chains), len(levels)

    def update_levels(x):
        lj = log_joint(target, x, levels)
        return np.argmax(lj, axis=1) if opts["sigma_update"] == "argmax" else _draw_levels(lj, rng)

    burn_nfe = 0
    if init == "paper":
        x, nfe = edm_solve(model, levels.max() * rng.standard_normal((C, target.dim)), np.full(C, levels.max()), 20)
        burn_nfe += nfe
        x = x + 0.5 * rng.standard_normal(x.shape)
        k = update_levels(x)
    elif init == "exact":
        k = rng.integers(0, L, size=C)
        x = target.sample(C, rng) + levels[k][:, None] * rng.standard_normal((C, target.dim))
    else:
        raise ValueError(f"init must be 'paper' or 'exact', got {init!r}")

    def sweep(x, k):
        x, calls, acc = _x_step(model, target, x, levels[k], step, opts["step_scale"], opts["metropolis"], rng)
        return x, update_levels(x), calls, acc

    for _ in range(int(burn_in)):
        x, k, calls, _ = sweep(x, k)
        burn_nfe += calls
    xs, ks, picked_x, picked_k, accepts, calls_per = [x], [k], [], [], [], 0
    for _ in range(int(n_rounds)):
        best_x, best_k = x.copy(), k.copy()
        for _ in range(int(n_skip)):
            x, k, calls_per, acc = sweep(x, k)
            accepts.append(acc.mean())
            lower = levels[k] < levels[best_k] if pick == "lowest" else np.ones(C, bool)  # the paper's `cond = (s < s_min)`
            best_x[lower], best_k[lower] = x[lower], k[lower]
            xs.append(x)
            ks.append(k)
        picked_x.append(best_x)
        picked_k.append(best_k)
    return Chains(x=np.stack(xs), k=np.stack(ks), levels=levels, picked_x=np.stack(picked_x), picked_k=np.stack(picked_k),
                  n_skip=int(n_skip), nfe_per_sweep=int(calls_per), burn_in_nfe=int(burn_nfe), variant=variant,
                  step=float(step), accept=float(np.mean(accepts)), options={**opts, "pick": pick, "init": init})


def karras_levels(sigma_start, n_sigmas: int, sigma_min: float = SIGMA_MIN, rho: float = 7.0) -> np.ndarray:
    """(N, n_sigmas) per particle: n_sigmas - 1 Karras levels from sigma_start to sigma_min, then 0
    (the official demo's karras_alg1/alg2 grid)."""
    s0 = np.atleast_1d(np.asarray(sigma_start, dtype=np.float64))
    if isinstance(n_sigmas, bool) or not float(n_sigmas).is_integer() or int(n_sigmas) < 2:
        raise ValueError(f"n_sigmas must be an integer >= 2, got {n_sigmas!r}")
    u = np.linspace(0.0, 1.0, int(n_sigmas) - 1)[None, :]
    root = s0[:, None] ** (1 / rho) + u * (sigma_min ** (1 / rho) - s0[:, None] ** (1 / rho))
    if int(n_sigmas) == 2:
        root = s0[:, None] ** (1 / rho)
    return np.concatenate([root**rho, np.zeros((len(s0), 1))], axis=1)


def edm_solve(model, x, sigma_start, n_sigmas: int, rng=None, churn: dict | None = None,
              sigma_min: float = SIGMA_MIN) -> tuple[np.ndarray, int]:
    """EDM's sampler (Karras et al., Algorithm 1; with churn, Algorithm 2) from per-particle levels
    sigma_start on per-particle Karras grids (karras_levels) down to 0: Heun steps, Euler onto 0.
    Returns the samples and the NFE per particle, 2 (n_sigmas - 1) - 1."""
    sig = karras_levels(sigma_start, n_sigmas, sigma_min)
    x = np.array(x, dtype=np.float64)
    n = sig.shape[1]
    if churn:
        rng = as_generator(rng)
        gamma0 = min(churn["S_churn"] / n, np.sqrt(2.0) - 1.0)
    for i in range(n - 1):
        s_i, s_next = sig[:, i], sig[:, i + 1]
        s_hat = s_i
        if churn:
            # Increase noise temporarily.
            gamma = np.where((s_i >= churn["S_tmin"]) & (s_i <= churn["S_tmax"]), gamma0, 0.0)
            s_hat = s_i * (1.0 + gamma)
            x = x + np.sqrt(s_hat**2 - s_i**2)[:, None] * rng.standard_normal(x.shape)
        # Euler step.
        d1 = (x - model.denoise(x, s_hat)) / s_hat[:, None]
        x_next = x + (s_next - s_hat)[:, None] * d1
        if i < n - 2:
            # Apply 2nd order correction.
            d2 = (x_next - model.denoise(x_next, s_next)) / s_next[:, None]
            x_next = x + (s_next - s_hat)[:, None] * 0.5 * (d1 + d2)
        x = x_next
    return x, 2 * (n - 1) - 1


def sample(target: GaussianMixture, n_sigmas: int = 6, variant: str = "paper", n_chains: int = 500, n_rounds: int = 4,
           n_skip: int = 10, integrator: str = "ode", seed: int = 0, chains: Chains | None = None, **chain_options) -> dict:
    """DMCMC samples: run_chains (or the given chains), then an EDM solve of n_sigmas levels from each
    picked state. Returns sample (R C, D), nfe (per sample: n_skip sweeps + the solve), solve_nfe,
    chains, start_sigma (R C,)."""
    if chains is None:
        chains = run_chains(target, n_chains, n_rounds, n_skip, variant, seed=seed, **chain_options)
    rng = np.random.default_rng([seed, 7])
    x0 = chains.picked_x.reshape(-1, target.dim)
    s0 = chains.picked_sigma.reshape(-1)
    out, solve_nfe = edm_solve(_model(target), x0, s0, n_sigmas, rng=rng, churn=_churn(integrator))
    return dict(sample=out, nfe=chains.n_skip * chains.nfe_per_sweep + solve_nfe, solve_nfe=solve_nfe,
                chains=chains, start_sigma=s0)


def _churn(integrator: str):
    if integrator == "ode":
        return None
    if integrator == "sde":
        return CHURN
    raise ValueError(f"integrator must be 'ode' or 'sde', got {integrator!r}")


def plain(target: GaussianMixture, n: int, n_sigmas: int, integrator: str = "ode", seed: int = 0,
          sigma_max: float = SIGMA_MAX) -> dict:
    """The baseline: EDM's sampler from sigma_max N(0, I) (Algorithm 1 "ode", Algorithm 2 with the demo's
    churn "sde"). Returns sample and nfe."""
    rng = np.random.default_rng([seed, 11])
    x = sigma_max * rng.standard_normal((int(n), target.dim))
    out, nfe = edm_solve(_model(target), x, np.full(int(n), sigma_max), n_sigmas, rng=rng, churn=_churn(integrator))
    return dict(sample=out, nfe=nfe)


DMCMC_METHODS = (("paper", "lowest"), ("gibbs", "lowest"), ("gibbs", "last"))


def method_label(variant: str, pick: str) -> str:
    return "DMCMC paper" if (variant, pick) == ("paper", "lowest") else f"DMCMC {variant} ({pick})"


def nfe_runs(n_sigmas=(3, 4, 6, 8, 12, 16), methods=DMCMC_METHODS) -> list[tuple]:
    """The runs of error_vs_nfe in order: (label, what, n_sigmas) with what "plain ODE", "plain SDE" or a
    (variant, pick) of DMCMC."""
    runs = [(kind, kind, int(ns)) for ns in n_sigmas for kind in ("plain ODE", "plain SDE")]
    return runs + [(method_label(*m), tuple(m), int(ns)) for m in methods for ns in n_sigmas]


def measure(target: GaussianMixture, what, n_sigmas: int, n: int = 2000, n_skip: int = 10, step: float | None = None,
            seed: int = 0, chains: Chains | None = None) -> dict:
    """One point of error_vs_nfe: method (label), n_sigmas, nfe (per sample), distance (sliced W2 to the target),
    mode_bias (total variation of the per-mode mass) and mode_weights. DMCMC runs n / 4 chains for 4 rounds
    (or uses the given chains)."""
    if isinstance(what, str):
        res = plain(target, n, n_sigmas, "ode" if what == "plain ODE" else "sde", seed=seed)
        label = what
    else:
        if chains is None:
            chains = run_chains(target, max(1, n // 4), 4, n_skip, what[0], step=step, pick=what[1], seed=seed)
        res = sample(target, n_sigmas, chains=chains, seed=seed)
        label = method_label(*what)
    x = res["sample"]
    return dict(method=label, n_sigmas=int(n_sigmas), nfe=int(res["nfe"]), distance=distance_to_target(x, target, rng=seed),
                mode_bias=coverage_error(x, target), mode_weights=mode_coverage(x, target))


def error_vs_nfe(target: GaussianMixture, n_sigmas=(3, 4, 6, 8, 12, 16), n: int = 2000, n_skip: int = 10,
                 methods=DMCMC_METHODS, steps: dict | None = None, seed: int = 0, progress=None) -> list[dict]:
    """Sliced W2 to the target and mode-weight bias against NFE per sample (see measure), for plain ODE and SDE
    sampling and for DMCMC (each (variant, pick) of methods; its chains run once; steps: variant -> step eta).
    progress(i, total, text) is called before each run."""
    steps = steps or {}
    runs = nfe_runs(n_sigmas, methods)
    chains, records = {}, []
    for i, (label, what, ns) in enumerate(runs):
        if progress is not None:
            progress(i, len(runs), f"{label}, {ns} levels")
        if not isinstance(what, str) and what not in chains:
            chains[what] = run_chains(target, max(1, n // 4), 4, n_skip, what[0], step=steps.get(what[0]), pick=what[1], seed=seed)
        records.append(measure(target, what, ns, n, n_skip, seed=seed, chains=chains.get(what)))
    return records


def summary(records: list[dict], floor: dict | None = None) -> str:
    """error_vs_nfe's records at the most levels in a line (markdown): each method's distance and NFE per
    sample there, and the floor's distance."""
    if not records:
        return ""
    most = max(r["n_sigmas"] for r in records)
    parts = [f"{r['method']} {r['distance']:.3f} ({r['nfe']} NFE)" for r in records if r["n_sigmas"] == most]
    tail = f"; exact samples {floor['distance']:.3f}" if floor is not None else ""
    return f"**Distance at the most levels ({most}):** " + " · ".join(parts) + tail + "."


def floor(target: GaussianMixture, n: int = 2000, seed: int = 0) -> dict:
    """What exact samples of the same size score: the finite-sample floor of both measures."""
    x = target.sample(n, np.random.default_rng([seed, 13]))
    return dict(distance=distance_to_target(x, target, rng=seed), mode_bias=coverage_error(x, target))
