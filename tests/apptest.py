"""Opening the app under Streamlit's AppTest, shared by the page tests."""

import base64
import functools
import html
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from streamlit import config
from streamlit.components.v2 import manifest_scanner
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import AppTest, local_script_runner
from streamlit.util import calc_hash

from app_pages import chart
from explorer.gallery.card import PAGES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
URL_PATHS = {file: url for url, file in PAGES.items() if url}  # page file -> its url path in app.py

# The pages draw their figures with app_pages/chart.py's component when Streamlit serves static/ (the app's
# .streamlit/config.toml turns it on; read only from the project's folder): on for the tests from any folder.
config.set_option("server.enableStaticServing", True)

# Every new AppTest scans the metadata of every installed distribution for Streamlit components
# (BidiComponentManager.discover_and_register_components: 170 packages, 0.2-0.35 s a time) before its
# first run. The installed packages do not change while the tests run: scan once per test process.
if not hasattr(manifest_scanner.scan_component_manifests, "cache_info"):
    manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)

# Every run of an AppTest compiles its scripts anew (app.py and the page: read, rewritten for Streamlit's magic,
# compiled; 7-20 ms each), as each run gets a fresh ScriptCache. The app's server compiles a script once per
# process: so do the tests, keyed by the file's path, mtime and size (a script a test rewrites compiles again).
_BYTECODE: dict = {}
_compile_script = ScriptCache.get_bytecode


def _compiled_once(self, script_path: str):
    stat = os.stat(script_path)
    key = (os.path.abspath(script_path), stat.st_mtime_ns, stat.st_size, config.get_option("runner.magicEnabled"))
    if key not in _BYTECODE:
        _BYTECODE[key] = _compile_script(self, script_path)
    return _BYTECODE[key]


if ScriptCache.get_bytecode.__name__ != "_compiled_once":  # once, if this module is imported twice
    ScriptCache.get_bytecode = _compiled_once


def _wait_for_the_run(runner, timeout: float = 3) -> None:
    """local_script_runner.require_widgets_deltas, polling every 10 ms instead of every 1 ms: the test's
    thread woke 1000 times a second for the GIL while the page's script ran (a few seconds of CPU in
    a page test's profile). Same contract: return when the run stopped, else stop it and raise."""
    start = time.time()
    while time.time() - start < timeout:
        if runner.script_stopped():
            return
        time.sleep(0.01)
    if runner.script_stopped():
        return
    runner.request_stop()
    runner.join()
    raise RuntimeError(f"AppTest script run timed out after {timeout}(s)")


local_script_runner.require_widgets_deltas = _wait_for_the_run


def open_app(page: str | None = None, timeout: float = 120, **query) -> AppTest:
    """The app run once with these query parameters, on `page` (a file under app_pages/) if one is
    given, on the default page otherwise. The app's frame runs as in a browser (navigation and the
    plug-in report), and the page's URL-bound widgets take the query on that first run."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in query.items():
        at.query_params[key] = value
    if page is not None:
        at.switch_page(page)
        # Before the first run AppTest names a page by its file, but st.Page names it by its url_path
        # (solver_lab.py is "solver-lab"): use the app's name, so the app opens on the page as a link does.
        at._page_hash = calc_hash(URL_PATHS.get(Path(page).name, Path(page).stem))
    at.run()
    return at


def open_page_from_url(page: str | None = None, timeout: float = 120, **query) -> AppTest:
    """open_app: `page` opened from a URL carrying the query (kept as the name the page tests use)."""
    return open_app(page, timeout=timeout, **query)


@contextmanager
def app_plugins(monkeypatch, *paths):
    """EXPLORER_PLUGINS = paths for the app, its cached plug-in load cleared before and after, so
    that no other test sees these plug-ins."""
    from app_pages import controls

    monkeypatch.setenv("EXPLORER_PLUGINS", os.pathsep.join(str(p) for p in paths))
    controls.load_plugins.clear()
    try:
        yield
    finally:
        controls.load_plugins.clear()


def assert_clean(at: AppTest) -> None:
    """No exception and no error box on the page."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def code_text(at: AppTest) -> list[str]:
    """The text of every code block on the page (controls.code_block: an st.html <pre>), as a reader copies it."""
    from app_pages import controls

    pattern = re.compile(rf'<pre class="{controls.CODE_CLASS}"[^>]*>(.*)</pre>', re.S)
    found = (pattern.fullmatch(e.proto.body) for e in at.get("html"))
    return [html.unescape(m.group(1)) for m in found if m]


def page_text(at: AppTest) -> str:
    """What a reader sees of the page as text, one entry a line: every metric as "label: value",
    then the markdown, captions and alerts, in page order within each kind."""
    lines = [f"{m.label}: {m.value}" for m in at.metric]
    for kind in ("markdown", "caption", "info", "success", "warning", "error"):
        lines += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(lines)


def _chart_elements(at) -> list:
    return [e for e in at.get("bidi_component") if e.proto.component_name == chart.NAME]


def charts(at) -> list[dict]:
    """The figures the page drew (app_pages.chart.draw), in page order, each as the plotly JSON sent to the browser
    (data, layout, frames)."""
    return [json.loads(e.proto.bytes)["figure"] for e in _chart_elements(at)]


def keyed_charts(at) -> dict[str, dict]:
    """charts(at) by the key each figure was drawn with (the last part of its element id; "None" without a key)."""
    return {e.proto.id.split("-")[-1]: json.loads(e.proto.bytes)["figure"] for e in _chart_elements(at)}


def array(value, dtype=None) -> np.ndarray:
    """A plotly JSON array as sent to the browser (a list, None as NaN, or plotly's base64 {"dtype", "bdata"}, in its
    own dtype unless `dtype` is given)."""
    if isinstance(value, dict):
        decoded = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return decoded if dtype is None else decoded.astype(dtype)
    return np.asarray(value, dtype=dtype or np.float64)
