"""What a learned field is (explorer.analyses.gauge) and the Learned fields page.

Gauge freedom: adding c J s to the score leaves every marginal of the probability-flow ODE unchanged
(div(p J grad log p) = 0 by finite differences; Monte Carlo moments and mode weights of rk45 runs within
4 standard errors) while the paths move and Euler's error grows. Conservativity: the closed-form mixture
Jacobian equals finite differences, the exact field's curl is 0, the weighted Helmholtz split leaves 0 of
the exact field and exactly |c| / sqrt(1 + c^2) of s + c J s; the shipped 2D MLP's field is not a gradient
(4-10% non-conservative), and the shipped table of it is not stale. Intrinsic dimension: 1, 0 and 2 for
the line, the point and the blob of line_target at small noise, 2 everywhere below the line's width.
"""

from __future__ import annotations

import numpy as np
import pytest

import explorer as ex
from explorer.analyses import gauge as G
from explorer.foundations.data_files import DATA_DIR

ANISO = ex.targets.get("gmm-2d-two-aniso")
MODEL = ex.AnalyticModel(ANISO, ex.schedules.get("vp-cosine"))


def test_rotation_of_the_score_is_divergence_free_under_p():
    """div(p J s) = div(J grad p) = 0: central differences of p J s at 200 points, against the size of
    its terms (|grad(p J s)| ~ max |p J s| / scale): below 1e-6 relative; div(p s) is not 0."""
    rng = np.random.default_rng(0)
    x = ANISO.sample(200, rng) * 0.8 + 0.5 * rng.standard_normal((200, 2))
    t, h = 0.3, 1e-4

    def flux(y, rotate):
        s = MODEL.score(y, t)
        p = np.exp(MODEL.log_prob(y, t))[:, None]
        return p * (s @ G.J.T if rotate else s)

    for rotate, small in ((True, True), (False, False)):
        div = sum((flux(x + h * e, rotate)[:, i] - flux(x - h * e, rotate)[:, i]) / (2 * h) for i, e in enumerate(np.eye(2)))
        scale = np.abs(flux(x, rotate)).max()
        assert (np.abs(div).max() < 1e-6 * scale) == small


def test_gauge_velocity_is_minus_c_g2_over_2_J_s():
    x = ANISO.sample(50, np.random.default_rng(1))
    s = MODEL.schedule
    for t in (0.1, 0.6):
        a, sg, da, ds = float(s.alpha(t)), float(s.sigma(t)), float(s.d_alpha(t)), float(s.d_sigma(t))
        half_g2 = sg * ds - da / a * sg * sg
        expected = -0.7 * half_g2 * (MODEL.score(x, t) @ G.J.T)
        assert np.allclose(G.gauge_velocity(MODEL, x, t, 0.7), expected, rtol=1e-10, atol=1e-12)


def test_rotated_flow_keeps_every_marginal_and_moves_the_paths():
    """rk45 from 3000 exact draws of p_T to t = 0.2 with c = 0 and c = 1.5: mode weights, mean and
    covariance of both within 4 standard errors of the exact p_0.2 (measured |z| <= 2.1 over two seeds);
    the same particles end 1.1 apart on average; Euler at 20 steps errs more the larger c."""
    t_end, n = 0.2, 3000
    ts = np.array([MODEL.schedule.t_max, t_end])
    a, sg = float(MODEL.schedule.alpha(t_end)), float(MODEL.schedule.sigma(t_end))
    cov = a * a * ANISO.covariance() + sg * sg * np.eye(2)
    se_cov = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    x_T = MODEL.prior_sample(n, 0, exact=True)
    ends = {}
    for c in (0.0, 1.5):
        y = ex.reference(G.GaugeModel(MODEL, c), x_T, ts, rtol=1e-7, atol=1e-7).x[-1]
        ends[c] = y
        w = ex.metrics.mode_coverage(y / a, ANISO)
        assert np.abs(w - 0.5).max() < 4 * np.sqrt(0.25 / n), c
        assert np.all(np.abs(y.mean(0)) < 4 * np.sqrt(np.diag(cov) / n)), c
        assert np.all(np.abs(np.cov(y.T) - cov) < 4 * se_cov), c
    assert np.mean(np.linalg.norm(ends[1.5] - ends[0.0], axis=1)) > 0.8
    grid = ex.timesteps(MODEL.schedule, 20, t_end=t_end)
    errors = []
    for c in (0.0, 0.5, 1.0):
        gm = G.GaugeModel(MODEL, c)
        ref = ex.reference(gm, x_T[:300], grid)
        errors.append(ex.metrics.endpoint_error(ex.sample(gm, x_T[:300], grid, "euler").x[-1], ref.x[-1]))
    assert errors[0] < errors[1] < errors[2] and errors[2] > 5 * errors[0]
    with pytest.raises(ValueError, match="2D"):
        G.GaugeModel(ex.AnalyticModel(ex.targets.get("gmm-1d-3modes"), ex.schedules.get("edm")), 1.0)


def test_error_growth_reads_each_solvers_error_from_the_smallest_to_the_largest_gauge():
    records = [dict(c=1.5, solver="euler", error=6.0), dict(c=0.0, solver="euler", error=0.5),
               dict(c=0.5, solver="euler", error=1.0), dict(c=0.0, solver="heun", error=0.0),
               dict(c=1.5, solver="heun", error=1.0), dict(c=0.0, solver="ddim", error=0.1),
               dict(c=1.5, solver="ddim", error=float("inf"))]
    growth = G.error_growth(records)
    assert growth == {"euler": {"from": 0.5, "to": 6.0, "factor": 12.0}}  # heun: zero at c = 0; ddim diverged
    # on the ring, 20 steps: a rotation that keeps every marginal makes both solvers' error grow many-fold
    real = G.error_growth(G.gauge_errors(ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-cosine")),
                                         cs=(0.0, 1.5), n=100))
    assert set(real) == {"euler", "dpmpp-2m"} and all(g["factor"] > 10 for g in real.values()), real


def test_exact_jacobian_is_symmetric_and_matches_differences():
    """Closed-form Jacobian of the mixture score = central differences (relative 1e-5); the curl of the
    exact field from differences is 0 to 1e-6 of the Jacobian's size, the rotated field's is not."""
    rng = np.random.default_rng(2)
    x = ANISO.sample(100, rng) * 0.7 + 0.4 * rng.standard_normal((100, 2))
    for t in (0.2, 0.6):
        exact = G.score_jacobian(MODEL, x, t, "exact")
        fd = G.score_jacobian(MODEL, x, t, "fd")
        size = np.abs(exact).max()
        assert np.abs(exact - fd).max() < 1e-5 * size
        assert np.abs(G.curl(fd)).max() < 1e-6 * size
        assert np.abs(G.curl(G.score_jacobian(G.GaugeModel(MODEL, 1.0), x, t, "fd"))).max() > 0.1 * size


@pytest.mark.parametrize("c", [0.0, 0.5, 2.0])
def test_helmholtz_leaves_exactly_the_rotation(c):
    """The p-weighted Helmholtz split of s + c J s on a 40 x 40 grid: the rest is |c| / sqrt(1 + c^2) of
    the field (to 1e-3; 0 for c = 0), because J s is p-orthogonal to every gradient."""
    field = G.field_on_grid(G.GaugeModel(MODEL, c), 0.5, 40, target=ANISO)
    assert G.helmholtz(field)["fraction"] == pytest.approx(abs(c) / np.sqrt(1 + c * c), abs=1e-3)


def test_shipped_table_is_fresh_and_the_learned_field_is_not_a_gradient():
    """data/learned-fields-grid25.npz was made from the current weights (sha256) by the current code
    (one level recomputed: fraction to 1e-6, curl to float32 round-off); at every level 3-11% of the
    learned field is non-conservative, while the exact field's split leaves < 1e-5."""
    table = G.load_table()
    assert str(table["weights_sha256"]) == G.sha256(DATA_DIR / "gmm-2d-grid25.pt"), \
        "stale: remake with OMP_NUM_THREADS=1 .venv/bin/python -m explorer.analyses.gauge"
    assert np.allclose(table["levels"], G.LEVELS)
    model = ex.models.load_pretrained("gmm-2d-grid25")
    j = len(G.LEVELS) - 1  # the cheapest level to recompute is as good as any other
    fresh = G.field_levels(model, [G.LEVELS[j]], G.TABLE_N)
    assert fresh["fraction"][0] == pytest.approx(table["fraction"][j], rel=1e-6)
    f = fresh["fields"][0]
    assert np.allclose(f["curl"], table["curl"][j], rtol=1e-3, atol=1e-3 * np.abs(f["curl"]).max())
    assert np.allclose(f["score"], table["score"][j], rtol=1e-5, atol=1e-5)
    assert np.all((table["fraction"] > 0.03) & (table["fraction"] < 0.11))
    assert np.all(table["exact_fraction"] < 1e-5)


def test_intrinsic_dimension_of_a_line_a_point_and_a_blob():
    """line_target: at sigma / alpha from 3e-3 to 0.3 (between the line's width 1e-3 and the blob's std 0.6)
    the median dimension is 1, 0, 2 and at least 95% of points agree; at 1e-4, below the width, the line
    and the point are 2-dimensional too."""
    target = G.line_target()
    model = ex.AnalyticModel(target, ex.schedules.get("vp-cosine"))
    x0, comp = target.sample(600, np.random.default_rng(0), return_components=True)
    dims = G.dimension_vs_noise(model, x0, comp, [1e-4, 3e-3, 0.03, 0.3])
    assert np.array_equal(dims[0], [2, 2, 2])
    assert np.all(dims[1:] == np.array(G.LINE_DIMENSIONS))
    t = G.time_of(model.schedule, 0.03)
    a, sg = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    d = G.intrinsic_dimension(model, a * x0 + sg * np.random.default_rng(1).standard_normal(x0.shape), t)
    for k, expected in enumerate(G.LINE_DIMENSIONS):
        assert np.mean(d[comp == k] == expected) > 0.95
    spectrum = G.normal_spectrum(model, a * x0[comp == 0], t)
    assert np.all((spectrum > -1e-9) & (spectrum < 1 + 1e-9))  # I - (alpha^2/sigma^2) Cov[x0|x] lies in [0, 1]
    with pytest.raises(ValueError, match="threshold"):
        G.intrinsic_dimension(model, x0, t, threshold=1.5)


# The Learned fields page.

PAGE = "app_pages/learned_fields.py"


def test_learned_fields_page_shows_the_table_then_recomputes_it_live():
    """AppTest of /learned-fields?gauge_c=0.5 in a fresh interpreter: the first view imports no torch and shows
    the shipped table's non-conservative share at sigma/alpha = 0.35 (9.1%); switched to live, the recomputed
    share is the same to the printed digit and the field near x = 0 is singular ((sigma/alpha)^2 |curl| > 50 at
    1e-4 from it); the dimension table reads 1, 0, 2."""
    from test_starts import run_page

    first, live = run_page(PAGE, {"gauge_c": "0.5"}, toggles=("curl_live",))
    for view in (first, live):
        assert not view["errors"], view["errors"]
    assert first["torch"] is False and live["torch"] is True
    table = G.load_table()
    j = list(table["levels"]).index(0.35)
    for view in (first, live):
        assert view["metrics"]["Non-conservative share (p_t-weighted)"] == f"{table['fraction'][j]:.1%}"
    assert first["charts"] == 7 and "NFE of the exact solve (c = 0 → c)" in first["metrics"]
    assert float(live["metrics"]["(σ/α)² |curl| at 10⁻⁴ from x = 0"]) > 50
    assert first["tables"][0]["estimated (median)"] == list(G.LINE_DIMENSIONS)


def test_the_curl_section_follows_its_noise_level():
    """The conservativity section (a fragment) redraws the curl map and its share at the level chosen, from the
    shipped table."""
    from apptest import assert_clean, charts, open_app

    at = open_app(PAGE)
    assert_clean(at)
    table = G.load_table()
    level = float(table["levels"][5])
    at.select_slider(key="curl_level").set_value(level).run()
    assert_clean(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert f"Curl of the learned field at σ/α = {level:g}" in titles and len(titles) == 7, titles
    share = next(m.value for m in at.metric if m.label == "Non-conservative share (p_t-weighted)")
    assert share == f"{table['fraction'][5]:.1%}"
