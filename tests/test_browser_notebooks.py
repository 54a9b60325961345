"""A notebook the way a user opens it: the README's command (`bash scripts/dev.sh notebooks`, i.e.
`jupyter lab notebooks/`) serves JupyterLab, headless Chromium opens notebook 01, Run > Run All
Cells, and then: no cell shows an error or writes to stderr (where a NaN sent to a widget shows up
as "Message serialization failed"), every plotly figure and widget is drawn, and moving a slider
redraws a figure. JupyterLab's settings and page config live in temporary folders (autosave, the
build check and the export menu off), and the test checks that the notebook file is left as it was. A
screenshot goes to artifacts/."""

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
# ... and minus two things the page asks the server for while it opens, in the server's one process, ahead of the
# notebook and its kernel: whether JupyterLab needs a rebuild (the build check) and the File > Save and Export
# formats (an nbconvert import), 0.7 s of the server's CPU together.
PAGE_CONFIG = {"buildCheck": False, "buildAvailable": False,
               "disabledExtensions": {"@jupyterlab/notebook-extension:export": True}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started by the README's command on a free port (SETTINGS, PAGE_CONFIG); yields (url, server log path)."""
    settings = tmp_path_factory.mktemp("jupyterlab-settings")
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    config = tmp_path_factory.mktemp("jupyter-config")
    (config / "labconfig").mkdir()
    (config / "labconfig" / "page_config.json").write_text(json.dumps(PAGE_CONFIG))
    port, token = _free_port(), "explorer-test"
    url = f"http://127.0.0.1:{port}"
    args = ["env", f"JUPYTERLAB_SETTINGS_DIR={settings}", f"JUPYTERLAB_WORKSPACES_DIR={settings}", f"JUPYTER_CONFIG_DIR={config}",
            "bash", str(ROOT / "scripts" / "dev.sh"), "notebooks", "--no-browser", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0"]
    with serve(args, f"{url}/api/status?token={token}", f"jupyterlab-{port}", timeout=90) as log:
        yield f"{url}/lab/tree/{NOTEBOOK}?token={token}&reset", log


# The notebook as the page shows it, read in one script call: selenium's `.text` element by element runs its
# visibility atom in the page for every prompt, which the page pays between its own renders on every poll.
STATE = """
const all = s => Array.from(document.querySelectorAll(s));
const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
const kernel = document.querySelector('.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName');
return {
  status: indicator && indicator.getAttribute('data-status'),
  kernel: kernel && kernel.textContent.trim(),
  prompts: all('.jp-CodeCell .jp-InputPrompt').map(e => e.textContent.trim()),
  errors: all('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').map(e => e.textContent.slice(0, 500)),
};
"""

# Every drawn plotly SVG as [length, FNV-1a hash] of its markup: compared in place of the markup itself
# (megabytes, sent over on every poll).
FIGURES = """
return Array.from(document.querySelectorAll('.js-plotly-plot .main-svg'), e => {
  const s = e.innerHTML;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return [s.length, h >>> 0];
});
"""


def _state(driver) -> dict:
    return driver.execute_script(STATE)


def _wait(driver, seconds: float, condition, what: str):
    """WebDriverWait(...).until(condition), failing with what was awaited, the prompts and kernel
    status, and a screenshot (artifacts/jupyterlab-timeout.png) when it times out."""
    try:
        # JupyterLab re-renders cells while it settles: an element read mid-render is asked again.
        return WebDriverWait(driver, seconds, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        _fail(driver, f"no {what} within {seconds} s")


def _fail(driver, message: str):
    driver.save_screenshot(str(ARTIFACTS / "jupyterlab-timeout.png"))
    state = _state(driver)
    pytest.fail(f"{message}: prompts {state['prompts']}, kernel {state['kernel']!r} {state['status']!r}")


def _queued(driver) -> bool:
    """Every cell queued or run: no prompt left blank ("[ ]:")."""
    prompts = _state(driver)["prompts"]
    return bool(prompts) and "[ ]:" not in prompts


def _run_all(driver) -> None:
    """Run > Run All Cells, as a user would, until every cell is queued (JupyterLab marks them [*] as the
    command runs). The command acts on the current notebook and is disabled (the click goes nowhere)
    while the page is still settling: then it is tried again, unless the cells did start meanwhile."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[0].click()  # the notebook is the current widget
            next(m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if m.text.strip() == "Run").click()
            item = driver.find_element(By.CSS_SELECTOR, 'li.lm-Menu-item[data-command="runmenu:run-all"]')
            if "lm-mod-disabled" not in item.get_attribute("class"):
                item.click()
                WebDriverWait(driver, 5, poll_frequency=0.1).until(_queued)
                return
        except (WebDriverException, IndexError, StopIteration):  # re-rendered, not yet interactable, or not queued within 5 s
            pass
        if _queued(driver):  # queued after all: a second click would run everything twice
            return
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        time.sleep(0.25)
    _fail(driver, "Run > Run All Cells did not start the notebook")


def _figures(driver) -> list[list[int]]:
    return driver.execute_script(FIGURES)


def test_notebook_runs_all_cells_in_jupyterlab(lab, browser):  # noqa: F811
    url, log = lab
    before = (ROOT / "notebooks" / NOTEBOOK).read_bytes()
    n_code = sum(cell["cell_type"] == "code" for cell in json.loads(before)["cells"])
    browser.get(url)
    # Idle with its kernel connected (the indicator says idle before the session exists, over "No Kernel")
    # and every code cell drawn.
    _wait(browser, 60, lambda d: (s := _state(d))["status"] == "idle" and s["kernel"] not in (None, "", "No Kernel")
          and len(s["prompts"]) == n_code, "idle kernel on the opened notebook")

    _run_all(browser)
    _wait(browser, 120, lambda d: (s := _state(d))["errors"] or (s["status"] == "idle" and all(p[1:-2].isdigit() for p in s["prompts"])),
          "end of Run All (every prompt numbered, kernel idle)")
    state = _state(browser)
    assert not state["errors"], state["errors"]
    assert state["prompts"] == [f"[{i}]:" for i in range(1, n_code + 1)]
    # Every figure drawn: 2 + 2 static ones, the two FigureWidgets of the explorer.
    _wait(browser, 30, lambda d: len(f := _figures(d)) >= 6 and all(length for length, _ in f), "six drawn figures")
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
    browser.save_screenshot(str(ARTIFACTS / "jupyterlab-01_trajectories.png"))

    server_log = log.read_text()
    assert "serialization failed" not in server_log and "Traceback" not in server_log, server_log[-3000:]
    assert (ROOT / "notebooks" / NOTEBOOK).read_bytes() == before, "JupyterLab wrote into the repository's notebook"
