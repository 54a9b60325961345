"""Same algorithm, same answer: our solvers against k-diffusion's samplers.

Both libraries drive the same exact mixture denoiser on the same grid under the EDM
schedule (alpha = 1, sigma = t), where k-diffusion's sigma grid *is* our t grid. The
two implementations then differ only in the order of floating-point operations, so
every state on the trajectory must agree to float64 round-off.

k-diffusion treats a final sigma == 0 specially (a last Euler / first-order step that
lands on the data). Our grids end at t_min > 0, so the grid is passed to k-diffusion
as it is, with no zero appended, and neither side takes that special step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer as ex
from peers import k_diffusion_sampling

K = k_diffusion_sampling()

# Relative to the largest |x| at that step. Measured: euler and heun agree bit for bit,
# ddim and dpmpp-2m to <= 3e-14; 1e-10 leaves room for other BLAS builds while any
# other algorithm on the same grid differs by 1e-1 (see test_comparison_tells_solvers_apart).
RTOL = 1e-10

N_PARTICLES = 300
N_STEPS = 18
SEED = 20240611


class KDiffusionDenoiser:
    """Our AnalyticModel as k-diffusion sees a model: model(x, sigma) -> denoised, float64.

    k-diffusion passes sigma as a tensor of shape (N,) (sigma * s_in); every entry is the
    same grid value, which under EDM is our time t.
    """

    def __init__(self, model: ex.AnalyticModel):
        self.model = model
        self.nfe = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float64 and sigma.shape == (x.shape[0],)
        t = float(sigma[0])
        assert torch.all(sigma == sigma[0])
        self.nfe += 1
        return torch.from_numpy(self.model.denoise(x.numpy(), t))


def run_k_diffusion(sampler, model, x_T: np.ndarray, ts: np.ndarray, **kwargs):
    """k-diffusion's sampler from x_T on the grid ts: states (n+1, N, D), x0-predictions (n, N, D), nfe."""
    denoiser = KDiffusionDenoiser(model)
    sigmas = torch.tensor(ts, dtype=torch.float64)  # no appended zero: see the module docstring
    states, denoised = [], []

    def callback(info):
        # Called once per step with the state the step starts from, x at sigmas[i].
        assert info["i"] == len(states)
        states.append(info["x"].clone())
        denoised.append(info["denoised"].clone())

    x = sampler(denoiser, torch.tensor(x_T, dtype=torch.float64), sigmas, callback=callback, disable=True, **kwargs)
    states.append(x)
    return torch.stack(states).numpy(), torch.stack(denoised).numpy(), denoiser.nfe


def relative_deviation(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per step, max |ours - theirs| over particles and dimensions, relative to max |theirs| at that step."""
    axes = tuple(range(1, ours.ndim))
    return np.max(np.abs(ours - theirs), axis=axes) / np.max(np.abs(theirs), axis=axes)


# ddim <-> sample_euler_ancestral(eta=0): with eta = 0, get_ancestral_step returns
# sigma_down = sigma_next and sigma_up = 0, so the step is the plain Euler step
# x' = x + (sigma' - sigma) (x - D) / sigma = D + sigma' (x - D) / sigma. With alpha = 1 that
# is exactly DDIM's x' = alpha' x0_hat + sigma' eps_hat with eps_hat = (x - alpha x0_hat) / sigma
# (the first-order exponential integrator coincides with Euler in sigma when alpha = 1).
PAIRS = {
    "euler": (K.sample_euler, {}),
    "heun": (K.sample_heun, {"s_churn": 0.0}),
    "ddim": (K.sample_euler_ancestral, {"eta": 0.0}),
    "dpmpp-2m": (K.sample_dpmpp_2m, {}),
}
TARGETS = ["gmm-2d-ring8", "gmm-2d-two-aniso", "gmm-1d-3modes"]
SPACINGS = ["karras", "uniform-lambda"]


@pytest.fixture(scope="module")
def edm():
    return ex.schedules.get("edm")


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("solver", list(PAIRS))
def test_same_trajectory_as_k_diffusion(solver, target, spacing, edm):
    sampler, kwargs = PAIRS[solver]
    model = ex.AnalyticModel(ex.targets.get(target), edm)
    ts = ex.timesteps(edm, N_STEPS, spacing=spacing)
    assert ts[-1] > 0  # k-diffusion's sigma == 0 branch is never taken
    x_T = model.prior_sample(N_PARTICLES, np.random.default_rng(SEED))

    traj = ex.sample(model, x_T, ts, solver)
    x_k, d_k, nfe_k = run_k_diffusion(sampler, model, x_T, ts, **kwargs)

    assert traj.diverged_at is None
    assert traj.nfe == nfe_k
    assert traj.x.shape == x_k.shape == (N_STEPS + 1, N_PARTICLES, model.dim)
    np.testing.assert_array_equal(traj.x[0], x_k[0])
    assert relative_deviation(traj.x, x_k).max() < RTOL, "states differ beyond round-off"
    assert relative_deviation(traj.denoised, d_k).max() < RTOL, "x0-predictions differ beyond round-off"
    np.testing.assert_allclose(traj.sample, x_k[-1], rtol=RTOL, atol=RTOL * np.abs(x_k[-1]).max())


def test_comparison_tells_solvers_apart(edm):
    """The check has teeth: different algorithms on the same grid differ far beyond RTOL."""
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), edm)
    ts = ex.timesteps(edm, N_STEPS, spacing="karras")
    x_T = model.prior_sample(N_PARTICLES, np.random.default_rng(SEED))
    ours = ex.sample(model, x_T, ts, "dpmpp-2m")
    for sampler in (K.sample_euler, K.sample_heun):
        x_k, _, _ = run_k_diffusion(sampler, model, x_T, ts)
        assert relative_deviation(ours.x, x_k).max() > 1e4 * RTOL


def test_grid_is_k_diffusions_karras_grid(edm):
    """Under EDM our karras grid is the grid k-diffusion builds (with its final zero dropped)."""
    ts = ex.timesteps(edm, N_STEPS, spacing="karras")
    sigmas = K.get_sigmas_karras(N_STEPS + 1, edm.t_min, edm.t_max, rho=7.0).double()
    np.testing.assert_allclose(ts, sigmas.numpy()[:-1], rtol=1e-5)  # theirs is built in float32
