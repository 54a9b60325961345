"""Guidance on exact models: labelled targets, conditional denoisers (Bayes' rule), classifier-free
guidance (w = 0 is the conditional model exactly), dynamic thresholding, and the known failure
of high-order solvers at large guidance scales."""

import numpy as np
import pytest

import explorer as ex
from explorer import guidance as G


def test_labelled_presets():
    ring = G.labelled("gmm-2d-ring8")
    assert ring.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # four contiguous arcs
    assert G.labelled("gmm-2d-ring8", n_classes=2).labels.tolist() == [0] * 4 + [1] * 4
    grid = G.labelled("gmm-2d-grid25", spacing=3.0)
    assert G.classes(grid) == [0, 1, 2, 3, 4]
    for c in range(5):  # a row: five modes with one first coordinate
        row = grid.means[grid.labels == c]
        assert len(row) == 5 and np.ptp(row[:, 0]) == 0 and np.ptp(row[:, 1]) == 12.0
    assert G.labelled("gmm-1d-3modes").labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="n_classes"):
        G.labelled("gmm-2d-ring8", n_classes=9)
    with pytest.raises(ValueError, match="n_classes"):
        G.labelled("gmm-2d-grid25", n_classes=2)


def test_conditional_target_renormalises():
    gm = G.with_labels(ex.GaussianMixture([[0.0], [1.0], [5.0]], [0.1, 0.2, 0.3], [0.2, 0.6, 0.2]), [0, 0, 1])
    cond = G.conditional_target(gm, 0)
    np.testing.assert_allclose(cond.weights, [0.25, 0.75])
    np.testing.assert_array_equal(cond.means[:, 0], [0.0, 1.0])
    with pytest.raises(ValueError, match="label"):
        G.conditional_target(gm, 2)
    with pytest.raises(ValueError, match="no labels"):
        G.conditional_target(ex.targets.get("gmm-1d-3modes"), 0)


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
def test_conditional_denoisers_recombine_by_bayes(schedule):
    # E[x0 | x_t] = sum_c p(c | x_t) E[x0 | x_t, c], p(c | x_t) = sum over c's components of the responsibilities
    gm = G.labelled("gmm-2d-ring8", radius=2.0, std=0.4)
    s = ex.schedules.get(schedule)
    full = ex.AnalyticModel(gm, s)
    x = full.prior_sample(300, 0, t=0.3 * s.t_max, exact=True)
    for t in (0.05 * s.t_max, 0.3 * s.t_max):
        resp = gm.noised(x, s.alpha(t), s.sigma(t), need=("resp",))["resp"]
        mixed = sum(
            resp[:, gm.labels == c].sum(1, keepdims=True) * G.ConditionalModel(gm, s, c).denoise(x, t)
            for c in G.classes(gm)
        )
        np.testing.assert_allclose(mixed, full.denoise(x, t), rtol=1e-10, atol=1e-12)


def _models(w, schedule="vp-linear"):
    gm = G.labelled("gmm-2d-ring8")
    s = ex.schedules.get(schedule)
    cond, uncond = G.ConditionalModel(gm, s, 1), ex.AnalyticModel(gm, s)
    return G.CFGModel(cond, uncond, w), cond, uncond


def test_cfg_at_w0_is_the_conditional_model_exactly():
    cfg, cond, _ = _models(0.0)
    x = cond.prior_sample(200, 1)
    ts = ex.timesteps(cond.schedule, 12)
    for solver in ("ddim", "dpmpp-2m", "heun"):
        np.testing.assert_array_equal(ex.sample(cfg, x, ts, solver).x, ex.sample(cond, x, ts, solver).x)


def test_cfg_combines_x0_and_eps_alike():
    cfg, cond, uncond = _models(3.0)
    x = cond.prior_sample(100, 2)
    t = 0.4
    np.testing.assert_allclose(cfg.denoise(x, t), 4.0 * cond.denoise(x, t) - 3.0 * uncond.denoise(x, t), rtol=0, atol=0)
    np.testing.assert_allclose(cfg.eps(x, t), 4.0 * cond.eps(x, t) - 3.0 * uncond.eps(x, t), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cfg.score(x, t), 4.0 * cond.score(x, t) - 3.0 * uncond.score(x, t), rtol=1e-10, atol=1e-10)
    unguided, _, _ = _models(-1.0)  # w = -1: the unconditional model
    np.testing.assert_allclose(unguided.denoise(x, t), uncond.denoise(x, t), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="w"):
        G.CFGModel(cond, uncond, float("nan"))
    with pytest.raises(ValueError, match="schedule"):
        G.CFGModel(cond, ex.AnalyticModel(cond.target, ex.schedules.get("edm")), 1.0)


def test_guidance_sharpens_toward_the_class():
    # p(c | x) grows along guided paths: with w > 0 more samples land on class c's own modes
    gm = G.labelled("gmm-2d-ring8", radius=2.0, std=0.5)
    s = ex.schedules.get("vp-linear")
    x = ex.AnalyticModel(gm, s).prior_sample(2000, 3)
    ts = ex.timesteps(s, 40)
    share = {}
    for w in (-1.0, 0.0, 4.0):
        out = ex.sample(G.guided_model(gm, s, 0, w), x, ts, "ddim").sample
        share[w] = gm.responsibilities(out)[:, gm.labels == 0].sum(1).mean()
    assert share[-1.0] < 0.35 and share[0.0] > 0.85 and share[4.0] > share[0.0] + 0.03, share


def test_threshold_is_imagens_rule():
    x0 = np.array([[0.5, -0.2], [3.0, -1.0], [-0.5, 4.0]])
    out = G.threshold(x0, ratio=1.0, max_value=1.0)  # ratio 1: s = max |x0| per sample
    np.testing.assert_array_equal(out[0], x0[0])  # in range: untouched
    np.testing.assert_allclose(out[1], x0[1] / 3.0)
    np.testing.assert_allclose(out[2], x0[2] / 4.0)
    # ratio < 1: s is the per-sample quantile; values beyond it are clipped, then all scaled by max_value / s
    out = G.threshold(x0, ratio=0.5, max_value=1.0)
    s = np.quantile(np.abs(x0[2]), 0.5)  # 2.25
    np.testing.assert_allclose(out[2], np.clip(x0[2], -s, s) / s)
    assert np.abs(G.threshold(x0 * 10, 0.995, 2.0)).max() <= 2.0 + 1e-12
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(G.threshold(torch.tensor(x0), 0.9, 1.5).numpy(), G.threshold(x0, 0.9, 1.5), rtol=1e-12)


def test_thresholding_keeps_guided_samples_in_range():
    gm = G.labelled("gmm-2d-ring8")
    s = ex.schedules.get("vp-linear")
    x = ex.AnalyticModel(gm, s).prior_sample(500, 4)
    ts = ex.timesteps(s, 12)
    plain = G.guided_model(gm, s, 0, 15.0)
    clipped = G.guided_model(gm, s, 0, 15.0, thresholding=True)
    assert isinstance(clipped, G.DynamicThresholding) and clipped.max_value == G.data_range(gm)
    traj = ex.sample(clipped, x, ts, "dpmpp-2m")
    assert np.abs(traj.denoised).max() <= G.data_range(gm) + 1e-12
    assert np.abs(ex.sample(plain, x, ts, "dpmpp-2m").denoised).max() > 2 * G.data_range(gm)
    with pytest.raises(ValueError, match="ratio"):
        G.DynamicThresholding(plain, ratio=0.0)


def test_high_guidance_breaks_high_order_solvers():
    # DPM-Solver++'s observation, on exact models: at w = 0 the second-order solver beats DDIM at
    # equal NFE; at w = 15 it is worse, and the third-order singlestep solver blows up.
    gm = G.labelled("gmm-2d-ring8")
    s = ex.schedules.get("vp-linear")
    solvers = [n for n in ("ddim", "dpmpp-2m", "dpm-solver-3") if n in ex.solvers.names()]
    recs = G.guidance_sweep(gm, s, 0, ws=(0.0, 15.0), solvers=solvers, nfe=12, n=300)
    err = {(r["w"], r["solver"]): r["error"] for r in recs}
    assert all(r["nfe"] == 12 for r in recs)
    assert err[0.0, "dpmpp-2m"] < 0.6 * err[0.0, "ddim"]
    assert err[15.0, "dpmpp-2m"] > 1.3 * err[15.0, "ddim"]
    if "dpm-solver-3" in solvers:
        bad = next(r for r in recs if r["w"] == 15.0 and r["solver"] == "dpm-solver-3")
        assert bad["error"] > 10 * err[15.0, "ddim"] and bad["max_norm"] > 5
