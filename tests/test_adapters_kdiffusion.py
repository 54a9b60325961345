"""ex.adapters.from_kdiffusion: k-diffusion's samplers as explorer solvers, conventions converted exactly.

Four kinds of checks:
- k-diffusion's own call: samplers the explorer does not have (sample_lms, sample_dpm_2,
  sample_dpmpp_sde, ...) run through the adapter give the numbers k-diffusion gives when called
  directly on the same analytic denoiser and sigmas, with the conversion to its VE coordinates
  written out here independently (x_ve = x / alpha, sigma = sigma(t) / alpha(t),
  D(x_ve, sigma) = denoise(alpha x_ve, t(sigma))) and the same noise; under edm that
  conversion is the identity, under vp-linear it is not;
- identities with native solvers on every schedule: k-diffusion's Euler step in sigma is DDIM,
  its Euler ancestral step (eta = 1) is DDIM with eta = 1, sample_dpmpp_2m is dpmpp-2m and
  sample_dpmpp_2m_sde is dpmpp-2m-sde with the same seed (the adapter's noise is rng's draws);
- the record: traj.x are the sampler's states, traj.denoised the model at them, nfe the calls,
  times between grid points mapped through t_of_lambda, divergence and errors like the built-ins;
- the noise: exact Brownian increments (the law of k-diffusion's BrownianTreeNoiseSampler),
  bit-identical runs for a seed, torch's global generator left alone.

Every solver a test registers is unregistered after it (other tests iterate over all solvers).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer as ex
from explorer.adapters import from_kdiffusion
from explorer.adapters.kdiffusion import BrownianNoise, KDiffusionError
from fakes import BlowsUp, Spy, TorchModel, smooth_mixture
from peers import k_diffusion_sampling

K = k_diffusion_sampling()

# Relative to the size of each step's numbers (see deviation). Measured: <= 1.4e-14 against
# k-diffusion's own call (edm, vp-linear), <= 8.7e-14 against the native solvers over all schedules
# and grids (the SDE samplers' noise goes through (W(b) - W(a)) / sqrt(b - a), a few ulps from
# rng's draw); any other algorithm, grid mapping or noise differs by > 1e-2 (the *_apart checks).
RTOL = 1e-12
N, STEPS, SEED = 64, 12, 20240611


@pytest.fixture(autouse=True)
def _unregister():
    """Leave the registry as it was: other tests run every registered solver."""
    before = set(ex.solvers.names())
    yield
    for name in set(ex.solvers.names()) - before:
        ex.solvers.unregister(name)


def problem(schedule="vp-linear", n_steps=STEPS, spacing="uniform-lambda", target=None, seed=SEED):
    s = ex.schedules.get(schedule) if isinstance(schedule, str) else schedule
    model = ex.AnalyticModel(target or ex.targets.get("gmm-2d-ring8"), s)
    ts = ex.timesteps(s, n_steps, spacing=spacing)
    return model, ts, model.prior_sample(N, np.random.default_rng(seed))


def deviation(ours, theirs, ts=None, schedule=None) -> float:
    """max over steps of max |ours - theirs| / (the size of that step's numbers).

    That size is max |theirs| at the step; for states (given ts and schedule) also
    (alpha_{i+1} / alpha_i) max |x_i|: a step in k-diffusion's x / alpha cancels terms that large
    to reach x_{i+1} (about 600 x the state for one step from t = 0.999 under trigonometric), and
    float64 round-off is relative to them."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    axes = tuple(range(1, theirs.ndim))
    size = np.max(np.abs(theirs), axis=axes)
    if ts is not None:
        alpha = schedule.alpha(ts) * np.ones_like(ts)
        size[1:] = np.maximum(size[1:], alpha[1:] / alpha[:-1] * size[:-1])
    return float(np.max(np.max(np.abs(ours - theirs), axis=axes) / size))


def k_diffusion_call(sampler, model, x_T, ts, **kwargs):
    """k-diffusion's own sampler from x_T on the grid ts, the conversion written out here:
    returns our-coordinate states (n+1, N, D) (x = alpha x_ve), x0-predictions and nfe."""
    s = model.schedule
    alpha = s.alpha(ts) * np.ones_like(ts)
    sigmas = s.sigma(ts) / alpha
    nfe = [0]

    def denoiser(x_ve, sigma):
        t = float(s.t_of_lambda(-np.log(float(sigma[0]))))
        nfe[0] += 1
        return torch.from_numpy(model.denoise(float(s.alpha(t)) * x_ve.numpy(), t))

    states, denoised = [], []

    def callback(info):
        assert info["i"] == len(states)
        states.append(alpha[info["i"]] * info["x"].numpy())
        denoised.append(info["denoised"].numpy().copy())

    x_ve = torch.from_numpy(x_T / alpha[0])
    out = sampler(denoiser, x_ve, torch.tensor(sigmas), callback=callback, disable=True, **kwargs)
    states.append(alpha[-1] * out.numpy())
    return np.stack(states), np.stack(denoised), nfe[0]


# Samplers the explorer has no native twin for (sample_dpmpp_sde with the same Brownian noise).
OWN_CALL = {
    "sample_lms": (K.sample_lms, {}),
    "sample_lms-order3": (K.sample_lms, {"order": 3}),
    "sample_dpm_2": (K.sample_dpm_2, {}),
    "sample_heun": (K.sample_heun, {}),
    "sample_dpmpp_sde": (K.sample_dpmpp_sde, {}),
    "sample_dpmpp_2s_ancestral": (K.sample_dpmpp_2s_ancestral, {}),
    "sample_dpmpp_3m_sde": (K.sample_dpmpp_3m_sde, {}),
}


@pytest.mark.parametrize("schedule", ["edm", "vp-linear"])
@pytest.mark.parametrize("key", list(OWN_CALL))
def test_same_numbers_as_k_diffusions_own_call(key, schedule):
    sampler, options = OWN_CALL[key]
    model, ts, x_T = problem(schedule, spacing="karras")
    name = from_kdiffusion(sampler, **options)
    traj = ex.sample(model, x_T, ts, name, rng=SEED)

    noise = {}
    if "noise_sampler" in inspect.signature(sampler).parameters:
        # The same noise: the adapter draws from default_rng(SEED) through a BrownianNoise.
        x_ve = torch.from_numpy(x_T / float(model.schedule.alpha(ts[0])))
        noise = {"noise_sampler": BrownianNoise(x_ve, np.random.default_rng(SEED))}
    x_k, d_k, nfe_k = k_diffusion_call(sampler, model, x_T, ts, **options, **noise)

    assert traj.diverged_at is None and traj.nfe == nfe_k
    assert traj.x.shape == x_k.shape == (STEPS + 1, N, 2)
    assert deviation(traj.x, x_k) < RTOL, "states differ from k-diffusion's beyond round-off"
    assert deviation(traj.denoised, d_k) < RTOL, "x0-predictions differ from k-diffusion's beyond round-off"


def test_own_call_comparison_tells_samplers_apart():
    """The check has teeth: another sampler (lms order 4 vs 3), or another noise, differs by far more."""
    model, ts, x_T = problem("vp-linear", spacing="karras")
    traj = ex.sample(model, x_T, ts, from_kdiffusion(K.sample_lms))
    assert deviation(traj.x, k_diffusion_call(K.sample_lms, model, x_T, ts, order=3)[0]) > 1e6 * RTOL
    traj = ex.sample(model, x_T, ts, from_kdiffusion(K.sample_dpmpp_sde), rng=SEED)
    x_ve = torch.from_numpy(x_T / float(model.schedule.alpha(ts[0])))
    other = BrownianNoise(x_ve, np.random.default_rng(SEED + 1))
    assert deviation(traj.x, k_diffusion_call(K.sample_dpmpp_sde, model, x_T, ts, noise_sampler=other)[0]) > 1e6 * RTOL


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
def test_k_diffusion_euler_is_ddim(schedule):
    """Euler in sigma on x / alpha: x' / alpha' = D + (sigma'/sigma)(x / alpha - D), i.e. DDIM's
    x' = alpha' D + sigma' (x - alpha D) / sigma (under edm, alpha = 1, also our own euler)."""
    model, ts, x_T = problem(schedule)
    traj = ex.sample(model, x_T, ts, from_kdiffusion(K.sample_euler))
    ddim = ex.sample(model, x_T, ts, "ddim")
    assert traj.nfe == ddim.nfe == STEPS
    assert deviation(traj.x, ddim.x) < RTOL
    assert deviation(traj.denoised, ddim.denoised) < RTOL
    if schedule == "edm":
        assert deviation(traj.x, ex.sample(model, x_T, ts, "euler").x) < RTOL
    else:  # the test can fail: under VP, Euler in t is another method
        assert deviation(traj.x, ex.sample(model, x_T, ts, "euler").x) > 1e6 * RTOL


def _discrete():
    betas = np.linspace(1e-4, 0.02, 1000)
    return ex.schedules.from_alphas_cumprod(np.cumprod(1.0 - betas))


SCHEDULES = ex.schedules.names() + ["discrete"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@settings(max_examples=12)
@given(n_steps=st.integers(1, 14), spacing=st.sampled_from(ex.SPACINGS), seed=st.integers(0, 2**31))
def test_every_schedule_and_grid(schedule, n_steps, spacing, seed):
    s = _discrete() if schedule == "discrete" else ex.schedules.get(schedule)
    model, ts, x_T = problem(s, n_steps, spacing, smooth_mixture(), seed)
    # Native twins, noise included: the adapter's noise is rng's draws, one per step.
    pairs = [
        (from_kdiffusion(K.sample_euler), "ddim", {}),
        (from_kdiffusion(K.sample_dpmpp_2m), "dpmpp-2m", {}),
        (from_kdiffusion(K.sample_euler_ancestral), "ddim", {"eta": 1.0}),
        (from_kdiffusion(K.sample_dpmpp_2m_sde), "dpmpp-2m-sde", {}),
        (from_kdiffusion(K.sample_dpmpp_2m_sde, solver_type="heun"), "dpmpp-2m-sde", {"solver_type": "heun"}),
    ]
    for ours, native, options in pairs:
        a = ex.sample(model, x_T, ts, ours, rng=seed)
        b = ex.sample(model, x_T, ts, native, rng=seed, **options)
        assert a.diverged_at is None and a.nfe == b.nfe
        assert deviation(a.x, b.x, ts, s) < RTOL, (ours, native)
        assert deviation(a.denoised, b.denoised) < RTOL, (ours, native)

    # Between grid points: dpm_2 evaluates at the log-midpoint sigma, i.e. at lambda's midpoint.
    spy = Spy(model)
    traj = ex.sample(spy, x_T, ts, from_kdiffusion(K.sample_dpm_2))
    assert traj.nfe == len(spy.times) == 2 * n_steps
    lam = s.lambda_(ts)
    np.testing.assert_array_equal(spy.times[0::2], ts[:-1])  # grid times exactly, not a round trip
    np.testing.assert_allclose(spy.times[1::2], s.t_of_lambda(0.5 * (lam[:-1] + lam[1:])), rtol=1e-12, atol=1e-15)
    for i in range(n_steps):
        np.testing.assert_allclose(traj.denoised[i], model.denoise(traj.x[i], ts[i]), rtol=1e-13, atol=1e-13)


def test_torch_states_and_torch_generator():
    """Torch states stay torch (float64 to round-off); a torch.Generator is the noise source."""
    model, ts, x_T = problem("vp-cosine")
    tm, x = TorchModel(model), torch.from_numpy(x_T)
    ours = ex.sample(tm, x, ts, from_kdiffusion(K.sample_euler))
    assert isinstance(ours.x, torch.Tensor) and ours.x.dtype == torch.float64
    assert deviation(ours.x.numpy(), ex.sample(tm, x, ts, "ddim").x.numpy()) < RTOL
    assert deviation(ours.x.numpy(), ex.sample(model, x_T, ts, from_kdiffusion(K.sample_euler)).x) < RTOL

    name = from_kdiffusion(K.sample_euler_ancestral)
    a = ex.sample(tm, x, ts, name, rng=torch.Generator().manual_seed(7))
    b = ex.sample(tm, x, ts, "ddim", eta=1.0, rng=torch.Generator().manual_seed(7))
    assert deviation(a.x.numpy(), b.x.numpy()) < RTOL


class ImageModel:
    """A 4-D analytic mixture behind (N, 1, 2, 2) float32 tensors, as an image model presents itself."""

    def __init__(self, model):
        self.model, self.schedule = model, model.schedule

    def denoise(self, x, t):
        flat = x.reshape(len(x), -1).double().numpy()
        return torch.from_numpy(self.model.denoise(flat, t)).reshape(x.shape).to(x.dtype)


def test_float32_image_states():
    target = ex.GaussianMixture(np.array([[1.0, -1.0, 0.5, 0.0], [-1.0, 0.0, 0.5, 1.0]]), np.full(2, 0.05))
    s = ex.schedules.get("vp-linear")
    model = ImageModel(ex.AnalyticModel(target, s))
    ts = ex.timesteps(s, 10, spacing="karras")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((16, 1, 2, 2))).float()
    ours = ex.sample(model, x, ts, from_kdiffusion(K.sample_dpmpp_2m))
    native = ex.sample(model, x, ts, "dpmpp-2m")
    assert ours.x.shape == (11, 16, 1, 2, 2) and ours.x.dtype == torch.float32
    assert deviation(ours.x.numpy(), native.x.numpy()) < 1e-5  # float32 round-off


@pytest.mark.parametrize("schedule", ["edm", "rectified-flow"])
def test_grid_ending_at_sigma_zero(schedule):
    """A grid whose last time has sigma = 0 passes that 0: k-diffusion's own last step onto the
    data (dpmpp_2m: x = D), the state there mapped back with alpha(t_n) = 1."""
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(smooth_mixture(), s)
    ts = np.append(ex.timesteps(s, 8, spacing="karras"), 0.0)
    x_T = model.prior_sample(N, np.random.default_rng(1))
    traj = ex.sample(model, x_T, ts, from_kdiffusion(K.sample_dpmpp_2m))
    assert traj.diverged_at is None and traj.nfe == 9
    np.testing.assert_allclose(traj.x[-1], traj.denoised[-1], rtol=0, atol=1e-14)
    x_k, d_k, _ = k_diffusion_call(K.sample_dpmpp_2m, model, x_T, ts)
    assert deviation(traj.x, x_k) < RTOL and deviation(traj.denoised, d_k) < RTOL


def test_brownian_noise_law():
    """Exact Brownian increments in sigma: (W(b) - W(a)) / sqrt|b - a| is N(0, 1), two increments from
    a share the correlation sqrt(|s - a| / |b - a|) (dpmpp_sde's two draws), a bridge point is exact;
    k-diffusion's BrownianTreeNoiseSampler has the same law. Disjoint steps give rng's own draws."""
    like = torch.zeros(200_000, dtype=torch.float64)
    ours = BrownianNoise(like, np.random.default_rng(0))
    theirs = K.BrownianTreeNoiseSampler(like, 0.1, 10.0, seed=0)
    half = 1.0 / np.sqrt(like.numel())  # one standard error of a correlation or variance estimate
    for noise in (ours, theirs):
        z_s, z_b = noise(torch.tensor(5.0), torch.tensor(3.0)), noise(torch.tensor(5.0), torch.tensor(1.0))
        z_m = noise(torch.tensor(5.0), torch.tensor(2.0))  # between drawn points: the bridge
        for z in (z_s, z_b, z_m):
            assert abs(float(z.mean())) < 5 * half and abs(float(z.var()) - 1) < 8 * half
        for (u, zu), (v, zv) in [((3.0, z_s), (1.0, z_b)), ((2.0, z_m), (1.0, z_b)), ((3.0, z_s), (2.0, z_m))]:
            expected = np.sqrt((5.0 - u) / (5.0 - v))
            assert abs(float(torch.corrcoef(torch.stack([zu, zv]))[0, 1]) - expected) < 8 * half

    rng, replay = np.random.default_rng(3), np.random.default_rng(3)
    noise = BrownianNoise(torch.zeros(5, 2, dtype=torch.float64), rng)
    sigmas = [80.0, 20.0, 3.0, 0.5, 0.01]
    for a, b in zip(sigmas, sigmas[1:]):
        np.testing.assert_allclose(noise(a, b).numpy(), replay.standard_normal((5, 2)), rtol=1e-13, atol=1e-13)


class RandnEuler:
    """A sampler that draws with torch.randn_like itself (no noise_sampler, no eta)."""

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            d = model(x, sigmas[i] * s_in)
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": d})
            x = d + sigmas[i + 1] / sigmas[i] * (x - d) + 0.1 * sigmas[i + 1] * torch.randn_like(x)
        return x


def test_seeded_noise_is_reproducible_and_leaves_torch_alone():
    model, ts, x_T = problem("vp-linear")
    randn = RandnEuler()
    randn.__name__ = "sample_randn_euler"
    name = from_kdiffusion(randn, order=1, stochastic=True)
    brown = from_kdiffusion(K.sample_dpmpp_sde)
    assert ex.solvers.info(name)["stochastic"] and ex.solvers.info(brown)["stochastic"]
    with pytest.raises(ValueError, match="rng"):
        ex.sample(model, x_T, ts, name)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for solver in (name, brown):
        a, b = (ex.sample(model, x_T, ts, solver, rng=5) for _ in range(2))
        np.testing.assert_array_equal(a.x, b.x)  # bit-identical
        c = ex.sample(model, x_T, ts, solver, rng=6)
        assert deviation(c.x, a.x) > 1e-3
        gen = np.random.default_rng(5)  # one Generator re-used: fresh noise on the second run
        assert deviation(ex.sample(model, x_T, ts, solver, rng=gen).x,
                         ex.sample(model, x_T, ts, solver, rng=gen).x) > 1e-3
    assert torch.equal(torch.get_rng_state(), state), "the caller's torch generator was touched"


def test_denoised_and_nfe_are_the_models():
    model, ts, x_T = problem("vp-linear", spacing="karras")
    spy = Spy(model)
    traj = ex.sample(spy, x_T, ts, from_kdiffusion(K.sample_heun))
    assert traj.nfe == len(spy.times) == 2 * STEPS
    for i in range(STEPS):
        np.testing.assert_allclose(traj.denoised[i], model.denoise(traj.x[i], ts[i]), rtol=1e-13, atol=1e-13)


def test_divergence_is_marked_like_the_builtins():
    model, ts, x_T = problem("vp-linear")
    ours = ex.sample(BlowsUp(model, k=5), x_T, ts, from_kdiffusion(K.sample_euler))
    native = ex.sample(BlowsUp(model, k=5), x_T, ts, "ddim")
    assert ours.diverged_at == native.diverged_at == 4
    assert "NaN or inf" in ours.diverged_reason
    assert deviation(ours.x[:5], native.x[:5]) < RTOL
    assert np.all(np.isnan(ours.x[6:])) and ours.x.shape == native.x.shape

    def sample_nan_at_end(model, x, sigmas, extra_args=None, callback=None, disable=None):
        x = K.sample_euler(model, x, sigmas, callback=callback, disable=True)
        return x * float("nan")

    traj = ex.sample(model, x_T, ts, from_kdiffusion(sample_nan_at_end, order=1))
    assert traj.diverged_at == STEPS - 1 and np.all(np.isfinite(traj.x[:-1]))


def test_errors_name_the_sampler():
    model, ts, x_T = problem("edm")

    def sample_broken(model, x, sigmas, extra_args=None, callback=None, disable=None):
        model(x, sigmas[0] * x.new_ones([x.shape[0]]))
        raise ZeroDivisionError("a bug in the sampler")

    with pytest.raises(KDiffusionError, match=r"sample_broken raised ZeroDivisionError: a bug in the sampler"):
        ex.sample(model, x_T, ts, from_kdiffusion(sample_broken, order=1))

    def sample_overshoot(model, x, sigmas, extra_args=None, callback=None, disable=None):
        model(x, 2 * sigmas[0] * x.new_ones([x.shape[0]]))

    with pytest.raises(KDiffusionError, match="sample_overshoot evaluated the model at sigma = 160.*outside"):
        ex.sample(model, x_T, ts, from_kdiffusion(sample_overshoot, order=1))

    def sample_churn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        for i in range(len(sigmas) - 1):
            d = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": 1.1 * sigmas[i], "denoised": d})
        return x

    with pytest.raises(KDiffusionError, match="sample_churn churned at step 0"):
        ex.sample(model, x_T, ts, from_kdiffusion(sample_churn, order=1))

    def sample_silent(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    with pytest.raises(KDiffusionError, match=f"sample_silent called back 0 times for {STEPS} steps"):
        ex.sample(model, x_T, ts, from_kdiffusion(sample_silent, order=1))
    with pytest.raises(KDiffusionError, match="corrector"):
        ex.sample(model, x_T, ts, from_kdiffusion(K.sample_euler), rng=0, corrector_steps=1)


def test_declaration():
    assert from_kdiffusion(K.sample_lms) == "k-diffusion:sample_lms"
    assert from_kdiffusion(K.sample_lms) == "k-diffusion:sample_lms"  # the same declaration again
    info = ex.solvers.info("k-diffusion:sample_lms")
    assert (info["order"], info["stochastic"], info["multistep"], info["nfe_per_step"]) == (4, False, True, 1)
    assert "sample_lms" in info["summary"]
    assert ex.solvers.info(from_kdiffusion(K.sample_euler_ancestral))["stochastic"]
    quiet = from_kdiffusion(K.sample_euler_ancestral, eta=0.0)
    assert quiet == "k-diffusion:sample_euler_ancestral(eta=0.0)"
    assert (ex.solvers.info(quiet)["stochastic"], ex.solvers.info(quiet)["order"]) == (False, 1)
    sde = ex.solvers.info(from_kdiffusion(K.sample_dpmpp_sde))
    assert (sde["order"], sde["stochastic"], sde["reference"]) == (1, True, ex.solvers.info("dpmpp-2m")["reference"])
    assert ex.solvers.info(from_kdiffusion(K.sample_dpmpp_sde, eta=0.0))["order"] == 2

    # order is passed to a sampler that has that parameter: LMS of order 1 is Euler, i.e. DDIM.
    lms1 = from_kdiffusion(K.sample_lms, name="lms-1", order=1)
    assert ex.solvers.info(lms1)["order"] == 1
    model, ts, x_T = problem("vp-linear")
    assert deviation(ex.sample(model, x_T, ts, lms1).x, ex.sample(model, x_T, ts, "ddim").x) < RTOL

    with pytest.raises(ValueError, match="already registered"):
        from_kdiffusion(K.sample_heun, name="lms-1")
    assert from_kdiffusion(K.sample_heun, name="lms-1", replace=True) == "lms-1"


def test_bad_declarations_are_refused():
    def sample_mine(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return x

    with pytest.raises(ValueError, match="order is not known for sampler .*sample_mine: pass order="):
        from_kdiffusion(sample_mine)
    with pytest.raises(ValueError, match="sample_euler has no parameter 'etaa'"):
        from_kdiffusion(K.sample_euler, etaa=0.0)
    with pytest.raises(ValueError, match="'s_churn'"):
        from_kdiffusion(K.sample_euler, s_churn=1.0)
    with pytest.raises(ValueError, match="noise_sampler"):
        from_kdiffusion(K.sample_dpmpp_sde, noise_sampler=None)
    with pytest.raises(ValueError, match="order must be a positive integer"):
        from_kdiffusion(sample_mine, order=0)

    def sample_blind(model, x, sigmas):
        return x

    with pytest.raises(ValueError, match="takes no `callback`"):
        from_kdiffusion(sample_blind, order=1)


def test_import_explorer_loads_neither_torch_nor_k_diffusion():
    code = ("import sys, explorer as ex; ex.adapters.from_kdiffusion; "
            "assert not {'torch', 'k_diffusion'} & set(sys.modules), sorted({'torch', 'k_diffusion'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
