"""Light Schrodinger Bridge (explorer.analyses.lightsb) against its closed forms.

The Gaussian-to-Gaussian bridge: gaussian_solution solves S Sigma0 S + eps S = Sigma1 (to round-off) and agrees
with POT's Sinkhorn plan between samples (the entropic OT that the static bridge is); LightSB fitted by the
paper's objective with one potential recovers it; the bridge posterior at tau = 0 is the conditional plan;
exact bridge paths end at the plan's draw and have the Brownian bridge's variance; the trajectory contract."""

import numpy as np
import pytest

import explorer as ex
from explorer.analyses import lightsb as L

MU0, C0 = np.array([0.0, 0.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
MU1, C1 = np.array([2.0, -1.0]), np.array([[0.6, -0.2], [-0.2, 1.5]])


@pytest.mark.parametrize("eps", [0.05, 1.0, 10.0])
def test_gaussian_solution_solves_the_marginal_equation(eps):
    S, r = L.gaussian_solution(MU0, C0, MU1, C1, eps)
    assert np.allclose(S @ C0 @ S + eps * S, C1, atol=1e-12) and np.allclose(S, S.T)
    assert np.all(np.linalg.eigvalsh(S) > 0) and np.allclose(S @ MU0 + r, MU1)


def test_gaussian_solution_is_sinkhorns_plan():
    import ot

    rng = np.random.default_rng(0)
    eps, n = 1.0, 800
    a, b = rng.multivariate_normal(MU0, C0, n), rng.multivariate_normal(MU1, C1, n)
    # Entropic OT with cost |x - y|^2 / 2 and regularisation eps: plan ~ exp(<x, y> / eps) u(x) v(y).
    P = ot.sinkhorn(np.full(n, 1 / n), np.full(n, 1 / n), ot.dist(a, b) / 2, eps, numItermax=5000, stopThr=1e-10)
    cond_mean = n * P @ b
    coef = np.linalg.lstsq(np.c_[a, np.ones(n)], cond_mean, rcond=None)[0]
    S, _ = L.gaussian_solution(MU0, C0, MU1, C1, eps)
    assert np.max(np.abs(coef[:2].T - S)) < 0.08  # measured 0.05 (sampling error at n = 800)
    S_wrong, _ = L.gaussian_solution(MU0, C0, MU1, C1, 2 * eps)
    assert np.max(np.abs(coef[:2].T - S_wrong)) > 0.15


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_fit_recovers_the_gaussian_bridge(eps):
    rng = np.random.default_rng(1)
    x0, x1 = rng.multivariate_normal(MU0, C0, 20000), rng.multivariate_normal(MU1, C1, 20000)
    # With one potential the empirical objective depends on the samples through their first two moments
    # only, so its minimiser is the closed form at the samples' mean and (biased) covariance.
    sb = L.fit(x0, x1, eps, n_potentials=1, steps=200, optimizer="lbfgs", seed=0)
    S, r = L.gaussian_solution(x0.mean(0), np.cov(x0.T, bias=True), x1.mean(0), np.cov(x1.T, bias=True), eps)
    assert np.max(np.abs(sb.S[0] - S)) < 1e-5 and np.max(np.abs(sb.r[0] - r)) < 1e-5
    S_true, _ = L.gaussian_solution(MU0, C0, MU1, C1, eps)
    assert np.max(np.abs(sb.S[0] - S_true)) < 0.03  # sampling error at n = 20,000 (measured 0.007)
    # The paper's Adam on minibatches lowers the same objective.
    adam = L.fit(x0, x1, eps, n_potentials=1, steps=60, batch=256, lr=2e-2, seed=0)
    assert np.mean(adam.losses[-10:]) < np.mean(adam.losses[:10])


def test_posterior_at_source_is_the_conditional_plan_and_paths_are_bridges():
    S, r = L.gaussian_solution(MU0, C0, MU1, C1, 0.5)
    sb = L.LightSB(np.log([0.3, 0.7]), np.stack([r, r + 1.0]), np.stack([S, 0.5 * S]), 0.5)
    x0 = np.random.default_rng(2).standard_normal((50, 2))
    for got, want in zip(sb.posterior(x0, 0.0), sb.conditional(x0)):
        assert np.allclose(got, want, atol=1e-10)
    z = np.zeros((40000, 2))
    traj = L.bridge_paths(sb, z, 4, rng=3)
    assert traj.x.shape == (5, 40000, 2) and traj.denoised.shape == (4, 40000, 2) and traj.nfe == 1
    assert np.allclose(traj.t, [1.0, 0.75, 0.5, 0.25, 0.0])
    again = sb.sample(z, L.as_generator(3))  # the same first draws: the path ends at the plan's x1
    assert np.allclose(traj.x[-1], again)
    # Mid-path spread: Var[x_1/2] = Var[(x0 + x1) / 2] + eps / 4 per axis about the bridge's line.
    mid = traj.x[2] - 0.5 * traj.x[-1]
    assert abs(np.var(mid[:, 0]) - 0.5 / 4) < 0.01
    # With one potential E[x1 | x_tau] is affine in x_tau: the posterior's mean is the least-squares fit of
    # the paths' ends on their states at tau = 1/2 (x0 spread out so that the regression sees a range).
    one = L.LightSB(np.zeros(1), r[None], S[None], 0.5)
    paths = L.bridge_paths(one, np.random.default_rng(4).standard_normal((40000, 2)), 2, rng=5)
    coef = np.linalg.lstsq(np.c_[paths.x[1], np.ones(40000)], paths.x[-1], rcond=None)[0]
    probe = np.array([[0.3, -0.2], [1.0, 0.5]])
    assert np.allclose(np.c_[probe, np.ones(2)] @ coef, one.drift(probe, 0.5) * 0.5 + probe, atol=0.03)
    em = L.bridge_paths(sb, z[:100], 4, rng=3, exact=False)
    assert em.nfe == 4 and em.solver == "lightsb-em"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="epsilon"):
        L.gaussian_solution(MU0, C0, MU1, C1, 0.0)
    with pytest.raises(ValueError, match="x0 and x1"):
        L.fit(np.zeros((5, 2)), np.zeros((5, 3)), 1.0)
    sb = L.LightSB(np.zeros(1), MU1[None], C0[None], 1.0)
    with pytest.raises(ValueError, match="n_steps"):
        L.bridge_paths(sb, np.zeros((3, 2)), 0, rng=0)
