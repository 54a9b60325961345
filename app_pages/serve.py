"""Start the app with its heavy imports done before the server answers, so that the first visit
of a page pays only for that page's own work:

    python app_pages/serve.py [streamlit options]     (what `bash scripts/dev.sh app` runs)

`streamlit run app.py` imports nothing of the app until the first browser session, which then
waits for scipy's integrators (0.9 s on 2 cores), torch (1-2 s), plotly's figure classes and the
explorer itself. Here they are imported first, in this process, then Streamlit's own command line
runs app.py in the same process, where those imports are already done."""

from __future__ import annotations

import gc
import importlib
import sys
import time
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"
# scipy.stats: diffusers' schedulers import it (0.2-0.5 s of the scheduler audit's first run), as does minority guidance
MODULES = ("numpy", "scipy.integrate", "scipy.optimize", "scipy.ndimage", "scipy.stats", "pandas",
           "plotly.graph_objects", "plotly.subplots", "streamlit", "explorer", "explorer.figures")
OPTIONAL = ("torch", "explorer.learned.mlp", "explorer.learned.image_models", "explorer.learned.unet",
            "diffusers")  # the learned-model pages and the scheduler audit (diffusers alone takes 3-5 s)
TRACES = ("Scatter", "Scattergl", "Heatmap", "Histogram", "Bar", "Contour", "Image", "Surface")


def warm() -> float:
    """Import what every page needs and build one figure of each trace type the pages draw
    (plotly builds its validators on first use). Returns the seconds it took."""
    start = time.perf_counter()
    for name in MODULES:
        importlib.import_module(name)
    for name in OPTIONAL:  # a missing extra only makes its page pay for it (or say it is missing)
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from streamlit import string_util

    # Streamlit reads a leading emoji off any non-ASCII alert or pills label with a regex over its
    # catalogue of every emoji, compiled on first use (0.03-0.1 s, on the first page that shows one)
    string_util.extract_leading_emoji("·")
    import plotly.graph_objects as go

    from explorer.figures import style

    go.Figure([getattr(go, trace)() for trace in TRACES], layout=dict(template=style.TEMPLATE)).to_dict()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    seconds = warm()
    # Streamlit runs gc.collect(2) after every script run (runner.postScriptGC), holding the GIL: over the
    # 440,000 objects these imports leave, 0.3 s on a quiet core and about 1 s on a busy one, after every
    # click. They live as long as the server: freeze them out of the collector's sight (gc.freeze), so
    # the collection after a run looks only at what the pages made.
    gc.freeze()
    print(f"diffusion-explorer: imports done in {seconds:.1f} s; starting Streamlit", flush=True)
    from streamlit.web import cli

    # static/ holds the pages' plotly.js (app_pages/chart.py): served from any working directory, not only where
    # .streamlit/config.toml is read (an option given in argv still wins).
    sys.argv = ["streamlit", "run", str(APP), "--server.enableStaticServing", "true", *argv]
    sys.exit(cli.main())


if __name__ == "__main__":
    main(sys.argv[1:])
