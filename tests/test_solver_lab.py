"""Solver lab: the experiments (equal-NFE sweeps, fitted orders, two solvers side by side), its
figures, and the Streamlit page run headless by AppTest."""

from __future__ import annotations


import numpy as np
import pytest

import explorer as ex
from explorer import experiments as E
from explorer import figures

from fakes import BlowsUp, smooth_mixture

PAGE = "app_pages/solver_lab.py"


def _model(schedule="vp-linear", target=None):
    return ex.AnalyticModel(target or smooth_mixture(), ex.schedules.get(schedule))


def test_steps_for_spends_equal_nfe():
    assert E.steps_for("euler", 7) == 7
    assert E.steps_for("heun", 10) == 5
    assert E.steps_for("heun", 7) is None and E.steps_for("heun", 1) is None
    assert E.steps_for("rk45", 5) == 5  # a varying count: nfe steps


def test_fitted_order_reads_the_asymptotic_slope():
    n = np.array([4, 8, 16, 32, 64])
    assert E.fitted_order(n, 3.0 * n**-2.0) == pytest.approx(2.0, abs=1e-12)
    # the pre-asymptotic head and points at the reference's floor are left out
    errors = np.array([5.0, 1.0, 3.0 * 16**-2.0, 3.0 * 32**-2.0, 3.0 * 64**-2.0])
    assert E.fitted_order(n, errors) == pytest.approx(2.0, abs=1e-12)
    assert E.fitted_order(n, [0.5, 8.0**-3, 16.0**-3, 32.0**-3, 1e-12]) == pytest.approx(3.0, abs=1e-12)
    assert np.isnan(E.fitted_order([4, 8], [np.nan, 0.1]))


def test_work_precision_records_and_orders():
    model = _model()
    x = model.prior_sample(200, 1)
    nfes = (16, 32, 64, 128)
    recs = E.work_precision(model, x, {"euler": "euler", "heun": "heun", "2m": ("dpmpp-2m", {})}, nfes)
    assert [(r["label"], r["nfe"]) for r in recs] == [(l, n) for l in ("euler", "heun", "2m") for n in nfes]
    assert all(r["nfe_spent"] == r["nfe"] for r in recs)
    assert [r["n_steps"] for r in recs if r["label"] == "heun"] == [8, 16, 32, 64]
    orders = E.orders(recs)
    assert abs(orders["euler"] - 1) < 0.3 and abs(orders["heun"] - 2) < 0.3 and abs(orders["2m"] - 2) < 0.3, orders
    # the numbers are those of a plain run measured by hand
    ref = ex.reference(model, x, ex.timesteps(model.schedule, 1))
    run = ex.sample(model, x, ex.timesteps(model.schedule, 16), "heun")
    heun16 = next(r for r in recs if r["label"] == "heun" and r["nfe"] == 32)
    assert heun16["error"] == pytest.approx(ex.metrics.endpoint_error(run.sample, ref.sample), rel=1e-9)
    draws = model.target.sample(5000, np.random.default_rng(0))
    assert heun16["distance"] == pytest.approx(ex.metrics.sliced_wasserstein(run.sample, draws, n_projections=64, rng=0), rel=1e-12)


def test_one_reference_solve_serves_the_errors_and_the_floor():
    model = _model()
    x = model.prior_sample(100, 4)
    final = E.reference_final(model, x)
    assert np.array_equal(final, ex.reference(model, x, ex.timesteps(model.schedule, 1)).sample)
    given = E.work_precision(model, x, {"heun": "heun"}, (8, 16), reference_sample=final)
    solved = E.work_precision(model, x, {"heun": "heun"}, (8, 16))
    assert [r["error"] for r in given] == [r["error"] for r in solved] and not np.isnan(given[0]["error"])
    assert E.reference_distance(model, x, reference_sample=final) == E.reference_distance(model, x) > 0
    bad = BlowsUp(model, k=3)
    bad.target = model.target
    assert E.reference_final(bad, x) is None and np.isnan(E.reference_distance(bad, x))  # the solve diverged

def test_sliced_w2_matches_the_metric():
    rng = np.random.default_rng(2)
    for n_x, n_y in ((300, 300), (300, 1000), (1000, 300)):
        x, y = rng.standard_normal((n_x, 2)), rng.standard_normal((n_y, 2)) + 0.3
        assert E.SlicedW2(y)(x) == ex.metrics.sliced_wasserstein(x, y, n_projections=64, rng=0)


def test_a_diverged_run_is_recorded_and_marked():
    model = _model()
    bad = BlowsUp(model, k=3)
    bad.target = model.target
    recs = E.work_precision(bad, model.prior_sample(20, 2), {"ddim": "ddim"}, (8,), reference_sample=np.zeros((20, 2)))
    (rec,) = recs
    assert rec["diverged_at"] == 2 and "NaN or inf" in rec["reason"] and np.isnan(rec["error"])
    fig = figures.work_precision(recs + [dict(rec, diverged_at=None, reason=None, error=0.1, nfe=4, nfe_spent=4)])
    crosses = [t for t in fig.data if t.name == "diverged"]
    assert len(crosses) == 1 and "diverged at step 2" in crosses[0].text[0]


def test_compare_two_from_the_same_noise():
    model = _model("edm")
    x = model.prior_sample(100, 3)
    out = E.compare_two(model, x, "ddim", ("heun", {}), nfe=12, spacing="karras", local_particles=50)
    a, b = out["a"], out["b"]
    assert a["traj"].n_steps == 12 and b["traj"].n_steps == 6 and a["traj"].nfe == b["traj"].nfe == 12
    np.testing.assert_array_equal(a["traj"].x[0], b["traj"].x[0])
    assert a["global_error"][0] == 0 and a["x0_error"][0] == 0  # the same start: the same first prediction
    # the first step's local error is its global error (both against the exact flow from x_T)
    first = ex.metrics.endpoint_error(a["traj"].x[1, :50], a["ref"].x[1, :50])
    assert a["local_error"][0] == pytest.approx(first, rel=1e-3)  # rk45 over one step vs its dense output
    assert a["local_error"].shape == (12,) and b["x0_error"].shape == (6,)
    assert np.all(np.isfinite(b["local_error"])) and np.all(b["local_error"] > 0)
    with pytest.raises(ValueError, match="multiple of 2"):
        E.compare_two(model, x, "ddim", "heun", nfe=5)


def test_figures_of_the_lab():
    model = _model(target=ex.targets.get("gmm-2d-ring8"))
    x = model.prior_sample(200, 4)
    recs = E.work_precision(model, x, {"euler": "euler", "ddpm": "ddpm"}, (4, 8, 16))
    fig = figures.work_precision(recs)
    names = [t.name for t in fig.data]
    assert names[0].startswith("euler (order ≈") and names[1] == "ddpm (stochastic)"
    assert "exact ODE (rk45), same start" in [t.name for t in figures.distance_vs_nfe(recs, floor=0.05).data]
    cmp = E.compare_two(model, x, "euler", "dpmpp-2m", nfe=6, local_particles=20)
    side = figures.side_by_side(model, cmp)
    assert {t.name for t in side.data} >= {"exact path (rk45)", "solver path", "x0-prediction"}
    assert len(figures.step_errors(model, cmp).data) == 6
    rows = figures.solver_rows()
    assert [r["solver"] for r in rows] == ex.solvers.names()
    assert all(r["paper"] == ex.solvers.info(r["solver"])["reference"] for r in rows)
    assert len(figures.solver_table().data[0].cells.values[0]) == len(rows)


# The page, headless.

st_testing = pytest.importorskip("streamlit.testing.v1")
from apptest import assert_clean, charts, open_app  # noqa: E402


def _page(**query):
    return open_app(PAGE, timeout=120, **query)



def test_page_renders_and_restores_from_the_url():
    at = _page(solvers=["euler", "heun"], n="200", nfes="4, 8, 16", a="euler", b="heun", nfe="8",
               schedule="edm", spacing="karras", seed="3")
    assert_clean(at)
    assert at.title[0].value == "Solver lab"
    assert at.multiselect(key="solvers").value == ["euler", "heun"]
    assert at.text_input(key="nfes").value == "4, 8, 16"
    assert at.selectbox(key="a").value == "euler" and at.selectbox(key="b").value == "heun"
    assert at.selectbox(key="schedule").value == "edm" and at.number_input(key="seed").value == 3
    assert len(charts(at)) == 4  # work-precision, distance, side by side, step errors
    table = " ".join(m.value for m in at.markdown)
    for name in ex.solvers.names():
        assert ex.solvers.info(name)["reference"] in table


def test_page_guidance_and_options():
    # 50 particles (200 before): what is checked here is which charts and widgets the page draws, the same at
    # either size; the thresholded references at this size cost about a third less.
    at = _page(solvers=["ddim", "dpmpp-2m"], n="50", nfes="6, 12", guided="true", w="8", gsolvers=["ddim", "dpmpp-2m"])
    assert_clean(at)
    assert len(charts(at)) == 6
    at.multiselect(key="gsolvers").set_value([]).run()  # (the thresholded guided reference is slow to solve)
    at.toggle(key="threshold").set_value(True).run()
    assert_clean(at)
    assert len(charts(at)) == 4
    at.selectbox(key="a").set_value("ddim").run()
    at.number_input(key="a.ddim.eta").set_value(0.5).run()  # solver A's options, declared by the solver
    assert_clean(at)


@pytest.mark.parametrize("query, message", [({"nfes": "4, x"}, "'x' is not a number"), ({"nfes": "0"}, "integer in [1,")])
def test_page_bad_input_is_an_error(query, message):
    at = _page(n="100", **query)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value


def test_page_uneven_nfe_is_an_error_not_a_traceback():
    at = _page(solvers=["euler"], n="100", nfes="4", a="ddim", b="heun", nfe="5")
    assert not at.exception
    assert any("multiple of 2" in e.value for e in at.error)


def test_page_fits_the_orders_of_a_and_b_with_their_options():
    at = _page(solvers=["euler"], n="100", nfes="16, 32, 64", a="ddpm", b="dpmpp-3m", **{"b.dpmpp-3m.form": "dpm-solver-code"},
               ab_orders="true")
    assert_clean(at)
    assert len(charts(at)) == 5  # the sweep of A and B after the two side by side
    line = next(m.value for m in at.markdown if m.value.startswith("Fitted over NFE 16, 32, 64"))
    assert "**A: ddpm**: stochastic" in line  # a stochastic solver gets no order
    order = float(line.split("**B: dpmpp-3m (form=dpm-solver-code)**: order ")[1].rstrip("."))
    assert 1.5 < order < 3.5, line
