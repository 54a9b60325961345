"""The app in a real browser: `streamlit run app.py` driven by headless Chromium.

Checks what only a browser shows: the page renders its plotly charts without a Streamlit
exception, a URL with query parameters opens that view, and a changed control lands in
the URL. Screenshots go to artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from app_pages import chart  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(args: list[str], health_url: str, name: str, cwd: Path = ROOT, timeout: float = 60):
    """Run a server command until health_url answers 200; its whole process group is ended
    afterwards. Its output goes to artifacts/<name>.log, which the caller may read."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(health_url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not become healthy within {timeout:.0f} s")
            time.sleep(0.2)
        yield log_path
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


# The `server` and `browser` fixtures are in conftest.py: one app and one Chromium per test process,
# shared by every browser test module.


BUSY = ('[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stSkeleton"], '
        '[data-testid="stProgress"]')  # a progress bar: the page still streams in


# True once every drawn chart kept its size over two animation frames (plotly's last layout pass is done);
# a frame that does not come within 100 ms (a page the browser does not paint) counts as one.
SETTLED = """
const done = arguments[arguments.length - 1];
const sizes = () => Array.from(document.querySelectorAll('.js-plotly-plot .main-svg'),
                               e => { const r = e.getBoundingClientRect(); return r.width + 'x' + r.height; }).join();
const frame = f => { let called = false; const once = () => { if (!called) { called = true; f(); } };
                     requestAnimationFrame(once); setTimeout(once, 100); };
const before = sizes();
frame(() => frame(() => setTimeout(() => done(before === sizes()), 30)));
"""


def _settled(driver, timeout: float = 10) -> None:
    """Wait until the drawn charts stop changing size (in place of a fixed pause for plotly's last layout)."""
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_async_script(SETTLED))


def _charts_drawn(driver) -> int:
    """How many figures are drawn: plot divs holding their SVG (a figure has two or three .main-svg, and the pages'
    figures are drawn one by one, so counting SVGs would count a page half drawn as whole)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot'), e => !!e.querySelector('.main-svg'))"
        ".filter(Boolean).length")


def _open(driver, url: str, charts: int = 1, timeout: float = 60):
    """Load url and wait until the script has finished and `charts` plotly charts are drawn and laid out."""
    driver.get(url)

    def ready(d):
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'):
            return True  # fail fast, on the assertion below
        running = d.find_elements(By.CSS_SELECTOR, BUSY)
        return _charts_drawn(d) >= charts and not running

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(ready)
    except TimeoutException:
        busy = [e.get_attribute("data-testid") for e in driver.find_elements(By.CSS_SELECTOR, BUSY)]
        charts_text = driver.execute_script(
            f"return Array.from(document.querySelectorAll('.{chart.CLASS}'), e => e.className + ': ' + "
            "e.textContent.slice(0, 60))")
        pytest.fail(f"{url}: {_charts_drawn(driver)} of {charts} charts drawn after {timeout:.0f} s, busy: {busy}, "
                    f"charts: {charts_text}")
    _settled(driver)


def _texts(driver, css: str) -> list[str]:
    """The text of every element matching css, read in one script call.

    Reading `.text` element by element races plotly's redraws (a legend redrawn between two
    reads is a stale element); one call reads one consistent page.
    """
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)", css
    )


def _inner_text(driver, css: str) -> str | None:
    """The rendered text of the first element matching css (its innerText, one script call), None if none.

    Selenium's `.text` computes visibility node by node in a script atom: on a page of plotly charts a
    read of the main area cost Chromium 4.6-5.2 s of CPU (Few steps page), innerText 0.02 s.
    """
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.innerText;", css)


def _shot(driver, name: str) -> None:
    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()  # no mode bars
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _tall_shot(driver, name: str, height: int) -> None:
    """_shot of the whole page: the window made `height` tall for the picture alone, then 1000 again."""
    driver.set_window_size(1400, height)
    try:
        try:
            _settled(driver)
        except TimeoutException:
            pass  # a page still changing (or broken: the caller's assertion says so) is photographed as it is
        _shot(driver, name)
    finally:
        driver.set_window_size(1400, 1000)


def _no_exception(driver) -> None:
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not errors, errors[0].text


def test_default_view_renders_and_a_changed_control_lands_in_the_url(server, browser):
    _open(browser, server + "/", charts=3)
    _shot(browser, "browser-1d")
    _no_exception(browser)
    assert browser.title == "diffusion-explorer"
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Trajectories")
    sidebar = _inner_text(browser, '[data-testid="stSidebar"]')
    for label in ("Target", "Schedule", "Time grid", "Solver", "Steps", "Particles", "Seed"):
        assert label in sidebar
    metrics = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
    assert [m.text.splitlines()[0] for m in metrics][:2] == ["NFE", "Distance to target"]
    assert browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm")
    # drawn by app_pages/chart.py with the partial plotly.js in static/, not by Streamlit's chart (all of plotly.js)
    from plotly.offline import get_plotlyjs_version

    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.endswith(f"/app/static/{chart.BUNDLE}") for name in loaded), loaded
    assert not any("PlotlyChart" in name for name in loaded)
    assert browser.execute_script("return window.Plotly.version") == get_plotlyjs_version()
    # loaded once, by the preload (app.py) and the charts together, and the preload takes no room in the sidebar
    assert browser.execute_script(f"return document.querySelectorAll('script[src$=\"/{chart.BUNDLE}\"]').length") == 1
    preload = browser.find_element(By.CSS_SELECTOR, f'[data-testid="stSidebar"] .st-key-{chart.PRELOAD}')
    assert preload.value_of_css_property("display") == "none" and preload.size["height"] == 0
    assert len(browser.find_elements(By.CSS_SELECTOR, f".{chart.CLASS}.js-plotly-plot")) == 3
    buttons = browser.execute_script(f"return Array.from(document.querySelectorAll('.{chart.CLASS} .modebar-btn'), "
                                     "b => b.getAttribute('data-title'))")
    assert "Download plot as a PNG" in buttons and "Reset axes" in buttons  # chart.CONFIG's short mode bar
    assert not [t for t in buttons if (t or "").startswith(("Share chart", "Box Select", "Lasso Select", "Produced with"))]
    assert buttons.count("Full screen") == 3

    # a figure on the whole screen is drawn at the screen's size, and back at its own size after
    def first_chart():
        return browser.execute_script(
            f"const c = document.querySelector('.{chart.CLASS}'), r = c.querySelector('.main-svg').getBoundingClientRect();"
            "return [Math.round(r.width), Math.round(r.height), document.fullscreenElement === c, window.innerWidth,"
            " window.innerHeight];")

    def full_screen_button():
        first = browser.find_element(By.CSS_SELECTOR, f".{chart.CLASS}")
        ActionChains(browser).move_to_element(first).perform()  # the mode bar shows on hover
        return first.find_element(By.CSS_SELECTOR, '.modebar-btn[data-title="Full screen"]')

    windowed = first_chart()
    full_screen_button().click()
    WebDriverWait(browser, 10, poll_frequency=0.05).until(lambda d: (lambda c: c[2] and c[:2] == c[3:])(first_chart()))
    full_screen_button().click()
    WebDriverWait(browser, 10, poll_frequency=0.05).until(lambda d: first_chart() == windowed)

    # the same view: a changed control lands in the URL, and the shared link opens that view
    browser.find_element(By.XPATH, "//label[.//p[contains(., 'x0-predictions')]]").click()
    WebDriverWait(browser, 20).until(lambda d: "x0=true" in d.current_url)
    _open(browser, browser.current_url, charts=3)
    _no_exception(browser)
    assert browser.find_element(By.XPATH, "//label[.//p[contains(., 'x0-predictions')]]//input").is_selected()


def test_query_params_open_a_2d_view(server, browser):
    query = {"target": "gmm-2d-ring8", "solver": "heun", "steps": "8", "schedule": "vp-linear"}
    _open(browser, f"{server}/?{urlencode(query)}", charts=3)
    _shot(browser, "browser-2d")
    _no_exception(browser)
    chosen = {
        box.get_attribute("aria-label"): box.get_attribute("value")
        for box in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input')
    }
    assert chosen["Target"] == "gmm-2d-ring8" and chosen["Solver"] == "heun" and chosen["Schedule"] == "vp-linear"
    nfe = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')[0].text
    assert nfe.splitlines()[-1] == "16"
    # the animation runs in the browser: Play moves the slider without a rerun
    def shown(d):
        return d.execute_script(
            "const e = document.querySelector('.js-plotly-plot .slider-container text');"  # the current value
            "return e && e.textContent;"
        )

    assert shown(browser).startswith("step 8/8")
    play = [b for b in browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .updatemenu-button") if "Play" in b.text]
    ActionChains(browser).move_to_element(play[0]).click().perform()
    WebDriverWait(browser, 5, poll_frequency=0.05).until(lambda d: not shown(d).startswith("step 8/8"))
    WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda d: shown(d).startswith("step 8/8"))


def test_bad_input_is_an_error_box(server, browser):
    _open(browser, f"{server}/?{urlencode({'custom': 'true', 'gmm-1d-3modes.modes': 'oops'})}", charts=0)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]'))
    _no_exception(browser)
    error = browser.find_element(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]').text
    assert "line 1" in error and "oops" in error


# The chart's script on a blank page, with a plotly.js stand-in whose every draw takes 70 ms: six charts asked at once.
DRAW_ORDER = """
const [source, done] = [arguments[0], arguments[arguments.length - 1]];
const frames = [], draws = [];
let live = true;
(function tick() { requestAnimationFrame(() => { frames.push(performance.now()); if (live) tick(); }); })();
window.Plotly = {
  react(div) {
    const start = performance.now();
    while (performance.now() - start < 70) {}
    draws.push([start, performance.now()]);
    div.classList.add("js-plotly-plot");
    if (draws.length === 6) requestAnimationFrame(() => setTimeout(() => { live = false; done({ frames, draws }); }));
    return Promise.resolve();
  },
  purge() {},
  Plots: { resize() {} },
};
window.__explorerPlotly = Promise.resolve(window.Plotly);
import(URL.createObjectURL(new Blob([source], { type: "text/javascript" }))).then(module => {
  const data = JSON.stringify({ figure: { data: [], layout: { height: 100 } }, config: {} });
  for (let i = 0; i < 6; i++) {
    const parentElement = document.body.appendChild(document.createElement("div"));
    module.default({ parentElement, data });
  }
  setTimeout(() => { live = false; done({ frames, draws }); }, 5000);  // fewer than six drawn: what was
}, error => done({ error: String(error) }));
"""


def test_a_burst_of_charts_shows_its_first_figure_alone_then_draws_in_slices(browser):
    """chart.py's queue: the first figure of a burst is painted before the next one draws (the page's first figure
    does not wait for its last), and the rest draw back to back until about 200 ms of drawing wants a paint."""
    browser.get("about:blank")
    source = chart.JS % {"src": '"/unused.js"', "cls": f'"{chart.CLASS}"'}
    out = browser.execute_async_script(DRAW_ORDER, source)
    assert "error" not in out, out
    draws, frames = out["draws"], out["frames"]
    assert len(draws) == 6

    def painted_between(i):  # a frame between the end of draw i and the start of draw i + 1
        return any(draws[i][1] <= f <= draws[i + 1][0] for f in frames)

    # 70 ms draws: #0 alone; #1-#3 in one slice (they start 0, 70 and 140 ms into it, under 200 ms); #4 and #5 in
    # the next
    assert [painted_between(i) for i in range(5)] == [True, False, False, True, False], (draws, frames)
    assert all(draws[i + 1][0] - draws[i][1] < 20 for i in (1, 2, 4)), draws
