"""Plug-ins in a real browser: `streamlit run app.py` with EXPLORER_PLUGINS naming the example
solver and model plug-ins and a broken file, driven by headless Chromium (fixtures from
test_browser.py). The Trajectories page opens with the plug-in solver chosen, draws its charts, and
shows the broken plug-in's error in the sidebar; it opens with a plug-in model chosen as well.
Screenshots: artifacts/browser-plugins.png, artifacts/browser-model-plugin.png."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By

from test_browser import ROOT, _free_port, _inner_text, _no_exception, _open, _shot, serve

EXAMPLE = ROOT / "examples" / "my_solver.py"
MODEL_EXAMPLE = ROOT / "examples" / "my_model.py"


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory):
    """The app on a free port with EXPLORER_PLUGINS = the two examples and a broken file."""
    broken = tmp_path_factory.mktemp("plugins") / "broken_plugin.py"
    broken.write_text("import explorer as ex\nraise RuntimeError('this plug-in is broken on purpose')\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "env", f"EXPLORER_PLUGINS={os.pathsep.join([str(EXAMPLE), str(MODEL_EXAMPLE), str(broken)])}",
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    with serve(args, f"{url}/_stcore/health", f"streamlit-plugins-{port}"):
        yield url, broken


def _selected(sidebar) -> dict:
    """The sidebar's select boxes: label -> chosen value."""
    return {box.get_attribute("aria-label"): box.get_attribute("value")
            for box in sidebar.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"] input')}


def test_the_plugin_solver_runs_and_the_broken_one_is_reported(plugin_server, browser):  # noqa: F811
    url, broken = plugin_server
    _open(browser, f"{url}/?{urlencode({'solver': 'heun-sigma', 'steps': '8', 'n': '500'})}", charts=3)
    _no_exception(browser)
    _shot(browser, "browser-plugins")
    sidebar = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]')
    chosen = _selected(sidebar)
    assert chosen["Solver"] == "heun-sigma"
    nfe = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')[0].text
    assert nfe.splitlines()[-1] == "16"  # 8 Heun steps, 2 evaluations each
    assert browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm")
    errors = sidebar.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert len(errors) == 1, [e.text for e in errors]
    assert str(broken) in errors[0].text and "this plug-in is broken on purpose" in errors[0].text
    sidebar_text = _inner_text(browser, '[data-testid="stSidebar"]')
    assert "heun-sigma" in sidebar_text and "my_solver.py" in sidebar_text


def test_a_plugin_model_samples_on_trajectories(plugin_server, browser):  # noqa: F811
    url, broken = plugin_server
    _open(browser, f"{url}/?{urlencode({'denoiser': 'my-mlp-1d', 'steps': '10', 'n': '500'})}", charts=3)
    _no_exception(browser)
    _shot(browser, "browser-model-plugin")
    sidebar = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]')
    chosen = _selected(sidebar)
    assert chosen["Model"] == "my-mlp-1d" and "Target" not in chosen and "Schedule" not in chosen
    sidebar_text = _inner_text(browser, '[data-testid="stSidebar"]')
    assert "my-flow-2d" in sidebar_text and "my_model.py" in sidebar_text
    metrics = {m.text.splitlines()[0]: m.text.splitlines()[1] for m in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')}
    assert metrics["NFE"] == "10" and float(metrics["Distance to target"]) < 0.5
    main = browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]')
    assert "Model my-mlp-1d samples on its own target" in _inner_text(browser, '[data-testid="stMain"]')
    assert not main.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    assert browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm")
