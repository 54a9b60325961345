"""The Few steps page in a real browser (headless Chromium; fixtures from test_browser.py): every figure draws
without a Streamlit exception. Screenshot: artifacts/browser-few-steps.png."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from test_browser_starts import _whole_page


def test_few_steps_page_renders(server, browser):
    text = _whole_page(browser, f"{server}/few-steps", 6, "Reflow in 1D and bridges in 2D")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Few steps")
    assert "Transport cost against the optimal coupling" in text
