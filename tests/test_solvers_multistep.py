"""PLMS, Heavy Ball / GHVB momentum, BDIA and the Time-Shift Sampler: measured orders
against rk45, exact reductions to their base methods, BDIA's exact inversion, and the
time shift staying on the grid."""

import numpy as np
import pytest

import explorer as ex
from fakes import BlowsUp, Spy, TorchModel, smooth_mixture
from explorer.solvers.bdia import invert
from explorer.solvers.momentum import ghvb_weights
from explorer.solvers.plms import adams_weights


def setup(schedule="vp-linear", n=50, seed=1):
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(smooth_mixture(), s)
    return s, model, model.prior_sample(n, seed)


# (solver, options, theoretical order). Momentum: HB averages the base's slopes, which lags
# them by O(h), so HB is first order whatever the base (the paper's theorem); GHVB averages
# eps and extrapolates the averages with coefficients that undo the lag, keeping order k.
ORDERS = [
    ("plms", {"order": 1}, 1),
    ("plms", {"order": 2}, 2),
    ("plms", {"order": 3}, 3),
    ("plms", {"order": 4}, 4),
    ("heavy-ball", {"base": "plms", "base_order": 2, "beta": 0.8}, 1),
    ("heavy-ball", {"base": "plms", "base_order": 4, "beta": 0.8}, 1),
    ("heavy-ball", {"base": "dpmpp-2m", "beta": 0.8}, 1),
    ("ghvb", {"order": 1, "beta": 0.8}, 1),
    ("ghvb", {"order": 2, "beta": 0.8}, 2),
    ("ghvb", {"order": 3, "beta": 0.8}, 3),
    ("ghvb", {"order": 4, "beta": 0.8}, 4),
    ("ghvb", {"order": 4, "beta": 0.5}, 4),
    ("bdia", {"gamma": 1.0}, 2),
    ("bdia", {"gamma": 0.5}, 1),
]
# BDIA at gamma = 1 is leapfrog-like: second order, but its parasitic root makes it unstable
# at low step counts on sharp targets (ring of std 0.05, vp-linear, 10 steps: error 0.94
# against 0.07 at gamma = 0.5 and 0.067 for DDIM), so the default is gamma = 0.5.


@pytest.fixture(scope="module")
def order_problem():
    s, model, x = setup(n=50)
    ref = ex.sample(model, x, ex.timesteps(s, 4), "rk45", rtol=1e-12, atol=1e-12, method="DOP853")
    return s, model, x, ref.x[-1]


@pytest.mark.parametrize("solver, options, order", ORDERS)
def test_measured_order_against_rk45(order_problem, solver, options, order):
    # Uniform-lambda grid, so the steps in the DDIM variable s = e^{-lambda} vary (geometric):
    # the variable-step coefficients are exercised. 64..512 steps: the asymptotic range
    # (at 16-32 steps AB4 still shows ~3.3); the smallest error (~2e-7) is far above rk45's.
    s, model, x, ref = order_problem
    ns = (64, 128, 256, 512)
    errors = [
        ex.metrics.endpoint_error(ex.sample(model, x, ex.timesteps(s, n), solver, **options).x[-1], ref) for n in ns
    ]
    measured = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(measured - order) < 0.3, (solver, options, measured, errors)


def test_adams_weights_are_the_classical_ones_on_uniform_steps():
    classical = {1: [1.0], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12], 4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24]}
    for k, want in classical.items():
        nodes = [0.7 - 0.1 * (k - 1 - j) for j in range(k)]  # step 0.1, oldest first
        np.testing.assert_allclose(adams_weights(nodes, 0.7, 0.8), want, rtol=1e-12)
    # variable steps: exact for every polynomial of degree < k
    nodes = [0.1, 0.25, 0.33, 0.5]
    w = 0.4 * np.array(adams_weights(nodes, 0.5, 0.9))
    for p in range(4):
        assert np.dot(w, np.array(nodes) ** p) == pytest.approx((0.9 ** (p + 1) - 0.5 ** (p + 1)) / (p + 1), rel=1e-12)


def test_ghvb_coefficients_match_the_paper_on_uniform_steps():
    # The momentum paper's GHVB mixers (uniform steps h, velocities newest first), divided by beta.
    b = 0.6
    paper = {
        1: [b],
        2: [(2 + b) / 2, -(2 - b) / 2],
        3: [(18 + 5 * b) / 12, -(24 - 8 * b) / 12, (6 - b) / 12],
        4: [(46 + 9 * b) / 24, -(78 - 19 * b) / 24, (42 - 5 * b) / 24, -(10 - b) / 24],
    }
    s = [0.1 * j for j in range(8)]
    for k, want in paper.items():
        c = ghvb_weights(s, 5, k, b)  # oldest first
        np.testing.assert_allclose(c[::-1], np.array(want) / b, rtol=1e-12)


class PointMass:
    """The exact denoiser of data at a single point mu: x0_hat = mu. Every probability-flow
    path is then x_t = alpha_t mu + sigma_t eps_0, a straight line y = mu + s eps_0 in the
    DDIM variables, so eps_hat is constant along it and every consistent method in (s, y)
    or (e^lambda, x / sigma) is exact on any grid."""

    def __init__(self, schedule, mu):
        self.schedule, self.mu = schedule, np.asarray(mu, dtype=np.float64)

    def denoise(self, x, t):
        return np.broadcast_to(self.mu, x.shape).copy()


@pytest.mark.parametrize(
    "solver, options",
    [("plms", {}), ("plms", {"order": 2}), ("heavy-ball", {"beta": 0.3}), ("heavy-ball", {"base": "dpmpp-2m", "beta": 0.3}),
     ("ghvb", {"beta": 0.3}), ("ghvb", {"order": 2, "beta": 0.6}), ("bdia", {}), ("bdia", {"gamma": 1.0})],
)
def test_straight_paths_are_followed_exactly_on_any_grid(solver, options):
    # Momentum must average slopes (dy/ds), not increments: on this strongly non-uniform
    # karras grid averaging increments of different step sizes would miss the line.
    for schedule in ["vp-linear", "edm"]:
        s = ex.schedules.get(schedule)
        model = PointMass(s, [0.5, -1.0])
        x = np.random.default_rng(0).standard_normal((20, 2)) * float(s.sigma(s.t_max)) + float(s.alpha(s.t_max)) * model.mu
        ts = ex.timesteps(s, 9, "karras")
        traj = ex.sample(model, x, ts, solver, **options)
        eps0 = (x - float(s.alpha(ts[0])) * model.mu) / float(s.sigma(ts[0]))
        exact = np.asarray(s.alpha(ts))[:, None, None] * model.mu + np.asarray(s.sigma(ts))[:, None, None] * eps0
        np.testing.assert_allclose(traj.x, exact, rtol=1e-10, atol=1e-10)


def test_plms_order_1_is_ddim():
    s, model, x = setup()
    ts = ex.timesteps(s, 15, "karras")
    np.testing.assert_allclose(
        ex.sample(model, x, ts, "plms", order=1).x, ex.sample(model, x, ts, "ddim").x, rtol=1e-12, atol=1e-13
    )


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_momentum_with_beta_1_is_the_base_method_exactly(order):
    s, model, x = setup()
    ts = ex.timesteps(s, 12, "karras")
    plms = ex.sample(model, x, ts, "plms", order=order).x
    np.testing.assert_array_equal(ex.sample(model, x, ts, "heavy-ball", base="plms", base_order=order, beta=1.0).x, plms)
    np.testing.assert_array_equal(ex.sample(model, x, ts, "ghvb", order=order, beta=1.0).x, plms)
    assert not np.allclose(ex.sample(model, x, ts, "ghvb", order=order, beta=0.7).x[-1], plms[-1])


def test_heavy_ball_on_dpmpp_2m_with_beta_1_is_dpmpp_2m():
    s, model, x = setup()
    ts = ex.timesteps(s, 12, "karras")
    np.testing.assert_allclose(
        ex.sample(model, x, ts, "heavy-ball", base="dpmpp-2m", beta=1.0).x,
        ex.sample(model, x, ts, "dpmpp-2m").x, rtol=1e-14, atol=1e-14,
    )
    assert not np.allclose(
        ex.sample(model, x, ts, "heavy-ball", base="dpmpp-2m", beta=0.5).x[-1], ex.sample(model, x, ts, "dpmpp-2m").x[-1]
    )


def test_bdia_with_gamma_0_is_ddim():
    s, model, x = setup("edm")
    ts = ex.timesteps(s, 10)
    np.testing.assert_array_equal(ex.sample(model, x, ts, "bdia", gamma=0.0).x, ex.sample(model, x, ts, "ddim").x)


@pytest.mark.parametrize(
    "schedule, n_steps, gamma",
    [("vp-linear", 10, 1.0), ("vp-linear", 50, 1.0), ("edm", 25, 1.0), ("vp-linear", 10, 0.5), ("rectified-flow", 8, 0.7)],
)
def test_bdia_inversion_recovers_every_state(schedule, n_steps, gamma):
    s, model, x = setup(schedule, n=100, seed=3)
    ts = ex.timesteps(s, n_steps)
    traj = ex.sample(model, x, ts, "bdia", gamma=gamma)
    states = invert(model, traj.x[-1], traj.x[-2], ts, gamma)
    assert states.shape == traj.x.shape
    scale = np.abs(traj.x).max(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(states - traj.x) / scale) < 1e-9
    assert np.max(np.abs(states[0] - x)) / np.abs(x).max() < 1e-9  # x_T itself


def test_bdia_inversion_refuses_what_it_cannot_invert():
    s, model, x = setup()
    ts = ex.timesteps(s, 5)
    traj = ex.sample(model, x, ts, "bdia", gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        invert(model, traj.x[-1], traj.x[-2], ts, 0.0)
    with pytest.raises(ValueError, match="2 steps"):
        invert(model, traj.x[-1], traj.x[-2], ts[-2:], 1.0)


@pytest.mark.parametrize("base", ["ddim", "euler", "heun"])
def test_time_shift_without_shifting_is_its_base_exactly(base):
    s, model, x = setup("vp-cosine")
    ts = ex.timesteps(s, 9)
    want = ex.sample(model, x, ts, base).x
    np.testing.assert_array_equal(ex.sample(model, x, ts, "time-shift", base=base, window=0.0, cutoff=0.0).x, want)
    np.testing.assert_array_equal(ex.sample(model, x, ts, "time-shift", base=base, window=0.5, cutoff=1.0).x, want)


@pytest.mark.parametrize("base, per_step", [("ddim", 1), ("heun", 2)])
def test_time_shift_moves_the_evaluation_time_but_stays_inside_the_grid(base, per_step):
    s = ex.schedules.get("vp-linear")
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    spy = Spy(ex.AnalyticModel(gm, s))
    x = spy.model.prior_sample(500, 4, exact=True)
    ts = ex.timesteps(s, 8)
    traj = ex.sample(spy, x, ts, "time-shift", base=base, window=0.9, cutoff=0.0)
    assert traj.nfe == per_step * 8 and traj.diverged_at is None
    assert min(spy.times) >= ts[-1] and max(spy.times) <= ts[0]
    step_times = spy.times[::per_step]
    assert step_times[0] == ts[0]  # the first step never shifts
    shifted = [i for i, t in enumerate(step_times) if t != ts[i]]
    assert shifted, "no step was shifted"
    for i in shifted:  # inside the window around t_i, and above the next grid time
        h = ts[i] - ts[i + 1]
        assert ts[i] - 0.9 * h - 1e-12 <= step_times[i] <= ts[i] + 0.9 * h + 1e-12 and step_times[i] > ts[i + 1]
    np.testing.assert_array_equal(traj.t, ts)


def test_time_shift_on_a_mixture_is_not_worse_than_its_base_beyond_sampling_noise():
    # With an exact denoiser there is no exposure bias to correct, so no gain is asserted.
    # Measured sliced W2 to the target (4000 particles, floor 0.024), ddim base vs time-shift
    # (window 0.2, cutoff 0.5, data_var = the target's per-feature variance 2.09):
    #   vp-linear 10 steps 0.155 -> 0.168; edm 10 steps 0.172 -> 0.120; vp-cosine 10 steps 0.159 -> 0.188;
    #   rectified-flow 10 steps 0.230 -> 0.185. With data_var = 0 (the paper's rule, the default):
    #   vp-linear 0.155 -> 0.169, edm 0.172 -> 0.232 (the noise-only fit ignores the data's variance).
    gm = ex.targets.get("gmm-2d-ring8", radius=2.0, std=0.3)
    target = gm.sample(20000, 6)
    floor = ex.metrics.sliced_wasserstein(gm.sample(4000, 7), target)
    data_var = float(gm.sample(200000, 0).var(axis=0).mean())
    for schedule in ["vp-linear", "edm"]:
        s = ex.schedules.get(schedule)
        model = ex.AnalyticModel(gm, s)
        x = model.prior_sample(4000, 4, exact=True)
        ts = ex.timesteps(s, 10)
        base = ex.metrics.sliced_wasserstein(ex.sample(model, x, ts, "ddim").x[-1], target)
        shifted = ex.metrics.sliced_wasserstein(
            ex.sample(model, x, ts, "time-shift", data_var=data_var).x[-1], target
        )
        assert shifted < base + floor, (schedule, base, shifted, floor)


def test_registry_declares_each_solver():
    for name, multistep in [("plms", True), ("heavy-ball", True), ("ghvb", True), ("bdia", True), ("time-shift", False)]:
        info = ex.solvers.info(name)
        assert info["multistep"] == multistep and not info["stochastic"]
        assert info["reference"] in {
            "Pseudo Numerical Methods for Diffusion Models on Manifolds",
            "Diffusion Sampling with Momentum for Mitigating Divergence Artifacts",
            "Exact Diffusion Inversion via Bi-directional Integration Approximation",
            "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
        }
    assert ex.solvers.info("plms")["options"]["order"] == {
        "type": "int", "default": 4, "help": ex.solvers.info("plms")["options"]["order"]["help"], "range": (1, 4)
    }
    assert ex.solvers.info("heavy-ball")["options"]["base"]["choices"] == ["plms", "dpmpp-2m"]
    assert ex.solvers.info("ghvb")["options"]["beta"]["range"] == (0.01, 1.0)
    assert ex.solvers.info("bdia")["options"]["gamma"]["range"] == (0.0, 1.0)
    assert ex.solvers.info("time-shift")["options"]["base"]["choices"] == ["ddim", "euler", "heun"]
    with pytest.raises(ValueError, match="order"):
        ex.sample(ex.AnalyticModel(smooth_mixture(), ex.schedules.get("edm")), np.zeros((3, 2)), [80.0, 1.0], "plms", order=5)


@pytest.mark.parametrize(
    "solver, options",
    [("plms", {}), ("heavy-ball", {}), ("heavy-ball", {"base": "dpmpp-2m"}), ("ghvb", {}), ("bdia", {}),
     ("time-shift", {"cutoff": 0.0}), ("time-shift", {"cutoff": 0.0, "statistic": "sample", "base": "heun"})],
)
def test_the_same_code_runs_on_torch_tensors(solver, options):
    torch = pytest.importorskip("torch")
    s, model, x = setup("vp-linear", n=40)
    ts = ex.timesteps(s, 9)
    want = ex.sample(model, x, ts, solver, **options)
    got = ex.sample(TorchModel(model), torch.from_numpy(x.copy()), ts, solver, **options)
    assert isinstance(got.x, torch.Tensor)
    np.testing.assert_allclose(got.x.numpy(), want.x, rtol=1e-12, atol=1e-12)
    if solver == "bdia":
        states = invert(TorchModel(model), got.x[-1], got.x[-2], ts, 0.5)
        np.testing.assert_allclose(states.numpy(), want.x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("solver", ["plms", "heavy-ball", "ghvb", "bdia", "time-shift"])
def test_divergence_stops_the_run_at_its_step(solver):
    s, model, x = setup("vp-linear", n=10)
    traj = ex.sample(BlowsUp(model, k=5), x, ex.timesteps(s, 10), solver)
    assert traj.diverged_at == 4 and "NaN or inf" in traj.diverged_reason
    assert np.all(np.isfinite(traj.x[:5])) and np.all(np.isnan(traj.x[6:]))


class LinearTestEquation:
    """The test equation of stability analysis in the DDIM variables: with alpha = 1 (VE),
    s = sigma = t and eps_hat = lam x, the ODE is dx/ds = lam x (decaying as s falls)."""

    def __init__(self, lam):
        self.schedule, self.lam = ex.schedules.get("ve", t_min=0.01, t_max=50.0), lam

    def denoise(self, x, t):
        return x * (1.0 - self.lam * t)


@pytest.mark.parametrize(
    "h_lam, unstable, stable",
    [
        # |x| after 60 uniform steps; the exact solution decays to e^{60 h lam}.
        (-0.4, [("plms", {"order": 4})], [("ghvb", {"order": 4, "beta": 0.5}), ("heavy-ball", {"beta": 0.2})]),
        (-1.2, [("plms", {"order": 2}), ("plms", {"order": 4}), ("heavy-ball", {"beta": 0.5})],
         [("ghvb", {"order": 2, "beta": 0.5}), ("heavy-ball", {"beta": 0.2})]),
    ],
)
def test_momentum_enlarges_the_stability_region(h_lam, unstable, stable):
    # The paper's point: AB-k's real stability interval shrinks with k (AB4 ~ [-0.3, 0],
    # AB2 [-1, 0]); momentum (smaller beta) widens it. Measured |x_60|: h lam = -0.4: plms4
    # 2.5e3, ghvb4/0.5 3e-4, HB/0.2 2e-4; h lam = -1.2: plms2 7e5, plms4 2e27, HB/0.5 2e5,
    # ghvb2/0.5 1e-12, HB/0.2 5e-7.
    ts = np.linspace(50.0, 0.01, 61)
    model = LinearTestEquation(h_lam / (ts[1] - ts[0]))
    x = np.ones((1, 1))
    for solver, options in unstable:
        assert abs(ex.sample(model, x, ts, solver, **options).x[-1, 0, 0]) > 10.0, (solver, options)
    for solver, options in stable:
        assert abs(ex.sample(model, x, ts, solver, **options).x[-1, 0, 0]) < 1e-3, (solver, options)
