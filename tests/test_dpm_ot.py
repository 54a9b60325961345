"""DPM-OT (explorer.analyses.dpm_ot): the semi-discrete OT map against POT.

The official Monte Carlo Adam ascent gives every cell mass 1/M (small cache); its map's transport cost from fresh
uniforms equals POT's optimal cost between the same uniforms and the cache (within the discretisation); the dual
of POT's exact plan gives the same cells; the sampler honours the Trajectory contract and spends only its steps."""

import numpy as np
import pytest

import explorer as ex
from explorer.analyses import dpm_ot as O
from explorer.analyses import reflow as R

RING = ex.targets.get("gmm-2d-ring8")
MODEL = ex.AnalyticModel(RING, ex.schedules.get("vp-linear"))


@pytest.fixture(scope="module")
def cache():
    y, cost = O.make_cache(MODEL, 10, 0.2, n_steps=20, seed=0)
    assert y.shape == (10, 2) and cost == 200
    return y


@pytest.fixture(scope="module")
def fitted(cache):
    return O.fit_map(cache, iters=300, batch=4000, lr=1e-2, seed=0)


def test_official_ascent_equalises_cell_masses(cache, fitted):
    masses = O.cell_masses(cache, fitted, 200000) * len(cache)
    assert np.max(np.abs(masses - 1)) < 0.08  # measured 0.04; unfitted h = 0: some cells far off
    assert np.max(np.abs(O.cell_masses(cache, np.zeros(len(cache)), 200000) * len(cache) - 1)) > 0.5


def test_map_cost_is_pots_optimal_cost(cache, fitted):
    u = np.random.default_rng(5).random((1000, 2))
    mapped = cache[O.assign(u, cache, fitted)]
    ours = R.coupling_cost(u, mapped)
    best = R.optimal_cost(u, cache[np.repeat(np.arange(len(cache)), 100)])  # the cache, each state 1/M
    assert abs(ours / best - 1) < 0.02  # measured 0.4%; the nearest-state map (h = 0) costs less but is not a transport
    exact = O.fit_map_exact(cache, n=4000, seed=0)
    agree = np.mean(O.assign(u, cache, exact) == O.assign(u, cache, fitted))
    assert agree > 0.95


def test_sampler_contract(cache, fitted):
    traj = O.sample_dpm_ot(MODEL, cache, fitted, 0.2, 50, 3, seed=0)
    assert traj.x.shape == (4, 50, 2) and traj.nfe == 3 and traj.t[0] == pytest.approx(0.2)
    assert all(any(np.allclose(x, c) for c in cache) for x in traj.x[0])


def test_bad_input_is_named(cache):
    with pytest.raises(ValueError, match="t_k"):
        O.make_cache(MODEL, 5, 2.0)
    with pytest.raises(ValueError, match="y must"):
        O.fit_map(np.zeros((1, 2)))


def test_pot_is_imported_without_torch_and_leaves_the_environment_alone():
    """explorer.analyses.pot.pot() in a fresh process: POT loads (and solves an exact OT problem) without
    importing torch, and the switch it sets for the import is gone afterwards."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from explorer.analyses import reflow as R\n"
            "import numpy as np\n"
            "x = np.arange(6.0).reshape(3, 2)\n"
            "print(R.optimal_cost(x, x[::-1]) == 0.0, 'torch' in sys.modules, 'ot' in sys.modules,\n"
            "      'POT_BACKEND_DISABLE_PYTORCH' in os.environ)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "POT_BACKEND_DISABLE_PYTORCH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["True", "False", "True", "False"], out
