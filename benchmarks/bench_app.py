"""How live the app feels, measured in headless Chromium: for every page, a fresh app process is started
and the page opened cold; the time to its first drawn figure and to a settled page (no spinner,
skeleton, progress bar, running status or chart still drawing) is printed; then each page's main
controls are changed one at a time, and the time from the change to the first updated figure and to a
settled page is printed. Before the pages, the browser visits the app once (on an app process of its
own) and that first visit's time is printed on its own line, then the first page's time in a new tab
(each open on a fresh app process): a new tab's renderer compiles Streamlit's and plotly's scripts
again, from the HTTP cache. The pages are then timed with the browser's cache warm, a fresh app process
each, in one tab, as a reload after the app restarted is (--cold-browser skips the warm-up and the new
tabs).

    python benchmarks/bench_app.py                 # every page
    python benchmarks/bench_app.py trajectories    # some pages, by url path ("" is Trajectories)
    python benchmarks/bench_app.py --markdown      # the table as the README shows it
    python benchmarks/bench_app.py --floor         # first, the floor: bare Streamlit pages with one figure

Budgets on a 2-core machine (issue 15): first figure <= 1.5 s cold, settled <= 3 s; a control that
only redraws <= 0.3 s to the updated figure; one that changes the problem <= 1 s to its first
updated figure. Needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium
chromium-driver).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from app_pages import chart
from explorer.gallery import TITLES  # the app's page titles by url path

ROOT = Path(__file__).resolve().parent.parent
# A page is busy while any of these shows: Streamlit's spinners, skeleton, running status and progress bars, and
# the app's charts that are not drawn yet (they draw one by one, app_pages/chart.py).
BUSY = ('[data-testid="stSpinner"], [data-testid="stSkeleton"], [data-testid="stStatusWidget"], '
        f'[data-testid="stProgress"], .{chart.CLASS}:not(.js-plotly-plot)')
# Set in every page before its own scripts run: the time (ms from navigation start) of the first frame after a
# figure's SVG is in the page. Read in the page, it is what a user sees, and the benchmark can poll gently: polling
# the DOM from selenium every 20 ms took the page's main thread from its own rendering.
FIRST_FIGURE = """
window.__firstFigure = null;
new MutationObserver((records, observer) => {
  if (document.querySelector('.js-plotly-plot .main-svg')) {
    observer.disconnect();
    requestAnimationFrame(() => { window.__firstFigure = performance.now(); });
  }
}).observe(document, {childList: true, subtree: true});
"""
REDRAW, PROBLEM = "redraw", "problem"
BUDGET = {"first": 1.5, "settled": 3.0, REDRAW: 0.3, PROBLEM: 1.0}

# url path -> the controls changed, in order: (kind of change, widget key, action, argument).
# Actions: "right" (slider one step up), "up" (number input +), "pick" (selectbox option),
# "click" (toggle or checkbox), "choose" (radio or segmented option by its text).
PAGES = {
    "": [(REDRAW, "x0", "click", None), (REDRAW, "axis", "choose", "t"),
         (PROBLEM, "steps", "right", None), (PROBLEM, "solver", "pick", "euler"),
         (PROBLEM, "gmm-1d-3modes.std", "up", None)],
    "solver-lab": [(REDRAW, "x0", "click", None), (PROBLEM, "nfe", "right", None),
                   (PROBLEM, "gmm-2d-ring8.radius", "up", None), (PROBLEM, "a", "pick", "euler")],
    "stability": [(REDRAW, "beta", "right", None), (REDRAW, "re", "right", None),
                  (PROBLEM, "run_steps", "right", None), (PROBLEM, "w", "right", None)],
    "mode-interpolation": [(REDRAW, "threshold", "right", None), (REDRAW, "denoiser_t", "right", None),
                           (REDRAW, "window", "right", None), (PROBLEM, "sampler", "choose", "ddim")],
    "images": [(REDRAW, "index", "right", None), (REDRAW, "n_side", "right", None),
               (PROBLEM, "nfe", "right", None), (PROBLEM, "solver", "pick", "euler")],
    "schedules": [(REDRAW, "time_axis", "choose", "linear"), (REDRAW, "drift_axis", "choose", "t"),
                  (PROBLEM, "path_steps", "right", None), (PROBLEM, "b", "pick", "vp-cosine"),
                  (PROBLEM, "gmm-1d-3modes.std", "up", None)],
    "audit": [(REDRAW, "at", "right", None), (PROBLEM, "audit.gmm-1d-3modes.std", "up", None)],
    "guidance": [(PROBLEM, "gstrength", "up", None), (PROBLEM, "gn", "right", None)],
    "search": [(REDRAW, "nfe", "right", None), (REDRAW, "dc_nfe", "right", None)],
    "starts": [(PROBLEM, "snr_steps", "right", None), (PROBLEM, "snr_spread", "right", None)],
    "learned-fields": [(REDRAW, "curl_level", "right", None), (PROBLEM, "gauge_c", "right", None),
                       (PROBLEM, "err_steps", "right", None)],
    "few-steps": [(REDRAW, "fs_xt", "right", None), (REDRAW, "fs_paths", "right", None),
                  (PROBLEM, "fs_target", "pick", "gmm-2d-ring8")],
}

# Marks the user's inputs (pointer down, key down: what selenium's click or key sends) and the first change drawn
# inside a figure after an input (a replot redraws its SVG; a new chart adds one). A change is timed from its input
# as the page saw it, not from the benchmark's command: selenium takes 0.1-0.2 s on 2 cores to find the widget and
# send the click, which no user waits for.
WATCH = """
window.__bench = {inputs: [], first: null};
if (!window.__benchObserver) {
  const input = () => { if (window.__bench) window.__bench.inputs.push(performance.now()); };
  document.addEventListener('pointerdown', input, true);
  document.addEventListener('keydown', input, true);
  // A change inside a figure, or a node added that holds one. Hover labels and the mode bar change under the pointer
  // alone (a list closing over a figure): not a redraw.
  const inFigure = n => n && n.nodeType === 1 && !!n.closest('.js-plotly-plot') && !n.closest('.hoverlayer, .modebar-container');
  const holdsFigure = n => n.nodeType === 1 && (inFigure(n) || !!n.querySelector('.main-svg'));
  window.__benchObserver = new MutationObserver(ms => {
    if (!window.__bench || !window.__bench.inputs.length || window.__bench.first !== null) return;
    for (const m of ms) {
      const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      if (inFigure(t) || Array.from(m.addedNodes).some(holdsFigure)) { window.__bench.first = performance.now(); return; }
    }
  });
  window.__benchObserver.observe(document.body, {childList: true, subtree: true, attributes: true, characterData: true});
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The app as `bash scripts/dev.sh app` starts it (app_pages/serve.py: `streamlit run app.py` with
    its heavy imports done before the server answers), in a fresh process on `port` (a free one by default);
    ended with its process group. The clock starts once the server answers. The browser caches Streamlit's
    and plotly's scripts per origin, port included: the fresh processes of one run share a port, as the
    app's restarts do at localhost:8501. With `script`, that Streamlit script is served instead, by plain
    `streamlit run` (the floor's page)."""

    def __init__(self, port: int | None = None, script: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = ([sys.executable, "-m", "streamlit", "run", str(script), "--server.enableStaticServing", "true"]
                   if script is not None else [sys.executable, str(ROOT / "app_pages" / "serve.py")])
        args = [*command, "--server.headless", "true", "--server.port", str(self.port), "--server.address",
                "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, cwd=ROOT if script is None else script.parent, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(f"the app did not start: {self.log.read()[-2000:].decode()}")
            time.sleep(0.1)

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def chromium() -> webdriver.Chrome:
    """Headless Chromium on a fresh profile (its cache starts empty), deleted when the driver quits or the
    benchmark exits (a profile takes 15-70 MB)."""
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    atexit.register(shutil.rmtree, profile, True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    quit_browser = driver.quit

    def quit_and_clean():
        try:
            quit_browser()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    driver.set_window_size(1400, 1000)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_FIGURE})
    return driver


def new_tab(driver) -> None:
    """Replace the current tab by a new one. A new tab gets a renderer process of its own, which compiles
    Streamlit's and plotly's scripts again (reading them from the HTTP cache): about 1 s more than a reload in
    the same tab on 2 cores, which reuses the scripts its process compiled."""
    old = driver.current_window_handle
    driver.switch_to.new_window("tab")
    fresh = driver.current_window_handle
    driver.switch_to.window(old)
    driver.close()
    driver.switch_to.window(fresh)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_FIGURE})


def busy(driver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, BUSY))


def failed(driver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'))


def open_cold(driver, url: str, timeout: float = 120) -> tuple[float, float]:
    """Seconds from navigation to the first drawn figure (FIRST_FIGURE) and to a settled page: a figure drawn and
    nothing busy for 0.5 s (polled every 0.1 s)."""
    start = time.perf_counter()
    driver.get(url)
    first = settled = quiet_since = None
    while time.perf_counter() - start < timeout:
        now = time.perf_counter() - start
        if first is None:
            drawn = driver.execute_script("return window.__firstFigure")
            first = None if drawn is None else drawn / 1e3
        if failed(driver):
            raise RuntimeError(f"{url}: the page shows an exception")
        if first is not None and not busy(driver):
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= 0.5:
                settled = max(quiet_since, first)
                break
        else:
            quiet_since = None
        time.sleep(0.1)
    return first, settled


def widget(driver, key: str):
    found = driver.find_elements(By.CSS_SELECTOR, f".st-key-{key.replace('.', '-')}")
    if not found:
        raise RuntimeError(f"no widget with key {key!r} on the page")
    return found[0]


def act(driver, key: str, action: str, arg, tries: int = 20) -> None:
    """Do the action, retrying while the widget is being re-rendered."""
    for attempt in range(tries):
        try:
            return _act(driver, key, action, arg)
        except (NoSuchElementException, StaleElementReferenceException):
            if attempt == tries - 1:
                raise
            time.sleep(0.1)


def _act(driver, key: str, action: str, arg) -> None:
    box = widget(driver, key)
    if action == "right":
        thumb = box.find_element(By.CSS_SELECTOR, 'input[type="range"], [role="slider"]')
        driver.execute_script("arguments[0].focus()", thumb)
        thumb.send_keys(Keys.ARROW_RIGHT)
    elif action == "up":
        box.find_element(By.CSS_SELECTOR, 'button[data-testid="stNumberInputStepUp"]').click()
    elif action == "click":
        box.find_element(By.CSS_SELECTOR, "label").click()
    elif action == "choose":
        options = [e for e in box.find_elements(By.CSS_SELECTOR, "label, button") if e.text.strip() == arg]
        if not options:
            raise RuntimeError(f"{key}: no option {arg!r}")
        options[0].click()
    elif action == "pick":
        box.find_element(By.CSS_SELECTOR, '[role="combobox"]').click()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            items = [e for e in driver.find_elements(By.CSS_SELECTOR, '[role="option"]') if e.text.strip() == arg]
            if items:
                items[0].click()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{key}: no option {arg!r} in the list")
    else:
        raise ValueError(f"unknown action {action!r}")


def change(driver, key: str, action: str, arg, timeout: float = 120) -> tuple[float | None, float]:
    """Seconds from the change (its last input before the figure changed: a pick opens the list, then chooses) to the
    first updated figure (None if no figure changed) and to a settled page."""
    driver.execute_script(WATCH)
    act(driver, key, action, arg)
    mark = driver.execute_script("return performance.now()")  # the page's clock as the polling below starts
    start = time.perf_counter()
    settled, quiet_since, seen_busy = None, None, False
    while time.perf_counter() - start < timeout:
        now = time.perf_counter() - start
        if busy(driver):
            seen_busy, quiet_since = True, None
        else:
            quiet_since = now if quiet_since is None else quiet_since
            # settled: quiet for 0.5 s after the rerun (which may have been too quick to be seen busy)
            if now - quiet_since >= 0.5 and (seen_busy or now > 1.0):
                settled = quiet_since
                break
        time.sleep(0.02)
    if failed(driver):
        raise RuntimeError(f"{key}: the page shows an exception after the change")
    inputs, first = driver.execute_script("return [window.__bench.inputs, window.__bench.first]")
    if not inputs:
        raise RuntimeError(f"{key}: the page saw no input from the {action!r}")
    t0 = max(t for t in inputs if first is None or t <= first)
    first = None if first is None else (first - t0) / 1e3
    return first, max(settled + (mark - t0) / 1e3, first or 0.0)


def first_visit_and_new_tabs(driver, port: int, rows: list, page: str, label: str, repeat: int,
                             script: Path | None = None) -> None:
    """Append and print the rows of the browser's first visit of the first page (`script`'s if given, else
    Trajectories), then of `repeat` opens of it in a new tab, each on a fresh app process on `port`. The first
    visit also fetches and compiles Streamlit's and plotly's scripts (1-2 s more on 2 cores than a reload);
    a new tab compiles them again, from the HTTP cache. Every page is then timed on a fresh app process on the
    same port, with the browser's cache warm, as on a visit after the first."""
    first = open_fresh(driver, port, script=script)[0]
    rows.append(dict(page=page, what="first view, the browser's first visit", kind="first", first=first, settled=first))
    print(f"{label}, the browser's first visit: first figure {first:.2f} s", flush=True)
    opens = []
    for _ in range(repeat):
        new_tab(driver)
        opens.append(open_fresh(driver, port, script=script))
    first_view(rows, page, "first view, a new tab", opens, f"{label} in a new tab")


def open_fresh(driver, port: int | None, path: str = "", script: Path | None = None) -> tuple[float, float]:
    """open_cold on the page at `path`, served by a fresh app process on `port` (a free one if None), ended after
    (`script`: App's)."""
    app = App(port, script)
    try:
        return open_cold(driver, f"{app.url}/{path}")
    finally:
        app.close()


def first_view(rows: list, page: str, what: str, opens: list, label: str) -> None:
    """Append and print the row of a first view opened len(opens) times: the medians of its (first, settled)."""
    first, settled = (None if any(o[i] is None for o in opens) else statistics.median(o[i] for o in opens)
                      for i in (0, 1))
    what += f", median of {len(opens)}" if len(opens) > 1 else ""
    rows.append(dict(page=page, what=what, kind="first", first=first, settled=settled))
    print(f"{label}: first figure {first:.2f} s, settled {settled:.2f} s"
          + (f" (median of {', '.join(f'{o[0]:.2f}' for o in opens)})" if len(opens) > 1 else ""), flush=True)


def measure(pages: list[str], screenshots: Path | None = None, warm: bool = True, repeat: int = 1) -> list[dict]:
    """The rows of the table. A page's first view is opened `repeat` times, each on a fresh app process, and
    its median taken (one open varies by +-0.5 s on 2 cores); its controls are changed on the last."""
    rows = []
    driver = chromium()
    port = free_port()  # every app process of the run: the browser's cache is per origin
    try:
        if warm:
            first_visit_and_new_tabs(driver, port, rows, TITLES[""], f"{'(browser warm-up)':20s} Trajectories", repeat)
        for path in pages:
            opens = [open_fresh(driver, port if warm else None, path) for _ in range(repeat - 1)]
            app = App(port if warm else None)  # the last open stays up: its controls are changed next
            try:
                opens.append(open_cold(driver, f"{app.url}/{path}"))
                first_view(rows, TITLES[path], "first view (cold, same tab)", opens, f"{TITLES[path]:20s} cold")
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    driver.set_window_size(1400, max(1000, driver.execute_script(
                        "const m = document.querySelector('[data-testid=stMain]');"
                        "return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0)")))
                    driver.save_screenshot(str(screenshots / f"{path or 'trajectories'}.png"))
                    driver.set_window_size(1400, 1000)
                for kind, key, action, arg in PAGES[path]:
                    try:
                        f, s = change(driver, key, action, arg)
                    except (RuntimeError, WebDriverException, StaleElementReferenceException) as err:
                        print(f"  {key}: {err}", flush=True)
                        continue
                    label = f"{key} {action}" + (f" {arg}" if arg else "")
                    rows.append(dict(page=TITLES[path], what=label, kind=kind, first=f, settled=s))
                    print(f"  {label:32s} ({kind}): updated figure {'-' if f is None else f'{f:.2f} s'}, "
                          f"settled {s:.2f} s", flush=True)
            finally:
                app.close()
    finally:
        driver.quit()
    return rows


# The floor: the least a Streamlit page with one plotly figure costs on this machine and browser, timed as the
# app's pages are, drawn two ways: by Streamlit's own chart (st.plotly_chart, which loads the whole of plotly.js,
# 4.8 MB) and by the app's (app_pages/chart.py: the partial plotly.js in static/, 1.6 MB). What a page of the app
# takes beyond the second is the page's own (its script, widgets, text and figures).
FLOOR_PAGES = {
    "Floor: st.plotly_chart, one figure": """import plotly.graph_objects as go
import streamlit as st

st.title("One figure")
st.plotly_chart(go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 2, 1])))
""",
    "Floor: the app's chart, one figure": f"""import sys

sys.path.insert(0, {str(ROOT)!r})
import plotly.graph_objects as go
import streamlit as st

from app_pages import chart

st.title("One figure")
chart.draw(go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 2, 1])))
""",
}


def measure_floor(repeat: int = 1) -> list[dict]:
    """The rows of each of FLOOR_PAGES, timed as measure() times Trajectories: the browser's first visit, then
    `repeat` opens in a new tab, then `repeat` reloads, each on a fresh app process (a browser of its own each)."""
    rows = []
    for name, page in FLOOR_PAGES.items():
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
            script = Path(folder) / "floor.py"
            script.write_text(page)
            (Path(folder) / "static").symlink_to(ROOT / "static")  # served next to the script, as next to app.py
            driver = chromium()
            port = free_port()
            label = f"{'(floor)':20s} {name.removeprefix('Floor: ')}"
            try:
                first_visit_and_new_tabs(driver, port, rows, name, label, repeat, script)
                opens = [open_fresh(driver, port, script=script) for _ in range(repeat)]
                first_view(rows, name, "first view (cold, same tab)", opens, f"{label}, cold")
            finally:
                driver.quit()
    return rows


def machine_speed() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (10 million squares summed): the same machine has
    taken 0.38 s quiet and over 1 s while its neighbours worked, and every time above scales with it. Printed before
    and after a run, so that a table says how fast the machine was."""
    start = time.perf_counter()
    sum(i * i for i in range(10_000_000))
    return time.perf_counter() - start


def markdown(rows: list[dict]) -> str:
    out = ["| Page | Change | Kind | First updated figure (s) | Settled (s) | Budget (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        budget = BUDGET[r["kind"]]
        first = "-" if r["first"] is None else f"{r['first']:.2f}"
        mark = "" if r["first"] is None or r["first"] <= budget else " (over)"
        out.append(f"| {r['page']} | {r['what']} | {r['kind']} | {first}{mark} | {r['settled']:.2f} | {budget} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="url paths (default: every page; '' or 'trajectories' for the first)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown at the end")
    parser.add_argument("--screenshots", type=Path, help="save each settled page's first view here (PNG)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="open each page's first view this many times, each on a fresh app process, and report "
                             "the medians")
    parser.add_argument("--cold-browser", action="store_true",
                        help="skip the warm-up visit and open every page on a port of its own: nothing is cached")
    parser.add_argument("--floor", action="store_true",
                        help="first time minimal Streamlit pages with one plotly figure the same way (a first visit, "
                             "new tabs, reloads), drawn by st.plotly_chart and by the app's chart: Streamlit's and "
                             "plotly's own share of a first view")
    args = parser.parse_args(argv)
    pages = [("" if p in ("", "trajectories") else p) for p in args.pages] or list(PAGES)
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        parser.error(f"unknown pages {unknown}; choose from {[p or 'trajectories' for p in PAGES]}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    before = machine_speed()
    print(f"machine speed: the reference loop took {before:.2f} s (about 0.4 s on a quiet 2-core machine)", flush=True)
    rows = measure_floor(args.repeat) if args.floor else []
    rows += measure(pages, args.screenshots, warm=not args.cold_browser, repeat=args.repeat)
    after = machine_speed()
    print(f"machine speed: the reference loop took {before:.2f} s before the run, {after:.2f} s after", flush=True)
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
