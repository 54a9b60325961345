"""Schedules page: its figures carry the right numbers (the conversion map keeps lambda, the linked
paths' slider shows the states of the same step, the lazy schedule's drift is zero for a Gaussian,
the exported grid round-trips), and the Streamlit page runs headless by AppTest, cached controls
answering well under a second."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer as ex
from explorer import interpolants as I
from explorer.figures import schedules as F
from explorer.foundations.timesteps import sigmas_of

from apptest import array, assert_clean, charts, code_text, open_app


PAGE = "app_pages/schedules.py"
DRIFTS = ("ODE", "optimal SDE")
NAMES = ex.schedules.names()


def _trace(fig, name=None, col=None):
    out = [t for t in fig.data if (name is None or t.name == name) and (col is None or t.xaxis == ("x" if col == 1 else f"x{col}"))]
    assert out, f"no trace {name!r} in column {col}"
    return out


def _check_conversion_map(name_a, name_b):
    """The map of A to B: lambda kept and the scale alpha'/alpha where B reaches A's log-SNR, blank
    (NaN, not extrapolated) exactly where it does not. Returns where the map is drawn."""
    a, b = ex.schedules.get(name_a), ex.schedules.get(name_b)
    fig = F.conversion_map(a, b, name_a, name_b, grid=ex.timesteps(a, 8))
    line = _trace(fig, "t → t′")[0]
    t, t2 = np.asarray(line.x, dtype=np.float64), np.asarray(line.y, dtype=np.float64)
    ok = np.isfinite(t2)
    assert ok.sum() > 0.5 * len(t)  # every pair of named schedules shares most of its log-SNR range
    assert np.allclose(b.lambda_(t2[ok]), a.lambda_(t[ok]), rtol=1e-9, atol=1e-9)
    scale = np.asarray(_trace(fig, "α′/α")[0].y, dtype=np.float64)
    assert np.allclose(scale[ok], b.alpha(t2[ok]) / a.alpha(t[ok]), rtol=1e-12)
    # x' / alpha' = x / alpha: the scale times x / alpha' is x / alpha
    assert np.allclose(scale[ok] / b.alpha(t2[ok]), 1 / a.alpha(t[ok]), rtol=1e-12)
    # where B cannot reach A's log-SNR the map is blank, not extrapolated
    with np.errstate(divide="ignore"):
        lam_b_min, lam_b_max = float(b.lambda_(b.t_hi)), float(b.lambda_(b.t_lo))
    lam_a = a.lambda_(t)
    assert np.array_equal(~ok, (lam_a < lam_b_min - 1e-12) | (lam_a > lam_b_max + 1e-12))
    assert np.array_equal(np.isfinite(scale), ok)
    return t, ok


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(NAMES), st.sampled_from(NAMES))
def test_conversion_map_keeps_the_log_snr(name_a, name_b):
    _check_conversion_map(name_a, name_b)


# vp-linear's log-SNR stops at lambda(1) = -5.02; these schedules start below it (-6.91, -6.46)
@pytest.mark.parametrize("name_a, name_b", [("rectified-flow", "vp-linear"), ("trigonometric", "vp-linear")])
def test_conversion_map_is_blank_where_b_cannot_reach(name_a, name_b):
    t, ok = _check_conversion_map(name_a, name_b)
    assert not ok.all()  # the pair does reach the blank region
    assert t[~ok].min() > t[ok].max()  # the noisiest end of A, where its log-SNR is below B's lowest
    fig = F.conversion_map(ex.schedules.get(name_a), ex.schedules.get(name_b), name_a, name_b)
    assert any(f"{name_b} cannot reach {name_a}'s log-SNR" in (a.text or "") for a in fig.layout.annotations)


def test_conversion_map_of_ve_to_edm_is_the_identity_in_time():
    fig = F.conversion_map(ex.schedules.get("ve"), ex.schedules.get("edm"))
    line = _trace(fig, "t → t′")[0]
    assert np.allclose(line.y, line.x, rtol=1e-12)
    assert np.allclose(_trace(fig, "α′/α")[0].y, 1.0)


def test_curves_carry_each_schedules_coefficients():
    a, b = ex.schedules.get("vp-cosine"), ex.schedules.get("rectified-flow")
    fig = F.curves({"A": a, "B": b})
    for label, s in (("A", a), ("B", b)):
        alpha, sigma, lam = _trace(fig, label)
        t = np.asarray(alpha.x)
        assert t[0] == s.t_max and t[-1] == s.t_min
        assert np.allclose(alpha.y, s.alpha(t)) and np.allclose(sigma.y, s.sigma(t)) and np.allclose(lam.y, s.lambda_(t))
    assert fig.layout.xaxis.type != "log"  # both live on [0, 1]
    assert F.curves({"vp": a, "edm": ex.schedules.get("edm")}).layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="schedules"):
        F.curves({})


def _linked(target="gmm-1d-3modes", a="vp-linear", b="edm", steps=6, n=60):
    gm = ex.targets.get(target)
    sa, sb = ex.schedules.get(a), ex.schedules.get(b)
    model = ex.AnalyticModel(gm, sa)
    ts = ex.timesteps(sa, steps)
    traj = ex.sample(model, model.prior_sample(n, np.random.default_rng(0), t=ts[0]), ts, "ddim")
    other = ex.convert_path(traj, sb, from_schedule=sa)
    return gm, {a: sa, b: sb}, {a: traj, b: other}


@pytest.mark.parametrize("target", ["gmm-1d-3modes", "gmm-2d-ring8"])
def test_linked_paths_highlight_the_same_step_under_both(target):
    gm, schedules, trajs = _linked(target)
    (a, b), n_paths = list(trajs), 12
    fig = F.linked_paths(trajs, schedules, gm, n_paths=n_paths)
    (slider,) = fig.layout.sliders
    assert len(slider.steps) == len(trajs[a].t) and slider.active == len(trajs[a].t) - 1
    k = 3
    update, indices = slider.steps[k].args
    assert all(fig.data[i].name == "step" for i in indices)
    # the highlighted points of step k, by panel (x, x2, x3 are the panels' axes)
    shown = {fig.data[i].xaxis: (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
             for i, x, y in zip(indices, update["x"], update["y"])}
    scale = schedules[b].alpha(trajs[b].t[k]) / schedules[a].alpha(trajs[a].t[k])
    assert np.isclose(schedules[a].lambda_(trajs[a].t[k]), schedules[b].lambda_(trajs[b].t[k]), atol=1e-9)
    if gm.dim == 1:
        # panel A at A's time t_k, panel B at B's time t'_k, states scaled by alpha'/alpha
        (ta, xa), (tb, xb) = shown["x"], shown["x2"]
        assert np.allclose(ta, trajs[a].t[k]) and np.allclose(tb, trajs[b].t[k], rtol=1e-6)
        assert len(xa) == n_paths and np.allclose(xb, scale * xa, rtol=1e-5)  # float32 on the wire
        lam, z = shown["x3"]
        assert np.allclose(lam, schedules[a].lambda_(trajs[a].t[k]), rtol=1e-6)
        assert np.allclose(z, xa / np.hypot(schedules[a].alpha(ta[0]), schedules[a].sigma(ta[0])), rtol=1e-5)
        # the last panel: both paths, divided by sqrt(alpha^2 + sigma^2), coincide
        last = [t for t in fig.data if t.xaxis == "x3" and t.mode == "lines"]
        assert len(last) == 2 and np.allclose(last[0].y, last[1].y, rtol=1e-4, atol=1e-5, equal_nan=True)
    else:
        xa, xb = np.stack(shown["x"], axis=1), np.stack(shown["x2"], axis=1)
        assert len(xa) == n_paths and np.allclose(xb, scale * xa, rtol=1e-5)
        states = np.asarray(trajs[a].x[k])
        assert all(np.any(np.all(np.isclose(states, p, rtol=1e-6, atol=1e-6), axis=1)) for p in xa)  # A's own states
    with pytest.raises(ValueError, match="at least two"):
        F.linked_paths({a: trajs[a]}, {a: schedules[a]})


def test_lazy_schedule_drift_is_zero_for_a_gaussian_and_labelled():
    gm = ex.GaussianMixture(np.zeros((1, 2)), np.array([2.0]))
    curves = {}
    for name, s, diffusion in (("vp-linear", ex.schedules.get("vp-linear"), "zero"),
                               ("lazy", I.lazy(gm), "zero"), ("lazy point-mass", I.lazy(gm, stochastic=True), "optimal")):
        model = ex.AnalyticModel(gm, s)
        ts = ex.timesteps(s, 8)
        x = model.prior_sample(200, np.random.default_rng(1), t=ts[0], exact=True)
        drift = np.array([F.mean_norm(I.drift(model, x, float(t), diffusion)) for t in ts])
        curves[name] = dict(t=ts, lam=s.lambda_(ts), drift=drift)
    assert curves["vp-linear"]["drift"].max() > 0.5
    assert curves["lazy"]["drift"].max() < 1e-12 and curves["lazy point-mass"]["drift"].max() < 1e-12
    fig = F.drift_magnitude(curves)
    names = [t.name for t in fig.data]
    assert names == ["vp-linear", "lazy  (zero drift)", "lazy point-mass  (zero drift)"]
    assert np.array_equal(fig.data[0].customdata, curves["vp-linear"]["drift"])
    # zeros drawn flat, a decade under the smallest non-zero drift, on the log axis; hover keeps the true values
    assert fig.layout.yaxis.type == "log"
    assert set(fig.data[1].y) == set(fig.data[2].y) == {curves["vp-linear"]["drift"].min() / 10}
    assert np.array_equal(fig.data[2].customdata, curves["lazy point-mass"]["drift"])
    with pytest.raises(ValueError, match="axis"):
        F.drift_magnitude(curves, axis="sigma")


def test_error_vs_nfe_lines_and_fewer_steps_arrow():
    records = [dict(label=label, nfe=n, error=c / n**2) for label, c in (("original", 1.0), ("converted", 0.25)) for n in (4, 8, 16)]
    records += [dict(label="worse", nfe=n, error=2.0 / n**2) for n in (4, 8, 16)]
    fewer = F.fewer_steps(records, "original")
    # converted at 8 NFE (0.25/64) beats original at 16 (1/256): the saving 16 -> 8; "worse" never does
    assert fewer == [dict(error=1 / 256, nfe_from=16, nfe_to=8, label_from="original", label_to="converted")]
    fig = F.error_vs_nfe(records, fewer)
    assert [t.name for t in fig.data] == ["original", "converted", "worse"]
    assert np.allclose(fig.data[1].y, [0.25 / 16, 0.25 / 64, 0.25 / 256])
    arrow = next(a for a in fig.layout.annotations if a.showarrow)
    assert (arrow.ax, arrow.x, arrow.y) == (np.log10(16), np.log10(8), np.log10(1 / 256))
    assert arrow.arrowcolor == fig.data[1].line.color
    assert any("16 → 8 NFE" in (a.text or "") for a in fig.layout.annotations)


def test_grid_text_round_trips_float64():
    s = ex.schedules.get("vp-linear")
    ts = ex.timesteps(s, 7, "karras")
    sigmas = sigmas_of(s, ts)
    text = F.grid_text(ts, sigmas)
    first, second = text.splitlines()
    assert first.startswith("timesteps = [") and second.startswith("sigmas = [")
    assert np.array_equal(np.array(eval(first.split("=", 1)[1])), ts)  # noqa: S307 (our own text)
    assert np.array_equal(np.array(eval(second.split("=", 1)[1])), sigmas)  # noqa: S307
    assert "\n" not in F.grid_text(ts)


# The page, headless (AppTest) and in a real browser.


def _open(**query):
    """The page opened with these query parameters. open_app runs the default page first, whose
    widgets share some keys (solver, steps, n) with other options: one more run lets this page's own
    widgets take the URL's values, as a browser opening /schedules?... does at once (see the browser test)."""
    at = open_app(PAGE, **query)
    at.run()
    return at


def test_page_renders_clean_with_defaults():
    at = open_app(PAGE)
    assert_clean(at)
    assert at.title[0].value == "Schedules"
    assert len(charts(at)) >= 4
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["NFE under A"] == "12"
    gap = float(metrics["dpmpp-2m under B vs the converted path"])
    assert gap < 1e-10  # DPM-Solver++ steps in lambda: it commutes with the conversion
    [code] = code_text(at)
    assert "timesteps = [" in code and "sigmas = [" in code
    # the page's conversion map, read back from the chart sent to the browser: lambda_edm(t') = lambda_vp(t)
    chart = next(c for c in charts(at) if "The conversion map" in c["layout"]["title"]["text"])
    line = next(t for t in chart["data"] if t["name"] == "t → t′")
    t, t2 = array(line["x"]), array(line["y"])
    vp, edm = ex.schedules.get("vp-linear"), ex.schedules.get("edm")
    assert len(t) > 100 and np.allclose(edm.lambda_(t2), vp.lambda_(t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("query", [
    dict(target="gmm-2d-ring8", a="rectified-flow", b="vp-cosine", path_solver="heun", path_steps="8", drift="optimal SDE",
         sweep_nfes="4, 8", convert_to="trigonometric"),
    dict(a="edm", b="lazy (fitted to the target)", path_solver="euler", spacing="karras", drift_axis="t", grid_nfe="6",
         sweep_nfes="6, 12"),
])
def test_page_opens_from_the_url(query):
    at = _open(**query)
    assert_clean(at)
    assert at.sidebar.selectbox(key="a").value == query["a"] and at.sidebar.selectbox(key="b").value == query["b"]
    for key in ("drift", "drift_axis"):
        if key in query:
            assert at.radio(key=key).value == query[key]
    gap = float(next(m.value for m in at.metric if m.label.endswith("vs the converted path")))
    assert gap > 1e-3  # Heun and Euler step in t: under another clock they take another path
    assert next(m.value for m in at.metric if m.label == "NFE under A") == str(2 * int(query.get("path_steps", 12)) if query["path_solver"] == "heun" else 12)


def test_lazy_drift_is_flat_zero_on_the_gaussian_of_the_target():
    at = _open(drift_data="N(0, c I)")
    assert_clean(at)
    chart = next(c for c in charts(at) if "Drift magnitude" in c["layout"]["title"]["text"])
    traces = {t["name"]: array(t["customdata"]) for t in chart["data"]}
    assert np.abs(traces["lazy (fitted to the target)  (zero drift)"]).max() < 1e-12
    assert traces["vp-linear"].max() > 0.1 and traces["edm"].max() > 0.1


def test_bad_input_is_an_error_not_a_traceback():
    at = _open(custom="true", **{"gmm-1d-3modes.modes": "1, -2"})
    assert not at.exception
    assert at.error and "std" in at.error[0].value.lower()


def test_a_control_change_reruns_fast_once_cached():
    at = _open()
    assert_clean(at)
    for key, values in (("drift_axis", ("t", "lambda")), ("time_axis", ("log", "auto")), ("drift", list(DRIFTS)[::-1])):
        for value in values:  # first visits: computed and cached
            at.radio(key=key).set_value(value).run()
            assert_clean(at)
    took = []
    for value in ("t", "lambda", "t"):  # cached now: the best of three, so a busy machine does not decide
        at.radio(key="drift_axis").set_value(value)
        start = time.perf_counter()
        at.run()
        took.append(time.perf_counter() - start)
        assert_clean(at)
    assert min(took) < 1.0, took


def test_the_time_axis_switch_redraws_the_schedules_figure():
    """The time axis (a control of the first section, a fragment) sets the schedules figure's three time axes: auto
    is log for vp-linear against EDM (80 against 1), and the rest of the page stays drawn."""
    at = _open()

    def time_axes():
        curves = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("The schedules"))
        return [curves["layout"][f"xaxis{k}"].get("type") for k in ("", "2", "3")]

    assert time_axes() == ["log"] * 3 and len(charts(at)) == 5
    at.radio(key="time_axis").set_value("linear").run()
    assert time_axes() == [None] * 3 and len(charts(at)) == 5  # plotly's default axis: linear
    at.radio(key="time_axis").set_value("log").run()
    assert time_axes() == ["log"] * 3
    assert not at.sidebar.radio  # a view control of its section, not of the page
    assert_clean(at)


def test_page_in_a_browser(server, browser):
    """The page opened from a URL in headless Chromium: every chart drawn, no exception, the URL's
    solver taken at once; the slider of the linked paths moves in the browser. Saves artifacts/schedules.png."""
    from urllib.parse import urlencode

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_browser import _inner_text, _no_exception, _open, _tall_shot, _texts

    query = {"path_solver": "heun", "path_steps": "10", "sweep_nfes": "4, 8, 16"}
    _open(browser, f"{server}/schedules?{urlencode(query)}", charts=5, timeout=180)
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: "timesteps = [" in (_inner_text(d, '[data-testid="stMain"]') or ""))  # the last section
    _no_exception(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Schedules")
    text = _inner_text(browser, '[data-testid="stMain"]')
    assert "heun under B vs the converted path" in text and "timesteps = [" in text
    titles = " ".join(_texts(browser, ".js-plotly-plot .gtitle"))
    for title in ("The schedules", "The conversion map", "The same particles", "Drift magnitude", "Error against NFE"):
        assert title in titles
    shown = browser.execute_script(
        "return [...document.querySelectorAll('.js-plotly-plot .slider-container text')].map(e => e.textContent);")
    assert any(s.startswith("step 10") for s in shown)
    _tall_shot(browser, "schedules", 4200)  # the whole page in one picture


def test_the_pages_path_numbers_come_from_the_core():
    """The three numbers the page draws about one path (schedule_experiments): the shared log-SNR range,
    the commutation gap (0 for DPM++(2M) in lambda, not for Euler in t) and the drift along a path."""
    from explorer import schedule_experiments as SE

    vp, edm, rf = ex.schedules.get("vp-linear"), ex.schedules.get("edm"), ex.schedules.get("rectified-flow")
    t_start, t_end = SE.shared_range(rf, vp)  # VP-linear's pure-noise end, lambda(1) = -5.0, is short of RF's t_max
    assert t_end is None and float(rf.lambda_(t_start)) == pytest.approx(float(vp.lambda_(vp.t_hi)), rel=1e-9)
    assert rf.t_min < t_start < rf.t_max
    assert SE.shared_range(vp, edm) == (None, None)  # EDM reaches every log-SNR
    t_start, t_end = None, None
    gm = ex.targets.get("gmm-1d-3modes")
    a, b = ex.AnalyticModel(gm, vp), ex.AnalyticModel(gm, edm)
    gaps = {}
    for solver, spacing in (("dpmpp-2m", "uniform-lambda"), ("euler", "uniform-t")):
        ts = ex.timesteps(vp, 8, spacing, t_start, t_end)
        path = ex.convert_path(ex.sample(a, a.prior_sample(50, 0, t=ts[0]), ts, solver), edm, from_schedule=vp)
        gaps[solver] = SE.commutation_gap(path, b, solver)
    assert gaps["dpmpp-2m"] < 1e-10 < 1e-2 < gaps["euler"]
    curve = SE.drift_along(path, b, "zero")
    x, t = path.x[3], float(path.t[3])
    assert curve["drift"][3] == pytest.approx(np.mean(np.abs(b.velocity(x, t))), rel=1e-12)
    assert np.array_equal(curve["lam"], edm.lambda_(path.t))
