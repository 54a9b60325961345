"""Image datasets and models: the digits and Simple Shapes sets, the exact empirical denoiser
(closed form, nearest image at small sigma, the point-mass limit of a Gaussian mixture), U-Net
training (resume equals an uninterrupted run), weights_only loading, every solver on an image
model, and the shipped models' samples (digits judged by a classifier, shapes crisp and in place)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import explorer as ex  # noqa: E402
from explorer import datasets, image_models, image_training  # noqa: E402


def test_digits_are_sklearn_digits_in_minus_one_one():
    images, labels = datasets.digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32 and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0
    from sklearn.datasets import load_digits

    d = load_digits()
    np.testing.assert_array_equal((images[:, 0] + 1) * 8, d.images)
    np.testing.assert_array_equal(images, (d.images.astype(np.float32) / 8.0 - 1.0)[:, None])
    np.testing.assert_array_equal(labels, d.target)
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    images[0] = 0.0  # each call hands out its own arrays (the file is read once)
    assert datasets.digits()[0][0].min() == -1.0


def test_digits_load_without_importing_sklearn():
    import subprocess
    import sys

    code = "import sys; from explorer.learned import datasets; x, y = datasets.digits(); print(x.shape, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(1797,", "1,", "8,", "8)", "False"], out


def _components(mask):
    """4-connected components of a boolean image, as a list of boolean masks."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    return [lab == k for k in range(1, n + 1)]


@given(seed=st.integers(0, 2**32 - 1), panel=st.sampled_from([12, 16, 21]))
def test_shapes_each_panel_holds_only_its_own_shape(seed, panel):
    images, info = datasets.shapes(20, seed=seed, panel=panel)
    assert images.shape == (20, 1, panel, 3 * panel) and images.dtype == np.float32
    assert set(np.unique(images).tolist()) <= {-1.0, 1.0}
    assert info["present"].any(1).all()  # the paper's set drops empty images
    for i in range(20):
        on = images[i, 0] > 0
        comps = _components(on)
        assert len(comps) == info["present"][i].sum()
        for j, name in enumerate(datasets.SHAPES):
            if not info["present"][i, j]:
                assert not on[:, j * panel:(j + 1) * panel].any()
                assert (info["top_left"][i, j] == -1).all()
                continue
            r, c = info["top_left"][i, j]
            tpl = datasets.shape_template(name, panel)
            h, w = tpl.shape
            # the shape sits wholly inside panel j, 1 pixel clear of its edges, and is exactly the template
            assert 1 <= r and r + h <= panel - 1 and j * panel + 1 <= c and c + w <= (j + 1) * panel - 1
            np.testing.assert_array_equal(on[r:r + h, c:c + w], tpl)
            assert on[:, j * panel:(j + 1) * panel].sum() == tpl.sum()


def test_shape_templates_are_distinct_and_paper_sized():
    tpls = {name: datasets.shape_template(name, 21) for name in datasets.SHAPES}
    assert tpls["square"].sum() == 64  # the paper's 8x8 square at its 21-pixel panel
    assert 40 <= tpls["triangle"].sum() <= 70 and 55 <= tpls["pentagon"].sum() <= 75
    small = [datasets.shape_template(name, 16) for name in datasets.SHAPES]
    assert len({(t.shape, t.tobytes()) for t in small}) == 3
    with pytest.raises(ValueError, match="shape"):
        datasets.shape_template("circle")


def test_shapes_presence_rates_and_seeded_reproducibility():
    _, info = datasets.shapes(4000, seed=1, drop_empty=False)
    np.testing.assert_allclose(info["present"].mean(0), 0.5, atol=0.03)
    assert not info["present"].any(1).all()  # empty images occur (1/8) when kept
    _, info = datasets.shapes(4000, seed=1)
    np.testing.assert_allclose(info["present"].mean(0), 4 / 7, atol=0.03)  # 0.5 / (1 - 1/8)
    # presence is independent across panels (up to the dropped empty image)
    both = (info["present"][:, 0] & info["present"][:, 2]).mean()
    assert abs(both - 2 / 7) < 0.03
    a, ia = datasets.shapes(50, seed=7)
    b, ib = datasets.shapes(50, seed=7)
    c, _ = datasets.shapes(50, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia["top_left"], ib["top_left"])
    assert not np.array_equal(a, c)
    # positions are spread over the panel, not fixed
    assert len({tuple(p) for p in ia["top_left"][:, 1] if p[0] >= 0}) > 10


@pytest.mark.parametrize("bad", [dict(n=-1), dict(n=2.5), dict(n=3, panel=4), dict(n=3, p=0.0), dict(n=3, margin=9)])
def test_shapes_bad_arguments_name_the_argument(bad):
    name = [k for k in bad if k != "n"][-1] if len(bad) > 1 else "n"
    with pytest.raises(ValueError, match=name):
        datasets.shapes(**bad)


# The empirical-optimal denoiser.

SCHED = image_models.cosine_schedule()


def _tiny_set(n=5, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 2, 3))


def _closed_form(y, x, a, s):
    yf, xf = y.reshape(len(y), -1), x.reshape(len(x), -1)
    d2 = ((xf[:, None, :] - a * yf[None]) ** 2).sum(-1)
    w = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * s * s))
    w /= w.sum(1, keepdims=True)
    return (w @ yf).reshape(x.shape)


@pytest.mark.parametrize("t", [0.0, 10.0, 200.0, 600.0, 999.0])
def test_empirical_equals_closed_form_numpy_and_torch(t):
    y = _tiny_set()
    model = image_models.EmpiricalModel(y, SCHED)
    x = np.random.default_rng(1).standard_normal((7, 1, 2, 3))
    a, s = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    ref = _closed_form(y, x, a, s)
    out = model.denoise(x, t)
    assert out.shape == x.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    xt = torch.as_tensor(x, dtype=torch.float32)
    out_t = model.denoise(xt, t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == xt.shape
    np.testing.assert_allclose(out_t.numpy(), _closed_form(y, xt.double().numpy(), a, s), atol=1e-6)
    # eps / score / velocity derived consistently
    np.testing.assert_allclose(model.eps(x, t), (x - a * ref) / s, rtol=1e-9, atol=1e-9)
    w = np.exp(model.log_weights(x, t))
    np.testing.assert_allclose(w.sum(1), 1.0)


def test_empirical_small_sigma_returns_nearest_training_image():
    images, _ = datasets.digits()
    y = images[:300]
    model = image_models.EmpiricalModel(y, SCHED)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, 300, 20)
    t = 0.0  # sigma(0) ~ 0.006: far below half the distance between any two training digits
    x = float(SCHED.alpha(t)) * y[pick] + 0.3 * rng.standard_normal((20, 1, 8, 8))
    out = model.denoise(x, t)
    idx, dist = model.nearest(x / float(SCHED.alpha(t)))
    np.testing.assert_array_equal(idx, pick)
    np.testing.assert_allclose(out, y[pick], atol=1e-6)
    # at sigma = 0 exactly the posterior is the nearest image
    zero = ex.schedules.VE(t_min=0.0, t_max=10.0)
    np.testing.assert_allclose(image_models.EmpiricalModel(y, zero).denoise(x, 0.0), y[pick], atol=0)


@given(seed=st.integers(0, 10_000), t=st.floats(5.0, 990.0))
def test_empirical_is_the_point_mass_limit_of_the_mixture(seed, t):
    y = _tiny_set(4, seed)
    flat = y.reshape(4, -1)
    gm = ex.GaussianMixture(flat, np.full((4, flat.shape[1]), 1e-12))  # diagonal covariances, tiny
    exact = ex.AnalyticModel(gm, SCHED)
    model = image_models.EmpiricalModel(y, SCHED)
    x = np.random.default_rng(seed + 1).standard_normal((6, 1, 2, 3))
    np.testing.assert_allclose(model.denoise(x, t).reshape(6, -1), exact.denoise(x.reshape(6, -1), t), atol=1e-6)


def test_empirical_model_contract_and_bad_input():
    y = _tiny_set()
    model = image_models.EmpiricalModel(y, SCHED, dataset="toy")
    assert model.image_shape == (1, 2, 3) and model.train_images().shape == (5, 1, 2, 3)
    x = model.prior_sample(4, rng=0)
    assert isinstance(x, torch.Tensor) and x.shape == (4, 1, 2, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x, model.prior_sample(4, rng=0))
    with pytest.raises(ValueError, match="x must have shape"):
        model.denoise(np.zeros((2, 5)), 10.0)
    with pytest.raises(ValueError, match="schedule"):
        image_models.EmpiricalModel(y, "cosine")
    with pytest.raises(ValueError, match="images"):
        image_models.EmpiricalModel(np.zeros(3), SCHED)


# Learned U-Nets: training (seeded, resumable), the shipped models, every solver on them.


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small networks: one thread is faster, and on shared cores much faster, than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(tmp_path, steps, resume=None, name="a"):
    return image_training.train("digits", steps=steps, batch_size=4, seed=5, warmup=2, progress=False,
                                architecture={"channels": [8, 16]}, checkpoint=tmp_path / f"{name}.ckpt",
                                checkpoint_every=2, resume=resume)


def test_resume_continues_to_the_same_weights(tmp_path):
    straight = _tiny(tmp_path, 6, name="straight")
    _tiny(tmp_path, 3, name="part")  # writes part.ckpt at step 2 and at the end (step 3)
    resumed = _tiny(tmp_path, 6, resume=tmp_path / "part.ckpt", name="part")
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history == resumed.history and len(resumed.history) == 6
    assert resumed.config["training"]["resumed_from"] == 3
    raw = torch.load(tmp_path / "part.ckpt", weights_only=True)
    raw_straight = torch.load(tmp_path / "straight.ckpt", weights_only=True)
    assert all(torch.equal(raw["state_dict"][k], raw_straight["state_dict"][k]) for k in raw["state_dict"])
    # the checkpoint's model is the run's model; a different seed is refused on resume
    ckpt_model = image_training.model_from_checkpoint(tmp_path / "part.ckpt")
    assert all(torch.equal(ckpt_model.net.state_dict()[k], b[k]) for k in b)
    with pytest.raises(ValueError, match="seed"):
        image_training.train("digits", steps=8, batch_size=4, seed=6, warmup=2, progress=False,
                             architecture={"channels": [8, 16]}, resume=tmp_path / "part.ckpt")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model = image_training.train("digits", steps=3, batch_size=4, seed=0, progress=False,
                                 architecture={"channels": [8, 16]})
    return image_models.load(image_training.save(model, path / "tiny.pt"))


def test_saved_model_loads_with_weights_only(tiny_model, tmp_path):
    model = tiny_model
    assert model.image_shape == (1, 8, 8) and model.dataset == "digits" and model.prediction == "v"
    assert model.schedule == image_models.cosine_schedule()
    np.testing.assert_array_equal(model.train_images(), datasets.digits()[0])
    x = model.prior_sample(3, rng=1)
    for t in [0.0, 12.5, 999.0]:
        a, s = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
        d, e = model.denoise(x, t), model.eps(x, t)
        torch.testing.assert_close(a * d + s * e, x, atol=1e-5, rtol=1e-5)  # x_t = alpha x0 + sigma eps
        dn = model.denoise(x.double().numpy(), t)
        assert isinstance(dn, np.ndarray) and dn.dtype == np.float64
        np.testing.assert_allclose(dn, d.double().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="x must have shape"):
        model.denoise(torch.zeros(2, 1, 4, 4), 10.0)
    # a path loads through the same load_pretrained as the shipped names
    path = image_training.save(model, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "config", "history"}
    loaded = ex.models.load_pretrained(str(path))
    assert isinstance(loaded, image_models.UNetModel) and loaded.config == model.config
    # the same network: the file's (float16) weights in both, so the same x0-predictions
    ours, theirs = model.net.state_dict(), loaded.net.state_dict()
    assert set(theirs) == set(ours) == set(blob["state_dict"])
    assert all(torch.equal(theirs[k], v.to(theirs[k].dtype)) and torch.equal(ours[k], theirs[k])
               for k, v in blob["state_dict"].items())
    for t in [12.5, 500.0]:
        assert torch.equal(loaded.denoise(x, t), model.denoise(x, t))


def _steps_for(solver, n):
    per = ex.solvers.info(solver)["nfe_per_step"] or 1
    return max(2, n // per)


@pytest.mark.parametrize("solver", [s for s in ex.solvers.names()])
def test_every_solver_runs_on_the_image_model(tiny_model, solver):
    x = tiny_model.prior_sample(3, rng=0)
    ts = ex.timesteps(tiny_model.schedule, _steps_for(solver, 6))
    options = {"rtol": 1e-2, "atol": 1e-2} if solver == "rk45" else {}
    traj = ex.sample(tiny_model, x, ts, solver, rng=0, **options)
    assert isinstance(traj.x, torch.Tensor) and traj.x.shape == (len(ts), 3, 1, 8, 8)
    assert traj.diverged_at is None and torch.isfinite(traj.x).all() and torch.isfinite(traj.denoised).all()


@pytest.mark.parametrize("solver", ["dpmpp-2m", "ddpm"])
def test_every_solver_runs_on_the_empirical_model_on_torch(solver):
    images, _ = datasets.digits()
    model = image_models.EmpiricalModel(images[:200], SCHED)
    traj = ex.sample(model, model.prior_sample(8, rng=0), ex.timesteps(SCHED, 25), solver, rng=0)
    # the memorising denoiser lands on training images
    _, dist = model.nearest(traj.x[-1])
    assert dist.max() < 0.1


# The shipped models.


SHIPPED = {"digits": (1, 8, 8), "shapes": (1, 16, 48)}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_image_models_load_with_weights_only(name):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / f"{name}.pt"
    assert path.stat().st_size < 5_000_000
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "config", "history"}
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    model = ex.models.load_pretrained(name)
    assert isinstance(model, image_models.UNetModel)
    assert model.name == name == model.dataset and model.image_shape == SHIPPED[name]
    assert model.schedule == image_models.cosine_schedule() and model.prediction == "v"
    assert len(model.history) == model.config["training"]["steps"] and model.config["training"]["threads"] == 1
    assert model.train_images().shape[1:] == SHIPPED[name]


# Measured on the shipped digits model (64 samples, dpmpp-2m, 20 steps, seed 0): classifier
# confidence 0.92 against 0.69 on pixel-shuffled digits, 0.72 on averages of two digits and
# 0.97 on held-out real digits.
SAMPLE_CONFIDENCE = 0.85


@pytest.fixture(scope="module")
def digit_samples():
    model = ex.models.load_pretrained("digits")
    traj = ex.sample(model, model.prior_sample(64, rng=0), ex.timesteps(model.schedule, 20), "dpmpp-2m")
    return traj.x[-1].numpy().clip(-1, 1)


def test_digit_samples_look_like_digits(digit_samples):
    """A logistic-regression digit classifier (fitted here in well under a second) is confident on
    the samples, far more than on pixel-shuffled digits or on averages of two digits (what a
    blurry model would make); the samples cover every class; none is a copy of a training image."""
    from sklearn.linear_model import LogisticRegression

    images, labels = datasets.digits()
    flat = images.reshape(len(images), -1)
    clf = LogisticRegression(max_iter=3000).fit(flat, labels)

    def confidence(x):
        return clf.predict_proba(x.reshape(len(x), -1)).max(1).mean()

    rng = np.random.default_rng(0)
    pick = rng.choice(len(images), 64, replace=False)
    shuffled = rng.permuted(flat[pick], axis=1)
    averages = (images[pick] + images[rng.choice(len(images), 64)]) / 2
    c = confidence(digit_samples)
    assert c > SAMPLE_CONFIDENCE and c > confidence(shuffled) + 0.15 and c > confidence(averages) + 0.1
    assert len(set(clf.predict(digit_samples.reshape(64, -1)).tolist())) == 10
    _, dist = image_models.EmpiricalModel(images, SCHED).nearest(digit_samples)
    _, dist_shuffled = image_models.EmpiricalModel(images, SCHED).nearest(shuffled)
    assert np.median(dist) < 0.5 * np.median(dist_shuffled)
    assert (dist > 0.5).all()  # generalises: no sample is (near) a training image


def test_shape_samples_are_crisp_shapes_in_their_panels():
    """Shipped shapes model, 64 samples: nearly binary pixels; in each panel either nothing or about
    one shape's worth of lit pixels (within 30% of its template); presence rates near the data's.
    (Which samples are hallucinations is explorer/analyses/shapes_analysis.py's job.)"""
    model = ex.models.load_pretrained("shapes")
    x = ex.sample(model, model.prior_sample(64, rng=0), ex.timesteps(model.schedule, 20), "dpmpp-2m").x[-1].numpy()
    assert (np.abs(np.abs(x) - 1) < 0.25).mean() > 0.95
    on = x[:, 0] > 0
    sizes = np.array([datasets.shape_template(name).sum() for name in datasets.SHAPES])
    counts = np.stack([on[:, :, 16 * j:16 * (j + 1)].sum((1, 2)) for j in range(3)], 1)
    plausible = ((counts == 0) | (np.abs(counts - sizes) <= 0.3 * sizes)).all(1)
    assert plausible.mean() >= 0.8
    _, info = datasets.shapes(5000, seed=0)
    np.testing.assert_allclose((counts > 0.5 * sizes).mean(0), info["present"].mean(0), atol=0.15)
