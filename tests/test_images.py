"""Image datasets and models: the digits and Simple Shapes sets, the exact empirical denoiser
(closed form, nearest image at small sigma, the point-mass limit of a Gaussian mixture)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import explorer as ex  # noqa: E402
from explorer import datasets, image_models  # noqa: E402


def test_digits_are_sklearn_digits_in_minus_one_one():
    images, labels = datasets.digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32 and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal((images[:, 0] + 1) * 8, load_digits().images)
    assert set(labels.tolist()) == set(range(10))


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
