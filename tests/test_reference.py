"""The rk45 reference (explorer/solvers/reference.py), which defines "exact" for the whole project:

- where particles step on their own (a field with kinks, per-particle times), every particle's path
  is scipy's RK45 run on that particle alone (grid states from its dense output), whatever else is
  in the batch;
- on a smooth field (one flat system, DOP853 under "auto") it agrees with the previous reference
  (one flat system, RK45) to ~1e-9 and is closer to a 1e-13 solve;
- on a thresholded guided field it is closer to a 1e-13 solve than one flat RK45 system, at a
  fraction of its evaluations;
- local_errors' one solve for all steps and compare_two's one run for both grids give the numbers
  of one reference run per step and per grid; a torch model and a state that blows up go through.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import explorer as ex
from explorer import experiments as E
from explorer import guidance as G
from explorer.analyses.metrics import endpoint_error
from explorer.solvers.reference import flow
from explorer.solvers.sampling import _CountedModel


class Declared:
    """A model seen through other declarations (smooth, times_per_particle): the same field, another path."""

    def __init__(self, model, smooth=False, times_per_particle=True, blow_up_after=None):
        self.model, self.schedule = model, model.schedule
        self.smooth, self.times_per_particle = smooth, times_per_particle
        self.blow_up_after, self.calls = blow_up_after, 0

    def denoise(self, x, t):
        self.calls += 1
        out = self.model.denoise(x, t)
        if self.blow_up_after is not None and self.calls > self.blow_up_after:
            out[0] = np.inf
        return out


def scipy_alone(model, x_row, ts, rtol, atol, method="RK45"):
    """The previous reference on one particle: solve_ivp in lambda for y = x / sigma, states at ts."""
    s = model.schedule
    lam = s.lambda_(ts)

    def rhs(l, y):
        t = float(np.clip(s.t_of_lambda(l), ts[-1], ts[0]))
        return np.exp(l) * model.denoise((y * s.sigma(t))[None], t)[0]

    sol = solve_ivp(rhs, (lam[0], lam[-1]), x_row / s.sigma(ts[0]), method=method, t_eval=lam, rtol=rtol, atol=atol)
    assert sol.success
    return sol.y.T * s.sigma(ts)[:, None]


def guided(name, schedule, w, thresholding, n, seed=0):
    gm = G.labelled(name)
    s = ex.schedules.get(schedule)
    model = G.guided_model(gm, s, 0, w, thresholding=thresholding) if w is not None else ex.AnalyticModel(gm, s)
    return model, ex.AnalyticModel(gm, s).prior_sample(n, seed)


def test_models_declare_their_fields():
    gm = G.labelled("gmm-2d-ring8")
    s = ex.schedules.get("vp-linear")
    exact = ex.AnalyticModel(gm, s)
    assert exact.smooth and exact.times_per_particle
    cfg = G.guided_model(gm, s, 0, 4.0)
    assert cfg.smooth and cfg.times_per_particle
    thresholded = G.guided_model(gm, s, 0, 4.0, thresholding=True)
    assert not thresholded.smooth and thresholded.times_per_particle
    assert not G.CFGModel(exact, Declared(exact, times_per_particle=False), 1.0).times_per_particle


@settings(max_examples=10)
@given(name=st.sampled_from(["gmm-1d-3modes", "gmm-2d-ring8", "gmm-2d-two-aniso"]),
       schedule=st.sampled_from(["vp-linear", "edm", "vp-cosine", "rectified-flow"]),
       n=st.integers(1, 3), steps=st.integers(1, 4), tol=st.sampled_from([1e-6, 1e-8]), seed=st.integers(0, 2**16))
def test_each_particle_steps_as_scipy_rk45_alone(name, schedule, n, steps, tol, seed):
    exact = ex.AnalyticModel(ex.targets.get(name), ex.schedules.get(schedule))
    x = exact.prior_sample(n, seed)
    ts = ex.timesteps(exact.schedule, steps)
    traj = ex.reference(Declared(exact), x, ts, rtol=tol, atol=tol)
    alone = np.stack([scipy_alone(exact, x[i], ts, tol, tol) for i in range(n)], axis=1)
    np.testing.assert_allclose(traj.x, alone, rtol=1e-11, atol=1e-11)  # measured: 1e-15


def test_a_particles_path_does_not_depend_on_the_batch():
    model, x = guided("gmm-2d-ring8", "vp-linear", 8.0, thresholding=True, n=24)
    ts = ex.timesteps(model.schedule, 3)
    batch = ex.reference(model, x, ts)
    for i in (0, 7, 23):
        alone = ex.reference(model, x[i : i + 1], ts)
        # the same steps up to the rounding of a time per particle vs one time (~1e-16), which a kink
        # can turn into another step sequence: measured 7e-9 (one flat system: 1e-6 apart)
        np.testing.assert_allclose(batch.x[:, i], alone.x[:, 0], rtol=0, atol=1e-7)


@pytest.mark.parametrize("name, schedule, w, n", [
    ("gmm-1d-3modes", "vp-linear", None, 1),
    ("gmm-1d-3modes", "edm", 4.0, 40),
    ("gmm-2d-ring8", "vp-linear", 0.0, 64),
    ("gmm-2d-ring8", "vp-linear", 8.0, 64),
    ("gmm-2d-ring8", "edm", 8.0, 64),
])
def test_on_a_smooth_field_the_reference_agrees_with_the_previous_one(name, schedule, w, n):
    model, x = guided(name, schedule, w, thresholding=False, n=n)
    ts = ex.timesteps(model.schedule, 5)
    new = ex.reference(model, x, ts)
    previous = ex.reference(model, x, ts, method="RK45")  # one flat system, RK45: the previous default
    tight = ex.reference(model, x, ts, rtol=1e-13, atol=1e-13)
    scale = max(1.0, float(np.abs(previous.x).max()))
    assert np.abs(new.x - previous.x).max() < 1e-8 * scale  # measured <= 2e-9
    err_new, err_previous = np.abs(new.x - tight.x).max(), np.abs(previous.x - tight.x).max()
    assert err_new < 5e-10 * scale and err_new <= err_previous  # measured 3e-11 .. 2e-10 against 6e-10 .. 1.4e-9
    assert new.nfe < 0.75 * previous.nfe  # DOP853: ~600 evaluations against ~1,100


@pytest.mark.parametrize("name, schedule, w, saving", [("gmm-2d-ring8", "vp-linear", 8.0, 2.0),
                                                       ("gmm-1d-3modes", "edm", 4.0, 1.0)])
def test_on_a_thresholded_field_each_particle_beats_one_flat_system(name, schedule, w, saving):
    model, x = guided(name, schedule, w, thresholding=True, n=30)
    ts = ex.timesteps(model.schedule, 1)
    new = ex.reference(model, x, ts)
    flat = ex.reference(Declared(model, times_per_particle=False), x, ts)  # the previous reference
    tight = ex.reference(model, x, ts, rtol=1e-13, atol=1e-13)
    err_new = np.abs(new.sample - tight.sample).max(axis=1)
    err_flat = np.abs(flat.sample - tight.sample).max(axis=1)
    assert err_new.max() <= err_flat.max() and np.median(err_new) <= np.median(err_flat)
    # Kinks cost RK45's error estimate its grip: off the tight solve by 3e-10 (1D) and 1.3e-8 (ring) at most,
    # against 7e-10 and 1.4e-7 for the flat system (at N = 200 on the ring: 5e-7 against 1.5e-6).
    assert err_new.max() < 1e-7
    np.testing.assert_allclose(new.sample, flat.sample, rtol=0, atol=1e-6)  # the previous reference, within its error
    assert new.nfe < flat.nfe / saving  # measured (N = 30) 1,330 against 3,130 (ring), 1,230 against 1,280 (1D)


def test_the_tight_solve_is_scipy_alone_on_a_thresholded_field():
    model, x = guided("gmm-2d-ring8", "vp-linear", 8.0, thresholding=True, n=4, seed=5)
    ts = ex.timesteps(model.schedule, 2)
    tight = ex.reference(model, x, ts, rtol=1e-12, atol=1e-12)  # the yardstick above (there at 1e-13)
    alone = scipy_alone(model, x[1], ts, 1e-12, 1e-12)  # an independent code on one particle
    np.testing.assert_allclose(tight.x[:, 1], alone, rtol=0, atol=2e-9)  # measured 5e-10 (others 5e-11 .. 1e-10)


@pytest.mark.parametrize("thresholding", [False, True])
def test_local_errors_in_one_solve_are_one_reference_per_step(thresholding):
    model, x = guided("gmm-2d-ring8", "vp-linear", 8.0, thresholding=thresholding, n=30)
    traj = ex.sample(model, x, ex.timesteps(model.schedule, 5), "dpmpp-2m")
    per_step = [endpoint_error(traj.x[i + 1], ex.reference(model, traj.x[i], traj.t[i : i + 2]).sample)
                for i in range(traj.n_steps)]
    np.testing.assert_allclose(E.local_errors(model, traj), per_step, rtol=1e-9)  # measured 1e-16 / 1e-11


def test_local_errors_stop_at_a_diverged_step():
    model, x = guided("gmm-2d-ring8", "vp-linear", 4.0, thresholding=True, n=10)
    traj = ex.sample(model, x, ex.timesteps(model.schedule, 4), "ddim")
    traj.x[3, 2] = np.nan
    out = E.local_errors(model, traj)
    assert np.all(np.isfinite(out[:2])) and np.all(np.isnan(out[2:]))
    blows_up = Declared(model.model.cond, blow_up_after=50)  # every flow blows up: nothing to measure
    assert np.all(np.isnan(E.local_errors(blows_up, traj)))


def test_flow_carries_each_row_over_its_own_interval():
    model, x = guided("gmm-1d-3modes", "vp-linear", 4.0, thresholding=True, n=8)
    t_from = np.linspace(0.9, 0.5, 8)
    t_to = t_from - 0.3
    out = flow(model, x, t_from, t_to)
    for i in (0, 5):
        alone = ex.reference(model, x[i : i + 1], np.array([t_from[i], t_to[i]])).sample[0]
        np.testing.assert_allclose(out[i], alone, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="below its t_from"):
        flow(model, x, t_to, t_from)


@pytest.mark.parametrize("thresholding", [False, True])
def test_compare_two_reads_both_references_off_one_run(thresholding):
    model, x = guided("gmm-2d-ring8", "vp-linear", 8.0, thresholding=thresholding, n=12)
    out = E.compare_two(model, x, "ddim", "heun", nfe=6, local_particles=6)
    for side in out.values():
        alone = ex.reference(model, x, side["traj"].t)
        np.testing.assert_array_equal(side["ref"].t, alone.t)
        np.testing.assert_array_equal(side["ref"].x, alone.x)  # the steps do not depend on the grid
        np.testing.assert_array_equal(side["ref"].denoised, alone.denoised)
        assert side["ref"].diverged_at is None and side["global_error"][0] == 0


def test_a_state_that_blows_up_marks_the_run_diverged():
    exact = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    x = exact.prior_sample(5, 0)
    traj = ex.reference(Declared(exact, blow_up_after=30), x, ex.timesteps(exact.schedule, 3))
    assert traj.diverged_at == 0 and "NaN or inf" in traj.diverged_reason
    assert np.all(np.isnan(traj.x[1:]))


def previous_reference(model, x, ts, rtol, atol):
    """The previous rk45 (before per-particle steps and DOP853 under "auto"): the flat system, numpy state."""
    s = model.schedule
    lam = s.lambda_(ts)

    def rhs(l, y):
        t = float(np.clip(s.t_of_lambda(l), ts[-1], ts[0]))
        return np.exp(l) * model.denoise(y.reshape(x.shape) * float(s.sigma(t)), t).ravel()

    sol = solve_ivp(rhs, (lam[0], lam[-1]), (x / float(s.sigma(ts[0]))).ravel(), t_eval=lam, rtol=rtol, atol=atol)
    assert sol.success
    return sol.y.T.reshape((len(ts),) + x.shape) * s.sigma(ts)[:, None, None]


def test_a_torch_model_and_a_torch_state():
    import torch

    from fakes import TorchModel

    learned = ex.models.load_pretrained("gmm-1d-3modes")  # the shipped 1D MLP
    assert not getattr(learned, "smooth", False)  # LeakyReLU and float32: no smooth field to vouch for
    x = np.linspace(-3.0, 3.0, 4)[:, None]
    ts = ex.timesteps(learned.schedule, 2)
    # A model that declares nothing keeps the previous reference, to the bit: on a float32 network's field
    # a last-bit change moves the result by ~tol (here 2e-3: math.exp for numpy's exp did).
    np.testing.assert_array_equal(ex.reference(learned, x, ts, rtol=1e-4, atol=1e-4).x,
                                  previous_reference(learned, x, ts, 1e-4, 1e-4))

    exact = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("edm"))
    x = exact.prior_sample(6, 1)
    ts = ex.timesteps(exact.schedule, 3)
    via_torch = ex.reference(TorchModel(exact), torch.from_numpy(x), ts)
    assert isinstance(via_torch.x, torch.Tensor) and via_torch.x.dtype == torch.float64
    np.testing.assert_allclose(via_torch.x.numpy(), previous_reference(exact, x, ts, 1e-10, 1e-10), rtol=0, atol=1e-13)


def test_the_counted_model_takes_one_time_per_particle():
    exact = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    counted = _CountedModel(exact, 0.2, 0.8)
    assert counted.smooth and counted.times_per_particle
    x = exact.prior_sample(3, 0)
    t = np.array([0.3, 0.5, 0.7])
    np.testing.assert_allclose(counted.denoise(x, t)[1], exact.denoise(x[1:2], 0.5)[0], rtol=1e-12)
    assert counted.nfe == 1
    with pytest.raises(AssertionError, match="outside the grid"):
        counted.denoise(x, np.array([0.3, 0.5, 0.9]))
