"""Mode-interpolation hallucinations (Aithal et al., "Understanding Hallucinations in Diffusion
Models through Mode Interpolation"): samples a learned model puts between the modes of a mixture,
the trajectory-variance score that flags them, the filter it gives, and recursive training.

Pure numpy; a learned model (torch inside) is only called through model.denoise.

Conventions, matched to the paper's official code (gaussian_experiments/train_toy_filter.py):
- DDPM on the 1000-step table (t = 999, ..., 0). Its last step, at t = 0, returns the x0-prediction
  itself (DDPM's posterior mean with abar_{-1} = 1), so a run of n_steps makes n_steps
  x0-predictions, at every grid time including t = 0, and the sample is the last one.
- Score = variance (population, ddof 0) of the x0-prediction over the LAST `window` of those
  predictions (t = window - 1, ..., 0 on the full grid), averaged over dimensions. The paper's
  code uses window 10 of 1000, on its toy betas linspace(1e-3, 0.2) (their script's defaults), which
  the shipped 1D model is trained on: those last 10 steps span sigma 0.03 - 0.14. On DDPM's 10x
  smaller linspace(1e-4, 0.02) the same noise range is the last ~40 steps (see window_for_sigma).
- On the paper's betas alpha(t) <= 1e-3 from t = 363 on (pure_noise_t): a run may start there from
  N(0, I) and take the same steps below it as the 1000-step run (2.7x cheaper).
- In support = within k standard deviations (Mahalanobis distance) of some mode. The official code
  fixes no k for the Gaussian experiments; we use k = 3 (1D: 0.27% of the target's own draws fall
  outside; 2D: 1.1%, since the Mahalanobis radius of a 2D Gaussian is chi with 2 dof).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator

K_STD = 3.0
WINDOW = 10
PAPER = {"removed": 0.95, "kept": 0.96}  # the paper's headline: > 95% removed, 96% kept


# ------------------------------------------------------------------ support and landing


def mode_distances(x, target: GaussianMixture) -> np.ndarray:
    """(N, K) Mahalanobis distance of every sample to every mode: sqrt((x - mu_k)^T C_k^-1 (x - mu_k))."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), target.dim)  # also (N,) in 1D, and N = 0
    diff = x[:, None, :] - target.means[None, :, :]  # (N, K, D)
    prec = np.linalg.inv(target.covs)  # (K, D, D)
    return np.sqrt(np.einsum("nkd,kde,nke->nk", diff, prec, diff))


def tail_mass(k: float = K_STD, dim: int = 1) -> float:
    """P(a Gaussian sample lies beyond k standard deviations (Mahalanobis) of its mean) in `dim`
    dimensions: what a mode's own tails put outside the support test (1D, k = 3: 0.27%)."""
    from scipy.special import gammaincc

    return float(gammaincc(dim / 2, k * k / 2))  # the chi-square(dim) survival function at k^2


def in_support(x, target: GaussianMixture, k: float = K_STD) -> np.ndarray:
    """(N,) bool: within k standard deviations of some mode (min_k Mahalanobis distance <= k)."""
    return mode_distances(x, target).min(axis=1) <= k


def hallucinated(x, target: GaussianMixture, k: float = K_STD) -> np.ndarray:
    """(N,) bool: not in support."""
    return ~in_support(x, target, k)


def hallucination_rate(x, target: GaussianMixture, k: float = K_STD) -> float:
    """Fraction of samples outside every mode's k-standard-deviation region."""
    return float(np.mean(hallucinated(x, target, k)))


def landing(x, target: GaussianMixture) -> np.ndarray:
    """(N, 2) int: between which modes each sample lies. 1D: the neighbouring modes that bracket it
    (indices into target.means; -1 beyond the outermost mode on that side). 2D and up: the two
    nearest modes by Euclidean distance. Pairs are ordered (lower index first in 2D, left mode
    first in 1D)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), target.dim)  # also (N,) in 1D, and N = 0
    means = target.means
    if target.dim == 1:
        order = np.argsort(means[:, 0], kind="stable")
        sorted_means = means[order, 0]
        j = np.searchsorted(sorted_means, x[:, 0], side="right")  # modes left of x: order[:j]
        left = np.where(j > 0, order[np.clip(j - 1, 0, None)], -1)
        right = np.where(j < len(order), order[np.clip(j, None, len(order) - 1)], -1)
        return np.stack([left, right], axis=1)
    d = np.linalg.norm(x[:, None, :] - means[None, :, :], axis=2)
    two = np.argsort(d, axis=1, kind="stable")[:, :2]
    return np.sort(two, axis=1)


def landing_counts(x, target: GaussianMixture, k: float = K_STD) -> dict:
    """{(i, j): count} over the hallucinated samples: where they land (see landing), most first."""
    pairs = landing(np.asarray(x)[hallucinated(x, target, k)], target)
    counts: dict = {}
    for i, j in pairs.tolist():
        counts[(i, j)] = counts.get((i, j), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def mode_mass(x, target: GaussianMixture, k: float = K_STD) -> np.ndarray:
    """(K,) fraction of ALL samples lying within k standard deviations of each mode (the nearest
    one, in Mahalanobis distance); the rest, 1 - sum, are hallucinations."""
    d = mode_distances(x, target)
    nearest = d.argmin(axis=1)
    inside = d.min(axis=1) <= k
    return np.bincount(nearest[inside], minlength=target.n_components) / max(len(d), 1)


def modes_covered(x, target: GaussianMixture, k: float = K_STD, fraction: float = 0.1) -> int:
    """Number of modes holding at least `fraction` of their target weight (mode collapse: fewer)."""
    return int(np.sum(mode_mass(x, target, k) >= fraction * target.weights))


# ------------------------------------------------------------------ sampling with x0-predictions


@dataclass
class Run:
    """A sampling run for hallucination analysis: samples (N, D), x0-predictions at every grid time
    (n_steps, N, D; the last is the sample), the grid t (n_steps,) they were made at, the solver."""

    samples: np.ndarray
    denoised: np.ndarray
    t: np.ndarray
    solver: str
    options: dict = field(default_factory=dict)
    wall_time: float = 0.0


def ddpm_grid(schedule, n_steps: int = 1000, t_start: float | None = None) -> np.ndarray:
    """n_steps integer times from t_start (default the table's last index) down to 0, evenly spaced
    (1000 on the 1000-step table: every timestep, as DDPM samples; t_start=399, n_steps=400: DDPM's
    last 400 steps)."""
    top = int(round(schedule.t_max if t_start is None else t_start))
    if not 1 <= top <= int(round(schedule.t_max)):
        raise ValueError(f"t_start must be in [1, {int(round(schedule.t_max))}], got {t_start}")
    n_steps = int(n_steps)
    if not 2 <= n_steps <= top + 1:
        raise ValueError(f"n_steps must be in [2, {top + 1}], got {n_steps}")
    ts = np.unique(np.round(np.linspace(top, 0, n_steps)))[::-1]
    return ts.astype(np.float64)


def pure_noise_t(schedule, alpha_max: float = 1e-3) -> int:
    """The first integer timestep with alpha(t) <= alpha_max: above it x_t = alpha x0 + sigma eps is
    N(0, I) to within alpha |x0|, so a DDPM run may start there from N(0, I) instead of at t_max."""
    ts = np.arange(int(round(schedule.t_max)) + 1, dtype=np.float64)
    below = np.flatnonzero(np.asarray(schedule.alpha(ts)) <= alpha_max)
    return int(ts[below[0]]) if len(below) else int(ts[-1])


BLOCK = 1000  # particles per independently seeded block of sample_run


def sample_run(model, n: int, seed=0, solver: str = "ddpm", n_steps: int = 1000, t_start: float | None = None,
               **options) -> Run:
    """Sample n points from N(0, I) at t_start (default t_max) down the ddpm_grid, then the paper's
    last step: the x0-prediction at t = 0 is the sample. DDPM defaults to variance="beta" (the
    paper's fixed-large variance). Returns every x0-prediction (n_steps of them).

    The particles run in blocks of BLOCK, block b drawing its start and noise from child b of the
    seed (numpy's Generator.spawn): the first m * BLOCK samples of a run are the run of m * BLOCK
    samples, so a large run can be checked, or extended, a block at a time."""
    import time

    from ..solvers.sampling import sample

    ts, dim, n, streams, options = _run_setup(model, n, seed, solver, n_steps, t_start, options)
    start = time.perf_counter()
    samples, denoised = [], []
    for b, rng in enumerate(streams):
        x_T = rng.standard_normal((min(BLOCK, n - b * BLOCK), dim))
        traj = sample(model, x_T, ts, solver, rng=rng, **options)
        if traj.diverged:
            raise ValueError(f"the run diverged: {traj.diverged_reason}; it started at t = {ts[0]:g} where alpha = "
                             f"{float(model.schedule.alpha(ts[0])):.2g} (x0 = (x - sigma eps) / alpha): start at "
                             f"t_start = {pure_noise_t(model.schedule)} (pure noise, alpha <= 1e-3) instead")
        last = np.asarray(model.denoise(np.asarray(traj.x[-1]), float(ts[-1])), dtype=np.float64)
        samples.append(last)
        denoised.append(np.concatenate([np.asarray(traj.denoised, dtype=np.float64), last[None]], axis=0))
    return Run(samples=np.concatenate(samples) if samples else np.zeros((0, dim)),
               denoised=np.concatenate(denoised, axis=1) if denoised else np.zeros((len(ts), 0, dim)), t=ts,
               solver=solver, options=dict(traj.options) if n else dict(options),
               wall_time=time.perf_counter() - start)


def _run_setup(model, n, seed, solver, n_steps, t_start, options):
    """sample_run's grid, dimension, count, per-block seed streams and solver options (run_start shares them)."""
    ts = ddpm_grid(model.schedule, n_steps, t_start)
    dim = int(getattr(model, "dim", None) or model.target.dim)
    options = dict(options)
    if solver == "ddpm":
        options.setdefault("variance", "beta")
    n = int(n)
    return ts, dim, n, as_generator(seed).spawn(-(-n // BLOCK)), options


def run_start(model, n: int, seed=0, solver: str = "ddpm", n_steps: int = 1000, t_start: float | None = None,
              steps: int = 1, **options) -> np.ndarray:
    """The particles (n, D) after the first `steps` steps of sample_run(model, n, seed, solver, n_steps, t_start):
    every block's start, grid and noise, stopped early. A step uses only the two times it steps between, so these
    are the states of the full run: a shipped run can be checked bit for bit at its start in a fraction of its time."""
    from ..solvers.sampling import sample

    ts, dim, n, streams, options = _run_setup(model, n, seed, solver, n_steps, t_start, options)
    check_start_steps(steps, ts)
    out = []
    for b, rng in enumerate(streams):
        x_T = rng.standard_normal((min(BLOCK, n - b * BLOCK), dim))
        traj = sample(model, x_T, ts[: int(steps) + 1], solver, rng=rng, **options)
        out.append(np.asarray(traj.x[-1], dtype=np.float64))
    return np.concatenate(out) if out else np.zeros((0, dim))


def check_start_steps(steps, ts) -> None:
    """run_start's `steps`: an integer in [1, the run's steps] on the grid ts (also shapes_analysis.run_start's)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= len(ts) - 1:
        raise ValueError(f"steps must be an integer in [1, {len(ts) - 1}] (the run's steps), got {steps!r}")


def trajectory_variance(denoised, window: int = WINDOW) -> np.ndarray:
    """(N,) score of each sample: Var over the last `window` x0-predictions (population variance),
    averaged over dimensions. denoised: (n_steps, N, D), in sampling order."""
    d = np.asarray(denoised, dtype=np.float64)
    window = int(window)
    if not 2 <= window <= len(d):
        raise ValueError(f"window must be in [2, {len(d)}] (the number of x0-predictions), got {window}")
    last = d[-window:].reshape(window, d.shape[1], -1)
    return np.var(last, axis=0).mean(axis=1)


def window_for_sigma(schedule, sigma: float, n_steps: int = 1000) -> int:
    """How many of the last x0-predictions of a ddpm_grid run were made at noise level <= sigma."""
    ts = ddpm_grid(schedule, n_steps)
    return int(max(2, np.sum(schedule.sigma(ts) <= sigma)))


# ------------------------------------------------------------------ the filter and its trade-off


def keep(scores, threshold: float) -> np.ndarray:
    """(N,) bool: the filter keeps samples whose score is at most the threshold."""
    return np.asarray(scores) <= threshold


def filter_counts(scores, is_hallucinated, threshold: float) -> dict:
    """What the filter at `threshold` does: counts and fractions of hallucinations removed and
    in-support samples kept, and the hallucination rate before and after."""
    scores, bad = np.asarray(scores), np.asarray(is_hallucinated, dtype=bool)
    kept = keep(scores, threshold)
    n_bad, n_good = int(bad.sum()), int((~bad).sum())
    removed_bad, kept_good = int((bad & ~kept).sum()), int((~bad & kept).sum())
    n_kept = int(kept.sum())
    return {
        "threshold": float(threshold), "n": len(scores), "hallucinations": n_bad, "in_support": n_good,
        "removed_hallucinations": removed_bad, "kept_in_support": kept_good, "kept": n_kept,
        "removed_fraction": removed_bad / n_bad if n_bad else float("nan"),
        "kept_fraction": kept_good / n_good if n_good else float("nan"),
        "rate_before": n_bad / len(scores) if len(scores) else float("nan"),
        "rate_after": (n_kept - kept_good) / n_kept if n_kept else float("nan"),
    }


def tradeoff(scores, is_hallucinated) -> dict:
    """The filter at every threshold: thresholds (-inf, then each distinct score ascending),
    removed (fraction of hallucinations with score > threshold, non-increasing from 1 to 0) and
    kept (fraction of in-support samples with score <= threshold, non-decreasing from 0 to 1)."""
    scores, bad = np.asarray(scores, dtype=np.float64), np.asarray(is_hallucinated, dtype=bool)
    thresholds = np.concatenate([[-np.inf], np.unique(scores)])
    n_bad, n_good = max(int(bad.sum()), 1), max(int((~bad).sum()), 1)
    bad_sorted, good_sorted = np.sort(scores[bad]), np.sort(scores[~bad])
    removed = 1.0 - np.searchsorted(bad_sorted, thresholds, side="right") / n_bad
    kept = np.searchsorted(good_sorted, thresholds, side="right") / n_good
    if not bad.any():
        removed = np.full_like(thresholds, np.nan)
    return {"threshold": thresholds, "removed": removed, "kept": kept}


def choose_threshold(scores, is_hallucinated, min_kept: float | None = None) -> float:
    """A threshold chosen on one run: the one maximising removed + kept (Youden's J), or, with
    min_kept, the smallest threshold keeping at least that fraction of in-support samples. It is
    placed halfway (geometrically) to the next larger score, so it does not sit on a sample."""
    curve = tradeoff(scores, is_hallucinated)
    th, removed, kept = curve["threshold"][1:], curve["removed"][1:], curve["kept"][1:]
    if min_kept is None:
        i = int(np.argmax(np.nan_to_num(removed, nan=0.0) + kept))
    else:
        i = int(np.searchsorted(kept, min_kept, side="left"))
        i = min(i, len(th) - 1)
    if i + 1 < len(th):
        lo, hi = th[i], th[i + 1]
        return float(math.sqrt(lo * hi)) if lo > 0 else float(0.5 * (lo + hi))
    return float(th[i])


# ------------------------------------------------------------------ recursive training


def empirical_mixture(samples, std: float = 1e-4) -> GaussianMixture:
    """The sample set as a mixture of tiny isotropic Gaussians (std), one per sample, equal weights:
    training on it is training on the samples (up to std of jitter)."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    return GaussianMixture(x, np.full(len(x), std * std))


def recursive_training(target: GaussianMixture, generations: int = 3, n_samples: int = 2000, filter=None,
                       train_kwargs=None, sample_kwargs=None, seed: int = 0, progress=None, drop: float = 0.2,
                       window: int = WINDOW, k: float = K_STD, trainer=None) -> list[dict]:
    """Train generation 0 on the target; generation g+1 on n_samples samples of generation g.

    filter: None keeps n_samples samples as drawn; "variance" draws n_samples / (1 - drop) and keeps
    the n_samples with the lowest trajectory variance (the paper's filter: sort, keep the lowest);
    "random" draws as many and keeps a random n_samples (the same number dropped, at random).
    Each generation's record: hallucination rate of its raw samples and of the training set it
    hands on, per-mode mass, modes covered. trainer defaults to explorer.models.train;
    progress(fraction, message) is called as it goes. recursive_training_filters runs several
    filters at once, sharing their generation 0."""
    return _recursive(target, generations, n_samples, filter, train_kwargs, sample_kwargs, seed, progress, drop,
                      window, k, trainer, {})


def recursive_training_filters(target: GaussianMixture, generations: int = 3, n_samples: int = 2000,
                               filters=("variance", "random"), train_kwargs=None, sample_kwargs=None, seed: int = 0,
                               progress=None, drop: float = 0.2, window: int = WINDOW, k: float = K_STD,
                               trainer=None) -> dict:
    """{filter: records} for each filter, each what recursive_training(filter=...) returns, for less: generation 0
    is trained on the target and sampled the same way whatever the filter (the same seeds; "variance" and "random"
    both draw n_samples / (1 - drop)), so it is trained and sampled once for the filters that draw alike.
    progress(fraction, message) over all of them, the message naming the filter."""
    filters = tuple(filters)
    for f in filters:
        _check_filter(f)
    shared, out = {}, {}
    for j, f in enumerate(filters):
        def report(frac, msg, j=j, f=f):
            if progress:
                progress((j + frac) / len(filters), f"{f}: {msg}")

        out[f] = _recursive(target, generations, n_samples, f, train_kwargs, sample_kwargs, seed, report, drop,
                            window, k, trainer, shared)
    return out


def _check_filter(filter) -> None:
    if filter not in (None, "variance", "random"):
        raise ValueError(f"filter must be None, 'variance' or 'random', got {filter!r}")


def _recursive(target, generations, n_samples, filter, train_kwargs, sample_kwargs, seed, progress, drop, window, k,
               trainer, shared: dict) -> list[dict]:
    """recursive_training; shared holds generation 0's (model, run) by the number drawn, filled and reused."""
    _check_filter(filter)
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    if trainer is None:
        from ..learned import registry as models

        trainer = models.train
    train_kwargs = dict(train_kwargs or {})
    sample_kwargs = dict(sample_kwargs or {})
    rng = np.random.default_rng(seed)
    n_draw = int(n_samples) if filter is None else int(math.ceil(n_samples / (1.0 - drop)))
    records, data = [], target
    for g in range(int(generations)):
        if progress:
            progress(g / generations, f"generation {g}: training")
        reuse = shared.get(n_draw) if g == 0 else None
        model = reuse[0] if reuse else trainer(data, seed=int(seed) + g, progress=False, **train_kwargs)
        if progress:
            progress((g + 0.5) / generations, f"generation {g}: sampling")
        run = reuse[1] if reuse else sample_run(model, n_draw, seed=np.random.default_rng([int(seed), g]),
                                                 **sample_kwargs)
        if g == 0:
            shared[n_draw] = (model, run)
        x = run.samples
        if filter == "variance":
            chosen = np.argsort(trajectory_variance(run.denoised, window), kind="stable")[: int(n_samples)]
        elif filter == "random":
            chosen = np.sort(rng.choice(len(x), int(n_samples), replace=False))
        else:
            chosen = np.arange(len(x))
        handed_on = x[chosen]
        mass = mode_mass(x, target, k)
        records.append({
            "generation": g, "samples": x, "training_set": handed_on,
            "hallucination_rate": hallucination_rate(x, target, k),
            "handed_on_rate": hallucination_rate(handed_on, target, k),
            "mode_mass": mass, "modes_covered": modes_covered(x, target, k),
            "final_loss": (getattr(model, "history", None) or [float("nan")])[-1],
        })
        data = empirical_mixture(handed_on)
    if progress:
        progress(1.0, "done")
    return records
