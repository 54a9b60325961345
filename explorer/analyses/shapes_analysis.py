"""Reading generated Simple Shapes images (explorer.learned.datasets.shapes): which shape sits in which panel,
and the combinations the data never has, after "Understanding Hallucinations in Diffusion Models
through Mode Interpolation" (Aithal et al.), where a model trained on these images makes some with
two shapes in a panel.

Detection: threshold at 0 (background -1, shapes +1), 8-connected components, components smaller
than MIN_AREA_FRACTION of the smallest shape dropped as specks; each component is compared with the
three templates by intersection over union (maximised over every placement of the template: a full
2-D correlation). At 16-pixel panels a square and the pentagon overlap with IoU 0.77, and a slightly
eroded generated pentagon fits the square template better; so a component is read as its panel's
own shape when that fits (IoU >= MIN_IOU) and no other fits better by MARGIN, as another shape when
it fits clearly better, and as a "blob" when nothing reaches MIN_IOU.

Flags (what the training data never shows): "two in a panel" (2+ components in one panel), "wrong
shape" (a shape wholly inside another shape's panel), "across panels" (a component with pixels on both sides
of a panel border), "blob" (a component that is none of the shapes, e.g. two merged), "empty" (no
shape at all: the data drops empty images).

Then the paper's filter on image trajectories: the variance of the x0-prediction over the last
steps, averaged over pixels (explorer.analyses.hallucination.trajectory_variance), removes flagged images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage

from ..learned.datasets import SHAPES, shape_template
from . import hallucination as H

MIN_IOU = 0.65  # noisy real shapes (std 0.5) stay above 0.83; two merged squares fit nothing above 0.58
MARGIN = 0.1  # another shape must fit this much better than the panel's own to be read instead
MIN_AREA_FRACTION = 0.25
FLAGS = ("two in a panel", "wrong shape", "across panels", "blob", "empty")
_EIGHT = np.ones((3, 3), bool)


@dataclass
class Component:
    """One connected blob of shape pixels: its pixel count, bounding box (row0, col0, row1, col1;
    exclusive ends), the panels it touches, the best template and its IoU."""

    area: int
    box: tuple
    panels: tuple
    shape: str
    iou: float


@dataclass
class Analysis:
    """Per image: its components; counts (N, 3, 4) of components per panel (by the panel holding
    most of their pixels) and kind (SHAPES then "blob"); flags {name: (N,) bool}; flagged (N,) =
    any flag; presence (N, 3) bool = panel j holds SHAPES[j] (and nothing is flagged there)."""

    components: list
    counts: np.ndarray
    flags: dict
    flagged: np.ndarray
    presence: np.ndarray
    panel: int
    specks: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def _templates(panel: int) -> dict:
    return {name: shape_template(name, panel).astype(np.float64) for name in SHAPES}


def template_iou(mask: np.ndarray, templates: dict) -> dict:
    """{shape: IoU} of a component's mask (cropped to its box) with each template, at the best
    relative placement: IoU = I / (|mask| + |template| - I), I the 2-D cross-correlation."""
    m = mask.astype(np.float64)
    out = {}
    for name, tpl in templates.items():
        inter = _overlap_max(m, tpl)
        out[name] = float(inter / (m.sum() + tpl.sum() - inter))
    return out


def _overlap_max(m: np.ndarray, tpl: np.ndarray) -> float:
    """The largest sum(m * tpl) over every relative placement of the two (the maximum of the full 2-D
    cross-correlation, scipy.signal.correlate2d(m, tpl, "full").max()): here the masks are 0/1, so every sum is an
    exact integer, and this is that maximum exactly, without importing scipy.signal (about 1 s, with scipy.stats)."""
    th, tw = tpl.shape
    padded = np.pad(m, ((th - 1, th - 1), (tw - 1, tw - 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, tpl.shape)
    return float(np.einsum("ijkl,kl->ij", windows, tpl).max())


def read_component(ious: dict, own: str, min_iou: float = MIN_IOU, margin: float = MARGIN) -> tuple[str, float]:
    """(shape, IoU) a component in the panel of shape `own` is read as: its own shape if that fits
    (>= min_iou) and none fits better by margin; otherwise the best fit; "blob" if none reaches min_iou."""
    best = max(ious, key=ious.get)
    if ious[best] < min_iou:
        return "blob", ious[best]
    if ious[own] >= min_iou and ious[own] >= ious[best] - margin:
        return own, ious[own]
    return best, ious[best]


def _as_images(images) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"images must be grayscale (N, 1, H, W), got {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"images must have shape (N, 1, H, W) or (N, H, W), got {x.shape}")
    if x.shape[2] % 3:
        raise ValueError(f"images must be three panels wide (width a multiple of 3), got width {x.shape[2]}")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    return x


def analyse(images, min_iou: float = MIN_IOU, threshold: float = 0.0) -> Analysis:
    """Detect, name and count the shapes in each image (N, 1, H, 3 panel) and flag what the data
    never has (see the module's docstring)."""
    x = _as_images(images)
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    n, height, width = x.shape
    panel = width // 3
    templates = _templates(panel)
    min_area = MIN_AREA_FRACTION * min(t.sum() for t in templates.values())
    kinds = SHAPES + ("blob",)
    counts = np.zeros((n, 3, len(kinds)), np.int64)
    flags = {f: np.zeros(n, bool) for f in FLAGS}
    specks = np.zeros(n, np.int64)
    comps_all = []
    for i in range(n):
        labels, k = scipy.ndimage.label(x[i] > threshold, structure=_EIGHT)
        comps = []
        for j, sl in enumerate(scipy.ndimage.find_objects(labels)):
            mask = labels[sl] == j + 1
            area = int(mask.sum())
            if area < min_area:
                specks[i] += 1
                continue
            cols = np.flatnonzero(mask.any(axis=0)) + sl[1].start
            touched = tuple(int(p) for p in np.unique(cols // panel))
            per_panel = np.bincount(np.nonzero(mask)[1] + sl[1].start, minlength=width).reshape(3, panel).sum(1)
            home = int(np.argmax(per_panel))
            shape, iou = read_component(template_iou(mask, templates), SHAPES[home], min_iou)
            comps.append(Component(area, (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), touched, shape, iou))
            counts[i, home, kinds.index(shape)] += 1
            if len(touched) > 1:
                flags["across panels"][i] = True
            if shape == "blob":
                flags["blob"][i] = True
            elif len(touched) == 1 and SHAPES.index(shape) != home:
                flags["wrong shape"][i] = True
        comps_all.append(comps)
        flags["two in a panel"][i] = bool((counts[i].sum(axis=1) >= 2).any())
        flags["empty"][i] = not comps
    flagged = np.zeros(n, bool)
    for f in FLAGS:
        flagged |= flags[f]
    own = counts[:, np.arange(3), np.arange(3)]  # panel j's own shape
    presence = (own == 1) & (counts.sum(axis=2) == 1)
    return Analysis(comps_all, counts, flags, flagged, presence, panel, specks)


def summary(a: Analysis) -> dict:
    """Counts over the images: per flag (and any flag) how many images; per panel how many images
    hold 0, 1, 2+ components; per panel and kind how many components in all."""
    n = len(a.flagged)
    per_panel = a.counts.sum(axis=2)
    return {
        "n": n,
        "flagged": int(a.flagged.sum()),
        "flagged_rate": float(a.flagged.mean()) if n else float("nan"),
        "flags": {f: int(v.sum()) for f, v in a.flags.items()},
        "components_per_panel": {f"panel {j} ({SHAPES[j]})": [int((per_panel[:, j] == 0).sum()),
                                                             int((per_panel[:, j] == 1).sum()),
                                                             int((per_panel[:, j] >= 2).sum())] for j in range(3)},
        "kinds_per_panel": a.counts.sum(axis=0),  # (3 panels, SHAPES + blob)
        "specks": int(a.specks.sum()),
    }


def detection_accuracy(images, info, **options) -> dict:
    """Against the dataset's ground truth info["present"] (N, 3): the fraction of images whose
    three panels are all read right (presence matches, nothing flagged), the fraction of panels
    read right, and the fraction of (clean) images flagged."""
    a = analyse(images, **options)
    truth = np.asarray(info["present"], bool)
    right = a.presence == truth
    return {"images": float(np.mean(right.all(axis=1) & ~a.flagged)), "panels": float(right.mean()),
            "flagged": float(a.flagged.mean())}


# ------------------------------------------------------------------ the trajectory-variance filter on images


def sample_run(model, n: int, seed: int = 0, solver: str = "ddpm", n_steps: int = 100, keep: int = 50,
               progress=None, **options) -> H.Run:
    """n images from seeded prior noise down explorer.analyses.hallucination.ddpm_grid(n_steps), then the
    paper's last step (the x0-prediction at t = 0 is the sample). Keeps the last `keep`
    x0-predictions (float32 numpy (keep, N, C, H, W)) for the score; DDPM uses variance="beta"
    as the paper does."""
    import torch

    from ..solvers.sampling import sample

    ts, x_T, rng, options = _run_setup(model, n, seed, solver, n_steps, options)
    start = time.perf_counter()
    with torch.no_grad():
        traj = sample(model, x_T, ts, solver, rng=rng, **options)
        if traj.diverged:
            raise ValueError(f"the run diverged: {traj.diverged_reason}")
        last = model.denoise(traj.x[-1], float(ts[-1]))
    d = traj.denoised[-(int(keep) - 1):] if keep > 1 else traj.denoised[:0]
    as_np = (lambda v: v.detach().cpu().numpy()) if hasattr(last, "detach") else np.asarray
    denoised = np.concatenate([as_np(d).astype(np.float32), as_np(last)[None].astype(np.float32)], axis=0)
    return H.Run(samples=denoised[-1], denoised=denoised, t=ts[-len(denoised):], solver=solver,
                 options=dict(traj.options), wall_time=time.perf_counter() - start)


def _run_setup(model, n, seed, solver, n_steps, options):
    """sample_run's grid, prior draw, noise stream and solver options (run_start shares them)."""
    from ..foundations.random import as_generator

    ts = H.ddpm_grid(model.schedule, n_steps)
    x_T = model.prior_sample(int(n), as_generator(seed))
    options = dict(options)
    if solver == "ddpm":
        options.setdefault("variance", "beta")
    return ts, x_T, np.random.default_rng([int(seed), 1]), options


def run_start(model, n: int, seed: int = 0, solver: str = "ddpm", n_steps: int = 100, steps: int = 1,
              **options) -> np.ndarray:
    """The images (float32 numpy (n, C, H, W)) after the first `steps` steps of sample_run(model, n, seed,
    solver, n_steps): the same grid, prior draw and noise, stopped early. A step uses only the two times it
    steps between, so these are the states of the full run: a shipped run can be checked bit for bit at its
    start in a fraction of its time."""
    import torch

    from ..solvers.sampling import sample

    ts, x_T, rng, options = _run_setup(model, n, seed, solver, n_steps, options)
    H.check_start_steps(steps, ts)
    with torch.no_grad():
        traj = sample(model, x_T, ts[: int(steps) + 1], solver, rng=rng, **options)
    if traj.diverged:
        raise ValueError(f"the run diverged: {traj.diverged_reason}")
    x = traj.x[-1]
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)


def trajectory_variance(run_or_denoised, window: int = H.WINDOW) -> np.ndarray:
    """(N,) the paper's score on images: Var over the last `window` x0-predictions of each pixel,
    averaged over pixels (explorer.analyses.hallucination.trajectory_variance on (steps, N, C, H, W))."""
    d = run_or_denoised.denoised if isinstance(run_or_denoised, H.Run) else run_or_denoised
    return H.trajectory_variance(np.asarray(d, dtype=np.float64), window)


def filter_report(scores, flagged, threshold: float | None = None) -> dict:
    """The filter on images: flagged images removed and clean ones kept at `threshold` (default:
    the one maximising removed + kept on these images), with the whole trade-off curve."""
    scores, flagged = np.asarray(scores, np.float64), np.asarray(flagged, bool)
    if len(scores) != len(flagged):
        raise ValueError(f"scores ({len(scores)}) and flagged ({len(flagged)}) differ in length")
    if threshold is None:
        threshold = H.choose_threshold(scores, flagged) if flagged.any() and (~flagged).any() else float(np.median(scores))
    return {**H.filter_counts(scores, flagged, threshold), "curve": H.tradeoff(scores, flagged)}
