"""Solver search page: on its defaults it shows the shipped results (the numbers of
data/solver_search.json) at once, fast; changed settings offer a run, and the button runs
solver_search.report with the page's settings behind a progress bar, then shows that run; a bad NFE
list is a message; the page renders in headless Chromium."""

from __future__ import annotations

import copy
import time

import pytest

from apptest import assert_clean, charts, code_text, open_app
from explorer.analyses import solver_search as S


PAGE = "app_pages/search.py"


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _shipped_at(nfe: int) -> dict:
    return next(r for r in S.load_defaults()["curve"] if r["nfe"] == nfe)


def test_defaults_show_the_shipped_numbers_without_a_run():
    at = open_app(PAGE)
    assert_clean(at)
    assert at.title[0].value == "Solver search"
    assert len(charts(at)) == 8  # strip, grids, error vs NFE, histories, rho, DC vs NFE, guided, transfer
    assert not at.info and not at.button  # nothing to run: the defaults are shipped
    shipped = _shipped_at(S.DEFAULTS["nfe"])["schedule"]
    shown = _metrics(at)
    assert shown["Held-out error, searched"] == f"{shipped['holdout_error']:.3g}"
    assert shown["Best fixed solver at equal NFE"] == f"{shipped['best_fixed']['holdout_error']:.3g}"
    assert shown["Error on its own fit particles"] == f"{shipped['fit_error']:.3g}"
    assert shipped["options"]["schedule"] in " ".join(c.value for c in at.caption)
    code = " ".join(code_text(at))
    assert "'usf'" in code and "sigmas = [" in code
    # The focus NFE only changes what is shown (no run).
    at.select_slider(key="nfe").set_value(8).run()
    assert_clean(at)
    assert _metrics(at)["Held-out error, searched"] == f"{_shipped_at(8)['schedule']['holdout_error']:.3g}"
    at.radio(key="method").set_value("dc").run()
    assert_clean(at)
    # The DC-Solver section (a fragment) follows its NFE slider
    at.select_slider(key="dc_nfe").set_value(7).run()
    assert_clean(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert "DC-Solver's ρ per step at NFE 7" in titles and len(titles) == 8, titles


def test_the_page_answers_fast():
    at = open_app()  # the default page first: the app and explorer are imported
    at.switch_page(PAGE)
    start = time.perf_counter()
    at.run()
    took = time.perf_counter() - start
    assert_clean(at)
    assert took < 1.5, took  # measured: 0.6 s cold (the shipped JSON read, every figure built)


def test_changed_settings_offer_a_run_and_the_button_runs_it(monkeypatch):
    calls = []

    def fake_report(cfg, progress=None, executor=None):
        calls.append(cfg)
        progress(0.5, "halfway")
        out = copy.deepcopy(S.load_defaults())
        out["inputs"] = cfg
        for r in out["curve"]:
            r["schedule"]["holdout_error"] = 0.0123
        return out

    monkeypatch.setattr(S, "report", fake_report)
    at = open_app(PAGE, n_fit="128")
    assert_clean(at)
    assert at.info and "differ from the precomputed" in at.info[0].value
    assert not calls
    at.button(key="run").click().run()
    assert_clean(at)
    assert len(calls) == 1
    cfg = calls[0]
    assert cfg["n_fit"] == 128 and cfg["transfer_fit"] == [cfg["setting"]]  # a run fits the matrix's own row only
    assert _metrics(at)["Held-out error, searched"] == "0.0123"
    at.run()  # the run is kept: no second call
    assert len(calls) == 1 and _metrics(at)["Held-out error, searched"] == "0.0123"


def test_a_bad_nfe_list_is_a_message():
    at = open_app(PAGE, nfes="4, x")
    assert not at.exception
    assert at.error and "'x' is not a number" in at.error[0].value


def test_page_in_a_browser(server, browser):
    """Opened from its URL in headless Chromium: every chart drawn, no exception. Saves artifacts/browser-search.png."""
    from selenium.webdriver.common.by import By

    from test_browser import _inner_text, _no_exception, _open, _shot, _texts

    _open(browser, f"{server}/search?nfe=6", charts=8, timeout=120)
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Solver search")
    titles = " ".join(_texts(browser, ".js-plotly-plot .gtitle"))
    for title in ("searched solver schedule", "Held-out error against NFE", "Best fit error", "DC-Solver's ρ",
                  "DC-Solver under guidance", "Gain over"):
        assert title in titles
    strip = " ".join(_texts(browser, ".js-plotly-plot text"))
    assert "data x₀" in strip or "noise ε" in strip
    main = _inner_text(browser, '[data-testid="stMain"]')
    assert f"{_shipped_at(6)['schedule']['holdout_error']:.3g}" in main
    _shot(browser, "browser-search")
