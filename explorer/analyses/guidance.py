"""Guided sampling on exact models: class-conditional mixtures, classifier-free guidance,
dynamic thresholding, and the failure DPM-Solver++ was written about.

From "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models":
with a large guidance scale the guided x0-prediction leaves the data's range and changes
fast along the path, so high-order solvers (which extrapolate it) go unstable while a
first-order one (DDIM) degrades gracefully; data prediction plus thresholding helps.
Here every piece is exact: the conditional denoiser of a labelled Gaussian mixture is the
denoiser of its components of that label, so what goes wrong is the solver's doing alone.
"""

from __future__ import annotations

import numpy as np

from ..foundations import targets as _targets
from ..foundations.analytic import AnalyticModel, DenoiserModel
from ..foundations.mixture import GaussianMixture
from ..solvers.sampling import reference as _reference
from ..solvers.sampling import sample as _sample


# Labelled targets.


def class_labels(name: str, gm: GaussianMixture, n_classes: int | None = None) -> np.ndarray:
    """(K,) the class of each component of preset `name`: on the ring, n_classes contiguous arcs
    (default 4); on the 5 x 5 grid, its rows (equal first coordinate); on the checkerboard, its
    cells; elsewhere each component is its own class."""
    K = gm.n_components
    if name == "gmm-2d-ring8":
        c = 4 if n_classes is None else int(n_classes)
        if not 1 <= c <= K:
            raise ValueError(f"n_classes must lie in [1, {K}] for {name}, got {n_classes!r}")
        return (np.arange(K) * c) // K
    if n_classes is not None:
        raise ValueError(f"target {name!r} has fixed classes: leave n_classes out")
    if name == "gmm-2d-grid25":
        return np.unique(np.round(gm.means[:, 0], 9), return_inverse=True)[1].astype(int)
    if name == "gmm-2d-checkerboard":
        return np.arange(K) // 4
    return np.arange(K)


def labelled(name: str, n_classes: int | None = None, **params) -> GaussianMixture:
    """ex.targets.get(name, **params) with class labels on its components (see class_labels)."""
    gm = _targets.get(name, **params)
    return with_labels(gm, class_labels(name, gm, n_classes))


def with_labels(gm: GaussianMixture, labels) -> GaussianMixture:
    """The same mixture, its components labelled."""
    return GaussianMixture(gm.means, gm.covs, gm.weights, labels=np.asarray(labels, dtype=int))


def classes(gm: GaussianMixture) -> list[int]:
    """The distinct labels of a labelled mixture, sorted."""
    if gm.labels is None:
        raise ValueError("the target has no labels: build it with guidance.labelled or GaussianMixture(labels=...)")
    return sorted(int(c) for c in np.unique(gm.labels))


def conditional_target(gm: GaussianMixture, label: int) -> GaussianMixture:
    """p(x0 | c): the components labelled c, their weights renormalised."""
    if label not in classes(gm):
        raise ValueError(f"label must be one of {classes(gm)}, got {label!r}")
    keep = gm.labels == label
    return GaussianMixture(gm.means[keep], gm.covs[keep], gm.weights[keep], labels=gm.labels[keep])


class ConditionalModel(AnalyticModel):
    """The exact conditional denoiser E[x0 | x_t, c]: an AnalyticModel of the components labelled c."""

    def __init__(self, target: GaussianMixture, schedule, label: int):
        super().__init__(conditional_target(target, int(label)), schedule)
        self.label = int(label)
        self.full_target = target

    def __repr__(self) -> str:
        return f"ConditionalModel(label={self.label}, {self.target!r}, {self.schedule!r})"


# Guidance and thresholding wrap any model with denoise(x, t) and .schedule.


class CFGModel(DenoiserModel):
    """Classifier-free guidance with scale w, in x0 space:

        D_w(x, t) = (1 + w) D(x, t | c) - w D(x, t),

    (Ho & Salimans' convention: w = 0 is the conditional model itself, w = -1 the unconditional
    one; DPM-Solver++'s scale s is 1 + w). At fixed (x, t) eps = (x - alpha D) / sigma is affine
    in D with weights summing to one, so the same combination of eps gives the same model.
    .target is the conditional target: guided samples are meant to land there (sharper,
    toward p(c | x)^w, for w > 0)."""

    def __init__(self, cond_model, uncond_model, w: float):
        w = float(w)
        if not np.isfinite(w):
            raise ValueError(f"guidance scale w must be finite, got {w!r}")
        if cond_model.schedule != uncond_model.schedule:
            raise ValueError("cond_model and uncond_model must share one schedule")
        self.cond, self.uncond, self.w = cond_model, uncond_model, w
        self.schedule = cond_model.schedule
        self.target = getattr(cond_model, "target", None)

    @property
    def dim(self):
        return getattr(self.cond, "dim", None)

    @property
    def smooth(self):  # a fixed combination of two fields: as smooth as both
        return all(getattr(m, "smooth", False) for m in (self.cond, self.uncond))

    @property
    def times_per_particle(self):
        return all(getattr(m, "times_per_particle", False) for m in (self.cond, self.uncond))

    def __repr__(self) -> str:
        return f"CFGModel(w={self.w:g}, {self.cond!r})"

    def denoise(self, x, t):
        """(1 + w) D_cond - w D_uncond (two model calls; w = 0 calls the conditional model only)."""
        d_c = self.cond.denoise(x, t)
        if self.w == 0.0:
            return d_c
        return (1.0 + self.w) * d_c - self.w * self.uncond.denoise(x, t)


class DynamicThresholding(DenoiserModel):
    """Dynamic thresholding of the x0-prediction (Imagen; DPM-Solver++ Sec. 5), per sample:

        s = max(max_value, quantile_ratio(|x0_hat| over the sample's coordinates)),
        x0_hat <- clip(x0_hat, -s, s) * max_value / s.

    With data in [-1, 1] (max_value = 1) this is exactly Imagen's / DPM-Solver's rule: a sample
    whose prediction stays in range is untouched, one that overshoots is clipped at its own
    ratio-quantile and scaled back into range. In 1D or 2D the quantile over a sample's few
    coordinates is (nearly) its largest |coordinate|; set max_value to the data's range
    (data_range(target)) for a mixture not scaled to [-1, 1]."""

    smooth = False  # the clip is a kink in every sample's field, where its quantile crosses max_value

    def __init__(self, model, ratio: float = 0.995, max_value: float = 1.0):
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio!r}")
        if not float(max_value) > 0.0 or not np.isfinite(max_value):
            raise ValueError(f"max_value must be a positive number, got {max_value!r}")
        self.model, self.ratio, self.max_value = model, float(ratio), float(max_value)
        self.schedule = model.schedule
        self.target = getattr(model, "target", None)

    @property
    def dim(self):
        return getattr(self.model, "dim", None)

    @property
    def times_per_particle(self):  # the threshold is per sample: one time per sample passes straight through
        return bool(getattr(self.model, "times_per_particle", False))

    def __repr__(self) -> str:
        return f"DynamicThresholding({self.model!r}, ratio={self.ratio:g}, max_value={self.max_value:g})"

    def denoise(self, x, t):
        return threshold(self.model.denoise(x, t), self.ratio, self.max_value)


def threshold(x0, ratio: float = 0.995, max_value: float = 1.0):
    """clip(x0, -s, s) * max_value / s per sample, s = max(max_value, ratio-quantile of |x0|)."""
    if isinstance(x0, np.ndarray):
        flat = np.sort(np.abs(x0.reshape(len(x0), -1)), axis=1)
        # np.quantile's default (linear) rule, on the few coordinates of each sample
        pos = ratio * (flat.shape[1] - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, flat.shape[1] - 1)
        q = flat[:, lo] + (pos - lo) * (flat[:, hi] - flat[:, lo])
        s = np.maximum(q, max_value).reshape((-1,) + (1,) * (x0.ndim - 1))
        return np.minimum(np.maximum(x0, -s), s) * (max_value / s)  # np.clip, without its overhead
    import torch  # torch models

    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat, ratio, dim=1).clamp(min=max_value).reshape((-1,) + (1,) * (x0.ndim - 1))
    return torch.maximum(torch.minimum(x0, s), -s) * (max_value / s)


def data_range(target: GaussianMixture) -> float:
    """The largest |coordinate| of the target's bulk: max over components of |mean| + 3 std."""
    return float(np.max(np.abs(target.means) + 3.0 * target.stds()[:, None]))


def guided_model(target: GaussianMixture, schedule, label: int, w: float, thresholding: bool = False,
                 ratio: float = 0.995, max_value: float | None = None):
    """CFG of the exact conditional model for `label` against the full mixture, optionally
    thresholded (max_value defaults to data_range(target))."""
    model = CFGModel(ConditionalModel(target, schedule, label), AnalyticModel(target, schedule), w)
    if thresholding:
        model = DynamicThresholding(model, ratio, data_range(target) if max_value is None else max_value)
    return model


# The failure.

FAILURE_SOLVERS = ("ddim", "dpmpp-2m", "unipc", "dpm-solver-3")
FAILURE_SCALES = (0.0, 1.0, 3.0, 8.0, 15.0)


def guidance_sweep(target: GaussianMixture, schedule, label: int, ws=FAILURE_SCALES, solvers=FAILURE_SOLVERS,
                   nfe: int = 12, n: int = 1000, seed: int = 0, spacing: str = "uniform-lambda",
                   thresholding: bool = False, executor=None, progress=None) -> list[dict]:
    """Each solver at each guidance scale w, at equal NFE, from the same noise.

    Each solver gets nfe // (its NFE per step) steps (12, the default, suits 1, 2 and 3 per step).
    One record per (w, solver): w, solver, nfe (spent), error (RMS distance of the final samples to the
    rk45 solve of the same guided ODE from the same start), distance (sliced W2 to the
    conditional target), max_norm (largest |x| of the final samples, in units of the data
    range: far above 1 means the run blew up without reaching inf), diverged_at and reason.
    Solvers not registered are skipped (so the list may name solvers still to come).
    executor: where the runs go (ex.sweeps.run): first the rk45 solve of each w, then every
    (w, solver); the same records on any. progress(done, total, cell, record) as in ex.sweeps.run,
    over the (w, solver) runs.
    """
    import functools

    from .. import solvers as _solvers
    from ..foundations.random import as_generator
    from . import sweeps

    rng = as_generator(seed)
    known = set(_solvers.names())
    chosen = [s for s in solvers if s in known]
    cond = conditional_target(target, label)
    target_draws = cond.sample(max(4 * n, 5000), rng)
    base = AnalyticModel(target, schedule)
    x_T = base.prior_sample(n, rng)
    ws = [float(w) for w in ws]
    setting = (target, schedule, label, thresholding, spacing, x_T)
    with sweeps.connect(executor) as where:  # one cluster for both phases
        refs = sweeps.run(ws, functools.partial(_guided_reference, setting), where)
        cells = [(w, ref, name) for w, ref in zip(ws, refs) for name in chosen]
        run = functools.partial(_guided_run, setting, nfe, seed, target_draws, data_range(target))
        return sweeps.run(cells, run, where, progress)


def _guided_reference(setting, w: float):
    """The rk45 final state of the guided ODE at scale w from x_T (None if it diverged)."""
    from ..foundations.timesteps import timesteps

    target, schedule, label, thresholding, spacing, x_T = setting
    model = guided_model(target, schedule, label, w, thresholding=thresholding)
    ref = _reference(model, x_T, timesteps(schedule, 1, spacing), rtol=1e-8, atol=1e-8)  # errors here are >= 1e-3
    return None if ref.diverged else np.asarray(ref.sample)


def _guided_run(setting, nfe, seed, target_draws, scale, cell) -> dict:
    """One (w, solver) record of guidance_sweep."""
    from .. import solvers as _solvers
    from ..foundations.timesteps import timesteps
    from .metrics import endpoint_error, sliced_wasserstein

    target, schedule, label, thresholding, spacing, x_T = setting
    w, ref, name = cell
    model = guided_model(target, schedule, label, w, thresholding=thresholding)
    steps = max(1, int(nfe) // (_solvers.info(name)["nfe_per_step"] or 1))
    traj = _sample(model, x_T, timesteps(schedule, steps, spacing), name, rng=np.random.default_rng([seed, 1]))
    rec = dict(w=float(w), solver=name, nfe=traj.nfe, diverged_at=traj.diverged_at,
               reason=traj.diverged_reason, error=np.nan, distance=np.nan, max_norm=np.inf)
    if not traj.diverged:
        x = traj.sample
        rec["max_norm"] = float(np.max(np.abs(x))) / scale
        if ref is not None:
            rec["error"] = endpoint_error(x, ref)
        rec["distance"] = sliced_wasserstein(x, target_draws, n_projections=64, rng=0)
    return rec
