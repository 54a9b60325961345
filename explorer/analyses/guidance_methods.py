"""Every guidance method on one target, each against the distribution it intends: the sweep behind the
Guidance page and notebook 10.

Methods and what each intends (its "intended target"), with strength the knob that turns it up:
- CFG toward class c, scale w (tilted.py): p_w proportional to p(x | c)^(1 + w) p(x)^(-w); ODE (rk45) and
  SDE (DDPM ancestral) samples;
- minority guidance toward the rarest minority-score class, scale w (minority.py): p(x0 | rarest), with
  the exact class posterior and with the trained noisy classifier;
- SVDD with the exact soft value and SVDD-PM, M candidates, and reward-gradient guidance at the posterior
  mean (svdd.py), temperature alpha, strength 1 / alpha: p(x) exp(r(x) / alpha).
At strength 0 minority guidance, SVDD and gradient guidance are the unguided model (target p), and CFG
is the conditional model (target p(x | c)).

Gradient-Free Classifier Guidance (Shenoy et al., "Gradient-Free Classifier Guidance for Diffusion Model
Sampling") is not here: no official code is published, and the text reachable here (its abstract) says
only that a time-adaptive reference class and guidance scale are chosen at each step from a
classifier's inference-mode output, not by which rule; we do not guess it.

The default set-up's sweep ships in data/guidance/sweep.npz with the trained classifier
data/guidance/minority-classifier.pt, both made by `python -m explorer.analyses.guidance_methods`
(OMP_NUM_THREADS=1, about 2 minutes); tests/test_guidance_exact.py checks them against this code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from ..foundations import schedules as _schedules
from ..foundations import targets as _targets
from ..foundations.data_files import DATA_DIR
from ..foundations.mixture import GaussianMixture
from . import guidance as _guidance
from . import minority as _minority
from . import svdd as _svdd
from . import tilted as _tilted
from .hallucination import hallucination_rate
from .metrics import mode_coverage, sliced_wasserstein

IMBALANCED = "imbalanced-ring8"
METHODS = {
    "cfg-ode": "CFG, ODE",
    "cfg-sde": "CFG, SDE",
    "minority-exact": "minority guidance, exact classifier",
    "minority-learned": "minority guidance, trained classifier",
    "svdd-exact": "SVDD, exact value",
    "svdd-pm": "SVDD-PM",
    "gradient-pm": "reward gradient (posterior mean)",
}
SCALE_NAME = {"cfg": "w", "minority": "w", "svdd": "1/alpha", "gradient": "1/alpha"}
STRENGTHS = {"cfg": (0.0, 1.0, 2.0, 4.0, 8.0), "minority": (0.0, 0.5, 1.0, 2.0, 4.0),
             "svdd": (0.0, 0.5, 1.0, 2.0, 4.0), "gradient": (0.0, 0.5, 1.0, 2.0, 4.0)}
SVDD_M = 16
SWEEP_FILE = DATA_DIR / "guidance" / "sweep.npz"
CLASSIFIER_FILE = DATA_DIR / "guidance" / "minority-classifier.pt"
CLASSIFIER_STEPS = 3000


def family(method: str) -> str:
    """'cfg', 'minority', 'svdd' or 'gradient'."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method.split("-")[0]


def target_names() -> list[str]:
    return [IMBALANCED] + [n for n in _targets.names() if _targets.get(n).dim <= 2]


@dataclass(frozen=True)
class Setup:
    """Everything a sweep depends on but the method and strength (hashable, for caches)."""

    target: str = IMBALANCED
    schedule: str = "vp-linear"
    label: int = 3  # CFG's class
    reward: str = "linear"  # or "quadratic"
    angle: float = 225.0  # the reward's direction in degrees (1D: the sign of its cosine)
    n: int = 1000
    seed: int = 0

    def mixture(self) -> GaussianMixture:
        """The labelled target (the imbalanced ring's weights fall 8x around it; presets as guidance.labelled)."""
        if self.target == IMBALANCED:
            return _minority.imbalanced_ring()
        if self.target not in _targets.names():
            raise ValueError(f"target must be one of {target_names()}, got {self.target!r}")
        gm = _guidance.labelled(self.target)
        if gm.dim > 2:
            raise ValueError(f"target must be 1D or 2D, got D = {gm.dim}")
        return gm

    def sched(self):
        return _schedules.get(self.schedule)

    def reward_fn(self) -> _svdd.Reward:
        """Linear: r(x) = u.x, u the unit vector at `angle`; quadratic: r(x) = -|x - c|^2 / 2, c at `angle` on
        the circle through the farthest mode."""
        gm = self.mixture()
        th = np.radians(self.angle)
        u = np.array([np.cos(th), np.sin(th)])[: gm.dim]
        if gm.dim == 1:
            u = np.sign(u) + (u == 0)
        if self.reward == "linear":
            return _svdd.Reward(gm.dim, b=u)
        if self.reward == "quadratic":
            centre = gm.mean() + u * np.max(np.linalg.norm(gm.means - gm.mean(), axis=1))
            return _svdd.Reward(gm.dim, A=np.eye(gm.dim), c=centre)
        raise ValueError(f"reward must be 'linear' or 'quadratic', got {self.reward!r}")

    def check(self) -> "Setup":
        gm = self.mixture()
        if self.label not in _guidance.classes(gm):
            raise ValueError(f"label must be one of {_guidance.classes(gm)}, got {self.label!r}")
        if self.schedule not in _schedules.names():
            raise ValueError(f"schedule must be one of {_schedules.names()}, got {self.schedule!r}")
        if not 50 <= int(self.n) <= 20000:
            raise ValueError(f"n must lie in [50, 20000], got {self.n!r}")
        self.reward_fn()
        return self


def classes_for(setup: Setup) -> _minority.MinorityClasses:
    return _minority.MinorityClasses(setup.mixture(), setup.sched())


def check_strength(method: str, strength) -> float:
    """The strength checked against the method's range (a ValueError naming it otherwise)."""
    fam = family(method)
    high = {"cfg": _tilted.W_MAX, "minority": _minority.W_MAX}.get(fam, 1.0 / _svdd.ALPHA_MIN)
    return _tilted.check_scale(strength, SCALE_NAME[fam], high=high)


class Intended:
    """A method's intended target: exact draws, mode masses, and its density on a grid (for figures)."""

    def __init__(self, name: str, sample, mode_masses, grid, values):
        self.name, self.sample, self.mode_masses, self.grid, self.values = name, sample, mode_masses, grid, values


def intended(setup: Setup, method: str, strength: float, classes=None) -> Intended:
    """The distribution `method` at `strength` is meant to sample."""
    strength = check_strength(method, strength)
    fam, gm = family(method), setup.mixture()
    if fam == "cfg":
        p = _tilted.TiltedTarget(gm, setup.label, strength)
        name = f"p_w, w = {strength:g}: p(x | c = {setup.label})^{1 + strength:g} p(x)^{-strength:g}"
        return Intended(name, p.sample, p.mode_masses(), p.grid, p.values)
    if fam == "minority" and strength > 0:
        classes = classes or classes_for(setup)
        p = _minority.ReweightedTarget(classes, _minority._one_hot(classes.n_classes, classes.rarest))
        density = classes.mass / classes.grid.cell * p.ratio[classes.grid_classes]
        return Intended("p(x0 | rarest minority class)", p.sample, p.mode_masses(), classes.grid, density)
    if fam in ("svdd", "gradient") and strength > 0:
        mix = _svdd.tilted(gm, setup.reward_fn(), 1.0 / strength)[0]
        name = f"p(x) exp(r(x) / alpha), alpha = {1 / strength:g}"
    else:
        mix, name = gm, "the target p (unguided)"
    grid = _tilted.grid_for(gm)
    values = np.exp(mix.log_prob(grid.points))
    masses = mode_coverage(mix.sample(200_000, np.random.default_rng([setup.seed, 9])), gm)
    return Intended(name, mix.sample, masses, grid, values)


def run(setup: Setup, method: str, strength: float, classes=None, classifier=None) -> np.ndarray:
    """(n, D) the samples of `method` at `strength` (NaN rows if the run diverged)."""
    strength = check_strength(method, strength)
    gm, s, n, seed = setup.mixture(), setup.sched(), int(setup.n), int(setup.seed)
    fam = family(method)
    if fam == "cfg":
        traj = _tilted.cfg_samples(gm, s, setup.label, strength, n, seed, method[4:])
    elif fam == "minority":
        if method == "minority-learned" and classifier is None:
            raise ValueError("minority-learned needs a trained classifier")
        classes = classes or classes_for(setup)
        traj = _minority.guided_samples(classes, strength, n, seed, classifier if method == "minority-learned" else None)
    elif strength == 0:  # alpha = infinity: the unguided sampler
        return _svdd.svdd(gm, s, _svdd.Reward(gm.dim), 1.0, 1, n, seed)
    elif fam == "svdd":
        return _svdd.svdd(gm, s, setup.reward_fn(), 1.0 / strength, SVDD_M, n, seed, value=method[5:])
    else:
        return _svdd.gradient_samples(gm, s, setup.reward_fn(), 1.0 / strength, n, seed)
    return np.asarray(traj.sample) if not traj.diverged else np.full((n, gm.dim), np.nan)


def favoured(target_masses, base_weights) -> np.ndarray:
    """(K,) bool: the modes the intended target gives more mass than the unguided target."""
    return np.asarray(target_masses) > np.asarray(base_weights) + 1e-3


def measure(x, setup: Setup, want: Intended, draws=None) -> dict:
    """distance (sliced W2 to exact draws of the intended target), floor (tilted.floor: sets of n exact draws
    against the same),
    masses, target_masses, favoured (bool K), mass_favoured (samples' mass on the favoured modes),
    target_mass_favoured, base_mass_favoured, off_support (fraction beyond 3 std of every mode)."""
    gm, n = setup.mixture(), int(setup.n)
    rng = np.random.default_rng([setup.seed, 8])
    draws = want.sample(max(4 * n, 5000), rng) if draws is None else draws
    floor = _tilted.floor(want.sample, draws, n, rng)
    fav = favoured(want.mode_masses, gm.weights)
    out = dict(floor=floor, target_masses=np.asarray(want.mode_masses), favoured=fav,
               target_mass_favoured=float(np.sum(want.mode_masses[fav])), base_mass_favoured=float(gm.weights[fav].sum()),
               distance=np.nan, masses=np.full(gm.n_components, np.nan), mass_favoured=np.nan, off_support=np.nan)
    x = np.asarray(x)
    if np.all(np.isfinite(x)):
        masses = mode_coverage(x, gm)
        out.update(distance=sliced_wasserstein(x, draws, 64, 0), masses=masses, mass_favoured=float(masses[fav].sum()),
                   off_support=hallucination_rate(x, gm))
    return out


def jobs(setup: Setup, methods=tuple(METHODS), strengths=None, classifier=None) -> list[tuple[str, float]]:
    """The (method, strength) runs of a sweep (minority-learned only with a classifier)."""
    strengths = {**STRENGTHS, **(strengths or {})}
    methods = [m for m in methods if family(m) and (m != "minority-learned" or classifier is not None)]
    return [(m, float(v)) for m in methods for v in strengths[family(m)]]


def record(setup: Setup, method: str, strength: float, classes=None, classifier=None) -> dict:
    """One run of a sweep: method, strength, scale (its name), the fields of measure(), samples (float32)."""
    strength = check_strength(method, strength)
    want = intended(setup, method, strength, classes)
    x = run(setup, method, strength, classes, classifier)
    return dict(method=method, strength=strength, scale=SCALE_NAME[family(method)],
                **measure(x, setup, want), samples=np.asarray(x, dtype=np.float32))


def sweep(setup: Setup, methods=tuple(METHODS), strengths=None, classifier=None, progress=None) -> list[dict]:
    """Every method at every strength of its family (STRENGTHS unless given as {family: values}). One record
    per run: method, strength, scale (its name), the fields of measure(), samples (float32). minority-learned
    runs only with a classifier. progress(done, total, text) is called before each run."""
    setup.check()
    todo = jobs(setup, methods, strengths, classifier)
    classes = classes_for(setup) if any(family(m) == "minority" for m, _ in todo) else None
    out = []
    for k, (method, strength) in enumerate(todo):
        if progress is not None:
            progress(k, len(todo), f"{METHODS[method]} at {SCALE_NAME[family(method)]} = {strength:g}")
        out.append(record(setup, method, strength, classes, classifier))
    if progress is not None:
        progress(len(todo), len(todo), "done")
    return out


SVDD_ALPHAS = (1.0, 0.5)
SVDD_MS = (1, 2, 4, 8, 16, 32)


def svdd_candidates(setup: Setup, alphas=SVDD_ALPHAS, Ms=SVDD_MS, n: int | None = None, progress=None) -> list[dict]:
    """svdd.compare on the set-up's target and reward: SVDD (exact value, PM) per M, and gradient guidance,
    at each alpha (samples as float32)."""
    recs = _svdd.compare(setup.mixture(), setup.sched(), setup.reward_fn(), alphas, Ms, n=n or setup.n,
                         seed=setup.seed, progress=progress)
    return [{**r, "samples": None if r["samples"] is None else np.asarray(r["samples"], dtype=np.float32)} for r in recs]


def svdd_summary(records: list[dict]) -> str:
    """svdd_candidates' records of one alpha in a line: each SVDD value's distance at the fewest and the most
    candidates, the gradient methods' distances and the floor (markdown)."""
    if not records:
        return ""
    parts = []
    for method in ("svdd-exact", "svdd-pm"):
        rs = sorted((r for r in records if r["method"] == method), key=lambda r: r["M"])
        if rs:
            parts.append(f"{METHODS[method]} {rs[0]['distance']:.3f} at M = {rs[0]['M']} → {rs[-1]['distance']:.3f} "
                         f"at M = {rs[-1]['M']}")
    for method, name in (("gradient-pm", METHODS["gradient-pm"]), ("gradient-exact", "exact reward gradient")):
        parts += [f"{name} {r['distance']:.3f}" for r in records if r["method"] == method][:1]
    return (f"**Distance to p(x) exp(r(x)/α) at α = {records[0]['alpha']:g}** (floor {records[0]['floor']:.3f}): "
            + "; ".join(parts) + ".")


# The shipped default sweep and classifier.

def save(records: list[dict], setup: Setup, path=SWEEP_FILE, **extra_records):
    """Sweep records (and any other lists of records, by name) as one .npz without pickle: the array
    fields of record i of list `name` under '<name>/<i>/<field>', everything else as JSON."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lists = {"sweep": records, **extra_records}
    arrays, meta = {}, {"setup": asdict(setup)}
    for name, recs in lists.items():
        meta[name] = []
        for i, r in enumerate(recs):
            meta[name].append({k: v for k, v in r.items() if not isinstance(v, np.ndarray)})
            arrays.update({f"{name}/{i}/{k}": v for k, v in r.items() if isinstance(v, np.ndarray)})
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)
    return path


def load(path=SWEEP_FILE, name: str = "sweep") -> tuple[Setup, list[dict]]:
    """(setup, records of list `name`) written by save()."""
    with np.load(path, allow_pickle=False) as blob:
        meta = json.loads(str(blob["meta"]))
        records = []
        for i, r in enumerate(meta[name]):
            prefix = f"{name}/{i}/"
            records.append({**r, **{k[len(prefix):]: blob[k] for k in blob.files if k.startswith(prefix)}})
    return Setup(**meta["setup"]), records


def shipped_classifier(setup: Setup):
    """The trained classifier shipped for the default set-up's target and schedule, or None."""
    if (setup.target, setup.schedule) != (Setup.target, Setup.schedule) or not CLASSIFIER_FILE.exists():
        return None
    from ..learned import classifier as _classifier

    return _classifier.load(CLASSIFIER_FILE, setup.sched())


def classifier_extra(classes: _minority.MinorityClasses) -> dict:
    """What the shipped classifier's labels mean, stored with it: a file whose thresholds differ from the
    code's is stale."""
    return {"target": Setup.target, "schedule": Setup.schedule, "t": classes.t,
            "thresholds": classes.thresholds.tolist(), "n_classes": classes.n_classes}


def main(argv=None) -> None:
    """Remake data/guidance/: the classifier (trained on the default set-up) and the default sweep."""
    import argparse

    from ..learned import classifier as _classifier

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--steps", type=int, default=CLASSIFIER_STEPS, help="classifier training steps")
    parser.add_argument("--skip-classifier", action="store_true", help="reuse the shipped classifier")
    args = parser.parse_args(argv)
    setup = Setup()
    classes = classes_for(setup)
    if not args.skip_classifier:
        clf = _minority.train_classifier(classes, steps=args.steps, seed=setup.seed, progress=True)
        _classifier.save(clf, CLASSIFIER_FILE, extra=classifier_extra(classes))
        print(f"wrote {CLASSIFIER_FILE} (final loss {clf.config['final_loss']:.4f}, {clf.config['seconds']} s)")
    clf = shipped_classifier(setup)
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc="sweep")

    def progress(done, total, text):
        bar.total = total
        bar.n = done
        bar.set_description(text)
        bar.refresh()

    records = sweep(setup, classifier=clf, progress=progress)
    bar.close()
    svdd_records = svdd_candidates(setup)
    agreement = _minority.classifier_agreement(classes, clf, seed=setup.seed)
    path = save(records, setup, svdd=svdd_records, agreement=agreement)
    print(f"wrote {path} ({len(records)} + {len(svdd_records)} runs, classifier against the exact posterior at "
          f"{len(agreement)} noise levels)")


if __name__ == "__main__":
    main()
