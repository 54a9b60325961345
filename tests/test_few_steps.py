"""Few-step sampling against exact answers (explorer.analyses.few_steps, reflow).

Exact reverse kernels: draws at 1, 2 and 4 steps pass a Kolmogorov-Smirnov test against the exact noised
marginal at every grid time, where DDPM's Gaussian kernels on the same grid fail it by far; the closed-form
kernel density matches a histogram of Monte Carlo draws of posterior.reverse_step. Reflow in 1D: the
1-rectified flow's ODE map is the monotone map, whose coupling cost equals POT's optimal cost to round-off;
the 2-rectified flow's Euler steps land on the coupling to round-off at any number of steps. Trajectory
contract (states, NFE) for each new sampler; bad input is a ValueError naming the argument."""

import numpy as np
import pytest
from scipy.stats import norm

import explorer as ex
from explorer.analyses import few_steps as FS
from explorer.analyses import posterior as P
from explorer.analyses import reflow as R

VP = ex.schedules.get("vp-linear")
RF = ex.schedules.get("rectified-flow")
GM1 = ex.targets.get("gmm-1d-3modes")


def noised_cdf(gm, schedule, x, t):
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    sd = np.sqrt(a * a * gm.covs[:, 0, 0] + s * s)
    return np.sum(gm.weights * norm.cdf((np.asarray(x)[..., None] - a * gm.means[:, 0]) / sd), axis=-1)


def ks(x, gm, schedule, t):
    x = np.sort(np.ravel(x))
    F, n = noised_cdf(gm, schedule, x, t), len(x)
    return max(np.max(np.arange(1, n + 1) / n - F), np.max(F - np.arange(n) / n))


@pytest.mark.parametrize("n_steps", [1, 2, 4])
def test_exact_kernels_are_exact_in_law_at_every_grid_time(n_steps):
    n = 20000
    crit = 1.95 / np.sqrt(n)  # the KS test's 0.1% critical value
    m = ex.AnalyticModel(GM1, VP)
    x_T = m.prior_sample(n, 0, exact=True)
    ts = ex.timesteps(VP, n_steps)
    traj = FS.exact_kernels(GM1, VP, x_T, ts, rng=1)
    assert traj.x.shape == (n_steps + 1, n, 1) and traj.denoised.shape == (n_steps, n, 1)
    assert traj.nfe == n_steps and traj.solver == "exact-kernels" and traj.schedule is VP
    for i in range(1, n_steps + 1):
        assert ks(traj.x[i], GM1, VP, ts[i]) < crit, i
    # DDPM's Gaussian kernel on the same grid: measured KS 0.42 / 0.33 / 0.23 at 1 / 2 / 4 steps.
    ddpm = ex.sample(m, x_T, ts, "ddpm", rng=1)
    assert ks(ddpm.x[-1], GM1, VP, ts[-1]) > 0.2
    assert np.allclose(ex.metrics.mode_coverage(traj.x[-1], GM1), GM1.weights, atol=0.015)


def test_kernel_density_matches_monte_carlo_draws():
    x_t, t, s = np.array([[0.9]]), 0.4, 0.1
    draws = P.reverse_step(GM1, VP, np.repeat(x_t, 200000, axis=0), t, s, rng=3)[:, 0]
    fine = np.linspace(draws.min() - 0.5, draws.max() + 0.5, 20001)
    dens = np.exp(FS.kernel_log_prob(GM1, VP, x_t, t, s, fine[:, None]))[0]
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    assert abs(cdf[-1] - 1) < 1e-6
    edges = np.linspace(draws.min(), draws.max(), 61)
    counts, _ = np.histogram(draws, edges)
    exact = np.diff(np.interp(edges, fine, cdf))
    # Bin masses within 5 binomial sd of the closed form (measured max 2.6 sd).
    sd = np.sqrt(exact * (1 - exact) / len(draws)) + 1e-6
    assert np.max(np.abs(counts / len(draws) - exact) / sd) < 5
    # The kernel is multimodal here (three bumps); DDPM's Gaussian kernel is one.
    gauss = np.exp(FS.kernel_log_prob(GM1, VP, x_t, t, s, fine[:, None], gaussian=True))[0]
    n_peaks = lambda d: int(np.sum((d[1:-1] > d[:-2]) & (d[1:-1] > d[2:])))
    assert n_peaks(dens) == 3 and n_peaks(gauss) == 1


def test_kernel_rejects_bad_times():
    with pytest.raises(ValueError, match="s must be earlier"):
        FS.reverse_kernel(GM1, VP, np.zeros((2, 1)), 0.3, 0.5)
    with pytest.raises(ValueError, match="x_T"):
        FS.exact_kernels(GM1, VP, np.zeros((2, 2)), ex.timesteps(VP, 2), rng=0)
    with pytest.raises(ValueError, match="ts"):
        FS.exact_kernels(GM1, VP, np.zeros((2, 1)), [0.1, 0.5], rng=0)


def test_flow_map_is_one_step_and_matches_the_monotone_map_in_1d():
    z = np.random.default_rng(0).standard_normal((200, 1))
    m = ex.AnalyticModel(GM1, RF)
    traj = FS.flow_map(m, z, 1 - 1e-7, 1e-7)
    assert traj.x.shape == (2, 200, 1) and traj.nfe == 1 and traj.extras["rk45_nfe"] > 10
    # In 1D every ODE map is increasing: the 1-rectified flow's map is F_0^{-1}(Phi(z)) (to the endpoint
    # offsets 1e-7, measured 3e-6).
    assert np.max(np.abs(traj.x[-1] - R.monotone_map(GM1, z))) < 1e-4


def test_monotone_coupling_cost_is_pots_optimal_cost():
    z = np.random.default_rng(1).standard_normal((300, 1))
    x = R.monotone_map(GM1, z)
    rep = R.transport_report(z, x)
    assert abs(rep["ratio"] - 1) < 1e-12
    # A coupling that pairs the same points in another order costs more.
    shuffled = R.transport_report(z, np.random.default_rng(2).permutation(x))
    assert shuffled["ratio"] > 1.1 and abs(shuffled["optimal"] - rep["optimal"]) < 1e-12
    # In 1D optimal_cost pairs the sorted points; POT's exact solver finds the same optimum, in 1D and in 2D.
    import ot

    def pots(a, b):
        return ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b), numItermax=10_000_000)

    rng = np.random.default_rng(3)
    for a, b in ((z, x), (rng.standard_normal((200, 1)), rng.exponential(size=(200, 1))),
                 (rng.standard_normal((150, 2)), rng.standard_normal((150, 2)) + 1.0)):
        assert R.optimal_cost(a, b) == pytest.approx(pots(a, b), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n_steps", [1, 2, 4])
def test_two_rectified_flow_is_straight_to_round_off(n_steps):
    z = np.random.default_rng(3).standard_normal((300, 1))
    model = R.Reflow1D(GM1)
    traj = ex.sample(model, z, np.linspace(1.0, 0.0, n_steps + 1), "euler")
    assert traj.nfe == n_steps
    assert np.max(np.abs(traj.x[-1] - R.monotone_map(GM1, z))) < 1e-13
    assert R.straightness(traj, model.velocity) < 1e-24
    # The 1-rectified flow's own Euler steps are far from straight: one step puts every point at the mean.
    one = ex.sample(ex.AnalyticModel(GM1, RF), z, np.linspace(RF.t_max, RF.t_min, n_steps + 1), "euler")
    assert ex.metrics.distance_to_target(one.x[-1], GM1) > 0.15


def test_reflow_rejects_bad_targets():
    with pytest.raises(ValueError, match="target"):
        R.Reflow1D(ex.targets.get("gmm-2d-ring8"))
    with pytest.raises(ValueError, match="x and y"):
        R.coupling_cost(np.zeros((3, 1)), np.zeros((4, 1)))
