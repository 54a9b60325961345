"""The Images page: renders clean under AppTest for both datasets and both models, reads its controls
from the URL, says what went wrong on bad input; figures are pure functions of their inputs; and
one real-browser screenshot (artifacts/images.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apptest import array, assert_clean, charts, open_app

import explorer as ex
from explorer import datasets, image_quality as Q, shapes_analysis as S
from explorer.figures import images as FI

PAGE = "app_pages/images.py"
ROOT = Path(__file__).resolve().parent.parent


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


SHIPPED = all((ROOT / "data" / f"{name}.pt").exists() for name in ("digits", "shapes"))


def test_default_view_renders():
    at = open_app(PAGE)
    assert_clean(at)
    assert _metrics(at)["NFE spent"] == "20"
    says_missing = any("No learned model" in i.value for i in at.info)
    assert says_missing != SHIPPED  # the learned U-Net when shipped; otherwise it says so


def test_digits_with_the_memoriser():
    at = open_app(PAGE, model="empirical", solver="ddim", nfe="10", images="32")
    assert_clean(at)
    m = _metrics(at)
    assert m["NFE spent"] == "10"
    assert float(m["Nearest training image"]) < 0.05  # the memoriser returns training images
    assert at.selectbox(key="solver").value == "ddim"


def test_shapes_with_flags_and_filter():
    at = open_app(PAGE, dataset="shapes", model="empirical", nfe="10", images="24", solver="euler", solver_b="ddim")
    assert_clean(at)
    m = _metrics(at)
    assert m["Flagged images"].startswith("0 / 24")  # training images have nothing to flag
    assert any("all images are flagged or none" in i.value.lower() for i in at.info)


@pytest.mark.skipif(not SHIPPED, reason="the shipped U-Nets are missing")
def test_a_deterministic_runs_first_images_are_the_smaller_runs_a_stochastic_ones_are_not():
    """What the page's preview rests on: a new run of a deterministic solver shows its first PREVIEW images, sampled
    alone, before the rest; they are the run's own. A stochastic solver draws each step's noise for the whole batch,
    so its small run would show other images (the page shows none first)."""
    model = ex.models.load_pretrained("digits")
    for solver, same in (("dpmpp-2m", True), ("ddpm", False)):
        small = Q.sample_images(model, 4, solver, 6, seed=3).x[-1].numpy()
        full = Q.sample_images(model, 12, solver, 6, seed=3).x[-1].numpy()[:4]
        assert np.allclose(small, full, atol=1e-5) == same, solver
        assert np.abs(small - full).max() > 0.1 or same  # a stochastic run's images are other images, not noise


@pytest.mark.skipif(not SHIPPED, reason="the shipped U-Nets are missing")
def test_a_new_run_ends_on_its_full_grid():
    """A run off the shipped default (NFE 7: no preview shipped, none made) draws its first images, then all of them
    in the same place: the page's last sample grid is the whole run, titled as such."""
    at = open_app(PAGE, nfe="7", images="32")
    assert_clean(at)
    grid = charts(at)[0]
    assert "being sampled" not in grid["layout"]["title"]["text"] and "7 NFE" in grid["layout"]["title"]["text"]
    assert np.isfinite(array(grid["data"][0]["z"], np.float32)).sum() == 32 * 8 * 8  # every image, no blank slot


def test_bad_input_is_an_error_not_a_traceback():
    at = open_app(PAGE, model="empirical", images="8", nfe="3", solver="heun", q_nfes="5, x")
    assert not at.exception
    assert any("NFE values" in e.value for e in at.error)


def test_figures_tile_and_outline():
    images, info = datasets.shapes(10, seed=0)
    mosaic = FI.tile(images, 4)
    assert mosaic.shape == (3 * 17 - 1, 4 * 49 - 1)
    np.testing.assert_array_equal(mosaic[:16, 49:97], images[1, 0])
    assert np.isnan(mosaic[16]).all() and np.isnan(mosaic[-1, -1])  # gap row, empty slot
    flagged = np.zeros(10, bool)
    flagged[[2, 7]] = True
    fig = FI.sample_grid(images, cols=4, flagged=flagged)
    assert len(fig.layout.shapes) == 2
    bad = images.copy()
    bad[0, 0, :, :] = -1  # empty
    a = S.analyse(bad)
    fig = FI.flagged_images(bad, a)
    assert "sample 0" in str(fig.data[0].customdata.ravel().tolist()) and "empty" in str(fig.data[0].customdata.ravel().tolist())
    with pytest.raises(ValueError, match="index"):
        FI.film_strip(type("T", (), {"x": np.zeros((3, 2, 1, 8, 8)), "denoised": np.zeros((2, 2, 1, 8, 8)),
                                     "t": np.arange(3.0)})(), index=5)


def test_page_in_a_browser(server, browser):
    from test_browser import _no_exception, _open, _shot
    from selenium.webdriver.common.by import By

    _open(browser, f"{server}/images?dataset=shapes&images=48&nfe=12", charts=4, timeout=150)
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Images")
    assert browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm")
    _shot(browser, "images")



@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_the_pages_memoriser_memorises_the_learned_models_training_set(name):
    # the page builds the empirical optimum from the training preset without loading the U-Net
    from explorer import image_models, image_training
    import explorer as ex

    model = ex.models.load_pretrained(name)
    assert model.schedule == image_models.cosine_schedule()
    np.testing.assert_array_equal(image_models.training_set(image_training.PRESETS[name]["data"]), model.train_images())
