"""Sample-path conversion between schedules: round trips, ODE and SDE paths, laws, converted models."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import explorer as ex
from explorer import conversion as C
from explorer import interpolants as I
from explorer.solvers import interpolant_sde as SDE


def two_aniso():
    return ex.targets.get("gmm-2d-two-aniso")


SCHEDULES = {
    "vp-linear": ex.schedules.get("vp-linear"),
    "vp-cosine": ex.schedules.get("vp-cosine"),
    "rectified-flow": ex.schedules.get("rectified-flow"),
    "edm": ex.schedules.get("edm"),
    "trigonometric": ex.schedules.get("trigonometric", data_var=3.0),
    "point-mass": ex.schedules.get("point-mass"),
    "formula": I.Interpolant(lambda t: (1 - t) ** 2, lambda t: np.sqrt(t)),
    "tabulated": I.tabulated(np.linspace(0, 1, 51), np.cos(np.linspace(0, 1.5, 51)), np.linspace(0, 1, 51) ** 0.7,
                             t_min=0.01, t_max=1.0),
    "ddpm-table": ex.schedules.Discrete.from_betas(np.linspace(1e-4, 0.02, 1000)),
}


def _common_lambdas(a, b):
    lo = max(float(a.lambda_(a.t_max)), float(b.lambda_(b.t_max)))
    hi = min(float(a.lambda_(a.t_min)), float(b.lambda_(b.t_min)))
    return lo, hi


@given(
    pair=st.tuples(st.sampled_from(sorted(SCHEDULES)), st.sampled_from(sorted(SCHEDULES))),
    u=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6), seed=st.integers(0, 10**6),
)
def test_conversion_round_trips_to_round_off(pair, u, seed):
    a, b = SCHEDULES[pair[0]], SCHEDULES[pair[1]]
    lo, hi = _common_lambdas(a, b)
    lam = np.sort(lo + np.asarray(u) * (hi - lo))  # increasing lambda: a decreasing grid in t
    t = np.asarray(a.t_of_lambda(lam), dtype=float)
    t = np.unique(t)[::-1]
    if len(t) < 2:
        return
    x = np.random.default_rng(seed).normal(size=(len(t), 4, 2)) * 3
    traj = ex.Trajectory(t=t, x=x, denoised=x[:-1] * 0.5, nfe=0, solver="test")
    there = ex.convert_path(traj, b, from_schedule=a)
    np.testing.assert_allclose(b.lambda_(there.t), a.lambda_(t), rtol=1e-9, atol=1e-9)
    back = ex.convert_path(there, a, from_schedule=b)
    np.testing.assert_allclose(back.t, t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(back.x, x, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(back.denoised, traj.denoised)  # E[x0 | x_t] does not depend on the schedule


def test_converted_ode_path_equals_solving_the_target_schedule_directly():
    gm = two_aniso()
    a, b = ex.schedules.get("vp-cosine"), ex.schedules.get("rectified-flow")
    ma, mb = ex.AnalyticModel(gm, a), ex.AnalyticModel(gm, b)
    x = ma.prior_sample(100, 3)
    traj = ex.sample(ma, x, ex.timesteps(a, 12), "rk45", rtol=1e-10, atol=1e-10)
    conv = ex.convert_path(traj, b, from_schedule=a)
    direct = ex.sample(mb, conv.x[0], conv.t, "rk45", rtol=1e-10, atol=1e-10)
    scale = np.abs(conv.x).max()
    assert np.abs(direct.x - conv.x).max() < 1e-8 * scale  # measured 4e-13 * |x|: both are rk45 in lambda
    np.testing.assert_allclose(direct.denoised, conv.denoised, rtol=1e-7, atol=1e-7)
    # and the converted path is far from the original states: the check above can fail
    assert np.abs(conv.x - traj.x).max() > 0.1 * scale


@pytest.mark.parametrize("a_name, b_name", [("vp-cosine", "rectified-flow"), ("trigonometric", "point-mass")])
def test_optimal_sde_paths_convert_step_for_step_with_the_same_noise(a_name, b_name):
    # The exponential step depends on lambda only: the converted grid and the same normalised noise give
    # the converted path to round-off. Euler-Maruyama agrees to O(h): the gap shrinks with the step.
    gm = two_aniso()
    a, b = ex.schedules.get(a_name), ex.schedules.get(b_name)
    ma, mb = ex.AnalyticModel(gm, a), ex.AnalyticModel(gm, b)
    x = ma.prior_sample(100, 3)
    ts = ex.timesteps(a, 40, "uniform-t")
    sa = ex.sample(ma, x, ts, "interpolant-sde", rng=7, method="exponential")
    conv = ex.convert_path(sa, b, from_schedule=a, diffusion="optimal")
    assert conv.options["diffusion"] == "optimal" and conv.options["scale"] == 1.0  # optimal stays optimal
    direct = ex.sample(mb, conv.x[0], conv.t, "interpolant-sde", rng=7, method="exponential")
    assert np.abs(direct.x - conv.x).max() < 1e-10 * np.abs(conv.x).max()
    if a_name != "vp-cosine":
        return  # Euler-Maruyama from near the point (t' = 1 - 2.5e-6 here) converges too slowly to check cheaply
    gaps = []
    for n in (80, 320):
        ts = ex.timesteps(a, n, "uniform-t")
        conv = ex.convert_path(ex.sample(ma, x, ts, "interpolant-sde", rng=7), b, from_schedule=a, diffusion="optimal")
        direct = ex.sample(mb, conv.x[0], conv.t, "interpolant-sde", rng=7)
        gaps.append(np.abs(direct.x - conv.x).max())
    assert gaps[1] < gaps[0] / 2.5, gaps  # measured 0.063 -> 0.0088 for vp-cosine -> rectified-flow


def test_constant_diffusion_converts_to_its_time_changed_coefficient():
    gm = two_aniso()
    a, b = ex.schedules.get("vp-cosine"), ex.schedules.get("rectified-flow")
    ma, mb = ex.AnalyticModel(gm, a), ex.AnalyticModel(gm, b)
    x = ma.prior_sample(50, 3)
    eps_b, one = C.converted_diffusion(a, b, "constant", 0.3)
    # kappa = eps / (alpha^2 rho') is the same under both schedules at matched times
    t = np.linspace(0.05, 0.95, 7)
    t_b = C.convert_time(a, b, t)
    rho_dot = lambda s, u: -C._lambda_dot(s, u) * np.exp(-s.lambda_(u))  # noqa: E731
    np.testing.assert_allclose(eps_b(t_b) / (b.alpha(t_b) ** 2 * rho_dot(b, t_b)),
                               0.3 / (a.alpha(t) ** 2 * rho_dot(a, t)), rtol=1e-9)
    gaps = []
    for n in (320, 1280):
        ts = ex.timesteps(a, n, "uniform-t")
        conv = ex.convert_path(SDE.sample_sde(ma, x, ts, "constant", rng=7, scale=0.3), b, from_schedule=a,
                               diffusion="constant", scale=0.3)
        # the coefficient conv names is the time-changed one: the same kappa on every converted time
        eps_conv, ts_b = conv.options["diffusion"], np.asarray(conv.t)
        assert conv.options["scale"] == 1.0
        np.testing.assert_allclose(eps_conv(ts_b) / (b.alpha(ts_b) ** 2 * rho_dot(b, ts_b)),
                                   0.3 / (a.alpha(ts) ** 2 * rho_dot(a, ts)), rtol=1e-9)
        direct = SDE.sample_sde(mb, conv.x[0], conv.t, eps_b, rng=7)
        gaps.append(np.abs(direct.x - conv.x).max())
    assert gaps[1] < gaps[0] / 2, gaps  # measured 0.016 -> 0.0048


def test_stochastic_conversion_preserves_the_law():
    # SDE paths (constant eps) under vp-cosine, converted to rectified flow: at every converted time the
    # particles are distributed as the exact p_t' of rectified flow (up to the finite-sample floor).
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    a, b = ex.schedules.get("vp-cosine"), ex.schedules.get("rectified-flow")
    ma = ex.AnalyticModel(gm, a)
    n = 3000
    traj = SDE.sample_sde(ma, ma.prior_sample(n, 1, exact=True), ex.timesteps(a, 300, "uniform-t"), "constant",
                        rng=2, scale=0.5)
    conv = ex.convert_path(traj, b, from_schedule=a, diffusion="constant", scale=0.5)
    rng = np.random.default_rng(3)
    for i in (100, 200, 300):
        t_b = conv.t[i]
        exact = float(b.alpha(t_b)) * gm.sample(20000, 4) + float(b.sigma(t_b)) * rng.standard_normal((20000, 2))
        floor_exact = float(b.alpha(t_b)) * gm.sample(n, 5) + float(b.sigma(t_b)) * rng.standard_normal((n, 2))
        dist = ex.metrics.sliced_wasserstein(conv.x[i], exact)
        floor = ex.metrics.sliced_wasserstein(floor_exact, exact)
        assert dist < 2.5 * floor + 0.02, (i, dist, floor)


@given(u=st.floats(0.0, 1.0), name=st.sampled_from(["rectified-flow", "trigonometric", "point-mass", "formula"]))
def test_a_converted_model_is_the_exact_model_of_the_target_schedule(u, name):
    gm = two_aniso()
    a, b = ex.schedules.get("vp-linear"), SCHEDULES[name]
    lo, hi = _common_lambdas(a, b)
    t = float(b.t_of_lambda(lo + u * (hi - lo)))
    x = np.random.default_rng(0).normal(size=(10, 2)) * 3
    conv, exact = C.ConvertedModel(ex.AnalyticModel(gm, a), b), ex.AnalyticModel(gm, b)
    np.testing.assert_allclose(conv.denoise(x, t), exact.denoise(x, t), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(conv.velocity(x, t), exact.velocity(x, t), rtol=1e-6, atol=1e-6)


def test_point_mass_paths_and_bad_input():
    gm = two_aniso()
    pm, rf = ex.schedules.get("point-mass"), ex.schedules.get("rectified-flow")
    traj = ex.sample(ex.AnalyticModel(gm, pm), np.zeros((20, 2)), np.linspace(1.0, 0.01, 21), "interpolant-sde", rng=0)
    with pytest.raises(ValueError, match="start=1"):
        ex.convert_path(traj, rf, from_schedule=pm, diffusion="optimal")
    conv = ex.convert_path(traj, rf, from_schedule=pm, diffusion="optimal", start=1)
    assert conv.n_steps == 19 and np.isfinite(conv.x).all()
    np.testing.assert_allclose(ex.convert_path(conv, pm, from_schedule=rf).x, traj.x[1:], rtol=1e-9, atol=1e-12)
    # to a point-mass schedule, the point stays the point
    assert np.all(ex.convert_path(traj, ex.schedules.get("point-mass", data_var=2.0), from_schedule=pm).x[0] == 0)
    with pytest.raises(ValueError, match="from_schedule"):  # a trajectory that does not record its schedule
        ex.convert_path(dataclasses.replace(traj, schedule=None), rf)
    with pytest.raises(ValueError, match="lambda"):  # rectified flow reaches noisier states than vp-linear's t = 1
        ex.convert_path(ex.Trajectory(t=np.array([0.999, 0.5]), x=np.zeros((2, 1, 1)), denoised=np.zeros((1, 1, 1)),
                                      nfe=0, solver="x"), "vp-linear", from_schedule=rf)
    with pytest.raises(ValueError, match="start"):
        ex.convert_path(traj, rf, from_schedule=pm, start=99)
