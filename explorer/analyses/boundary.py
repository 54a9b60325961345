"""Optimal boundary conditions ("Solving Diffusion ODEs with Optimal Boundary Conditions for Better
Image Super-Resolution", Ma et al.): one fixed starting noise x_T for every condition.

A conditional diffusion ODE is a deterministic map x0 = h(x_T, c). The paper draws many candidate
x_T from N(0, I), scores each by its mean loss over a reference set of pairs (x0_i, c_i) (LPIPS
there), keeps the best one and reuses it for every new condition, arguing that the best x_T hardly
depends on c. No official code was found; the selection rule here is that description: Monte Carlo
candidates from the prior, argmin of the mean loss over the reference pairs.

On a class-labelled mixture every piece is exact: the conditional ODE is the exact one of the
components labelled c, and the expected loss over x0 ~ p(x0 | c) has a closed form, so the
reference set can be replaced by its limit. Two losses: "mse", E||h - x0||^2 = ||h - m_c||^2 + tr Cov_c
(minimised by the conditional mean, which may lie between modes), and "nll", -log p(h | c) (the
paper's stated aim, the output of highest density). What a fixed start costs: every condition gets
one output, so the spread of p(x0 | c) is gone (its modes, and the distance between two draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..foundations.analytic import AnalyticModel
from ..foundations.mixture import GaussianMixture
from ..foundations.timesteps import timesteps
from ..solvers.sampling import sample as _sample
from .guidance import ConditionalModel, classes, conditional_target

CRITERIA = ("mse", "nll")


@dataclass
class BoundaryResult:
    """Candidates scored under every condition.

    starts (K, D): the candidate x_T; labels (C,): the conditions; weights (C,): p(c);
    outputs (C, K, D): h(x_T^k, c); loss (C, K): expected loss of candidate k under condition c;
    best: the candidate of least p(c)-weighted loss; best_per_class (C,): each condition's own best;
    reference_loss (K,) and reference_best: the same search on a finite reference set (None without).
    """

    starts: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    outputs: np.ndarray
    loss: np.ndarray
    criterion: str
    best: int
    best_per_class: np.ndarray
    reference_loss: np.ndarray | None = None
    reference_best: int | None = None
    n_reference: int = 0

    @property
    def mean_loss(self) -> np.ndarray:
        """(K,) each candidate's loss averaged over conditions with weights p(c)."""
        return self.weights @ self.loss

    def regret(self) -> np.ndarray:
        """(C,) loss_c(best) - loss_c(best_c): what sharing one start costs each condition (0: no cost)."""
        C = np.arange(len(self.labels))
        return self.loss[:, self.best] - self.loss[C, self.best_per_class]

    def rank_of_best(self) -> np.ndarray:
        """(C,) where the shared start ranks among the candidates under each condition (0: its best too)."""
        return np.array([int(np.sum(row < row[self.best])) for row in self.loss])

    def agreement(self) -> float:
        """Mean Spearman correlation between the conditions' rankings of the candidates (1: they agree)."""
        ranks = np.argsort(np.argsort(self.loss, axis=1), axis=1).astype(float)
        if len(ranks) < 2:
            return 1.0
        corr = np.corrcoef(ranks)
        return float(corr[np.triu_indices(len(ranks), 1)].mean())

    def random_loss(self) -> np.ndarray:
        """(C,) the expected loss of a random start under each condition (the mean over candidates)."""
        return self.loss.mean(axis=1)


def conditional_outputs(target: GaussianMixture, schedule, starts, solver: str = "dpmpp-2m", n_steps: int = 10,
                        spacing: str = "uniform-lambda") -> np.ndarray:
    """(C, K, D) the ODE sample from each start under each class's exact conditional model."""
    starts = np.asarray(starts, dtype=np.float64)
    ts = timesteps(schedule, n_steps, spacing)
    out = []
    for c in classes(target):
        traj = _sample(ConditionalModel(target, schedule, c), starts, ts, solver)
        if traj.diverged:
            raise ValueError(f"solver {solver!r} diverged under class {c}: {traj.diverged_reason}")
        out.append(np.asarray(traj.x[-1]))
    return np.stack(out)


def expected_loss(outputs, target: GaussianMixture, criterion: str = "mse") -> np.ndarray:
    """(C, K) the exact expected loss of each output under its class: "mse" ||h - m_c||^2 + tr Cov_c
    (= E||h - x0||^2 over x0 ~ p(x0 | c)); "nll" -log p(h | c)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    loss = []
    for c, h in zip(classes(target), outputs):
        cond = conditional_target(target, c)
        if criterion == "mse":
            d = h - cond.mean()
            loss.append(np.sum(d * d, axis=1) + np.trace(cond.covariance()))
        else:
            loss.append(-cond.log_prob(h))
    return np.stack(loss)


def reference_pairs(target: GaussianMixture, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (class index, x0) from the joint: the paper's reference set of HR-LR pairs."""
    x0, comp = target.sample(int(n), np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng,
                             return_components=True)
    labels = np.asarray(classes(target))
    return np.searchsorted(labels, target.labels[comp]), x0


def reference_loss(outputs, pairs, target: GaussianMixture, criterion: str = "mse") -> np.ndarray:
    """(K,) each candidate's mean loss over the reference pairs: ||h(x_T, c_i) - x0_i||^2 ("mse"), or
    -log p(h(x_T, c_i) | c_i) ("nll", which needs only the pairs' conditions)."""
    idx, x0 = pairs
    if criterion == "mse":
        d = outputs[idx] - x0[:, None, :]  # (n, K, D)
        return np.mean(np.sum(d * d, axis=2), axis=0)
    exact = expected_loss(outputs, target, "nll")  # (C, K)
    return exact[idx].mean(axis=0)


def find(target: GaussianMixture, schedule, n_candidates: int = 256, criterion: str = "mse", solver: str = "dpmpp-2m",
         n_steps: int = 10, n_reference: int = 0, seed: int = 0) -> BoundaryResult:
    """Search a shared start among n_candidates draws x_T ~ sigma_T N(0, I), scored by the exact expected loss
    under every class (and, with n_reference > 0, also by a reference set of that size drawn with the seed)."""
    if target.labels is None:
        raise ValueError("target must be class-labelled (ex.guidance.labelled or GaussianMixture(labels=...))")
    if isinstance(n_candidates, bool) or not float(n_candidates).is_integer() or int(n_candidates) < 2:
        raise ValueError(f"n_candidates must be an integer >= 2, got {n_candidates!r}")
    if isinstance(n_reference, bool) or not float(n_reference).is_integer() or int(n_reference) < 0:
        raise ValueError(f"n_reference must be a non-negative integer, got {n_reference!r}")
    rng = np.random.default_rng([seed, 0])
    starts = AnalyticModel(target, schedule).prior_sample(int(n_candidates), rng)
    outputs = conditional_outputs(target, schedule, starts, solver, n_steps)
    loss = expected_loss(outputs, target, criterion)
    labels = np.asarray(classes(target))
    weights = np.array([target.weights[target.labels == c].sum() for c in labels])
    ref_loss = ref_best = None
    if n_reference:
        ref_loss = reference_loss(outputs, reference_pairs(target, n_reference, np.random.default_rng([seed, 1])),
                                  target, criterion)
        ref_best = int(np.argmin(ref_loss))
    return BoundaryResult(starts=starts, labels=labels, weights=weights, outputs=outputs, loss=loss, criterion=criterion,
                          best=int(np.argmin(weights @ loss)), best_per_class=np.argmin(loss, axis=1),
                          reference_loss=ref_loss, reference_best=ref_best, n_reference=int(n_reference))


def diversity(result: BoundaryResult, target: GaussianMixture, min_share: float = 0.01) -> list[dict]:
    """Per condition, random starts (the candidates) against the shared one: modes of p(x0 | c) reached
    (by at least min_share of the outputs), mean distance between two outputs (E||x0 - x0'|| for exact
    samples), and the expected loss. The shared start reaches one point: one mode, distance 0."""
    rows = []
    for i, c in enumerate(result.labels):
        cond = conditional_target(target, int(c))
        h = result.outputs[i]
        comp = np.argmax(cond.responsibilities(h), axis=1)
        share = np.bincount(comp, minlength=cond.n_components) / len(h)
        diff = h[:, None, :] - h[None, :, :]
        pair = np.sqrt(np.sum(diff * diff, axis=2))
        rows.append(dict(label=int(c), modes=cond.n_components, modes_random=int(np.sum(share >= min_share)),
                         modes_shared=1, spread_random=float(pair.sum() / (len(h) * (len(h) - 1))), spread_shared=0.0,
                         loss_random=float(result.loss[i].mean()), loss_shared=float(result.loss[i, result.best]),
                         loss_own_best=float(result.loss[i, result.best_per_class[i]])))
    return rows
