"""A notebook the way a user opens it: the README's command (`bash scripts/dev.sh notebooks`, i.e.
`jupyter lab notebooks/`) serves JupyterLab, headless Chromium opens notebook 01, Run > Run All
Cells, and then: no cell shows an error or writes to stderr (where a NaN sent to a widget shows up
as "Message serialization failed"), every plotly figure and widget is drawn, and moving a slider
redraws a figure. JupyterLab's settings live in a temporary folder with autosave off, and the test
checks that the notebook file is left as it was. A screenshot goes to artifacts/."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from test_browser import ARTIFACTS, CHROMIUM, ROOT, _free_port, serve

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NOTEBOOK = "01_trajectories.ipynb"
VENV = ROOT / ".venv"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(Path(sys.prefix).resolve() != VENV.resolve(),
                       reason="the README's command serves JupyterLab from .venv; run the suite through it"),
]

SETTINGS = {  # a user's JupyterLab, minus what would write into the repository or pop up over the page
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started by the README's command on a free port; yields (url, server log path)."""
    settings = tmp_path_factory.mktemp("jupyterlab-settings")
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), "explorer-test"
    url = f"http://127.0.0.1:{port}"
    args = ["env", f"JUPYTERLAB_SETTINGS_DIR={settings}", f"JUPYTERLAB_WORKSPACES_DIR={settings}",
            "bash", str(ROOT / "scripts" / "dev.sh"), "notebooks", "--no-browser", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0"]
    with serve(args, f"{url}/api/status?token={token}", f"jupyterlab-{port}", timeout=90) as log:
        yield f"{url}/lab/tree/{NOTEBOOK}?token={token}&reset", log


def _status(driver) -> str | None:
    return driver.execute_script(
        "const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        "return e && e.getAttribute('data-status');")


def _prompts(driver) -> list[str]:
    return [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


def _wait(driver, seconds: float, condition, what: str):
    """WebDriverWait(...).until(condition), failing with what was awaited, the prompts and kernel
    status, and a screenshot (artifacts/jupyterlab-timeout.png) when it times out."""
    try:
        # JupyterLab re-renders cells while it settles: an element read mid-render is asked again.
        return WebDriverWait(driver, seconds, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        driver.save_screenshot(str(ARTIFACTS / "jupyterlab-timeout.png"))
        pytest.fail(f"no {what} within {seconds} s: prompts {_prompts(driver)}, kernel {_status(driver)!r}")


def _run_all(driver) -> None:
    """Run > Run All Cells, as a user would, until the first cell starts: the command acts on the
    current notebook and is disabled (the click goes nowhere) while the page is still settling."""
    for _ in range(8):
        try:
            driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[0].click()  # the notebook is the current widget
            next(m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if m.text.strip() == "Run").click()
            item = driver.find_element(By.CSS_SELECTOR, 'li.lm-Menu-item[data-command="runmenu:run-all"]')
            if "lm-mod-disabled" not in item.get_attribute("class"):
                item.click()
                WebDriverWait(driver, 15, poll_frequency=0.25).until(lambda d: _prompts(d)[0] != "[ ]:")
                return
        except (WebDriverException, IndexError):  # re-rendered, not yet interactable, or no start within 15 s
            pass
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        time.sleep(1)
    driver.save_screenshot(str(ARTIFACTS / "jupyterlab-timeout.png"))
    pytest.fail(f"Run > Run All Cells did not start the notebook: prompts {_prompts(driver)}, kernel {_status(driver)!r}")


def _errors(driver) -> list[str]:
    """Text of every error or stderr output shown."""
    return [e.text[:500] for e in driver.find_elements(
        By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]


def _figures(driver) -> list[str]:
    return [e.get_attribute("innerHTML") for e in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")]


def test_notebook_runs_all_cells_in_jupyterlab(lab, browser):  # noqa: F811
    url, log = lab
    before = (ROOT / "notebooks" / NOTEBOOK).read_bytes()
    browser.get(url)
    _wait(browser, 60, lambda d: _status(d) == "idle" and _prompts(d), "idle kernel on the opened notebook")

    _run_all(browser)
    _wait(browser, 120, lambda d: _errors(d) or (_status(d) == "idle" and all(p[1:-2].isdigit() for p in _prompts(d))),
          "end of Run All (every prompt numbered, kernel idle)")
    assert not _errors(browser), _errors(browser)
    n_code = len(_prompts(browser))
    assert _prompts(browser) == [f"[{i}]:" for i in range(1, n_code + 1)]
    # Every figure drawn: 2 + 2 static ones, the two FigureWidgets of the explorer.
    _wait(browser, 30, lambda d: len(_figures(d)) >= 6 and all(_figures(d)), "six drawn figures")
    widgets = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-slider, "
                                    ".jp-OutputArea-output .widget-dropdown, .jp-OutputArea-output .widget-checkbox")
    assert len(widgets) >= 9  # four dropdowns, two sliders, start, x0, step (and the solver's options)

    # The last cell moved the explorer to the ring of eight at step 1: one step on redraws the particles.
    handle = browser.find_element(By.XPATH, "//div[contains(@class, 'widget-slider')][.//label[normalize-space()="
                                            "'step (2D)']]//div[contains(@class, 'noUi-handle')]")
    readout = handle.find_element(By.XPATH, "ancestor::div[contains(@class, 'widget-slider')]"
                                            "//div[contains(@class, 'widget-readout')]")
    assert readout.text == "1"
    shown = _figures(browser)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    _wait(browser, 30, lambda d: readout.text == "2" and _figures(d) != shown, "redraw after the slider moved")
    assert sum(a != b for a, b in zip(shown, _figures(browser))) >= 1
    time.sleep(0.5)
    browser.save_screenshot(str(ARTIFACTS / "jupyterlab-01_trajectories.png"))

    server_log = log.read_text()
    assert "serialization failed" not in server_log and "Traceback" not in server_log, server_log[-3000:]
    assert (ROOT / "notebooks" / NOTEBOOK).read_bytes() == before, "JupyterLab wrote into the repository's notebook"
