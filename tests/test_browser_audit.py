"""The Scheduler audit page in a real browser (headless Chromium; fixtures from test_browser.py):
the table and the selected row's figures render without a Streamlit exception, from a URL that
names the audit (the page's own default selection, whose table ships precomputed: the browser test
draws it, tests/test_audit_page.py runs audits live) and picks a row. Screenshot: artifacts/browser-audit.png."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By

from test_browser import _inner_text, _no_exception, _open, _tall_shot, _texts

pytest.importorskip("diffusers")

# app_pages/audit.py's DEFAULT_SCHEDULERS (a page module runs its page when imported); test_audit_page.py checks them.
DEFAULT_SCHEDULERS = ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                      "UniPCMultistepScheduler", "HeunDiscreteScheduler"]


def test_audit_page_renders(server, browser):
    query = {"schedulers": DEFAULT_SCHEDULERS, "nfes": "5, 10, 20, 40", "n": "1000",
             "row": "DPMSolverMultistep · use_karras_sigmas=True", "at": "10"}
    _open(browser, f"{server}/audit?{urlencode(query, doseq=True)}", charts=4, timeout=120)
    _tall_shot(browser, "browser-audit", 3300)  # the whole page: the table, and the row's four figures under it
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Scheduler audit")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
    text = _inner_text(browser, '[data-testid="stMain"]')
    assert "model-update-mismatch" in text  # the selected row's flag, named under "One row"
    assert "Download the table (CSV)" in text
    titles = " ".join(_texts(browser, ".js-plotly-plot .gtitle"))
    assert "Error against NFE" in titles and "Step by step" in titles
