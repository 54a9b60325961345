"""Sample quality for image models (explorer.analyses.image_quality) and the Simple Shapes reader
(explorer.analyses.shapes_analysis): the Frechet distance is the closed form on Gaussians, symmetric, 0 on a
set against itself and grows with noise; the empirical-optimal denoiser memorises (nearest training
image at ~0); the shapes detector reads the dataset's ground truth, and flags the combinations the
data never has."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer import datasets, image_models, image_quality as Q, shapes_analysis as S


@pytest.fixture(scope="module")
def digits():
    return datasets.digits()


@pytest.fixture(scope="module")
def shapes_set():
    return datasets.shapes(600, seed=11)


# ------------------------------------------------------------------ Frechet distance


def _psd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_frechet_of_diagonal_gaussians_is_the_closed_form(d, seed):
    # W2^2 between N(m1, diag a) and N(m2, diag b) = |m1 - m2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(seed)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.01, 4, d), rng.uniform(0.01, 4, d)
    exact = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert Q.frechet_from_moments(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(exact, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_frechet_is_symmetric_and_matches_the_general_formula(d, seed):
    rng = np.random.default_rng(seed)
    m1, m2, c1, c2 = rng.standard_normal(d), rng.standard_normal(d), _psd(rng, d), _psd(rng, d)
    ab, ba = Q.frechet_from_moments(m1, c1, m2, c2), Q.frechet_from_moments(m2, c2, m1, c1)
    assert ab == pytest.approx(ba, rel=1e-9)
    # tr sqrt(C1 C2) through scipy's general (Schur) square root of the non-symmetric product
    general = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert ab == pytest.approx(general, rel=1e-7)
    assert Q.frechet_from_moments(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9 * np.trace(c1))


def test_frechet_of_samples_converges_to_the_gaussians():
    rng = np.random.default_rng(0)
    c1, c2 = _psd(rng, 3), _psd(rng, 3)
    m1, m2 = np.zeros(3), np.array([1.0, -0.5, 2.0])
    exact = Q.frechet_from_moments(m1, c1, m2, c2)
    x = rng.multivariate_normal(m1, c1, 200_000)
    y = rng.multivariate_normal(m2, c2, 200_000)
    assert Q.frechet_from_moments(*Q.moments(x), *Q.moments(y)) == pytest.approx(exact, rel=0.02)


def test_frechet_refuses_bad_input(digits):
    with pytest.raises(ValueError, match="shape"):
        Q.frechet_from_moments(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="dataset"):
        Q.frechet_distance(digits[0], digits[0], "cifar")
    with pytest.raises(ValueError, match="classifier takes"):
        Q.frechet_distance(digits[0], digits[0], "shapes")
    with pytest.raises(ValueError, match="NaN"):
        Q.features(np.full((3, 1, 8, 8), np.nan), "digits")


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_feature_frechet_is_zero_on_itself_and_grows_with_noise(name, digits, shapes_set):
    x = (digits[0] if name == "digits" else shapes_set[0])[:400]
    assert Q.frechet_distance(x, torch.from_numpy(x), name) == pytest.approx(0.0, abs=1e-6)
    z = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    fd = [Q.frechet_distance(x, x + s * z, name) for s in (0.0, 0.05, 0.2, 0.8)]
    assert np.all(np.diff(fd) > 0), fd
    a, b = x[: len(x) // 2], x[len(x) // 2:] + 0.2 * z[len(x) // 2:]
    assert Q.frechet_distance(a, b, name) == pytest.approx(Q.frechet_distance(b, a, name), rel=1e-6)


# ------------------------------------------------------------------ the classifiers


def test_shipped_classifiers_read_their_data(digits):
    x, y = digits
    assert np.mean(Q.predict(x, "digits") == y) > 0.99
    images, info = datasets.shapes(500, seed=123)  # a draw the classifier never saw
    assert np.mean(np.all(Q.predict(images, "shapes") == info["present"], axis=1)) > 0.99
    assert Q.features(x[:5], "digits").shape == (5, Q.FEATURES)


def test_a_short_retraining_is_seeded_and_learns():
    before = torch.get_num_threads()
    a = Q.train_classifier("digits", seed=3, epochs=1)
    b = Q.train_classifier("digits", seed=3, epochs=1)
    assert torch.get_num_threads() == before  # trained on one thread, the count restored
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x, y = Q.labelled_data("digits")
    assert np.mean(Q.predict(x, a) == y) > 0.7  # one epoch; the shipped 30-epoch one reads all of them


# ------------------------------------------------------------------ memorisation


def test_nearest_training_distance(digits):
    x = digits[0]
    d, idx = Q.nearest_training(x[:200], x)
    assert np.all(d == 0) and np.array_equal(idx, np.arange(200))
    rng = np.random.default_rng(0)
    noisy = (x[:50] + 0.1 * rng.standard_normal(x[:50].shape)).astype(np.float32)
    brute = np.sqrt(((noisy.reshape(50, 1, -1).astype(np.float64) - x.reshape(1, len(x), -1)) ** 2).mean(-1)).min(1)
    np.testing.assert_allclose(Q.nearest_training_distance(noisy, x), brute, rtol=1e-10)
    with pytest.raises(ValueError, match="pixels"):
        Q.nearest_training(x, x[:, :, :4])


def test_the_empirical_optimum_memorises_and_reaches_the_data_floor(digits):
    x = digits[0]
    model = image_models.EmpiricalModel(x, image_models.cosine_schedule(), dataset="digits")
    recs = Q.quality_vs_nfe(model, ["ddim"], [2, 20], "digits", x, n=128, train_images=x)
    few, many = recs
    assert (few["nfe"], many["nfe"]) == (2, 20)
    assert many["fd"] < few["fd"]
    assert many["nearest"] < 0.02  # its samples are training images (pixels in [-1, 1])
    # 128 real digits against all of them: the finite-sample floor the memoriser sits at
    floor = Q.frechet_distance(x[np.random.default_rng(0).permutation(len(x))[:128]], x, "digits")
    assert many["fd"] < 3 * floor, (many["fd"], floor)


# ------------------------------------------------------------------ the shapes reader


def test_detector_reads_the_ground_truth(shapes_set):
    images, info = shapes_set
    clean = S.detection_accuracy(images, info)
    assert clean == {"images": 1.0, "panels": 1.0, "flagged": 0.0}
    noisy = images + 0.4 * np.random.default_rng(2).standard_normal(images.shape)  # ~0.6% of pixels flip
    light = S.detection_accuracy(noisy, info)
    assert light["images"] >= 0.99 and light["flagged"] <= 0.01, light


def _blank(n=1):
    return np.full((n, 1, 16, 48), -1.0)


def _put(img, name, row, col):
    t = datasets.shape_template(name, 16)
    img[0, row:row + t.shape[0], col:col + t.shape[1]][t] = 1.0


def test_detector_flags_what_the_data_never_has():
    cases = {}
    img = _blank()[0]; _put(img, "square", 1, 17); _put(img, "square", 9, 25); cases["two in a panel"] = img
    img = _blank()[0]; _put(img, "triangle", 4, 36); cases["wrong shape"] = img
    img = _blank()[0]; _put(img, "square", 4, 37); cases["wrong shape "] = img  # square vs pentagon: IoU 0.77
    img = _blank()[0]; _put(img, "square", 4, 13); cases["across panels"] = img
    img = _blank()[0]; _put(img, "square", 2, 18); _put(img, "square", 5, 21); cases["blob"] = img
    cases["empty"] = _blank()[0]
    img = _blank()[0]; _put(img, "triangle", 3, 3); _put(img, "pentagon", 4, 36); cases[None] = img
    a = S.analyse(np.stack(list(cases.values())))
    for i, flag in enumerate(cases):
        raised = {f for f in S.FLAGS if a.flags[f][i]}
        assert raised == ({flag.strip()} if flag else set()), (flag, raised)
    assert a.counts[0, 1, 1] == 2  # two squares counted in the square's panel
    assert np.array_equal(a.presence[-1], [True, False, True])
    s = S.summary(a)
    assert s["flagged"] == 6 and s["flags"]["empty"] == 1 and s["flags"]["wrong shape"] == 2
    with pytest.raises(ValueError, match="three panels"):
        S.analyse(np.zeros((2, 1, 16, 47)))


GENERATED_PENTAGON = """
######.
#######
######.
######.
#####..
..###..
"""  # thresholded from a learned shapes model's sample, in the pentagon's panel


def test_a_generated_pentagon_is_still_a_pentagon():
    # at 16-pixel panels this blocky pentagon fits the square template better (0.86 against 0.82):
    # in the pentagon's panel it is read as the pentagon, not as a square in the wrong panel
    mask = np.array([[c == "#" for c in row] for row in GENERATED_PENTAGON.split()])
    ious = S.template_iou(mask, S._templates(16))
    assert ious["square"] > ious["pentagon"] >= S.MIN_IOU
    img = _blank()
    img[0, 0, 5:5 + mask.shape[0], 37:37 + mask.shape[1]][mask] = 1.0
    a = S.analyse(img)
    assert not a.flagged[0] and a.components[0][0].shape == "pentagon"
    img[0, 0, :, 32:] = -1.0
    img[0, 0, 5:5 + mask.shape[0], 21:21 + mask.shape[1]][mask] = 1.0  # the same blob in the square's panel
    assert S.analyse(img).components[0][0].shape == "square"


def test_trajectory_variance_filter_on_images():
    images, _ = datasets.shapes(200, seed=0)
    model = image_models.EmpiricalModel(images, image_models.cosine_schedule(), dataset="shapes")
    run = S.sample_run(model, 24, seed=5, n_steps=40, keep=12)
    assert run.denoised.shape == (12, 24, 1, 16, 48) and np.array_equal(run.samples, run.denoised[-1])
    a = S.analyse(run.samples)
    assert not a.flagged.any()  # the memoriser returns training images: nothing the data lacks
    scores = S.trajectory_variance(run, window=10)
    # the memoriser's x0-prediction has settled on one training image over the kept steps (t <= 282): zero
    assert scores.shape == (24,) and np.array_equal(scores, np.zeros(24))
    # on known x0-predictions: each image's pixel variance over the window's steps, averaged over its pixels
    d = np.zeros((3, 2, 1, 1, 2))
    d[:, 1, 0, 0, 0] = [5.0, 0.0, 1.0]  # image 1, pixel 0; every other pixel stays put
    np.testing.assert_allclose(S.trajectory_variance(d, window=2), [0.0, 0.25 / 2], rtol=1e-15)
    np.testing.assert_allclose(S.trajectory_variance(d, window=3), [0.0, np.var([5.0, 0.0, 1.0]) / 2], rtol=1e-15)
    flagged = np.arange(24) < 6
    rep = S.filter_report(np.where(flagged, 1.0, 0.1), flagged)
    assert rep["removed_fraction"] == 1.0 and rep["kept_fraction"] == 1.0


def test_template_overlap_is_scipys_full_correlation():
    """The overlap template_iou maximises is scipy.signal.correlate2d(mask, template, "full").max(), exactly, for
    random masks of every shape against each template, and the module reads images without importing scipy.signal."""
    import subprocess
    import sys

    import scipy.signal

    rng = np.random.default_rng(0)
    templates = S._templates(16)
    for _ in range(300):
        mask = rng.random(tuple(rng.integers(1, 20, size=2))) < rng.random()
        for tpl in templates.values():
            want = scipy.signal.correlate2d(mask.astype(np.float64), tpl, mode="full").max()
            assert S._overlap_max(mask.astype(np.float64), tpl) == want
    code = ("import sys\nfrom explorer.analyses import shapes_analysis as S\nfrom explorer.learned import datasets\n"
            "x, info = datasets.shapes(20, seed=1)\nprint(S.detection_accuracy(x, info)['panels'], 'scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1.0", "False"], out


def test_run_start_is_the_start_of_sample_run():
    """run_start stops sample_run's own run early: its states are the full run's, bit for bit (the x0-prediction
    made from them is the run's), at the first step and at the last; bad step counts are named."""
    images, _ = datasets.shapes(200, seed=0)
    model = image_models.EmpiricalModel(images, image_models.cosine_schedule(), dataset="shapes")
    run = S.sample_run(model, 6, seed=3, n_steps=12, keep=13)
    ts = run.t
    for k in (1, 5, 11):
        x = S.run_start(model, 6, seed=3, n_steps=12, steps=k)
        assert x.dtype == np.float32 and x.shape == (6, 1, 16, 48)
        d = model.denoise(torch.from_numpy(x), float(ts[k])).numpy()
        assert np.array_equal(d, run.denoised[k]), k
    with pytest.raises(ValueError, match="steps"):
        S.run_start(model, 6, n_steps=12, steps=12)


# ------------------------------------------------------------------ the shipped learned model


def test_the_learned_digits_model_generalises(digits):
    shipped = Q.CLASSIFIER_DIR.parent / "digits.pt"
    assert shipped.is_file(), f"{shipped} is missing: it ships with the repository (see data/PRETRAINED.md)"
    x = digits[0]
    model = __import__("explorer").models.load_pretrained("digits")
    with Q.torch_threads(1):
        good, rough = Q.quality_vs_nfe(model, ["dpmpp-2m"], [20], "digits", x, n=256, train_images=x)[0], \
            Q.quality_vs_nfe(model, ["euler"], [5], "digits", x, n=256, train_images=x)[0]
    floor = np.mean([Q.frechet_distance(x[np.random.default_rng([1, k]).integers(0, len(x), 256)], x, "digits")
                     for k in range(3)])
    assert good["fd"] < rough["fd"] and good["fd"] < 2 * floor, (good["fd"], rough["fd"], floor)
    assert good["nearest"] > 0.1  # new digits, not copies (the memoriser's sit at ~0.006)
