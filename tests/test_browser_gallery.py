"""The Gallery in a real browser (headless Chromium; fixtures from test_browser.py): every card shows
its thumbnail, and a card's link opens its page with the card's settings in the URL (those that are
not the page's defaults; tests/test_gallery.py checks every widget), drawn without a Streamlit exception. Screenshots: artifacts/browser-gallery*.png."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from test_browser import _charts_drawn, _no_exception, _settled, _shot

from explorer import gallery
from explorer.gallery.card import _text

BUSY = '[data-testid="stSpinner"], [data-testid="stSkeleton"], [data-testid="stStatusWidget"]'


# Three cards of three pages whose views compute in well under a second.
FOLLOWED = ("euler-ten-steps", "euler-depends-on-the-clock", "svdd-more-candidates")


def _gallery_loaded(d) -> bool:
    """Every card's thumbnail is on the page and decoded (read in one script call)."""
    return d.execute_script(
        "const images = Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'));"
        "return images.length === arguments[0] && images.every(i => i.complete && i.naturalWidth > 0);",
        len(gallery.CARDS))


def _open_gallery(driver, server):
    driver.get(f"{server}/gallery")
    WebDriverWait(driver, 60, poll_frequency=0.25).until(_gallery_loaded)


def _back_to_the_gallery(driver):
    """The Gallery again, from the sidebar's navigation (as a reader goes back; no new page load)."""
    driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a[href$="/gallery"]').click()
    WebDriverWait(driver, 60, poll_frequency=0.25).until(
        lambda d: urlparse(d.current_url).path == "/gallery" and not d.find_elements(By.CSS_SELECTOR, BUSY)
        and _gallery_loaded(d))


def test_the_gallery_opens_three_cards(server, browser):
    _open_gallery(browser, server)
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Gallery")
    titles = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"] h5')
    assert [t.text for t in titles] == [c.title for c in gallery.CARDS]
    _shot(browser, "browser-gallery")

    for k, card in enumerate(map(gallery.get, FOLLOWED)):
        if k:
            _back_to_the_gallery(browser)
        link = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stPageLink-NavLink"]')[gallery.CARDS.index(card)]
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
        link.click()

        def drawn(d):
            if d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'):
                return True  # fail on the assertion below
            return _charts_drawn(d) > card.chart and not d.find_elements(By.CSS_SELECTOR, BUSY)

        WebDriverWait(browser, 120, poll_frequency=0.25).until(drawn)
        _settled(browser)
        _no_exception(browser)
        url = urlparse(browser.current_url)
        assert url.path == f"/{card.page}", (card.slug, browser.current_url)
        query = parse_qs(url.query)  # Streamlit drops a bound widget's key from the URL while it holds its default
        assert set(query) & set(card.params), (card.slug, browser.current_url)
        for key, value in card.params.items():
            wanted = _text(value)
            assert query.get(key) in (None, wanted if isinstance(wanted, list) else [wanted]), (card.slug, key, query)
        _shot(browser, f"browser-gallery-{card.slug}")
