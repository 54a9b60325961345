"""The Guidance page: under AppTest (the default view from the shipped sweep, a view opened from its URL,
bad scales as messages, a 1D target computed live) and in a real browser (fixtures from test_browser.py)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from apptest import assert_clean, charts, open_app, open_page_from_url
from explorer.analyses import guidance_methods as GM

PAGE = "app_pages/guidance.py"


def _titles(at) -> list[str]:
    return [c["layout"]["title"]["text"] for c in charts(at)]


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _shipped(method, strength):
    return next(r for r in GM.load()[1] if r["method"] == method and r["strength"] == strength)


def test_default_view_draws_every_figure_from_the_shipped_sweep():
    at = open_page_from_url(PAGE)
    assert_clean(at)
    titles = _titles(at)
    assert len(titles) == 5, titles
    assert titles[0] == "CFG, ODE, w = 2" and "Every method" in titles[1]
    rec = _shipped("cfg-ode", 2.0)
    shown = _metrics(at)
    assert shown["Distance to it"] == f"{rec['distance']:.3f}" and shown["Finite-sample floor"] == f"{rec['floor']:.3f}"
    assert any("Where CFG differs from p_w" in i.value for i in at.info)
    links = " ".join(m.value for m in at.markdown)
    assert "solver-lab?" in links and "guided=true" in links and "w=15" in links


def test_first_figure_is_quick_cold():
    # what the page computes before its first figure, caches empty: the shipped sweep, the intended target, the figure
    from explorer.figures import guidance_exact as F

    started = time.perf_counter()
    setup, sweep = GM.load()
    want = GM.intended(setup, "cfg-ode", 2.0)
    rec = next(r for r in sweep if r["method"] == "cfg-ode" and r["strength"] == 2.0)
    F.over_density(want, rec["samples"], setup.mixture()).to_json()
    assert time.perf_counter() - started < 1.5  # measured 0.3 s on one loaded core


def test_a_view_opens_from_its_url():
    at = open_page_from_url(PAGE, gmethod="minority-learned", gstrength="1")
    assert_clean(at)
    assert _titles(at)[0].startswith("minority guidance, trained classifier, w = 1")
    rec = _shipped("minority-learned", 1.0)
    assert _metrics(at)["Mass on favoured modes"] == f"{rec['mass_favoured']:.3f}"
    assert any("p(x0 | rarest" in m.value for m in at.markdown)



def test_a_view_names_its_most_under_sampled_mode_and_minority_its_class_share():
    import numpy as np

    at = open_page_from_url(PAGE, gmethod="cfg-ode", gstrength="4")
    assert_clean(at)
    rec = _shipped("cfg-ode", 4.0)
    k = int(np.argmax(rec["target_masses"] - rec["masses"]))
    assert k == 7 and rec["target_masses"][k] > 0.4 > 0.01 > rec["masses"][k]  # CFG empties a mode p_w keeps
    line = f"mode {k} holds {rec['target_masses'][k]:.1%} of the intended target and {rec['masses'][k]:.1%} of the samples"
    assert any(line in m.value for m in at.markdown)
    assert "In the rarest class" not in _metrics(at)
    svdd = [r for r in GM.load(name="svdd")[1] if r["alpha"] == 0.5]
    assert any(GM.svdd_summary(svdd) == m.value for m in at.markdown)
    best = min(r["distance"] for r in svdd if r["method"] == "svdd-exact")
    assert f"→ {best:.3f} at M = 32" in GM.svdd_summary(svdd)  # the exact value is closest with the most candidates

    at = open_page_from_url(PAGE, gmethod="minority-exact", gstrength="1")
    assert_clean(at)
    classes = GM.classes_for(GM.load()[0])
    share = np.mean(classes.classify(_shipped("minority-exact", 1.0)["samples"]) == classes.rarest)
    assert _metrics(at)["In the rarest class"] == f"{share:.1%}" and share > 0.97

@pytest.mark.parametrize("value, message", [("-1", "w must be >= 0"), ("1e9", "w must be at most 50")])
def test_bad_scales_are_messages(value, message):
    at = open_page_from_url(PAGE, gstrength=value)
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not charts(at)


def test_a_scale_the_widget_cannot_take_is_named():
    at = open_app(PAGE, gstrength="nan", gmethod="svdd-pm")
    assert not at.exception and not at.error
    assert any("`nan` is not a finite number" in w.value for w in at.warning)


def test_a_1d_target_is_computed_live():
    at = open_page_from_url(PAGE, gtarget="gmm-1d-asym", glabel="1", gn="250", gmethod="svdd-exact", gstrength="1")
    assert_clean(at)
    titles = _titles(at)
    assert titles[0].startswith("SVDD, exact value, 1/alpha = 1") and len(titles) == 3, titles  # no sweep, no classifier
    assert any("Turn the sweep on" in i.value for i in at.info)
    kinds = [trace["type"] for trace in charts(at)[0]["data"]]
    assert kinds == ["histogram", "scatter"]  # 1D: the samples' histogram under the intended density


def test_the_page_in_a_browser(server, browser):
    from selenium.webdriver.common.by import By
    from test_browser import _no_exception, _open, _shot, _texts

    query = {"gmethod": "cfg-ode", "gstrength": "4"}
    _open(browser, f"{server}/guidance?{urlencode(query)}", charts=5, timeout=120)
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Guidance")
    titles = " ".join(_texts(browser, ".js-plotly-plot .gtitle"))
    assert "CFG, ODE, w = 4" in titles and "Every method against its strength" in titles
    href = browser.find_element(By.PARTIAL_LINK_TEXT, "Open the Solver lab").get_attribute("href")
    assert "/solver-lab?" in href and "guided=true" in href
    _shot(browser, "browser-guidance")

