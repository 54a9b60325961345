"""The Solver lab page in a real browser (headless Chromium; fixtures from test_browser.py):
it renders its charts without a Streamlit exception, opens from a URL with guidance on, and
the table links every paper by its title. Screenshots go to artifacts/."""

from __future__ import annotations

from urllib.parse import urlencode

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from test_browser import _inner_text, _no_exception, _open, _shot, _texts

import explorer as ex


def test_solver_lab_renders(server, browser):
    query = {"solvers": ["euler", "heun", "ddim", "dpmpp-2m"], "n": "500"}
    _open(browser, f"{server}/solver-lab?{urlencode(query, doseq=True)}", charts=4, timeout=120)
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Solver lab")
    legend = " ".join(_texts(browser, ".js-plotly-plot .legendtext"))
    assert "heun (order ≈" in legend and "exact path (rk45)" in legend
    # the table of solvers is drawn after the charts: wait for its links (read before them, on a busy machine, it was empty)
    WebDriverWait(browser, 30, poll_frequency=0.25).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table a"))
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "table a")}
    for name in ex.solvers.names():
        assert ex.solvers.info(name)["reference"] in links
    _shot(browser, "browser-solver-lab")


def test_solver_lab_with_guidance(server, browser):
    query = {"solvers": ["ddim", "dpmpp-2m"], "n": "300", "guided": "true", "w": "8", "nfes": "6, 12, 24"}
    _open(browser, f"{server}/solver-lab?{urlencode(query, doseq=True)}", charts=6, timeout=180)

    def titles(d):
        return " ".join(_texts(d, ".js-plotly-plot .gtitle"))

    WebDriverWait(browser, 120, poll_frequency=0.5).until(lambda d: "Guidance scale against accuracy" in titles(d))
    _no_exception(browser)
    assert "Class c" in _inner_text(browser, '[data-testid="stSidebar"]')
    _shot(browser, "browser-solver-lab-guidance")
