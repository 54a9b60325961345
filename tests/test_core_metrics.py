"""Metrics and presets."""

import numpy as np
import pytest

import explorer as ex


def test_presets_required_by_the_issue():
    names = ex.targets.names()
    for name in ["gmm-1d-3modes", "gmm-1d-asym", "gmm-2d-grid25", "gmm-2d-ring8", "gmm-2d-two-aniso",
                 "gmm-2d-checkerboard"]:
        assert name in names
        gm = ex.targets.get(name)
        assert gm.dim == (1 if "-1d-" in name else 2)
    three = ex.targets.get("gmm-1d-3modes")
    np.testing.assert_allclose(three.means[:, 0], [1, 2, 3])
    np.testing.assert_allclose(three.stds(), 0.05)
    assert ex.targets.get("gmm-2d-grid25").n_components == 25
    assert not ex.targets.get("gmm-2d-two-aniso").diagonal


def test_preset_parameters_and_errors():
    assert ex.targets.params("gmm-2d-ring8") == {"radius": 3.0, "std": 0.2, "n_modes": 8}
    assert ex.targets.get("gmm-2d-ring8", n_modes=5).n_components == 5
    with pytest.raises(ValueError, match="radius"):
        ex.targets.get("gmm-2d-ring8", radius=-1)
    with pytest.raises(ValueError, match="no parameter"):
        ex.targets.get("gmm-2d-ring8", size=2)
    with pytest.raises(ValueError, match="unknown target"):
        ex.targets.get("moons")


def test_modes_text_round_trip_and_errors():
    gm = ex.targets.from_text("1, 0.05\n2, 0.1, 3  # a heavier mode\n\n", dim=1)
    np.testing.assert_allclose(gm.means[:, 0], [1, 2])
    np.testing.assert_allclose(gm.weights, [0.25, 0.75])
    again = ex.targets.from_text(ex.targets.to_text(gm), dim=1)
    np.testing.assert_allclose(again.means, gm.means)
    np.testing.assert_allclose(again.weights, gm.weights)
    for text, word in [("1, x", "line 1"), ("1, 2, 3, 4, 5", "line 1"), ("", "at least one"), ("0, 0, -1", "std")]:
        with pytest.raises(ValueError, match=word):
            ex.targets.from_text(text, dim=2 if text.startswith("0, 0") else 1)


def test_sliced_wasserstein_exact_values():
    x = np.array([[0.0], [1.0], [2.0]])
    assert ex.metrics.sliced_wasserstein(x, x + 0.5) == pytest.approx(0.5)
    # In 2D a shift by v gives sliced W2 = |v| sqrt(E[(u.e)^2]) = |v| / sqrt(2) for random unit u.
    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 2))
    value = ex.metrics.sliced_wasserstein(y, y + np.array([3.0, 0.0]), n_projections=20000)
    assert value == pytest.approx(3 / np.sqrt(2), rel=0.02)


def test_energy_distance_is_zero_for_equal_sets_and_grows_with_shift():
    y = np.random.default_rng(1).normal(size=(300, 2))
    assert ex.metrics.energy_distance(y, y) == pytest.approx(0.0, abs=1e-6)
    assert ex.metrics.energy_distance(y, y + 1) > ex.metrics.energy_distance(y, y + 0.1) > 0.05


def test_errors_nll_and_coverage():
    gm = ex.targets.get("gmm-1d-3modes")
    x = np.array([[1.0], [1.0], [2.0], [3.0]])
    np.testing.assert_allclose(ex.metrics.mode_coverage(x, gm), [0.5, 0.25, 0.25])
    assert ex.metrics.coverage_error(x, gm) == pytest.approx(0.5 - 1 / 3)
    assert ex.metrics.nll(x, gm) == pytest.approx(-np.mean(gm.log_prob(x)))
    assert ex.metrics.endpoint_error(np.zeros((2, 2)), np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(
        np.sqrt(12.5)
    )


def test_summary_of_a_run():
    gm = ex.targets.get("gmm-2d-ring8")
    s = ex.schedules.get("edm")
    model = ex.AnalyticModel(gm, s)
    x = model.prior_sample(500, 0)
    ts = ex.timesteps(s, 20, "karras")
    traj = ex.sample(model, x, ts, "heun")
    out = ex.metrics.summary(traj, gm, ref=ex.reference(model, x, ts))
    assert out["nfe"] == 40 and out["error_vs_reference"] < 0.05
    # 500 particles make the distance noisy, so compare with the exact ODE's own samples from the same start
    exact = ex.metrics.distance_to_target(ex.reference(model, x, ts).x[-1], gm)
    assert out["sliced_w2"] == pytest.approx(exact, abs=0.03)
    assert set(out) >= {"nll", "coverage_tv", "wall_time", "diverged_at"}


def test_core_imports_no_ui_library():
    import subprocess
    import sys

    code = (
        "import sys, explorer, explorer.solvers, explorer.analyses.metrics; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('streamlit', 'ipywidgets', 'plotly')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ex.__path__[0] + "/..")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_core_file_imports_streamlit_or_ipywidgets():
    import re
    from pathlib import Path

    pattern = re.compile(r"^\s*(import|from)\s+(streamlit|ipywidgets)\b", re.M)
    offenders = [str(p) for p in Path(ex.__path__[0]).rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders
