import os
import sys
import warnings
from pathlib import Path

# Two test workers share two cores: one math thread each. Oversubscribed torch (2 workers x 2
# threads) measured 5-35x slower on the learned models; set before any test imports torch, and
# inherited by the notebook kernels and the app servers the tests start.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Property tests are derandomised: the same inputs on every run and machine.
settings.register_profile("default", derandomize=True, deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# One app server and one headless Chromium per test process, shared by every module's browser tests
# (starting them per module cost about 4 s each, 13 times). The helpers are in test_browser.py.
import pytest  # noqa: E402

def _in_browser_group(nodeid: str) -> bool:
    """The tests that drive the app server or Chromium: test_browser*.py and every test named *browser*."""
    return "browser" in nodeid.lower()


# Tests of several seconds each (a kernel per notebook), dealt out first: see _BrowserGroup.
LONG = ("tests/test_notebooks.py::test_notebook_runs_clean_from_its_folder",)


class _BrowserGroup:
    """Under xdist's default `load` distribution, the browser tests run on one worker, so that one app server
    and one Chromium serve all of them: split over two workers, each started its own pair and paid its
    imports and first page loads again. Everything else is distributed as `load` does (contiguous chunks,
    so that a module's fixtures are mostly set up once). xdist's own loadgroup cannot be used: its mark
    renames the test's nodeid, which pytest 9.2 no longer allows; loadscope would hand out one test at a
    time, splitting every module's fixtures over both workers."""

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getvalue("dist") != "load":
            return None
        from xdist.scheduler import LoadScheduling

        class BrowserFirstScheduling(LoadScheduling):
            """LoadScheduling whose first worker is handed every browser test first, and nothing else until
            they are done (check_schedule sends no more while a worker holds slow tests); the other workers
            are dealt the long tests (LONG) in turn before their first chunk, so that no worker is left
            with a run of notebooks at the end while the others idle."""

            def schedule(self) -> None:
                if self.collection is not None or not self._check_nodes_have_same_collection():
                    return super().schedule()
                collection = next(iter(self.node2collection.values()))
                browser = [i for i, nodeid in enumerate(collection) if _in_browser_group(nodeid)]
                nodes = self.nodes
                if not browser or len(nodes) < 2 or len(collection) - len(browser) < 2 * len(nodes):
                    return super().schedule()
                self.collection = collection
                rest = [i for i in range(len(collection)) if not _in_browser_group(collection[i])]
                long = [i for i in rest if collection[i].startswith(LONG)]
                self.pending[:] = [i for i in rest if not collection[i].startswith(LONG)]
                if self.maxschedchunk is None:
                    self.maxschedchunk = len(collection)
                self.node2pending[nodes[0]].extend(browser)
                nodes[0].send_runtest_some(browser)
                for k, node in enumerate(nodes[1:]):
                    dealt = long[k::len(nodes) - 1]
                    if dealt:
                        self.node2pending[node].extend(dealt)
                        node.send_runtest_some(dealt)
                chunk = max(min(len(collection) // len(nodes) // 4, self.maxschedchunk), 2)
                for node in nodes[1:]:
                    self._send_tests(node, chunk)

        return BrowserFirstScheduling(config, log)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_BrowserGroup(), "browser-group")


def pytest_itemcollected(item):
    if {"browser", "server"} & set(getattr(item, "fixturenames", ())) and not _in_browser_group(item.nodeid):
        warnings.warn(f"{item.nodeid} uses the app server or Chromium: name it *browser* so that it runs with "
                      "the other browser tests (conftest.py)")


@pytest.fixture(scope="session")
def server():
    """The app served on a free port as `bash scripts/dev.sh app` serves it (app_pages/serve.py: the
    heavy imports done first and frozen out of the garbage collector, then `streamlit run app.py`)."""
    from test_browser import ROOT as root, _free_port, serve

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable, str(root / "app_pages" / "serve.py"), "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    with serve(args, f"{url}/_stcore/health", f"streamlit-{port}", timeout=120):  # the imports first: 5-20 s
        yield url


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium driven by selenium (skips when either is missing), 1400 x 1000."""
    from test_browser import CHROMEDRIVER, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1400, 1000)
    yield driver
    driver.quit()
