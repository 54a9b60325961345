"""The Starts and Learned fields pages in a real browser (headless Chromium; fixtures from test_browser.py):
each renders its figures without a Streamlit exception. Screenshots: artifacts/browser-starts.png and
artifacts/browser-learned-fields.png."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from test_browser import _inner_text, _no_exception, _open, _tall_shot


def _whole_page(browser, url: str, charts: int, last_heading: str) -> str:
    """Open url, wait for `charts` charts and the last section, return the main text; the screenshot is of
    the whole page (the window made tall only for it: drawing the page into a 4400-pixel window as it
    streams in cost Chromium about 3 s more on the Few steps page)."""
    try:
        _open(browser, url, charts=charts, timeout=120)
        WebDriverWait(browser, 60, poll_frequency=0.25).until(
            lambda d: last_heading in (_inner_text(d, '[data-testid="stMain"]') or "")
            and not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
        _no_exception(browser)
        return _inner_text(browser, '[data-testid="stMain"]')
    finally:
        _tall_shot(browser, "browser-" + url.rsplit("/", 1)[-1].split("?")[0], 4400)


def test_starts_page_renders(server, browser):
    text = _whole_page(browser, f"{server}/starts", 6, "One start for every condition")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Starts")
    assert "A start that is not p_T" in text and "Denoising MCMC" in text and "Agreement between conditions" in text


def test_learned_fields_page_renders(server, browser):
    text = _whole_page(browser, f"{server}/learned-fields", 6, "The dimension the score sees")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Learned fields")
    assert "Gauge freedom" in text and "Is the learned field a gradient?" in text and "Non-conservative share" in text
