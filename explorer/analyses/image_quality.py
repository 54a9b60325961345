"""Sample quality of image models on a CPU, in seconds: a Frechet distance in the feature space of a
small classifier trained here on the same data (the idea of FID, Heusel et al., "GANs Trained by a
Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", with Inception replaced by a CNN
that fits the 8x8 digits and the Simple Shapes), and the distance of each sample to its nearest
training image (memorisation: the empirical-optimal denoiser's samples ARE training images).

The classifier: digits -> its 10 classes; shapes -> which of the three panels hold their shape
(three independent bits) and where (the shape's centre in its panel), so its features see both. Features are its penultimate layer (FEATURES wide). Its weights are
shipped in data/classifiers/<dataset>.pt (made by `python -m explorer.analyses.image_quality`, seeded) and
load with weights_only=True; train_classifier re-makes them in seconds.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from ..foundations.data_files import DATA_DIR
from ..learned.mlp import torch_threads  # noqa: F401  (one torch thread for small nets; used by the Images page)
from ..foundations.random import as_generator

DATASETS = ("digits", "shapes")
CLASSIFIER_DIR = DATA_DIR / "classifiers"
FEATURES = 64
SHAPES_TRAIN = 4000  # Simple Shapes images the shapes classifier trains on (seed 1: not the models' seed-0 set)


# ------------------------------------------------------------------ data


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return dataset


def _as_images(images, name: str = "images") -> np.ndarray:
    """(N, C, H, W) float32 numpy from numpy or torch; ValueError on a wrong shape or non-finite values."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return x


def labelled_data(dataset: str, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, H, W) in [-1, 1], targets): digits -> (1797,) int classes; shapes ->
    (SHAPES_TRAIN, 9) float: presence of each panel's shape (3), then its centre (row, column)
    in the panel scaled to [-1, 1] (6; 0 where absent), from a seeded draw."""
    from ..learned import datasets

    if _check_dataset(dataset) == "digits":
        images, labels = datasets.digits()
        return np.asarray(images, np.float32), np.asarray(labels, np.int64)
    images, info = datasets.shapes(SHAPES_TRAIN, seed=seed)
    panel, present = info["panel"], info["present"]
    centre = info["top_left"] + (np.asarray(info["size"]) - 1) / 2.0  # (N, 3, 2) in image pixels
    centre[..., 1] -= np.arange(3)[None, :] * panel  # column within its panel
    where = np.where(present[..., None], 2.0 * centre / (panel - 1) - 1.0, 0.0).reshape(len(images), 6)
    return np.asarray(images, np.float32), np.concatenate([present, where], axis=1).astype(np.float32)


# ------------------------------------------------------------------ the classifier


class Classifier(nn.Module):
    """Three 3x3 convolutions (the last two stride 2), average-pooled to a coarse grid (pool), a
    FEATURES-wide layer (the feature space), a linear head (n_out logits)."""

    def __init__(self, n_out: int, pool: tuple[int, int], width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(tuple(pool)), nn.Flatten(),
            nn.Linear(2 * width * pool[0] * pool[1], FEATURES), nn.SiLU(),
        )
        self.head = nn.Linear(FEATURES, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def _pool(shape: tuple[int, int]) -> tuple[int, int]:
    """A 2-row grid with as many columns as the aspect ratio asks (8x8 -> 2x2, 32x96 -> 2x6)."""
    h, w = shape
    return 2, max(2, int(round(2 * w / h)))


def _loss(dataset: str, logits, y):
    """digits: cross-entropy on the class. shapes: binary cross-entropy on each panel's presence
    plus the squared error of the predicted centre where the shape is present."""
    if dataset == "digits":
        return nn.functional.cross_entropy(logits, y)
    present = y[:, :3]
    mask = present.repeat_interleave(2, dim=1)
    where = (mask * (logits[:, 3:] - y[:, 3:]) ** 2).sum() / mask.sum().clamp(min=1.0)
    return nn.functional.binary_cross_entropy_with_logits(logits[:, :3], present) + where


def train_classifier(dataset: str, seed: int = 0, epochs: int | None = None, batch_size: int = 128,
                     lr: float = 3e-3, progress=None) -> Classifier:
    """Train the dataset's classifier with Adam (cosine learning-rate decay) on clean images (no
    noise augmentation: its features must move when samples get noisier). Runs on one thread (the
    net is tiny; more threads only contend on a shared machine), restoring the count afterwards.
    progress(fraction, message) is called once per epoch."""
    with torch_threads(1):
        return _train(dataset, seed, epochs, batch_size, lr, progress)


def _train(dataset, seed, epochs, batch_size, lr, progress) -> Classifier:
    images, targets = labelled_data(_check_dataset(dataset))
    epochs = int(epochs or (30 if dataset == "digits" else 4))
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    width = 32 if dataset == "digits" else 16  # shapes are 12x bigger: a narrower net keeps features cheap
    net = Classifier(10 if dataset == "digits" else targets.shape[1], _pool(images.shape[2:]), width)
    x, y = torch.from_numpy(images), torch.from_numpy(targets)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(x) / batch_size))
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = _loss(dataset, net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    net.eval()
    net.config = {"dataset": dataset, "n_out": net.head.out_features, "pool": list(_pool(images.shape[2:])), "width": width,
                  "image_shape": list(images.shape[1:]), "seed": int(seed), "epochs": epochs}
    return net


def save_classifier(net: Classifier, path) -> Path:
    """Write {"state_dict", "config"} (plain tensors and Python: loads with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "config": net.config}, path)
    return path


@lru_cache(maxsize=4)
def classifier(dataset: str) -> Classifier:
    """The shipped classifier of a dataset (data/classifiers/<dataset>.pt), in eval mode."""
    path = CLASSIFIER_DIR / f"{_check_dataset(dataset)}.pt"
    if not path.exists():
        raise ValueError(f"no classifier shipped for {dataset!r} at {path}; make it with "
                         f"`python -m explorer.analyses.image_quality {dataset}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = blob["config"]
    net = Classifier(cfg["n_out"], tuple(cfg["pool"]), cfg["width"])
    net.load_state_dict(blob["state_dict"])
    net.config = cfg
    return net.eval()


def _net_for(dataset, images: np.ndarray) -> Classifier:
    net = dataset if isinstance(dataset, nn.Module) else classifier(dataset)
    if list(images.shape[1:]) != list(net.config["image_shape"]):
        raise ValueError(f"images have shape {tuple(images.shape[1:])} per image; the {net.config['dataset']} "
                         f"classifier takes {tuple(net.config['image_shape'])}")
    return net


@torch.no_grad()
def features(images, dataset, batch_size: int = 1024) -> np.ndarray:
    """(N, FEATURES) float64: the classifier's penultimate layer on images (N, C, H, W).
    dataset: a name in DATASETS or a Classifier."""
    x = _as_images(images)
    net = _net_for(dataset, x)
    out = [net.body(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros((0, FEATURES))


@torch.no_grad()
def predict(images, dataset) -> np.ndarray:
    """digits: (N,) predicted class; shapes: (N, 3) bool predicted presence per panel."""
    x = _as_images(images)
    net = _net_for(dataset, x)
    logits = net(torch.from_numpy(x))
    return logits.argmax(1).numpy() if net.config["dataset"] == "digits" else (logits[:, :3] > 0).numpy()


# ------------------------------------------------------------------ Frechet distance


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix by its eigendecomposition (tiny negative
    eigenvalues from rounding are set to 0)."""
    w, v = scipy.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_moments(mu1, cov1, mu2, cov2) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2): the 2-Wasserstein distance squared
    between N(mu1, C1) and N(mu2, C2). The cross term uses the symmetric PSD matrix
    C1^1/2 C2 C1^1/2 (same eigenvalues as C1 C2), so every square root is of a PSD matrix."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = len(mu1)
    if mu2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError(f"moments disagree in shape: mu1 {mu1.shape}, cov1 {c1.shape}, mu2 {mu2.shape}, cov2 {c2.shape}")
    c1, c2 = 0.5 * (c1 + c1.T), 0.5 * (c2 + c2.T)
    s1 = _sqrt_psd(c1)
    cross = np.sqrt(np.clip(scipy.linalg.eigvalsh(s1 @ c2 @ s1), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * cross, 0.0))


def moments(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (ddof 1) of features (N, D), N >= 2."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(images_a, images_b, dataset) -> float:
    """Frechet distance between two image sets in the classifier's feature space: the Gaussians
    fitted to each set's features (see frechet_from_moments). 0 for identical sets; like FID it
    is biased upward for small sets, so compare sets of equal size."""
    fa, fb = features(images_a, dataset), features(images_b, dataset)
    return frechet_from_moments(*moments(fa), *moments(fb))


# ------------------------------------------------------------------ memorisation


def nearest_training(samples, train_images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(distance (N,), index (N,)) of each sample's nearest training image: distance is the RMS
    pixel difference sqrt(|x - y|^2 / D) (0: the sample is a training image)."""
    x = _as_images(samples, "samples").reshape(len(samples), -1).astype(np.float64)
    y = _as_images(train_images, "train_images").reshape(len(train_images), -1).astype(np.float64)
    if x.shape[1] != y.shape[1] or len(y) == 0:
        raise ValueError(f"samples have {x.shape[1]} pixels, train_images {y.shape[1]} (and need at least one)")
    y2 = (y * y).sum(1)
    index = np.empty(len(x), np.int64)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        index[i:i + batch_size] = np.argmin(y2[None, :] - 2.0 * xb @ y.T, axis=1)  # |x|^2 is the same per row
    dist = np.sqrt(((x - y[index]) ** 2).mean(axis=1))  # recomputed directly: no cancellation near 0
    return dist, index


def nearest_training_distance(samples, train_images) -> np.ndarray:
    """(N,) RMS pixel distance of each sample to its nearest training image."""
    return nearest_training(samples, train_images)[0]


# ------------------------------------------------------------------ quality against NFE


def sample_images(model, n: int, solver: str, nfe: int, seed: int = 0, spacing: str = "uniform-lambda", **options):
    """n images from one seeded prior draw with `solver` at (about) `nfe` model evaluations
    (nfe // nfe_per_step steps); returns the Trajectory (torch tensors)."""
    from .experiments import steps_for
    from ..solvers.sampling import sample
    from ..foundations.timesteps import timesteps

    n_steps = steps_for(solver, int(nfe)) or 1
    x_T = model.prior_sample(int(n), as_generator(seed))
    ts = timesteps(model.schedule, n_steps, spacing)
    noise = np.random.default_rng([int(seed), 1])  # the solver's own noise: a stream apart from the prior's
    with torch.no_grad():
        return sample(model, x_T, ts, solver, rng=noise, **options)


def quality_vs_nfe(model, solvers, nfes, dataset: str, reference_images, n: int = 256, seed: int = 0,
                   spacing: str = "uniform-lambda", train_images=None, progress=None, executor=None) -> list[dict]:
    """For every solver (name or (name, options)) and NFE: FD of n samples (same prior draw for
    all) to reference_images in the classifier's feature space, the mean nearest-training-image
    distance (if train_images are given), the NFE spent and the wall time. NFE values a solver
    cannot spend (fewer than one step, or not a multiple of its per-step cost) are skipped.
    progress(fraction, message) after every run. executor: where the runs go (ex.sweeps.run: None
    in-process, "local-cluster", a Dask Client or address; the model travels to the workers, which
    load the classifier themselves); the same records on any."""
    import functools

    from . import sweeps
    from .experiments import _spec, steps_for

    ref = moments(features(reference_images, dataset))
    specs = [_spec(s) for s in solvers]
    grid = [(name, options, nfe) for name, options in specs for nfe in sorted(int(v) for v in nfes)]
    position = {id(cell): i + 1 for i, cell in enumerate(grid)}  # what the sequential count said
    cells = [cell for cell in grid if steps_for(cell[0], cell[2]) is not None]
    run = functools.partial(_quality_run, model, n, seed, spacing, dataset, ref, train_images)

    reached = [0]

    def report(done, total, cell, rec):  # on a cluster cells finish out of order: the bar never goes back
        reached[0] = max(reached[0], position[id(cell)])
        if progress:
            progress(reached[0] / len(grid), f"{cell[0]} at {cell[2]} NFE")

    return sweeps.run(cells, run, executor, report)


def _quality_run(model, n, seed, spacing, dataset, ref, train_images, cell) -> dict:
    """One record of quality_vs_nfe: one solver at one NFE."""
    name, options, nfe = cell
    start = time.perf_counter()
    traj = sample_images(model, n, name, nfe, seed, spacing, **options)
    seconds = time.perf_counter() - start
    rec = {"solver": name, "options": options, "nfe": int(traj.nfe), "n_steps": traj.n_steps,
           "seconds": seconds, "diverged": traj.diverged}
    if traj.diverged:
        rec.update(fd=float("nan"), nearest=float("nan"))
    else:
        x = _as_images(traj.x[-1])
        rec["fd"] = frechet_from_moments(*moments(features(x, dataset)), *ref)
        rec["nearest"] = float(nearest_training_distance(x, train_images).mean()) if train_images is not None else float("nan")
    return rec


if __name__ == "__main__":  # python -m explorer.analyses.image_quality [digits shapes]
    import sys

    torch.set_num_threads(1)
    for name in sys.argv[1:] or DATASETS:
        t0 = time.perf_counter()
        net = train_classifier(name, progress=lambda f, msg: print(f"  {name}: {msg}", flush=True))
        net.config["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: trained in {net.config['seconds']} s -> {save_classifier(net, CLASSIFIER_DIR / f'{name}.pt')}")
