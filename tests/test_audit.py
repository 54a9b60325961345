"""ex.audit.diffusers: every diffusers scheduler x configuration measured against the exact ODE.

What is checked, and how:
- The exact path every run starts on and is measured against (ExactPath: one DOP853 solve in VP
  angle from pure noise to the data) is ex.reference's rk45 path under other schedules, between
  interior noise levels and down to the data (1e-8).
- Rows: the documented columns for every row, a row per configuration, CSV round trip.
- Flags fire where the configuration is known to trigger them and stay off where it is not:
  DPM-Solver with Karras sigmas on Stable Diffusion's betas at 80 steps (3 duplicate timesteps,
  11.8% model/update mismatch, as the adapter's tests measured), DDIM's default clip_sample,
  final_sigmas_type="sigma_min", DDIM "trailing" at 7 steps (lands at 857, starts the next step at
  856), UniPC bh1's NaN; plain Euler raises none.
- Unsupported, unimportable, unbuildable and raising schedulers are rows with their message.
- Fitted orders against the exact ODE: Euler 1, DPM-Solver++(2M) with Karras sigmas 2.
- Oracle mode removes the rounding mismatch (and keeps the duplicate timesteps, which are the
  scheduler's); results are bit-identical from the seed, stochastic ones included; rerun gives the
  row's numbers back with the exact path at every step.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import explorer as ex
from explorer import audit

diffusers = pytest.importorskip("diffusers")
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Should have t:UserWarning")]

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}  # Stable Diffusion's betas


def _one(name, overrides, nfes=(5, 10), **options):
    (row,) = audit.diffusers(schedulers=[name], configs=[overrides], nfes=nfes, **options)
    return row


# ---------------------------------------------------------------- the exact path


def test_exact_path_is_the_rk45_reference():
    target = ex.targets.get(*audit.DEFAULT_TARGET[:1], **audit.DEFAULT_TARGET[1])
    path = audit.ExactPath(target, 200, seed=3)
    np.testing.assert_array_equal(path.at(0.0, 1.0), np.random.default_rng(3).standard_normal((200, 1)))
    # under vp-linear, between two interior times, and under a DDPM table from t = 999 to t = 0
    for schedule, ts in ((ex.schedules.get("vp-linear"), [0.9, 0.5, 0.05]),
                         (ex.adapters.schedule_of(diffusers.DDPMScheduler()), [999.0, 400.0, 0.0])):
        start = path.at(schedule.alpha(ts[0]), schedule.sigma(ts[0]))
        ref = ex.reference(ex.AnalyticModel(target, schedule), start, ts, rtol=1e-12, atol=1e-12)
        for t, x in zip(ts[1:], ref.x[1:]):
            assert np.max(np.abs(path.at(schedule.alpha(t), schedule.sigma(t)) - x)) < 1e-8
    # down to the data: edm (alpha = 1, sigma = t) to sigma = 1e-5, where x is the data to O(sigma^2)
    edm = ex.schedules.get("edm", t_min=1e-5, t_max=80.0)
    ref = ex.reference(ex.AnalyticModel(target, edm), path.at(1.0, 80.0), [80.0, 1e-5], rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(path.data - ref.x[-1])) < 1e-8
    assert np.std(path.data) > 0.5  # (three modes at 1, 2, 3: the data, not the noise)


# ---------------------------------------------------------------- rows


def test_a_row_per_configuration_with_the_documented_columns(tmp_path):
    configs = [{}, {"timestep_spacing": "leading"}, {"use_karras_sigmas": True}]
    rows = audit.diffusers(schedulers=["EulerDiscreteScheduler"], configs=configs, nfes=(4, 8))
    assert [r["config"] for r in rows] == ["default", "timestep_spacing=leading", "use_karras_sigmas=True"]
    for row, overrides in zip(rows, configs):
        assert list(row) == audit.columns((4, 8))
        assert row["scheduler"] == "EulerDiscreteScheduler" and row["overrides"] == overrides
        assert row["status"] == "ok" and row["message"] == "" and row["metric"] == "path"
        assert row["stochastic"] is False and row["oracle"] is False
        assert row["nfe_4"] == 4 and row["nfe_8"] == 8
        assert 0 < row["error_8"] < row["error_4"] and math.isfinite(row["order"])
        assert isinstance(row["flags"], list) and isinstance(row["details"], str)
        assert row["target"] == {"name": "gmm-1d-3modes", "params": {"std": 0.3}} and row["nfes"] == [4, 8]
    path = audit.to_csv(rows, tmp_path / "audit.csv")
    with open(path) as f:
        back = list(csv.DictReader(f))
    assert len(back) == 3 and list(back[0]) == audit.columns((4, 8))
    assert float(back[2]["error_8"]) == rows[2]["error_8"] and back[1]["overrides"] == '{"timestep_spacing": "leading"}'


def test_configurations_come_from_the_constructor():
    dpm = audit.configurations(diffusers.DPMSolverMultistepScheduler)
    assert dpm[0] == {} and {"use_karras_sigmas": True} in dpm and {"solver_order": 3} in dpm
    assert {"final_sigmas_type": "sigma_min"} in dpm and {"timestep_spacing": "trailing"} in dpm
    assert {"solver_order": 2} not in dpm  # the default is not repeated
    deis = audit.configurations(diffusers.DEISMultistepScheduler)
    assert {"algorithm_type": "dpmsolver++"} not in deis  # DEIS maps it back to "deis": the same configuration
    assert not any("solver_order" in c for c in audit.configurations(diffusers.EulerDiscreteScheduler))


# ---------------------------------------------------------------- flags


def test_karras_rounding_flags_and_oracle_mode():
    """DPMSolverMultistep with Karras sigmas rounds its timesteps: at 80 steps on Stable Diffusion's
    betas, 3 duplicates and the model told a sigma 11.8% off the update's. The oracle feeds the model
    the update's own level: the mismatch goes (the duplicates are the scheduler's and stay)."""
    normal, oracle = audit.diffusers(schedulers=["DPMSolverMultistepScheduler"],
                                     configs=[{"use_karras_sigmas": True, **SD}], nfes=(80,), oracle="both")
    assert (normal["oracle"], oracle["oracle"]) == (False, True)
    assert normal["n_duplicate_timesteps"] == 3 and "duplicate-timesteps" in normal["flags"]
    assert normal["mismatch"] == pytest.approx(0.118, abs=0.002) and "model-update-mismatch" in normal["flags"]
    assert "3 duplicate timesteps at n=80" in normal["details"] and "11.8% off" in normal["details"]
    assert oracle["mismatch"] < 1e-6 and "model-update-mismatch" not in oracle["flags"]
    assert oracle["n_duplicate_timesteps"] == 3
    assert normal["error_80"] != oracle["error_80"]  # the rounding changes the run
    plain = _one("DPMSolverMultistepScheduler", SD, nfes=(80,))
    assert plain["flags"] == [] and plain["n_duplicate_timesteps"] == 0 and plain["mismatch"] < 1e-6


def test_clipping_flag():
    """DDIM's default clip_sample=True clips x0 to [-1, 1]; the target's modes sit at 1, 2, 3."""
    clipped, plain = audit.diffusers(schedulers=["DDIMScheduler"], configs=[{}, {"clip_sample": False}], nfes=(10, 20))
    assert "clipping" in clipped["flags"] and clipped["clip_effect"] > 0.5
    assert "not-converging" in clipped["flags"] and clipped["error0_20"] > clipped["error0_10"] > 1.0
    assert "clipping" not in plain["flags"] and plain["clip_effect"] is None and plain["error0_20"] < 0.1


def test_final_sigma_and_zero_size_step_flags():
    zero, sigma_min = audit.diffusers(schedulers=["EulerDiscreteScheduler"],
                                      configs=[{}, {"final_sigmas_type": "sigma_min"}], nfes=(6,))
    assert zero["flags"] == [] and zero["final_sigma"] == 0.0 and zero["n_zero_steps"] == 0
    # linspace's last timestep is 0, whose sigma is sigma_min: the last step has size 0 and ends there
    assert {"final-sigma-nonzero", "zero-size-steps"} <= set(sigma_min["flags"])
    assert sigma_min["final_sigma"] == pytest.approx(0.01, rel=1e-3) and sigma_min["n_zero_steps"] == 1
    # measured at its own level, and what a pipeline outputs (Euler's sample is x / alpha) against the data
    traj, ref = audit.rerun(sigma_min, 6)
    assert sigma_min["error_6"] == ex.metrics.endpoint_error(traj.x[-1], ref.x[-1])
    output = traj.x[-1] / traj.schedule.alpha(traj.t[-1])
    data = audit.ExactPath(ex.targets.get("gmm-1d-3modes", std=0.3), sigma_min["n_particles"], sigma_min["seed"]).data
    assert sigma_min["error0_6"] == ex.metrics.endpoint_error(output, data) != sigma_min["error_6"]


def test_landing_mismatch_flag():
    """DDIM steps to timestep - T // n: with "trailing" spacing and 7 steps the first step lands at
    999 - 142 = 857 while the next starts at 856 (the adapter labels both)."""
    trailing, leading = audit.diffusers(schedulers=["DDIMScheduler"], configs=[
        {"timestep_spacing": "trailing", "clip_sample": False}, {"clip_sample": False}], nfes=(7,))
    assert "landing-mismatch" in trailing["flags"] and trailing["landing_mismatch"] > 1e-3
    assert "landing-mismatch" not in leading["flags"] and leading["landing_mismatch"] == 0.0
    traj, _ = audit.rerun(trailing, 7)
    assert traj.t[1] == 857.0 and traj.extras["t_update"][1] == 856.0


def test_nonfinite_flag():
    """UniPC bh1 steps to sigma = 0 with B(h) = h = -inf times a zero residual: NaN at the last step."""
    row = _one("UniPCMultistepScheduler", {"solver_type": "bh1"}, nfes=(5,))
    assert "nonfinite" in row["flags"] and row["nonfinite"] == "n=5: step 4"
    assert math.isnan(row["error_5"]) and row["status"] == "ok"


# ---------------------------------------------------------------- failures are rows


class _WrongInitNoise(diffusers.EulerDiscreteScheduler):
    """Euler whose init_noise_sigma forgets the VE scaling (a pipeline would draw x_T ~ N(0, 1))."""

    @property
    def init_noise_sigma(self):
        return 1.0


def test_init_noise_flag():
    right, wrong = audit.diffusers(schedulers=["EulerDiscreteScheduler", _WrongInitNoise], configs=[{}], nfes=(5,))
    assert right["init_noise_sigma"] == pytest.approx(right["init_noise_expected"], rel=1e-4)  # sqrt(1 + sigma^2)
    assert "init-noise-sigma" not in right["flags"] and right["flags"] == []
    assert wrong["flags"] == ["init-noise-sigma"] and wrong["init_noise_sigma"] == 1.0
    assert wrong["init_noise_expected"] == pytest.approx(157.41, abs=0.01)
    assert "init_noise_sigma 1 vs 157.4" in wrong["details"]


class _Raises(diffusers.EulerDiscreteScheduler):
    def step(self, *args, **kwargs):
        raise RuntimeError("this scheduler breaks")


def test_unsupported_and_failing_schedulers_are_rows():
    rows = audit.diffusers(schedulers=["AmusedScheduler", "ScoreSdeVpScheduler", _Raises], configs={"_Raises": [{}]},
                           nfes=(5,))
    amused, vp, broken = rows
    assert amused["status"] == "unsupported" and amused["message"].startswith("not supported by the adapter: ")
    assert vp["status"] == "unsupported" and "could not be imported" in vp["message"]
    assert broken["scheduler"] == "_Raises" and broken["status"] == "error"
    assert "RuntimeError: this scheduler breaks" in broken["message"] and broken["error_5"] is None
    bad = _one("DDIMScheduler", {"no_such_option": 1}, nfes=(5,))
    assert bad["status"] == "error" and "could not be built: TypeError" in bad["message"]
    thresholding = _one("DDIMScheduler", {"thresholding": True}, nfes=(5,))  # diffusers cannot threshold (N, D)
    assert thresholding["status"] == "error" and "reshape" in thresholding["message"]
    zero_snr = _one("EulerDiscreteScheduler", {"rescale_betas_zero_snr": True}, nfes=(5,))
    assert zero_snr["status"] == "error" and "the adapter cannot represent the noise table" in zero_snr["message"]
    with pytest.raises(ValueError, match="schedulers: 'NoSuchScheduler'"):
        audit.diffusers(schedulers=["NoSuchScheduler"])
    with pytest.raises(ValueError, match="schedulers: 3 is not"):
        audit.diffusers(schedulers=[3])
    with pytest.raises(ValueError, match="nfes"):
        audit.diffusers(schedulers=["DDIMScheduler"], nfes=(0, 5))
    with pytest.raises(ValueError, match="oracle"):
        audit.diffusers(schedulers=["DDIMScheduler"], oracle="sometimes")
    with pytest.raises(ValueError, match="configs"):
        audit.diffusers(schedulers=["DDIMScheduler"], configs=["leading"])


def test_a_scheduler_class_by_name_is_the_one_listed():
    listed = dict(audit.scheduler_classes())
    assert audit.scheduler_class("DDIMScheduler") is listed["DDIMScheduler"]
    assert "could not be imported" in audit.scheduler_class("ScoreSdeVpScheduler") == listed["ScoreSdeVpScheduler"]
    assert audit.scheduler_class("NoSuchScheduler") is None and "NoSuchScheduler" not in listed
    assert audit.scheduler_class("SchedulerMixin") is None  # exported, but not a *Scheduler


def test_the_planned_rows_are_the_audits_and_a_row_alone_is_the_same_row():
    """planned() names the rows diffusers() makes, in its order, without running them (the audit page draws its chosen
    row first, alone): run alone, a row has the numbers it has in its class's audit."""
    names = ["DDIMScheduler", "AmusedScheduler", "HeunDiscreteScheduler"]
    rows = audit.diffusers(schedulers=names, nfes=(5, 10), oracle="both", n_particles=64)
    keys = ("scheduler", "config", "overrides", "oracle")
    assert [{k: r[k] for k in keys} for r in rows] == audit.planned(names, oracle="both")
    assert {r["scheduler"] for r in rows} == set(names) and {r["oracle"] for r in rows} == {False, True}
    for row in (rows[3], rows[-1]):
        [alone] = audit.diffusers(schedulers=[row["scheduler"]], configs={row["scheduler"]: [row["overrides"]]},
                                  nfes=(5, 10), oracle=row["oracle"], n_particles=64)
        assert {k: v for k, v in alone.items() if k != "seconds"} == {k: v for k, v in row.items() if k != "seconds"}
    with pytest.raises(ValueError, match="oracle"):
        audit.planned(names, oracle="sometimes")


# ---------------------------------------------------------------- orders


def test_fitted_orders_against_the_exact_ode():
    euler, dpm = audit.diffusers(schedulers=["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"],
                                 configs={"EulerDiscreteScheduler": [{}],
                                          "DPMSolverMultistepScheduler": [{"use_karras_sigmas": True}]})
    assert euler["order"] == pytest.approx(1.0, abs=0.1) and euler["order0"] == euler["order"]
    assert dpm["order"] == pytest.approx(2.0, abs=0.25)
    assert dpm["error_40"] < euler["error_40"] / 3


def test_stochastic_rows_are_distances_with_their_floor():
    row = _one("EulerAncestralDiscreteScheduler", {}, nfes=(5, 40))
    assert row["stochastic"] is True and row["metric"] == "sliced_w2"
    assert 0 < row["floor0"] < 0.1 and row["error0_40"] < row["error0_5"]
    assert row["error0_40"] < 3 * row["floor0"]  # ancestral sampling reaches the target at 40 steps


# ---------------------------------------------------------------- determinism, rerun, progress


def test_deterministic_from_the_seed_and_rerun():
    calls = []
    kwargs = dict(schedulers=["EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler"], configs=[{}], nfes=(5, 10))
    a = audit.diffusers(**kwargs, progress=lambda *args: calls.append(args))
    b = audit.diffusers(**kwargs)
    c = audit.diffusers(**kwargs, seed=1)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "seed")} for r in rows]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)
    assert calls == [(1, 2, "EulerAncestralDiscreteScheduler default"), (2, 2, "HeunDiscreteScheduler default")]
    heun = a[1]
    assert heun["flags"] == [] and heun["n_duplicate_timesteps"] == 0  # (its two calls a step share a timestep)
    traj, ref = audit.rerun(heun, 10)
    assert traj.nfe == heun["nfe_10"] == 19 and np.array_equal(ref.t, traj.t) and ref.x.shape == traj.x.shape
    errors = ex.metrics.path_error(traj, ref)
    assert errors[0] < 1e-6 and errors[-1] == heun["error_10"]  # starts on the exact path; ends with the row's error
    ancestral, _ = audit.rerun(a[0], 5)
    again, _ = audit.rerun(a[0], 5)
    np.testing.assert_array_equal(ancestral.x, again.x)
