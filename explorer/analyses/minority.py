"""Minority guidance ("Don't Play Favorites: Minority Guidance for Diffusion Models"; official code
soobin-um/minority-guidance), on exact mixtures.

The paper's pipeline, step by step (construct_ms_dataset.py, classifier_train.py, classifier_sample.py):
1. the minority score of a data point x0: how badly a one-shot Tweedie reconstruction from a noised
   copy recovers it, l(x0) = E_eps d(x0, D(alpha x0 + sigma eps, t*)) at one perturbation level t*
   (their timestep 60 of 100 respaced steps of a linear 1000-step DDPM, about t = 0.6; 5 draws of eps;
   d = LPIPS on images). Here d is the squared Euclidean distance, D the exact denoiser, and the
   expectation over eps Gauss-Hermite quadrature;
2. L classes by quantiles of the score (class j: q_{j-1} < l <= q_j, q_j the (j + 1)/L quantile;
   class L - 1 the most unique). Here the quantiles are those of l(x0) under the target itself, by
   grid quadrature;
3. a noisy classifier p_psi(class | x_t) trained by cross-entropy on noised data
   (explorer.learned.classifier);
4. sampling with classifier guidance toward the rarest class, scale w: the score plus
   w grad log p(L - 1 | x_t) (ADM's cond_fn, DDPM ancestral steps).

Exactly: the class is a function of x0, so p_t(c | x_t) = E[1{class(x0) = c} | x_t] over the mixture's
posterior, and grad log p_t(c | x_t) = alpha / sigma^2 (E[x0 | x_t, c] - E[x0 | x_t]). Both are computed
here by (randomised quasi-) Monte Carlo over each posterior component. At w = 1 the guided model is the
exact conditional model, whose samples are p(x0 | c) = p(x0) 1{class(x0) = c} / P(c): the target with
the classes reweighted (ReweightedTarget); for a hard class that is also p(x0) p(c | x0)^w for every
w > 0, so it is the target at every scale.
"""

from __future__ import annotations

import numpy as np

from ..foundations import schedules as _schedules
from ..foundations.analytic import AnalyticModel, DenoiserModel
from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample as _sample
from . import posterior
from .hallucination import hallucination_rate
from .metrics import mode_coverage, sliced_wasserstein
from .tilted import Grid, check_scale, grid_for
from .tilted import floor as _floor

N_CLASSES = 10
PAPER_T = 0.6  # timestep 60 of their 100 respaced steps of DDPM's 1000: t = 0.6 on vp-linear, the same betas
STEPS = 100  # DDPM ancestral steps (the paper samples with 250 respaced steps; 100 keep the toy quick)
W_MAX = 20.0


def imbalanced_ring(radius: float = 3.0, std: float = 0.3, n_modes: int = 8, ratio: float = 8.0) -> GaussianMixture:
    """n_modes equal isotropic modes on a circle with weights falling geometrically by `ratio` from the
    first to the last, labelled in four contiguous arcs (as guidance.labelled labels the ring)."""
    angle = 2 * np.pi * np.arange(int(n_modes)) / int(n_modes)
    means = float(radius) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    weights = float(ratio) ** (-np.arange(n_modes) / max(n_modes - 1, 1))
    labels = (np.arange(n_modes) * 4) // n_modes
    return GaussianMixture(means, np.full(n_modes, float(std) ** 2), weights, labels=labels)


def perturb_time(schedule) -> float:
    """The paper's perturbation level in `schedule`'s time: the t with vp-linear's log-SNR at t = 0.6."""
    lam = float(_schedules.get("vp-linear").lambda_(PAPER_T))
    return float(schedule.t_of_lambda(lam))


def _hermite(n_nodes: int, dim: int):
    """Gauss-Hermite nodes (Q, dim) and weights (Q,) for E over eps ~ N(0, I_dim)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(n_nodes))
    weights = weights / weights.sum()
    mesh = np.meshgrid(*([nodes] * dim), indexing="ij")
    w = np.ones(1)
    for _ in range(dim):
        w = np.outer(w, weights).ravel()
    return np.stack([m.ravel() for m in mesh], axis=1), w


def minority_score(model, x0, t: float, n_nodes: int = 12, chunk: int = 2000) -> np.ndarray:
    """(N,) l(x0) = E_eps |x0 - D(alpha x0 + sigma eps, t)|^2, the expectation by Gauss-Hermite quadrature
    with n_nodes per dimension (the paper averages 5 random draws of eps, with d = LPIPS)."""
    x0 = np.asarray(x0, dtype=np.float64)
    a, s = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    Z, W = _hermite(n_nodes, x0.shape[1])
    out = np.empty(len(x0))
    for lo in range(0, len(x0), chunk):
        x = x0[lo : lo + chunk]
        xt = (a * x[:, None, :] + s * Z[None]).reshape(-1, x.shape[1])
        d = np.asarray(model.denoise(xt, t)).reshape(len(x), len(Z), -1)
        out[lo : lo + chunk] = np.sum((d - x[:, None, :]) ** 2, axis=2) @ W
    return out


class MinorityClasses:
    """The minority score's quantile classes under a target: the score on a grid over the target (D = 1, 2),
    thresholds q_0 < ... < q_{L-2} at the exact quantiles of l(x0), x0 ~ target, and for any x0 its
    class by interpolating the score."""

    REFINE = 4

    def __init__(self, target: GaussianMixture, schedule, n_classes: int = N_CLASSES, t: float | None = None,
                 n_grid: int | None = None, n_nodes: int = 12):
        if isinstance(n_classes, bool) or int(n_classes) != n_classes or not 2 <= int(n_classes) <= 100:
            raise ValueError(f"n_classes must be an integer in [2, 100], got {n_classes!r}")
        self.target, self.schedule, self.n_classes = target, schedule, int(n_classes)
        self.t = perturb_time(schedule) if t is None else float(t)
        self.model = AnalyticModel(target, schedule)
        self.grid = grid_for(target, n_grid or (2001 if target.dim == 1 else 121), reach=5.0)
        self.scores = minority_score(self.model, self.grid.points, self.t, n_nodes)
        mass = np.exp(target.log_prob(self.grid.points)) * self.grid.cell
        self.mass = mass / mass.sum()
        order = np.argsort(self.scores)
        cdf = np.cumsum(self.mass[order])
        q = (np.arange(1, self.n_classes)) / self.n_classes
        self.thresholds = np.interp(q, cdf, self.scores[order])
        self.grid_classes = self.classify_scores(self.scores)
        # classes looked up by cell on a grid `REFINE` times finer (its classes from the interpolated
        # score): the posterior classifies N K m draws per model call
        self.fine = Grid(self.grid.box, self.grid.n * self.REFINE)
        self.fine_classes = self.classify_scores(self.grid.interpolate(self.scores, self.fine.points))
        self.class_mass = np.bincount(self.grid_classes, weights=self.mass, minlength=self.n_classes)

    @property
    def rarest(self) -> int:
        return self.n_classes - 1

    def score(self, x0) -> np.ndarray:
        """l(x0), interpolated from the grid."""
        return self.grid.interpolate(self.scores, np.asarray(x0, dtype=np.float64).reshape(-1, self.target.dim))

    def classify_scores(self, scores) -> np.ndarray:
        return np.searchsorted(self.thresholds, scores, side="left")

    def classify(self, x0) -> np.ndarray:
        """(N,) the class of each x0: j with q_{j-1} < l(x0) <= q_j (l interpolated, read off the fine grid's cells)."""
        return self.fine_classes[self.fine.cell_index(np.asarray(x0, dtype=np.float64).reshape(-1, self.target.dim))]

    def conditional_sample(self, label: int, n: int, rng) -> np.ndarray:
        """n exact draws of p(x0 | class): draws of the target, kept when of that class."""
        return ReweightedTarget(self, _one_hot(self.n_classes, label)).sample(n, rng)

    def posterior(self, x, t: float, m: int = 64, seed: int = 0):
        """Monte Carlo over the exact posterior p(x0 | x_t): for every x_t and posterior component k, m
        randomised quasi-Monte Carlo draws x0 = m_k + C_k^(1/2) z_j (the same z for every call with this
        seed). Returns (class probabilities p(c | x_t) (N, L), class-wise posterior sums
        E[x0 1{class(x0) = c} | x_t] (N, L, D))."""
        from scipy.stats import norm, qmc

        x = np.asarray(x, dtype=np.float64)
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        resp, means, C = posterior.components(self.target, x, a, s)
        z = norm.ppf(qmc.Sobol(self.target.dim, scramble=True, seed=seed).random(int(m)))
        N, K, D = means.shape
        L = self.n_classes
        # only the (particle, component) pairs with responsibility above 1e-12 (at low noise, about one a particle)
        n_idx, k_idx = np.nonzero(resp > 1e-12)
        draws = means[n_idx, k_idx][:, None, :] + np.einsum("kij,mj->kmi", posterior.sqrt_covs(C), z)[k_idx]
        cls = self.classify(draws.reshape(-1, D)).reshape(len(n_idx), -1)
        weight = np.repeat(resp[n_idx, k_idx] / z.shape[0], z.shape[0])
        bins = (n_idx[:, None] * L + cls).ravel()
        probs = np.bincount(bins, weights=weight, minlength=N * L).reshape(N, L)
        flat = draws.reshape(-1, D)
        sums = np.stack([np.bincount(bins, weights=weight * flat[:, d], minlength=N * L) for d in range(D)],
                        axis=1).reshape(N, L, D)
        return probs, sums


def _one_hot(n: int, label: int) -> np.ndarray:
    if not 0 <= int(label) < n:
        raise ValueError(f"label must be a class in [0, {n - 1}], got {label!r}")
    out = np.zeros(n)
    out[int(label)] = 1.0
    return out


class ReweightedTarget:
    """The target with its minority classes reweighted: p'(x0) = p(x0) pi_{c(x0)} / P(c(x0)) for class
    weights pi (summing to one; P(c) the target's mass of class c). pi = P gives the target itself; pi
    one-hot on c gives p(x0 | c), what minority guidance toward c intends."""

    def __init__(self, classes: MinorityClasses, class_weights):
        pi = np.asarray(class_weights, dtype=np.float64)
        if pi.shape != (classes.n_classes,) or np.any(~np.isfinite(pi)) or np.any(pi < 0) or pi.sum() <= 0:
            raise ValueError(f"class_weights must be {classes.n_classes} non-negative numbers, got {class_weights!r}")
        self.classes, self.pi = classes, pi / pi.sum()
        self.ratio = self.pi / classes.class_mass  # density ratio p'/p on each class

    def sample(self, n: int, rng) -> np.ndarray:
        """n exact draws: target draws kept with probability ratio(c) / max ratio."""
        rng = as_generator(rng)
        keep_p = self.ratio / self.ratio.max()
        out, count = [], 0
        while count < int(n):
            x = self.classes.target.sample(max(4 * int(n), 4000), rng)
            x = x[rng.random(len(x)) < keep_p[self.classes.classify(x)]]
            out.append(x)
            count += len(x)
        return np.concatenate(out)[: int(n)]

    def mode_masses(self) -> np.ndarray:
        """(K,) mass on each component's region (largest responsibility), by grid quadrature."""
        c = self.classes
        comp = np.argmax(c.target.responsibilities(c.grid.points), axis=1)
        return np.bincount(comp, weights=c.mass * self.ratio[c.grid_classes], minlength=c.target.n_components)


class MinorityGuidedModel(DenoiserModel):
    """Classifier guidance toward class `label` with scale w (ADM's cond_fn, as minority guidance samples):

        D_w(x, t) = D(x, t) + w sigma^2 / alpha grad log p(label | x_t),

    with the exact class posterior (classifier=None: grad log p = alpha / sigma^2 (E[x0 | x_t, c] - D), E by
    Monte Carlo over the posterior, m draws a component; where no draw falls in the class the estimate
    is undefined and that particle is not guided) or a trained noisy classifier (autograd).
    w = 0 is the base model exactly."""

    def __init__(self, classes: MinorityClasses, label: int, w: float, classifier=None, m: int = 64):
        self.w = check_scale(w, "w", high=W_MAX)
        _one_hot(classes.n_classes, label)
        self.classes, self.label, self.classifier, self.m = classes, int(label), classifier, int(m)
        self.base = classes.model
        self.schedule, self.target = self.base.schedule, self.base.target

    @property
    def dim(self) -> int:
        return self.target.dim

    def __repr__(self) -> str:
        kind = "exact" if self.classifier is None else "learned"
        return f"MinorityGuidedModel(label={self.label}, w={self.w:g}, {kind} classifier)"

    def denoise(self, x, t):
        d = self.base.denoise(x, t)
        if self.w == 0:
            return d
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        if self.classifier is not None:
            return d + self.w * (s * s / a) * self.classifier.grad_log_prob(x, t, self.label)
        probs, sums = self.classes.posterior(x, t, self.m)
        p = probs[:, self.label, None]
        cond = np.divide(sums[:, self.label], p, out=d.copy(), where=p > 0)
        return d + self.w * (cond - d)


def low_weight_modes(target: GaussianMixture) -> np.ndarray:
    """(K,) bool: the components weighing less than the uniform 1 / K."""
    return target.weights < 1.0 / target.n_components - 1e-12


def guided_samples(classes: MinorityClasses, w: float, n: int = 1000, seed: int = 0, classifier=None,
                   steps: int = STEPS, label: int | None = None):
    """DDPM ancestral sampling (the paper's sampler) of the model guided toward `label` (default: the
    rarest class) with scale w, from the prior. Returns the Trajectory."""
    model = MinorityGuidedModel(classes, classes.rarest if label is None else label, w, classifier)
    x_T = model.base.prior_sample(int(n), np.random.default_rng([seed, 0]))
    return _sample(model, x_T, timesteps(model.schedule, int(steps), "uniform-lambda"), "ddpm",
                   rng=np.random.default_rng([seed, 1]))


def measure(x, classes: MinorityClasses, intended_draws, label: int) -> dict:
    """What a run did: distance (sliced W2 to the intended target's draws), masses (K,) per mode,
    low_weight_mass (on modes lighter than 1 / K), off_support (hallucination rate: beyond 3 std of every
    mode) and class_share (fraction of samples in `label`'s class)."""
    x = np.asarray(x)
    masses = mode_coverage(x, classes.target)
    return dict(distance=sliced_wasserstein(x, intended_draws, 64, 0), masses=masses,
                low_weight_mass=float(masses[low_weight_modes(classes.target)].sum()),
                off_support=hallucination_rate(x, classes.target),
                class_share=float(np.mean(classes.classify(x) == label)))


def compare(classes: MinorityClasses, ws=(0.0, 0.5, 1.0, 2.0, 4.0), n: int = 1000, seed: int = 0,
            classifier=None, steps: int = STEPS, progress=None) -> list[dict]:
    """Minority guidance toward the rarest class at each scale w, with the exact class posterior and (if
    given) the trained classifier. One record per (w, kind): w, kind ("exact" | "learned"), the fields of
    measure() against max(4n, 5000) draws of p(x0 | rarest), floor (tilted.floor: n exact draws against the same), and target_masses,
    target_low_weight_mass (p(x0 | rarest)'s), base_masses (the unguided target's weights)."""
    ws = [check_scale(w, "w", high=W_MAX) for w in ws]
    label = classes.rarest
    intended = ReweightedTarget(classes, _one_hot(classes.n_classes, label))
    draws = intended.sample(max(4 * n, 5000), np.random.default_rng([seed, 2]))
    floor = _floor(intended.sample, draws, n, np.random.default_rng([seed, 3]))
    tmasses = intended.mode_masses()
    kinds = ["exact"] + (["learned"] if classifier is not None else [])
    out, done = [], 0
    for w in ws:
        for kind in kinds:
            traj = guided_samples(classes, w, n, seed, classifier if kind == "learned" else None, steps, label)
            rec = dict(w=w, kind=kind, floor=floor, target_masses=tmasses, base_masses=classes.target.weights,
                       target_low_weight_mass=float(tmasses[low_weight_modes(classes.target)].sum()),
                       diverged=traj.diverged, samples=None)
            if not traj.diverged:
                rec.update(measure(traj.sample, classes, draws, label), samples=np.asarray(traj.sample))
            out.append(rec)
            done += 1
            if progress is not None:
                progress(done, len(ws) * len(kinds), f"minority guidance ({kind} classifier) at w = {w:g}")
    return out


def classifier_agreement(classes: MinorityClasses, classifier, ts=None, n: int = 500, m: int = 64,
                         seed: int = 0) -> list[dict]:
    """The trained classifier against the exact class posterior, per noise level, at n points x_t drawn
    from the noised target. One record per t: t, lambda_, tv (mean total variation between the two
    class distributions), tv_mc (the mean total variation between two independent Monte Carlo
    estimates of the exact posterior: the error bar of tv), rarest_exact and rarest_learned (mean
    p(rarest | x_t)), accuracy (how often the two agree on the most likely class)."""
    s = classes.schedule
    ts = timesteps(s, 9, "uniform-lambda")[::-1] if ts is None else ts
    rng = np.random.default_rng([seed, 6])
    out = []
    for t in ts:
        t = float(t)
        x = classes.model.prior_sample(n, rng, t=t, exact=True)
        exact, _ = classes.posterior(x, t, m, seed=seed + 1)
        again, _ = classes.posterior(x, t, m, seed=seed + 2)
        learned = classifier.probs(x, t)
        out.append(dict(
            t=t, lambda_=float(s.lambda_(t)),
            tv=float(np.mean(0.5 * np.abs(exact - learned).sum(1))),
            tv_mc=float(np.mean(0.5 * np.abs(exact - again).sum(1))),
            rarest_exact=float(exact[:, classes.rarest].mean()), rarest_learned=float(learned[:, classes.rarest].mean()),
            accuracy=float(np.mean(exact.argmax(1) == learned.argmax(1))),
        ))
    return out


def train_classifier(classes: MinorityClasses, n_train: int = 20000, steps: int = 3000, seed: int = 0,
                     progress=False):
    """The paper's step 3: the noisy classifier trained on n_train target draws labelled by their class."""
    from ..learned import classifier as _classifier

    x0 = classes.target.sample(int(n_train), np.random.default_rng([seed, 7]))
    return _classifier.train(x0, classes.classify(x0), classes.schedule, classes.n_classes, steps=steps,
                             seed=seed, progress=progress)
