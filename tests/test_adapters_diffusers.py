"""ex.adapters.run_diffusers / schedule_of: a configured diffusers scheduler drives an explorer model.

What is checked, and how:
- Time labels and coordinates, for every supported family (VP tables with plain or
  variance-exploding samples, flow matching, EDM): on a target that is (nearly) a point mass at 0
  the exact flow is x_t = sigma(t) z, and every deterministic scheduler here integrates it exactly,
  so x_i / sigma(t_i) must stay constant along the recorded states. In oracle mode with float64
  tables that holds to 1e-9 where step() keeps float64, to 3e-6 where it rounds the sample to
  float32 (Euler, DPM-Solver multistep, flow matching, EDM Euler): the labels (t from the
  scheduler's own sigma), the VE scaling and the stage bookkeeping are right.
- Same algorithm, same answer, on the states the adapter records: Euler == our ddim, DPM-Solver++
  (2M, midpoint) == our dpmpp-2m, UniPC == our unipc, DDIM (no clipping) == our ddim, each run
  natively on traj.t from traj.x[0]. The grids match as in test_solvers_unipc_sa.py and
  test_solvers_exponential.py (integer timesteps are table times; the last target is
  alphas_cumprod[0], t = 0, with final_sigmas_type="sigma_min"; lower_order_final=False), here
  without replacing the scheduler's sigmas: traj.t carries them exactly.
- Conventions: the three prediction types give the same states; fresh state every run; seeds;
  errors; and the recorded model/update noise levels (Euler agree, DPM-Solver with Karras sigmas
  rounds its timesteps: measured 11.8% and 3 duplicate timesteps at N = 80 on Stable Diffusion's
  scaled_linear betas, 14.5% and 1 on DDPM's linear ones).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

import explorer as ex
from explorer.adapters import run_diffusers, schedule_of
from fakes import BlowsUp, TorchModel
from test_kdiffusion import relative_deviation

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)  # the set_timesteps/config notices
# diffusers' Euler-type set_timesteps hands a torch tensor to np.interp (numpy 2 deprecation, not ours)
# and DPMSolverSDE's Brownian tree is built on float32 sigma bounds that float64 queries overstep by an ulp
pytestmark = [pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Should have t:UserWarning")]

N_PARTICLES = 40
TARGET = ex.targets.get("gmm-1d-3modes")
POINT = ex.GaussianMixture([[0.0]], [1e-14])  # x0_hat = 1e-14 x / sigma^2 ~ 0: the flow is x_t = sigma(t) z


def _model(scheduler, target=TARGET):
    return ex.AnalyticModel(target, schedule_of(scheduler))


def _start(scheduler, seed=0, n=N_PARTICLES):
    """Noise at the scheduler's noisiest level, sigma(t_max) z (every run here starts there or near)."""
    s = schedule_of(scheduler)
    return float(s.sigma(s.t_max)) * np.random.default_rng(seed).standard_normal((n, 1))


# ---------------------------------------------------------------- time labels, every family

DETERMINISTIC = [
    ("DDIMScheduler", {}, False), ("DDIMScheduler", {"set_alpha_to_one": False}, False),
    ("PNDMScheduler", {}, False), ("PNDMScheduler", {"skip_prk_steps": True}, False),
    ("EulerDiscreteScheduler", {}, True), ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, True),
    ("EulerDiscreteScheduler", {"timestep_type": "continuous", "prediction_type": "v_prediction"}, True),
    ("HeunDiscreteScheduler", {}, False), ("LMSDiscreteScheduler", {}, False), ("KDPM2DiscreteScheduler", {}, False),
    ("DPMSolverMultistepScheduler", {}, True), ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, True),
    ("DPMSolverSinglestepScheduler", {}, False), ("UniPCMultistepScheduler", {}, False),
    ("DEISMultistepScheduler", {}, False), ("SASolverScheduler", {"tau_func": lambda t: 0.0}, False),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, True), ("FlowMatchHeunDiscreteScheduler", {}, True),
    ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction",
                                     "flow_shift": 2.0}, True),
    ("EDMEulerScheduler", {}, True), ("EDMDPMSolverMultistepScheduler", {}, False),
]


@pytest.mark.parametrize("name, config, casts", DETERMINISTIC, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DETERMINISTIC)])
def test_states_sit_at_their_labelled_times(name, config, casts):
    scheduler = getattr(diffusers, name)(**config)
    s = schedule_of(scheduler)
    traj = run_diffusers(scheduler, ex.AnalyticModel(POINT, s), 10, np.array([[1.0], [-2.0], [0.5]]), rng=0,
                         oracle=True, float64=True)  # (SA-Solver draws its noise even at tau = 0)
    assert traj.n_steps == 10 and traj.schedule == s and traj.solver == f"diffusers:{name}"
    assert traj.extras["casts_to_float32"] is casts
    noisy = traj.extras["sigma"] > 0
    ratio = traj.x[noisy, :, 0] / s.sigma(traj.t[noisy])[:, None]
    assert np.max(np.abs(ratio / ratio[0] - 1)) < (3e-6 if casts else 1e-9)
    if not noisy[-1]:  # a noise-free last state is the data itself: 0 here
        assert np.max(np.abs(traj.x[-1])) < 1e-9
    assert np.all(np.diff(traj.t[noisy]) <= 0)  # (DDIM and PNDM without alpha = 1 end with a step from t = 0 to 0)
    # the first model call sees x_T at t_0, and each step's x0-prediction is the model's at its state
    np.testing.assert_allclose(traj.denoised[0], ex.AnalyticModel(POINT, s).denoise(traj.x[0], traj.t[0]), atol=1e-20)


def test_schedule_of_each_family():
    ddpm = diffusers.DDPMScheduler(beta_schedule="linear")
    s = schedule_of(ddpm)
    assert isinstance(s, ex.schedules.Discrete)
    np.testing.assert_array_equal(s.alphas_cumprod, ddpm.alphas_cumprod.double().numpy())
    assert (s.t_min, s.t_max) == (0.0, 999.0)
    np.testing.assert_allclose(s.sigma(999.0) / s.alpha(999.0), ((1 - ddpm.alphas_cumprod[-1]) / ddpm.alphas_cumprod[-1]) ** 0.5, rtol=1e-6)
    flow = schedule_of(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    assert flow == ex.schedules.get("rectified-flow", t_min=flow.t_min, t_max=1.0) and 0 < flow.t_min < 0.01
    edm = schedule_of(diffusers.EDMEulerScheduler(sigma_min=0.01, sigma_max=50.0))
    assert edm == ex.schedules.get("edm", t_min=0.01, t_max=50.0)
    dpm_flow = schedule_of(diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=1.0))
    assert dpm_flow.name == "rectified-flow" and dpm_flow.t_max == pytest.approx(0.999)
    with pytest.raises(ValueError, match="IPNDMScheduler is not supported.*supported: DDIMScheduler"):
        schedule_of(diffusers.IPNDMScheduler())
    with pytest.raises(ValueError, match="must be a diffusers scheduler"):
        schedule_of(object())


# ---------------------------------------------------------------- same algorithm, same answer


@pytest.mark.parametrize("spacing, n", [("leading", 10), ("linspace", 12)])
def test_euler_is_our_ddim(spacing, n):
    """EulerDiscreteScheduler's step x_ve' = x0 + sigma'/sigma (x_ve - x0) in x_ve = x/alpha,
    sigma = sigma/alpha, is DDIM's x' = alpha' x0 + sigma' eps. Leading spacing: integer timesteps;
    linspace with 12 steps: fractional ones (999 k / 11), where the model sees Euler's own
    interpolated sigma; its last step, from timestep 0 to sigma_min, has length 0. Euler rounds the
    sample to float32 inside step: measured <= 4e-7."""
    scheduler = diffusers.EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing=spacing, steps_offset=1,
                                                 final_sigmas_type="sigma_min")
    model = _model(scheduler)
    traj = run_diffusers(scheduler, model, n, _start(scheduler))
    assert traj.extras["coordinates"] == "ve" and traj.extras["casts_to_float32"] is True
    n_ours = n if spacing == "leading" else n - 1
    assert abs(traj.t[-1]) < 1e-7 and traj.t[n_ours] == traj.t[-1]  # (float32 sigma_min: t = -2e-8)
    ours = ex.sample(model, traj.x[0], traj.t[: n_ours + 1], "ddim")
    assert relative_deviation(traj.x[: n_ours + 1], ours.x).max() < 2e-6
    assert relative_deviation(traj.denoised[:n_ours], ours.denoised).max() < 2e-6
    np.testing.assert_allclose(traj.x[-1], traj.x[n_ours], rtol=1e-6)  # (a step of length 0, in float32)
    # the zero final sigma (the default): the last state is the last x0-prediction, labelled t = 0
    zero = diffusers.EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing=spacing, steps_offset=1)
    traj0 = run_diffusers(zero, model, n, _start(scheduler))
    assert traj0.t[-1] == 0.0 and traj0.extras["sigma"][-1] == 0.0
    np.testing.assert_array_equal(traj0.x[:-1], traj.x[:-1])
    assert relative_deviation(traj0.x[-1:], traj0.denoised[-1:]).max() < 1e-6


@pytest.mark.parametrize("n_steps", [8, 20])
def test_dpm_solver_multistep_is_our_dpmpp_2m(n_steps):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        lower_order_final=False, euler_at_final=False, final_sigmas_type="sigma_min")
    model = _model(scheduler)
    traj = run_diffusers(scheduler, model, n_steps, _start(scheduler))
    assert traj.nfe == n_steps and traj.extras["coordinates"] == "vp"
    ours = ex.sample(model, traj.x[0], traj.t, "dpmpp-2m")
    assert relative_deviation(traj.x, ours.x).max() < 3e-6  # it rounds the sample to float32 in step()
    other = ex.sample(model, traj.x[0], traj.t, "dpmpp-2m-sde", eta=0.0, solver_type="heun")
    assert relative_deviation(traj.x, other.x).max() > 1e-4  # the check tells the 2M forms apart


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_is_our_unipc_to_float64_round_off(variant, order):
    """UniPC keeps float64; float64=True upcasts its float32 sigma table (values unchanged) and
    oracle=True evaluates the model at those sigmas' times: traj.t is then the native grid exactly.
    The corrected states (last_sample) are the recorded ones. Measured <= 2e-14 (float64) and
    2e-6 without the two options (float32 sigmas against the integer timesteps' table values)."""
    scheduler = diffusers.UniPCMultistepScheduler(
        beta_schedule="linear", solver_order=order, solver_type=variant, lower_order_final=False,
        final_sigmas_type="sigma_min")
    model = _model(scheduler)
    traj = run_diffusers(scheduler, model, 12, _start(scheduler), oracle=True, float64=True)
    ours = ex.sample(model, traj.x[0], traj.t, "unipc", order=order, variant=variant)
    assert relative_deviation(traj.x, ours.x).max() < 1e-10
    assert relative_deviation(traj.denoised, ours.denoised).max() < 1e-10
    plain = run_diffusers(scheduler, model, 12, _start(scheduler))
    assert 1e-10 < relative_deviation(plain.x, ours.x).max() < 5e-6
    no_corrector = ex.sample(model, traj.x[0], traj.t, "unipc", order=order, variant=variant, corrector=False)
    assert relative_deviation(traj.x, no_corrector.x).max() > 1e-5


def test_ddim_without_clipping_is_our_ddim_and_clipping_is_not():
    kwargs = dict(beta_schedule="linear", set_alpha_to_one=False, timestep_spacing="leading")
    plain = diffusers.DDIMScheduler(clip_sample=False, **kwargs)
    model = _model(plain)
    x = _start(plain)
    traj = run_diffusers(plain, model, 10, x, float64=True)
    assert list(traj.t) == [900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0, 0.0]
    ours = ex.sample(model, traj.x[0], traj.t[:-1], "ddim")  # its last step goes from t = 0 to t = 0: x stays
    assert relative_deviation(traj.x[:-1], ours.x).max() < 1e-12
    np.testing.assert_allclose(traj.x[-1], traj.x[-2], rtol=1e-12)
    clipped = run_diffusers(diffusers.DDIMScheduler(clip_sample=True, **kwargs), model, 10, x, float64=True)
    assert relative_deviation(clipped.x, traj.x).max() > 0.1  # modes at 1, 2, 3 clipped to [-1, 1]
    assert np.max(clipped.x[-1]) <= 1.0 + 1e-12 < np.max(traj.x[-1])


@pytest.mark.parametrize("name, extra", [("UniPCMultistepScheduler", {}), ("DPMSolverMultistepScheduler", {}),
                                         ("EulerDiscreteScheduler", {}), ("DDIMScheduler", {"clip_sample": False}),
                                         ("EDMEulerScheduler", {})])
def test_prediction_types_give_the_same_states(name, extra):
    preds = ["epsilon", "v_prediction"] + ([] if name.startswith("EDM") else ["sample"])
    runs = {}
    for pred in preds:
        scheduler = getattr(diffusers, name)(prediction_type=pred, **extra)
        runs[pred] = run_diffusers(scheduler, _model(scheduler), 9, _start(scheduler), oracle=True, float64=True)
    tol = 1e-10 if name in ("UniPCMultistepScheduler", "DDIMScheduler") else 2e-6
    for pred in preds[1:]:
        assert relative_deviation(runs[pred].x, runs["epsilon"].x).max() < tol, pred
    if "sample" in preds and "EDM" not in name:  # and the output really was in each convention
        assert not np.allclose(runs["sample"].x, 0)


def test_rounded_timesteps_make_prediction_types_disagree():
    """With Karras sigmas DPM-Solver rounds its timesteps: the model's eps refers to the rounded
    level, the scheduler converts it with its own sigma, so eps- and x0-prediction runs part
    (measured 2.3e-3 at 20 steps); oracle=True removes the rounding and they agree again."""
    runs = {}
    for pred in ("epsilon", "sample"):
        scheduler = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True, prediction_type=pred)
        for oracle in (False, True):
            runs[pred, oracle] = run_diffusers(scheduler, _model(scheduler), 20, _start(scheduler), oracle=oracle)
    assert relative_deviation(runs["epsilon", False].x, runs["sample", False].x).max() > 1e-3
    assert relative_deviation(runs["epsilon", True].x, runs["sample", True].x).max() < 2e-6


# ---------------------------------------------------------------- noise levels: model vs update


@pytest.mark.parametrize("name, config", [
    ("EulerDiscreteScheduler", {}), ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}), ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    ("EDMEulerScheduler", {}),
])
def test_euler_model_and_update_noise_levels_agree(name, config):
    """Euler's timesteps are its sigmas' own (fractional where interpolated); flow matching's are
    1000 sigma, EDM's log(sigma) / 4: the model's time read from the timestep is the update's."""
    scheduler = getattr(diffusers, name)(**config)
    traj = run_diffusers(scheduler, _model(scheduler), 23, _start(scheduler))
    e = traj.extras
    assert len(e["timestep"]) == traj.nfe == 23 and len(np.unique(e["timestep"])) == 23
    assert np.max(np.abs(e["sigma_model"] / e["sigma_update"] - 1)) < 3e-7  # float32 timesteps and sigmas only


@pytest.mark.parametrize("name, midpoint, tol", [
    ("KDPM2DiscreteScheduler", "geometric", 3e-7), ("DPMSolverSDEScheduler", "geometric", 3e-7),
    ("KDPM2AncestralDiscreteScheduler", "next", 2e-5),
])
def test_second_calls_are_at_the_schedulers_midpoints(name, midpoint, tol):
    """The second call of a two-call step evaluates where the scheduler's scale_model_input puts it:
    KDPM2 and DPMSolverSDE at sqrt(sigma_i sigma_i+1) (log-midpoint), KDPM2Ancestral between sigma_i
    and its sigma_down = sigma_i+1^2 / sigma_i, which is sigma_i+1; the first call at sigma_i."""
    scheduler = getattr(diffusers, name)()
    traj = run_diffusers(scheduler, _model(scheduler), 6, _start(scheduler, n=4), rng=0)
    e, s = traj.extras, traj.extras["sigma"]
    assert list(e["step"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    np.testing.assert_allclose(e["sigma_update"][0::2], s[:-1], rtol=1e-12)
    want = np.sqrt(s[:-2] * s[1:-1]) if midpoint == "geometric" else s[1:-1]
    np.testing.assert_allclose(e["sigma_update"][1::2], want, rtol=tol)
    second = e["timestep"][1:-2:2]  # interpolated timesteps, where the model sees the scheduler's own sigma
    assert np.all(second != np.round(second))  # (KDPM2Ancestral's last one is 0: its sigmas_interpol[-2:] = 0)
    np.testing.assert_array_equal(e["t_model"][1:-2:2], e["t_update"][1:-2:2])


@pytest.mark.parametrize("betas, worst, duplicates", [
    ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, 0.118, 3),
    ({"beta_schedule": "linear"}, 0.145, 1),
])
def test_dpm_solver_with_karras_sigmas_rounds_its_timesteps(betas, worst, duplicates):
    """DPMSolverMultistepScheduler(use_karras_sigmas=True) rounds each sigma's timestep to an
    integer: near the data several sigmas round to one timestep, and the model sees that
    integer's table sigma while the update uses the Karras sigma (measured at N = 80)."""
    scheduler = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True, **betas)
    model = _model(scheduler)
    traj = run_diffusers(scheduler, model, 80, _start(scheduler, n=5))
    e = traj.extras
    mismatch = np.abs(e["sigma_model"] / e["sigma_update"] - 1)
    assert len(e["timestep"]) - len(np.unique(e["timestep"])) == duplicates
    assert mismatch.max() == pytest.approx(worst, abs=0.0015)
    assert np.all(e["timestep"] == np.round(e["timestep"])) and np.all(e["t_model"] == e["timestep"])
    assert np.all(np.diff(traj.t[:-1]) < 0)  # the states' own levels stay distinct
    # oracle: the model at the update's level; the path is then our dpmpp-2m's on traj.t
    oracle = run_diffusers(scheduler, model, 80, _start(scheduler, n=5), oracle=True)
    assert np.max(np.abs(oracle.extras["sigma_model"] / oracle.extras["sigma_update"] - 1)) < 1e-12
    ours = ex.sample(model, oracle.x[0], oracle.t[:-1], "dpmpp-2m")  # (its last step, onto sigma = 0, is Euler)
    assert relative_deviation(oracle.x[:-1], ours.x).max() < 1e-5
    assert relative_deviation(traj.x[:-1], ours.x).max() > 10 * relative_deviation(oracle.x[:-1], ours.x).max()


def test_ddim_trailing_spacing_lands_where_its_prev_timestep_says():
    """DDIM steps to timestep - T // n, which with trailing spacing and n not dividing T is not the
    next timestep (999 -> 857, then evaluated as 856): traj.t records where each state is, and the
    next call's t_update where the scheduler then assumes it is."""
    scheduler = diffusers.DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    traj = run_diffusers(scheduler, _model(scheduler), 7, _start(scheduler))
    assert list(traj.extras["timestep"][:3]) == [999.0, 856.0, 713.0]
    assert list(traj.t[:3]) == [999.0, 857.0, 714.0]
    assert list(traj.extras["t_update"][:3]) == [999.0, 856.0, 713.0]


# ---------------------------------------------------------------- state, seeds, errors


def test_a_scheduler_is_untouched_and_every_run_starts_fresh():
    scheduler = diffusers.UniPCMultistepScheduler(solver_order=3)
    model = _model(scheduler)
    x = _start(scheduler)
    first = run_diffusers(scheduler, model, 10, x)
    assert scheduler.num_inference_steps is None and scheduler.step_index is None  # the caller's object
    # dirty the caller's scheduler by hand: another n, two steps, history left behind
    scheduler.set_timesteps(5)
    sample = torch.from_numpy(x)
    for t in scheduler.timesteps[:2]:
        sample = scheduler.step(torch.zeros_like(sample), t, sample).prev_sample
    again = run_diffusers(scheduler, model, 10, x)
    np.testing.assert_array_equal(again.x, first.x)
    assert scheduler.step_index == 2 and scheduler.num_inference_steps == 5  # still the caller's state


@pytest.mark.parametrize("name, config", [
    ("DDPMScheduler", {}), ("EulerAncestralDiscreteScheduler", {}), ("SASolverScheduler", {"tau_func": lambda t: 1.0}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}), ("DPMSolverSDEScheduler", {}),
    ("DDIMScheduler", {"clip_sample": False}),
])
def test_a_stochastic_scheduler_is_reproducible_from_the_seed(name, config):
    scheduler = getattr(diffusers, name)(**config)
    model = _model(scheduler)
    x = _start(scheduler, n=8)
    options = {"eta": 1.0} if name == "DDIMScheduler" else {}
    a = run_diffusers(scheduler, model, 6, x, rng=7, **options)
    b = run_diffusers(scheduler, model, 6, x, rng=7, **options)
    c = run_diffusers(scheduler, model, 6, x, rng=8, **options)
    np.testing.assert_array_equal(a.x, b.x)
    assert np.all(np.isfinite(a.x)) and not np.allclose(a.x[-1], c.x[-1])
    d = run_diffusers(scheduler, model, 6, x, rng=np.random.default_rng(3), **options)
    e = run_diffusers(scheduler, model, 6, x, rng=np.random.default_rng(3), **options)
    np.testing.assert_array_equal(d.x, e.x)
    with pytest.raises(ValueError, match=f"{name} \\(call 0\\) draws noise: pass rng"):
        run_diffusers(scheduler, model, 6, x, **options)


def test_the_callers_torch_generator_state_is_left_alone():
    scheduler = diffusers.EulerAncestralDiscreteScheduler()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_diffusers(scheduler, _model(scheduler), 4, _start(scheduler, n=3), rng=1)
    assert torch.equal(torch.rand(3), expected)
    g = torch.Generator().manual_seed(5)
    a = run_diffusers(scheduler, _model(scheduler), 4, _start(scheduler, n=3), rng=g)
    b = run_diffusers(scheduler, _model(scheduler), 4, _start(scheduler, n=3), rng=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a.x, b.x)


def test_errors_name_the_scheduler_and_the_cause():
    edm = diffusers.EDMEulerScheduler(prediction_type="sample")  # its preconditioning has no "sample"
    with pytest.raises(ValueError, match=r"EDMEulerScheduler \(call 0, timestep .*\)\.precondition_outputs failed: ValueError: "
                                         r"Prediction type sample is not supported"):
        run_diffusers(edm, _model(edm), 5, _start(edm))
    flow = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscreteScheduler.set_timesteps\(5\) failed: .*mu"):
        run_diffusers(flow, _model(flow), 5, _start(flow))
    traj = run_diffusers(flow, _model(flow), 5, _start(flow), set_timesteps={"mu": 0.5})
    assert traj.n_steps == 5
    ddim = diffusers.DDIMScheduler()
    model = _model(ddim)
    for bad, match in [({"n_steps": 0}, "n_steps must be a positive integer"),
                       ({"x_T": np.zeros(3)}, "x_T must have shape"),
                       ({"x_T": np.full((2, 1), np.nan)}, "x_T contains NaN"),
                       ({"model": object()}, "model must have a denoise"),
                       ({"set_timesteps": 3}, "set_timesteps must be a dict")]:
        args = {"scheduler": ddim, "model": model, "n_steps": 4, "x_T": np.zeros((2, 1)), **bad}
        with pytest.raises(ValueError, match=match):
            run_diffusers(**args)


def test_divergence_stops_the_run_at_its_step():
    scheduler = diffusers.DPMSolverMultistepScheduler()
    model = _model(scheduler)
    traj = run_diffusers(scheduler, BlowsUp(model, k=4), 8, _start(scheduler, n=6))
    assert traj.diverged_at == 3 and "NaN or inf" in traj.diverged_reason and traj.nfe == 4
    assert np.all(np.isfinite(traj.x[:4])) and not np.all(np.isfinite(traj.x[4]))
    heun = diffusers.HeunDiscreteScheduler()
    traj = run_diffusers(heun, BlowsUp(_model(heun), k=4), 8, _start(heun, n=6))  # in the second call of step 1
    assert traj.diverged_at == 1 and traj.nfe == 4 and len(traj.t) == 3


# ---------------------------------------------------------------- models, arrays, records


def test_a_model_under_another_schedule_is_converted():
    """The same exact mixture under "edm" (alpha = 1, sigma = t) is, through ConvertedModel, the
    model of the DDPM table: the runs agree to round-off."""
    scheduler = diffusers.DEISMultistepScheduler(solver_order=2)
    x = _start(scheduler)
    native = run_diffusers(scheduler, _model(scheduler), 10, x)
    converted = run_diffusers(scheduler, ex.AnalyticModel(TARGET, ex.schedules.get("edm")), 10, x)
    assert relative_deviation(converted.x, native.x).max() < 1e-12


def test_torch_states_stay_torch():
    scheduler = diffusers.HeunDiscreteScheduler()
    model = _model(scheduler)
    x = _start(scheduler, n=6)
    want = run_diffusers(scheduler, model, 6, x)
    got = run_diffusers(scheduler, TorchModel(model), 6, torch.from_numpy(x))
    assert isinstance(got.x, torch.Tensor) and got.x.dtype == torch.float64
    np.testing.assert_array_equal(got.x.numpy(), want.x)


def test_records_save_and_load(tmp_path):
    scheduler = diffusers.KDPM2DiscreteScheduler()
    traj = run_diffusers(scheduler, _model(scheduler), 6, _start(scheduler, n=4))
    e = traj.extras
    assert traj.nfe == 11 and len(e["timestep"]) == 11 and list(e["step"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert traj.denoised.shape == (6, 4, 1) and e["coordinates"] == "ve" and traj.options["scheduler"] == "KDPM2DiscreteScheduler"
    back = ex.Trajectory.load(traj.save(tmp_path / "kdpm2.npz"))
    np.testing.assert_array_equal(back.x, traj.x)
    np.testing.assert_array_equal(back.extras["sigma_update"], e["sigma_update"])
    assert back.schedule == traj.schedule and back.extras["coordinates"] == "ve"
    conv = ex.convert_path(back, "edm")  # the loaded run converts with its own schedule
    np.testing.assert_array_equal(conv.x, ex.convert_path(traj, "edm").x)
