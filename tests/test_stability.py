"""Stability regions read off the solvers' own code (explorer.analyses.stability), against closed-form
oracles: Euler 1 + z, Heun 1 + z + z^2/2, the Adams-Bashforth polynomials rho - z sigma, and
the Heavy Ball / GHVB characteristic polynomials of the momentum paper."""

import math

import numpy as np
import pytest
import scipy.linalg

import explorer as ex
from explorer import stability as st

AB = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def ghvb_coefficients(k, beta):
    """The momentum paper's GHVB coefficients (newest velocity first), order k = 1..4."""
    b = beta
    table = {
        1: [b],
        2: [(2 + b) / 2, -(2 - b) / 2],
        3: [(18 + 5 * b) / 12, -(24 - 8 * b) / 12, (6 - b) / 12],
        4: [(46 + 9 * b) / 24, -(78 - 19 * b) / 24, (42 - 5 * b) / 24, -(10 - b) / 24],
    }
    return [c / b for c in table[k]]


def momentum_polynomial(z, coefficients, beta):
    """(zeta - 1)(zeta - (1 - beta)) zeta^{k-1} - beta z sum_j c_j zeta^{k-j}: Heavy Ball on an
    Adams method with weights c (c = AB_k), or GHVB (c its coefficients), as polynomial coefficients."""
    k = len(coefficients)
    lhs = np.polymul(np.polymul([1.0, -1.0], [1.0, -(1.0 - beta)]), [1.0] + [0.0] * (k - 1))
    rhs = np.concatenate([[0.0], beta * z * np.asarray(coefficients), [0.0]])
    return lhs - rhs


def oracle(solver, options, z):
    """Characteristic polynomial (highest power first) of the method at z, in closed form."""
    if solver == "euler" or (solver == "plms" and options.get("order") == 1):
        return np.array([1.0, -(1.0 + z)])
    if solver == "heun":
        return np.array([1.0, -(1.0 + z + z * z / 2)])
    if solver == "plms":  # rho(zeta) - z sigma(zeta), rho = zeta^k - zeta^{k-1}
        b = AB[options["order"]]
        return np.concatenate([[1.0, -1.0], np.zeros(len(b) - 1)]) - np.concatenate([[0.0], z * np.asarray(b)])
    if solver == "heavy-ball":
        return momentum_polynomial(z, AB[options["base_order"]], options["beta"])
    if solver == "ghvb":
        return momentum_polynomial(z, ghvb_coefficients(options["order"], options["beta"]), options["beta"])
    if solver == "ddim":  # on the lambda test problem: 1 + z (1 - e^{-h}) / h
        h = options["h"]
        return np.array([1.0, -(1.0 + z * (-math.expm1(-h)) / h)])
    if solver == "dpmpp-2m":  # x+ = e^{-h} x + (1 - e^{-h}) mu (3/2 x - 1/2 x_-), mu = 1 + z / h
        h = options["h"]
        mu, c = 1.0 + z / h, -math.expm1(-h)
        return np.array([1.0, -(math.exp(-h) + 1.5 * c * mu), 0.5 * c * mu])
    raise KeyError(solver)


CASES = [
    ("euler", {}),
    ("heun", {}),
    ("plms", {"order": 1}),
    ("plms", {"order": 2}),
    ("plms", {"order": 3}),
    ("plms", {"order": 4}),
    ("heavy-ball", {"base_order": 1, "beta": 0.8}),
    ("heavy-ball", {"base_order": 2, "beta": 0.5}),
    ("heavy-ball", {"base_order": 4, "beta": 0.3}),
    ("ghvb", {"order": 1, "beta": 0.6}),
    ("ghvb", {"order": 2, "beta": 0.8}),
    ("ghvb", {"order": 3, "beta": 0.5}),
    ("ghvb", {"order": 4, "beta": 0.7}),
    ("ddim", {"variable": "lambda", "h": 0.7}),
    ("dpmpp-2m", {"h": 0.5}),
    ("dpmpp-2m", {"h": 2.0}),
]


def oracle_radius(solver, options, z):
    return np.array([np.abs(np.roots(oracle(solver, options, zi))).max() for zi in np.ravel(z)])


@pytest.mark.parametrize("solver, options", CASES)
def test_regions_from_the_solver_code_match_the_closed_forms(solver, options):
    rng = np.random.default_rng(1)
    z = rng.uniform(-4, 1, 300) + 1j * rng.uniform(-3, 3, 300)
    expected = oracle_radius(solver, options, z)
    got = st.spectral_radius(solver, z, **options)
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12)
    clear = np.abs(expected - 1.0) > 1e-6  # points not on the edge: same verdict
    assert clear.sum() > 250 and 0 < st.region(solver, z, **options)[clear].sum() < clear.sum()
    assert np.array_equal(st.region(solver, z, **options)[clear], expected[clear] <= 1.0)


@pytest.mark.parametrize("solver, options", CASES)
def test_boundary_locus_lies_on_the_oracle_edge(solver, options):
    edge = st.boundary(solver, n=181, **options)
    points = edge[np.isfinite(edge)]
    assert len(points) > 60
    # Every point of the edge has a root of modulus 1 and none larger, by the closed form.
    assert np.allclose(oracle_radius(solver, options, points), 1.0, atol=1e-7)


@pytest.mark.parametrize(
    "solver, options, left",
    [
        ("euler", {}, -2.0),
        ("heun", {}, -2.0),
        ("ddim", {}, -2.0),
        ("plms", {"order": 1}, -2.0),
        ("plms", {"order": 2}, -1.0),
        ("plms", {"order": 3}, -6.0 / 11.0),
        ("plms", {"order": 4}, -3.0 / 10.0),
    ]
    + [("heavy-ball", {"base_order": 1, "beta": b}, -2.0 * (2.0 - b) / b) for b in (0.2, 0.5, 0.8, 1.0)]
    + [("ghvb", {"order": 1, "beta": b}, -2.0 * (2.0 - b) / b) for b in (0.3, 0.9)]
    # Heavy Ball on AB-k: the interval ends where zeta = -1, which scales AB-k's end by (2 - beta) / beta.
    + [("heavy-ball", {"base_order": k, "beta": 0.5}, -3.0 * iv) for k, iv in [(2, 1.0), (3, 6 / 11), (4, 0.3)]]
    + [("ddim", {"variable": "lambda", "h": h}, -2.0 * h / -math.expm1(-h)) for h in (0.1, 1.0)],
)
def test_known_real_intervals(solver, options, left):
    assert st.real_interval(solver, **options) == pytest.approx(left, abs=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ghvb_at_beta_one_is_adams_bashforth(order):
    ghvb, plms = st.recurrence("ghvb", order=order, beta=1.0), st.recurrence("plms", order=order)
    assert ghvb.shape == plms.shape and np.allclose(ghvb, plms, atol=1e-12)
    X, Y = np.meshgrid(np.linspace(-3, 1, 41), np.linspace(-2, 2, 41))
    z = X + 1j * Y
    assert np.array_equal(st.region("ghvb", z, order=order, beta=1.0), st.region("plms", z, order=order))


def test_momentum_widens_the_real_interval_as_beta_falls():
    for name, key in [("ghvb", "order"), ("heavy-ball", "base_order")]:
        for k in (2, 3, 4):
            ends = [st.real_interval(name, **{key: k, "beta": b}) for b in (1.0, 0.8, 0.5, 0.2)]
            assert all(a > b for a, b in zip(ends, ends[1:])), (name, k, ends)


OPTION_GRID = (
    [("euler", {}), ("heun", {}), ("ddim", {}), ("ddim", {"variable": "lambda", "h": 1.5})]
    + [("plms", {"order": k}) for k in (1, 2, 3, 4)]
    + [("heavy-ball", {"base_order": k, "beta": b}) for k in (1, 2, 3, 4) for b in (0.3, 1.0)]
    + [("heavy-ball", {"base": "dpmpp-2m", "beta": b, "h": 0.8}) for b in (0.5, 1.0)]
    + [("ghvb", {"order": k, "beta": b}) for k in (1, 2, 3, 4) for b in (0.4, 1.0)]
    + [("dpmpp-2m", {"h": 0.3}), ("dpmpp-3m", {}), ("dpmpp-3m", {"form": "dpm-solver-code", "h": 1.2})]
    + [("unipc", {"order": k, "variant": v, "corrector": c}) for k in (1, 2, 3) for v in ("bh1", "bh2") for c in (True, False)]
    + [("deis", {"order": k}) for k in (1, 2, 3)]
    + [("bdia", {"gamma": g}) for g in (0.0, 0.5, 1.0)]
    + [("dpm-solver-2", {}), ("dpm-solver-3", {"h": 1.0}), ("dpmpp-2s", {})]
    + [("sa-solver", {"tau": 0.0}), ("sa-solver", {"tau": 0.0, "predictor_order": 2, "corrector_order": 0})]
    + [("dpmpp-2m-sde", {"eta": 0.0})]
)


@pytest.mark.parametrize("solver, options", OPTION_GRID)
def test_fitted_recurrence_predicts_fresh_runs_off_the_circle(solver, options):
    # The a_j(z) are recovered from runs at 16 points on |z| = 1; a new run of the solver at other
    # z (with another random history) must obey the same recurrence to round-off.
    C = st.recurrence(solver, **options)
    assert np.isrealobj(C)  # real methods: regions symmetric about the real axis
    resolved, var, h = st._split(solver, options)
    z = np.array([-2.5 + 0.3j, -0.4 + 1.7j, 0.5 - 0.2j, -1.1 - 0.9j, -6.0 + 0.0j])
    x = st._run(solver, resolved, var, h, z, replicas=3, seed=7)[st._WARM : -1]
    a = (z[:, None] ** np.arange(C.shape[0])) @ C  # (len(z), p)
    p = a.shape[1]
    for n in range(p, len(x)):
        predicted = sum(a[:, j, None] * x[n - 1 - j] for j in range(p))
        scale = np.abs(np.stack([x[n - 1 - j] for j in range(p)] + [x[n]])).max(axis=0)
        assert np.all(np.abs(predicted - x[n]) <= 1e-9 * scale), (solver, options, n)


@pytest.mark.parametrize("solver", st.SUPPORTED)
def test_every_covered_solver_has_a_region_edge_and_interval(solver):
    options = {"variable": "lambda"} if solver == "ddim" else {}
    edge = st.boundary(solver, n=121, **options)
    points = edge[np.isfinite(edge)]
    assert len(points) > 20
    assert np.allclose(st.spectral_radius(solver, points, **options), 1.0, atol=1e-7)
    left = st.real_interval(solver, **options)
    assert -10 < left < 0
    assert st.region(solver, [0.999 * left, 0.5 * left], **options).all()
    assert not st.region(solver, [1.001 * left], **options)[0]


def test_same_method_same_region():
    # DPM-Solver++(2M) SDE without noise is DPM-Solver++(2M); DDIM in sigma/alpha is Euler there.
    assert np.allclose(st.recurrence("dpmpp-2m-sde", eta=0.0, h=0.9), st.recurrence("dpmpp-2m", h=0.9), atol=1e-12)
    assert np.allclose(st.recurrence("ddim"), st.recurrence("euler"), atol=1e-12)
    assert np.allclose(st.recurrence("bdia", gamma=0.0), st.recurrence("plms", order=1), atol=1e-12)


def test_variables_and_refusals():
    assert st.variable("euler") == st.variable("heun") == "t"
    assert st.variable("plms") == st.variable("ghvb") == st.variable("ddim") == "sigma/alpha"
    assert st.variable("heavy-ball") == "sigma/alpha" and st.variable("heavy-ball", base="dpmpp-2m") == "lambda"
    assert st.variable("dpmpp-2m") == st.variable("unipc") == st.variable("ddim", variable="lambda") == "lambda"
    with pytest.raises(ValueError, match="draws noise"):
        st.region("ddim", np.zeros(3), eta=0.5)
    with pytest.raises(ValueError, match="draws noise"):
        st.region("sa-solver", np.zeros(3))
    with pytest.raises(ValueError, match="not covered"):
        st.region("ddpm", np.zeros(3))
    with pytest.raises(ValueError, match="no option"):
        st.region("plms", np.zeros(3), beta=0.5)
    with pytest.raises(ValueError, match="variable"):
        st.region("plms", np.zeros(3), variable="lambda")


# The momentum paper's toy system: x' = A x, eigenvalues -1 and -9.
A_TOY, X0_TOY = np.array([[0.0, 1.0], [-9.0, -10.0]]), np.array([-1.0, 0.0])


def test_toy_system_ab2_blows_up_while_momentum_follows_the_exact_solution():
    # 26 steps on [0, 3]: h * (-9) = -1.04 lies just outside AB2's [-1, 0] but inside
    # HB(AB2, 0.8)'s [-1.5, 0] and GHVB2(0.8)'s [-1.2, 0].
    t = np.linspace(0.0, 3.0, 27)
    exact = np.stack([scipy.linalg.expm(A_TOY * ti) @ X0_TOY for ti in t])
    err = {
        name: np.linalg.norm(st.linear_system(s, A_TOY, X0_TOY, 3.0, 26, **o) - exact, axis=1)
        for name, (s, o) in {
            "ab2": ("plms", {"order": 2}),
            "hb": ("heavy-ball", {"base_order": 2, "beta": 0.8}),
            "ghvb": ("ghvb", {"order": 2, "beta": 0.8}),
        }.items()
    }
    # Measured: AB2's error grows every step over the second half, to 1.44 at t = 3 (the exact
    # solution is 0.05 there); HB's falls to 0.006 and GHVB's to 0.001.
    assert np.all(np.diff(err["ab2"][13:]) > 0) and err["ab2"][-1] > 1.3
    for name in ("hb", "ghvb"):
        assert err[name][-1] < 0.01 and err[name][13:].max() < 0.03, (name, err[name])
    assert st.real_interval("plms", order=2) > -9 * 3 / 26 > max(
        st.real_interval("heavy-ball", base_order=2, beta=0.8), st.real_interval("ghvb", order=2, beta=0.8)
    )


def test_linear_system_is_the_method_written_out():
    A, x0, n = np.array([[-1.0, 2.0], [-3.0, -0.5]]), np.array([0.3, -1.2]), 12
    h = 2.0 / n
    euler = [x0]
    for _ in range(n):
        euler.append(euler[-1] + h * A @ euler[-1])
    assert np.allclose(st.linear_system("euler", A, x0, 2.0, n), euler, rtol=1e-13, atol=1e-15)
    ab2 = [x0, x0 + h * A @ x0]  # AB2 after one Euler step (PLMS's warm-up)
    for _ in range(n - 1):
        ab2.append(ab2[-1] + h * A @ (1.5 * ab2[-1] - 0.5 * ab2[-2]))
    assert np.allclose(st.linear_system("plms", A, x0, 2.0, n, order=2), ab2, rtol=1e-12, atol=1e-14)
    # The exponential integrators solve x' = -x + (I + A) x with -x exact: DDIM (variable lambda).
    E = math.exp(-h)
    ddim = [x0]
    for _ in range(n):
        ddim.append(E * ddim[-1] + (1 - E) * (ddim[-1] + A @ ddim[-1]))
    assert np.allclose(st.linear_system("dpmpp-2m", A, x0, h, 1), ddim[:2], rtol=1e-12)
    # And they converge to the exact flow (UniPC: measured 6e-5 at 48 steps).
    assert np.allclose(st.linear_system("unipc", A, x0, 2.0, 48)[-1], scipy.linalg.expm(2.0 * A) @ x0, atol=1e-4)


def _fd_jacobian(f, x, eps=1e-6):
    return np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.shape[1])], axis=-1)


def _mixture():
    covs = np.array([[[0.3, 0.1], [0.1, 0.2]], [[0.05, 0.0], [0.0, 0.4]], [[0.1, -0.05], [-0.05, 0.1]]])
    return ex.GaussianMixture([[-1.0, 0.5], [1.0, 1.0], [0.2, -1.0]], covs, [0.5, 0.3, 0.2], labels=[0, 1, 1])


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
def test_denoise_jacobian_is_exact(schedule):
    s = ex.schedules.get(schedule)
    gm = _mixture()
    models = [ex.AnalyticModel(gm, s), ex.guidance.guided_model(gm, s, label=1, w=4.0)]
    x = np.random.default_rng(0).normal(size=(40, 2)) * 1.5
    for model in models:
        for t in np.geomspace(s.t_min * 5, s.t_max * 0.5, 5):
            J = st.denoise_jacobian(model, x, t)
            fd = _fd_jacobian(lambda y: model.denoise(y, t), x)
            assert np.abs(J - fd).max() < 1e-6 * max(1.0, np.abs(J).max()), (model, t)
    with pytest.raises(ValueError, match="exact Jacobian"):
        st.denoise_jacobian(ex.guidance.guided_model(gm, s, 1, 4.0, thresholding=True), x, 0.5)


def test_drift_jacobian_in_each_variable():
    s = ex.schedules.get("vp-cosine")
    model = ex.AnalyticModel(_mixture(), s)
    x, t = np.random.default_rng(2).normal(size=(10, 2)), 0.4
    a, sg = float(s.alpha(t)), float(s.sigma(t))
    drifts = {
        "t": lambda y: model.velocity(y, t),
        "sigma/alpha": lambda y: model.eps(a * y, t),  # dy/ds as a function of y = x / alpha
        "lambda": lambda y: -y + model.denoise(a * y, t),  # dy/dlambda
    }
    for var, f in drifts.items():
        y = x if var == "t" else x / a
        fd = _fd_jacobian(f, y)
        assert np.allclose(st.drift_jacobian(model, x, t, var), fd, rtol=1e-6, atol=1e-6 * sg**-2), var


@pytest.mark.parametrize("solver, options", [("euler", {}), ("ddim", {}), ("ddim", {"variable": "lambda"})])
def test_step_eigenvalues_are_what_each_step_multiplies_by(solver, options):
    # For a Gaussian target the denoiser is linear, so a one-step method multiplies each
    # eigen-direction by its amplification R(z_i) exactly: x_{i+1} = R(z_i) x_i, with z_i from
    # step_eigenvalues (Euler in t, DDIM in sigma/alpha: 1 + z; DDIM in lambda: 1 + z (1 - e^-h)/h).
    s = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(ex.GaussianMixture([[0.0]], [0.25]), s)
    ts = ex.timesteps(s, 8)
    traj = ex.sample(model, np.array([[1.0], [-2.0]]), ts, solver)
    var = st.variable(solver, **options)
    z = st.step_eigenvalues(model, traj, var=var)
    assert z.shape == (8, 2, 1) and np.allclose(z.imag, 0)
    h = st.step_sizes(s, ts, var)
    R = 1 + z[:, :, 0] * (1.0 if var != "lambda" else -np.expm1(-h)[:, None] / h[:, None])
    if var != "t":  # y = x / alpha is what DDIM multiplies in these views
        alpha = s.alpha(ts)
        ratio = (traj.x[1:, :, 0] / alpha[1:, None]) / (traj.x[:-1, :, 0] / alpha[:-1, None])
    else:
        ratio = traj.x[1:, :, 0] / traj.x[:-1, :, 0]
    assert np.allclose(ratio, R.real, rtol=1e-10)


def test_step_eigenvalues_select_particles_and_stop_at_a_divergence():
    s = ex.schedules.get("edm")
    model = ex.guidance.guided_model(_mixture(), s, label=0, w=3.0)
    x = np.random.default_rng(4).normal(size=(6, 2)) * 80.0
    traj = ex.sample(model, x, ex.timesteps(s, 7, "karras"), "ghvb", order=3, beta=0.6)
    z = st.step_eigenvalues(model, traj)
    assert z.shape == (7, 6, 2) and np.all(np.isfinite(z))
    assert np.array_equal(st.step_eigenvalues(model, traj, [1, 4]), z[:, [1, 4]])
    # GHVB steps in sigma/alpha (= t for EDM), where h < 0: contracting directions have Re z < 0.
    assert np.all(st.step_sizes(s, traj.t, "sigma/alpha") < 0) and np.all(np.abs(z.imag) < 1e-12)
    traj.x[4:] = np.nan
    traj.diverged_at = 3
    z_cut = st.step_eigenvalues(model, traj)
    assert np.all(np.isnan(z_cut[4:])) and np.array_equal(z_cut[:4], z[:4])
