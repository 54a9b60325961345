"""Controls shared by the pages. Each is built from the core's own declaration
(ex.targets.params, ex.solvers.info(name)["options"]) and bound to the URL, so the
UI cannot drift from the code and every view is a shareable link."""

from __future__ import annotations

import html
import inspect
import math
import numbers
import os

import streamlit as st

import explorer as ex

URL = "query-params"
MAX_SEED = 2**31 - 1


def _step(value: float) -> float:
    """A step of about a tenth of the value's order of magnitude (0.05 -> 0.005, 3 -> 0.5)."""
    return 0.5 * 10.0 ** math.floor(math.log10(abs(value))) if value else 0.1


def number(label: str, key: str, default, help: str | None = None, low=None, high=None, disabled: bool = False):
    """A number input for an int or float default, bound to the URL under `key`."""
    if isinstance(default, int) and not isinstance(default, bool):
        return st.number_input(label, low, high, int(default), 1, key=key, help=help, bind=URL, disabled=disabled)
    log_range = low is not None and high is not None and low > 0 and high / low >= 1e3
    fmt = "%.1e" if log_range or (default and abs(default) < 1e-3) else "%g"
    if log_range:
        step = None
    elif low is not None and high is not None:
        step = (high - low) / 20
    else:
        step = _step(float(default))
    return st.number_input(
        label, None if low is None else float(low), None if high is None else float(high), float(default),
        step, format=fmt, key=key, help=help, bind=URL, disabled=disabled,
    )


def seed(key: str = "seed", where=st, label: str = "Seed") -> int:
    """The seed of every random draw on the page (a numpy Generator is built from it), bound to the URL."""
    return int(where.number_input(label, 0, MAX_SEED, 0, 1, key=key, bind=URL))


def particles(default: int, key: str = "n", where=st, high: int = 20000, step: int = 100, help: str | None = None) -> int:
    """How many particles a run carries (from 10 to `high`), bound to the URL."""
    return int(where.number_input("Particles", 10, high, default, step, key=key, bind=URL, help=help))


def spacing(key: str = "spacing", where=st, label: str = "Time grid", explain: bool = True) -> str:
    """One of ex.SPACINGS, with ex.timesteps' docstring as help."""
    return where.selectbox(label, ex.SPACINGS, key=key, bind=URL,
                           help=inspect.cleandoc(ex.timesteps.__doc__) if explain else None)


def target(default: str = "gmm-1d-3modes") -> tuple:
    """Target preset, its parameters and optional custom modes, as a hashable key
    (name, ((param, value), ...), modes text or None) for load_target."""
    names = ex.targets.names()
    name = st.selectbox(
        "Target", names, names.index(default), key="target", bind=URL,
        help="A Gaussian mixture: every density, score and posterior mean is exact.",
    )
    st.caption(ex.targets.describe(name))
    params_box = st.container()  # filled below, once we know whether custom modes replace them
    custom = st.toggle("Custom modes", key="custom", bind=URL, help="Type the modes yourself, one per line.")
    with params_box:
        params = {
            p: number(p.replace("_", " "), f"{name}.{p}", default, disabled=custom)
            for p, default in ex.targets.params(name).items()
        }
    key = (name, tuple(params.items()), None)
    if custom:
        try:
            preset_text = ex.targets.to_text(load_target(key))
        except ValueError:
            preset_text = ex.targets.to_text(ex.targets.get(name))
        coords = "x" if ex.targets.get(name).dim == 1 else "x, y"
        text = st.text_area(
            "Modes", preset_text, height=140, key=f"{name}.modes", bind=URL,
            help=f"One mode a line: `{coords}, std[, weight]`. Lines starting with # are skipped.",
        )
        key = (name, (), text)
    return key


@st.cache_data(max_entries=64, show_spinner=False)
def load_target(key: tuple) -> ex.GaussianMixture:
    """The mixture a target() key stands for (ValueError on bad parameters or text)."""
    name, params, text = key
    if text is not None:
        return ex.targets.from_text(text, ex.targets.get(name).dim)
    return ex.targets.get(name, **dict(params))


def solver_options(solver: str) -> dict:
    """One widget per option the solver declares (type, default, range, choices, help)."""
    return solver_options_for(solver, "")


def solver_options_for(solver: str, prefix: str) -> dict:
    """solver_options under keys `prefix.solver.option` (plain `solver.option` without a
    prefix), for a page that shows one solver twice."""
    values = {}
    for opt, spec in ex.solvers.info(solver)["options"].items():
        key = ".".join(part for part in (prefix, solver, opt) if part)
        label, help = opt.replace("_", " "), spec["help"]
        if spec["type"] == "bool":
            values[opt] = st.checkbox(label, bool(spec["default"]), key=key, help=help, bind=URL)
        elif spec["type"] == "choice":
            choices = spec["choices"]
            values[opt] = st.selectbox(label, choices, choices.index(spec["default"]), key=key, help=help, bind=URL)
        else:
            low, high = spec.get("range", (None, None))
            default = int(spec["default"]) if spec["type"] == "int" else float(spec["default"])
            values[opt] = number(label, key, default, help, low, high)
    return values


def int_list(label: str, key: str, default: str, low: int = 1, high: int = 10_000, help: str | None = None) -> tuple:
    """A comma-separated list of integers (e.g. NFE values) bound to the URL: sorted, unique,
    each in [low, high]; ValueError naming the bad entry."""
    text = st.text_input(label, default, key=key, bind=URL, help=help)
    values = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{label}: {part!r} is not a number") from None
        if not value.is_integer() or not low <= value <= high:
            raise ValueError(f"{label}: {part!r} must be an integer in [{low}, {high}]")
        values.add(int(value))
    if not values:
        raise ValueError(f"{label}: give at least one value")
    return tuple(sorted(values))


@st.cache_resource(show_spinner=False)
def load_plugins(configured: str) -> list:
    """ex.plugins.load_configured() once per process (per value of EXPLORER_PLUGINS, passed in
    so that a changed variable loads again): plug-in solvers register before a page lists solvers."""
    return ex.plugins.load_configured()


def plugins() -> list:
    """Load the configured plug-ins (cached) and report them in the sidebar of every page: each one
    that failed as an error naming it and its exception, the others as captions of their solvers
    and of their models."""
    results = load_plugins(os.environ.get(ex.plugins.ENV, ""))
    with st.sidebar:
        for r in results:
            if r.error:
                st.error(f"**A plug-in failed to load**, the rest of the app works without it: {r.error}", icon=":material/extension:")
        for what, pick in (("solvers", lambda r: [n for n in r.names if n not in r.models]), ("models", lambda r: r.models)):
            loaded = [f"{', '.join(f'`{n}`' for n in pick(r))} ({r.source})" for r in results if not r.error and pick(r)]
            if loaded:
                st.caption(f"Plug-in {what}: " + "; ".join(loaded))
    return results


def table(rows: list[dict], formats: dict | None = None, labels: dict | None = None, where=st) -> None:
    """rows (dicts) as a markdown table, for the small read-only tables of the pages: the browser draws it as
    text, where st.dataframe's grid cost a page 0.4-0.6 s of the browser's CPU on every load (Few steps, Starts).
    The columns are the rows' keys in order of appearance (a row without one leaves its cell blank); formats maps
    a column to a format spec (".3f"; other non-integer numbers take ".4g"), labels to its heading; all-number
    columns are right-aligned."""
    formats, labels = formats or {}, labels or {}
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def cell(key, value) -> str:
        if value is None:
            return ""
        if key in formats:
            text = format(value, formats[key])
        elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            text = f"{value:.4g}"
        else:
            text = str(value)
        return text.replace("|", "\\|")

    right = {k for k in keys if all(isinstance(r.get(k, 0), numbers.Real) and not isinstance(r.get(k), bool) for r in rows)}
    lines = ["| " + " | ".join(labels.get(k, k) for k in keys) + " |",
             "|" + "|".join("---:" if k in right else "---" for k in keys) + "|"]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in keys) + " |" for r in rows]
    where.markdown("\n".join(lines))


CODE_CLASS = "explorer-code"  # the class of code_block's <pre>: tests/apptest.py's code_text reads it back


def code_block(text: str, where=st) -> None:
    """text as a monospace block for reading and copying (the searched sampler, a time grid). Not st.code:
    its syntax highlighter is a 1.6 MB script that the browser fetches and evaluates on every load of a page
    that shows one, before the page's figures are drawn (first figure in a reload, medians of 5, A/B
    interleaved: Solver search 1.56-1.61 s with it, 1.34-1.36 s without; Schedules 1.47-1.79 s, 1.27-1.53 s).
    Selectable text, scrolled sideways when wide, readable in both themes."""
    style = ("margin: 0; padding: 0.75rem 1rem; border-radius: 0.5rem; overflow-x: auto; white-space: pre; "
             "background: rgba(128, 128, 128, 0.1); color: inherit; font-size: 0.85rem; line-height: 1.5; "
             "font-family: 'Source Code Pro', monospace")
    where.html(f'<pre class="{CODE_CLASS}" style="{style}">{html.escape(text)}</pre>')


def report_core_error(err: Exception) -> None:
    """A failure of the core as a message, never a traceback: bad input (ValueError) says what
    to change; anything else is a bug in the core and says so."""
    if isinstance(err, ValueError):
        st.error(f"**Can't run this set-up.** {err}")
    else:
        st.error(f"**The core failed** on this set-up ({type(err).__name__}): {err}")
