"""The Few steps page and its shipped table (explorer.analyses.few_step_compare, data/few-steps.npz).

The shipped table is current: cells rerun live (exact kernels, ODE, reflow, and LightSB from the shipped
potentials) give the shipped numbers exactly; the page shows those numbers, draws every figure without torch,
and its live mode reruns compare at the chosen size; the first figure is quick cold; bad methods are named."""

import time

import numpy as np
import pytest

from explorer.analyses import few_step_compare as C
from test_starts import run_pages

PAGE = "app_pages/few_steps.py"


@pytest.fixture(scope="module")
def shipped():
    return C.load_table()


@pytest.fixture(scope="module")
def page_views():
    """The page's two views in one fresh interpreter (each its own AppTest; an interpreter costs about 2 s of
    imports): the ring's first view, then the 1D view at 300 particles, first and switched to live. Neither
    first view loads torch, so each still shows what that view imports."""
    ring, one_d = run_pages(PAGE, [({"fs_target": "gmm-2d-ring8"}, ()),
                                   ({"fs_target": "gmm-1d-3modes", "fs_n": "300"}, ("fs_live",))])
    return {"ring": ring, "1d": one_d}


def test_shipped_table_is_current(shipped):
    for name in C.TARGETS:
        info = shipped["meta"]["targets"][name]
        sb = shipped["lightsb"][name][info["lightsb_epsilon_in_rows"]]
        methods = ("exact", "rf2", "lightsb", "dpm-ot") if name == "gmm-1d-3modes" else (
            "ode", "lightsb", "rf2", "distilled", "dpm-ot")  # the ring's rows check the shipped networks too
        live = C.compare(name, nfes=(1, 2), n=shipped["meta"]["n"], seed=0, sb=sb, methods=methods,
                         ot_map=shipped["dpm_ot"][name])
        assert {r["method"] for r in live} == set(methods)
        table = {(r["method"], r["nfe"]): r for r in info["rows"]}
        for r in live:
            want = table[(r["method"], r["nfe"])]
            assert r["distance"] == pytest.approx(want["distance"], rel=1e-9), (name, r["method"], r["nfe"])
            assert np.allclose(r["mass"], want["mass"], atol=1e-12)


def test_shipped_numbers_say_what_the_page_says(shipped):
    rows = {(r["method"], r["nfe"]): r for r in shipped["meta"]["targets"]["gmm-1d-3modes"]["rows"]}
    # Exact kernels keep the modes at every NFE; DDPM and the ODE put everything in the middle mode at 1 NFE.
    for k in C.NFES:
        assert rows[("exact", k)]["mass_tv"] < 0.03 and rows[("rf2", k)]["mass_tv"] < 0.03
    assert rows[("ddpm", 1)]["mass"][1] > 0.99 and rows[("ode", 1)]["mass"][1] > 0.99
    assert rows[("flow-map", 1)]["mass_tv"] < 0.03
    transport = shipped["meta"]["targets"]["gmm-1d-3modes"]["transport"]
    assert abs(transport[0]["ratio"] - 1) < 1e-12  # the 1D flow map is the optimal map
    assert [t["ratio"] for t in transport[1:]] == sorted(t["ratio"] for t in transport[1:])  # excess grows with eps



def test_summary_lists_every_row_once(shipped):
    rows = shipped["meta"]["targets"]["gmm-2d-ring8"]["rows"]
    lines = C.summary(rows).splitlines()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    assert [line.split("**")[1] for line in lines] == [C.LABELS[m] for m in methods]
    for line, m in zip(lines, methods):
        mine = [r for r in rows if r["method"] == m]
        assert line.count(" NFE ") == len(mine)
        for r in mine:
            assert f"{r['nfe']} NFE {r['distance']:.3f} ({r['off_mode']:.1%})" in line

def test_page_shows_the_shipped_numbers_without_torch(shipped, page_views):
    first, live = page_views["1d"]
    assert not first["errors"], first["errors"]
    assert first["torch"] is False
    assert first["charts"] == 6  # vs NFE, samples, transport, kernel, reflow lines, bridges
    table = first["tables"][0]
    rows = shipped["meta"]["targets"]["gmm-1d-3modes"]["rows"]
    assert table["NFE"] == [r["nfe"] for r in rows]
    assert np.allclose(table["W2 (sliced)"], [r["distance"] for r in rows], rtol=1e-12)
    shown = next(text for text in first["texts"] if text.startswith("| method | NFE |"))  # the table as drawn
    for r in rows:
        assert f"| {C.LABELS[r['method']]} | {r['nfe']} | {r['distance']:.3f} | {r['off_mode']:.3f} |" in shown
    assert not live["errors"], live["errors"]
    want = C.compare("gmm-1d-3modes", n=300, seed=0, methods=("exact",),
                     sb=shipped["lightsb"]["gmm-1d-3modes"][0.1])
    got = [d for d, m in zip(live["tables"][0]["W2 (sliced)"], live["tables"][0]["method"]) if m == C.LABELS["exact"]]
    assert np.allclose(got, [r["distance"] for r in want], rtol=1e-12)


def test_first_figure_is_quick_cold():
    from explorer.figures import few_steps as F

    started = time.perf_counter()
    table = C.load_table()
    F.error_vs_nfe(table["meta"]["targets"]["gmm-2d-ring8"]["rows"]).to_json()
    assert time.perf_counter() - started < 1.5


def test_bad_method_is_named():
    with pytest.raises(ValueError, match="method"):
        C.run_method("nope", "gmm-1d-3modes", 1, 10, 0)
    with pytest.raises(ValueError, match="rf2"):
        C.run_method("rf2", "gmm-2d-grid25", 1, 10, 0)
    with pytest.raises(ValueError, match="nfe"):
        C.run_method("ode", "gmm-1d-3modes", 0, 10, 0)


def test_ring_view_shows_every_method(shipped, page_views):
    (view,) = page_views["ring"]
    assert not view["errors"], view["errors"]
    assert view["torch"] is False and view["charts"] == 6
    shown = set(view["tables"][0]["method"])
    assert shown == {C.LABELS[r["method"]] for r in shipped["meta"]["targets"]["gmm-2d-ring8"]["rows"]}
    assert C.LABELS["distilled"] in shown and C.LABELS["dpm-ot"] in shown


def test_the_step_and_bridge_sections_follow_their_sliders():
    """The page's last two sections (fragments: their sliders rerun them alone): the kernels' figure follows x_t,
    t and s; an s at or above t is named instead of drawn; the bridges figure draws as many paths as asked."""
    from apptest import array, assert_clean, charts, open_app

    def titled(at, start):
        return [f for f in charts(at) if f["layout"]["title"]["text"].startswith(start)]

    at = open_app(PAGE)
    assert_clean(at)
    assert [f["layout"]["title"]["text"] for f in titled(at, "One reverse step")] == [
        "One reverse step from x_t = 0.9 at t = 0.4 to s = 0.1"]
    assert [len(array(t["x"])) for t in titled(at, "Light Schrodinger Bridge")[0]["data"] if t.get("name") == "source draw"] \
        == [80, 80, 80]  # the slider's default, in each of the three panels
    at.slider(key="fs_xt").set_value(2.0).run()
    assert [f["layout"]["title"]["text"] for f in titled(at, "One reverse step")] == [
        "One reverse step from x_t = 2 at t = 0.4 to s = 0.1"]
    at.slider(key="fs_s").set_value(0.45).run()
    assert not titled(at, "One reverse step")
    assert "Pick s below t: the step runs toward the data." in [i.value for i in at.info]
    at.slider(key="fs_paths").set_value(30).run()
    bridges = titled(at, "Light Schrodinger Bridge")[0]
    assert [len(array(t["x"])) for t in bridges["data"] if t.get("name") == "source draw"] == [30, 30, 30]
    assert_clean(at)

