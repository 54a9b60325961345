"""traj.schedule, and trajectories saved to and loaded from .npz (no pickle): round trips are
bit-identical, a converted path is the same from the loaded copy, hand-made files load, bad files
give errors that name the file and the problem."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import interpolants as I
from fakes import BlowsUp, TorchModel

FORMULA = I.Interpolant(lambda t: (1 - t) ** 2, lambda t: np.sqrt(t), name="formula")
SCHEDULES = {
    "vp-linear": ex.schedules.get("vp-linear", beta_max=15.0),
    "edm": ex.schedules.get("edm", t_min=0.01, t_max=20.0),
    "rectified-flow": ex.schedules.get("rectified-flow"),
    "trigonometric": ex.schedules.get("trigonometric", data_var=2.0),
    "ddpm-table": ex.schedules.Discrete.from_betas(np.linspace(1e-4, 0.02, 1000), t_min=3.0),
    "tabulated": I.tabulated(np.linspace(0, 1, 41), np.cos(np.linspace(0, 1.5, 41)), np.linspace(0, 1, 41) ** 0.7,
                             t_min=0.02, t_max=1.0),
    "formula": FORMULA,
}


def _run(schedule, solver="dpmpp-2m", n=6, **options):
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), schedule)
    x = model.prior_sample(7, np.random.default_rng(0))
    return ex.sample(model, x, ex.timesteps(schedule, n), solver, **options)


def _assert_same(a: ex.Trajectory, b: ex.Trajectory):
    for name in ("t", "x", "denoised"):
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert (a.nfe, a.solver, a.options, a.diverged_at, a.diverged_reason, a.wall_time) == (
        b.nfe, b.solver, b.options, b.diverged_at, b.diverged_reason, b.wall_time)


def test_sample_records_the_schedule_and_convert_path_defaults_to_it():
    s = SCHEDULES["vp-linear"]
    traj = _run(s)
    assert traj.schedule is s
    rf = ex.schedules.get("rectified-flow")
    default, explicit = ex.convert_path(traj, rf), ex.convert_path(traj, rf, from_schedule=s)
    np.testing.assert_array_equal(default.x, explicit.x)
    np.testing.assert_array_equal(default.t, explicit.t)
    assert default.schedule is rf  # the converted path records its new schedule
    with pytest.raises(ValueError, match="from_schedule is required.*traj.schedule is None"):
        ex.convert_path(dataclasses.replace(traj, schedule=None), rf)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_round_trip_is_bit_identical_and_converts_the_same(tmp_path, name):
    s = SCHEDULES[name]
    traj = _run(s)
    path = traj.save(tmp_path / "run.npz")
    back = ex.Trajectory.load(path)
    _assert_same(back, traj)
    assert back.extras == {}
    target = ex.schedules.get("edm", t_min=1e-4, t_max=1e4)  # reaches every lambda of every schedule above
    want, got = ex.convert_path(traj, target), ex.convert_path(back, target)
    if name == "formula":  # rebuilt as a table through the trajectory's own times: equal at those times
        assert isinstance(back.schedule, I.Tabulated)
        np.testing.assert_allclose(got.t, want.t, rtol=1e-12)
        np.testing.assert_allclose(got.x, want.x, rtol=1e-12)
        grid = np.linspace(s.t_min, s.t_max, 50)  # and close between them (1,025 nodes)
        np.testing.assert_allclose(back.schedule.alpha(grid), s.alpha(grid), rtol=1e-6, atol=1e-8)
        assert json.loads(str(np.load(path)["meta"]))["schedule"]["exact"] is False
    else:  # named, Discrete and Tabulated schedules rebuild exactly
        assert back.schedule == s and type(back.schedule) is type(s)
        np.testing.assert_array_equal(got.t, want.t)
        np.testing.assert_array_equal(got.x, want.x)


def test_diverged_runs_options_and_extras_round_trip(tmp_path):
    s = SCHEDULES["vp-linear"]
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), s)
    traj = ex.sample(BlowsUp(model, k=3), model.prior_sample(5, 1), ex.timesteps(s, 6), "dpmpp-2m")
    assert traj.diverged_at == 2 and np.isnan(traj.x[-1]).all()
    traj.extras = {"timestep": np.arange(6, dtype=np.int64), "sigma": np.linspace(1.0, 0.0, 6), "note": "hi",
                   "dtype": torch.float32, "per_call": [1, 2]}
    traj.options = {**traj.options, "grid": (1, 2), "scale": np.float32(0.5)}
    back = ex.trajectory.load(ex.trajectory.save(traj, tmp_path / "div"))  # the module functions; .npz appended
    for name in ("t", "x", "denoised"):
        np.testing.assert_array_equal(getattr(back, name), getattr(traj, name))
    assert (back.diverged_at, back.diverged_reason) == (2, traj.diverged_reason)
    assert back.options["grid"] == [1, 2] and back.options["scale"] == 0.5
    np.testing.assert_array_equal(back.extras["timestep"], traj.extras["timestep"])
    assert back.extras["timestep"].dtype == np.int64
    assert back.extras["note"] == "hi" and back.extras["dtype"] == "torch.float32" and back.extras["per_call"] == [1, 2]


def test_a_torch_trajectory_saves_as_numpy(tmp_path):
    s = SCHEDULES["edm"]
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), s)
    x = model.prior_sample(4, 2)
    traj = ex.sample(TorchModel(model), torch.from_numpy(x), ex.timesteps(s, 5), "heun")
    assert isinstance(traj.x, torch.Tensor)
    back = ex.Trajectory.load(traj.save(tmp_path / "torch.npz"))
    assert isinstance(back.x, np.ndarray) and isinstance(back.denoised, np.ndarray)
    np.testing.assert_array_equal(back.x, traj.x.numpy())
    np.testing.assert_array_equal(back.denoised, traj.denoised.numpy())


def test_a_hand_made_file_with_t_and_x_loads(tmp_path):
    t = np.array([0.9, 0.5, 0.1])
    x = np.random.default_rng(3).normal(size=(3, 4, 2)).astype(np.float32)
    np.savez(tmp_path / "mine.npz", t=t, x=x)
    traj = ex.Trajectory.load(tmp_path / "mine.npz")
    np.testing.assert_array_equal(traj.x, x)
    np.testing.assert_array_equal(traj.t, t)
    assert traj.denoised.shape == (2, 4, 2) and np.isnan(traj.denoised).all()
    assert (traj.nfe, traj.solver, traj.schedule, traj.diverged_at) == (0, "imported", None, None)
    with pytest.raises(ValueError, match="from_schedule is required"):
        ex.convert_path(traj, "edm")
    rf = ex.schedules.get("rectified-flow")
    conv = ex.convert_path(traj, "vp-linear", from_schedule=rf)
    assert np.isfinite(conv.x).all() and conv.schedule == ex.schedules.get("vp-linear")


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, match", [
    ("no-x", r"missing array\(s\) \['x'\]"),
    ("text", "not an .npz archive"),
    ("pickle", "without pickle"),
    ("t-2d", "'t' must be a 1-D array"),
    ("x-length", r"'x' must be numeric with shape \(len\(t\) = 3"),
    ("denoised-shape", "'denoised' must have shape"),
    ("meta-json", "'meta' is not valid JSON"),
    ("schedule-kind", "unknown schedule kind 'spline'"),
    ("schedule-array", "needs 'schedule.alphas_cumprod'"),
    ("schedule-bad", "its schedule does not rebuild"),
])
def test_bad_files_give_errors_naming_the_file_and_the_problem(tmp_path, case, match):
    t, x = np.array([3.0, 2.0, 1.0]), np.zeros((3, 2, 1))
    path = tmp_path / f"{case}.npz"
    if case == "no-x":
        _write(path, t=t)
    elif case == "text":
        path.write_text("t,x\n1,2\n")
    elif case == "pickle":
        np.savez(path, t=t, x=np.array([{"a": 1}, None, 2], dtype=object))
    elif case == "t-2d":
        _write(path, t=t[None], x=x)
    elif case == "x-length":
        _write(path, t=t, x=x[:2])
    elif case == "denoised-shape":
        _write(path, t=t, x=x, denoised=x)
    elif case == "meta-json":
        _write(path, t=t, x=x, meta=np.array("{nfe: 3"))
    elif case == "schedule-kind":
        _write(path, t=t, x=x, meta=np.array(json.dumps({"schedule": {"kind": "spline"}})))
    elif case == "schedule-array":
        _write(path, t=t, x=x, meta=np.array(json.dumps({"schedule": {"kind": "discrete", "t_min": 0, "t_max": 9}})))
    elif case == "schedule-bad":
        _write(path, t=t, x=x, meta=np.array(json.dumps({"schedule": {"kind": "named", "name": "ve",
                                                                      "params": {"t_min": 5.0, "t_max": 1.0}}})))
    with pytest.raises(ValueError, match=match) as err:
        ex.Trajectory.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError):
        ex.Trajectory.load(tmp_path / "absent.npz")


def test_save_refuses_what_is_not_a_trajectory(tmp_path):
    with pytest.raises(ValueError, match="traj must be an ex.Trajectory"):
        ex.trajectory.save({"t": [1.0]}, tmp_path / "x.npz")
