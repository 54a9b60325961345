"""explorer.data_files.matches_shipped: a fresh part of a run against a shipped file, to float noise between
CPUs (a few ulps of float32) and not to the last bit; any real change (a value, a key, a shape, a string,
an integer) fails it."""

import numpy as np
from hypothesis import given, settings, strategies as st

import explorer as ex

same = ex.data_files.matches_shipped


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-6, 1e6), ulps=st.integers(0, 64))
def test_float32_noise_matches_a_real_change_does_not(seed, scale, ulps):
    rng = np.random.default_rng(seed)
    stored = (scale * rng.standard_normal((50, 3))).astype(np.float32)
    noisy = stored + ulps * np.spacing(np.abs(stored)) * rng.choice([-1, 1], stored.shape)  # another CPU's rounding
    assert same(noisy, stored)
    moved = stored.copy()
    moved[rng.integers(50), rng.integers(3)] += 1e-3 * np.abs(stored).max()  # one entry off by 0.1% of the scale
    assert not same(moved, stored)


def test_records_compare_structure_exactly_and_floats_to_rtol():
    row = {"solver": "euler", "nfe": 5, "fd": 164.51195981564297, "flags": ["clip"], "order": float("nan")}
    assert same({**row, "fd": 164.5119598156839}, row)  # the two CPUs' FD of notebook 06
    assert not same({**row, "fd": 164.52}, row)
    assert not same({**row, "nfe": 6}, row)
    assert not same({**row, "solver": "ddim"}, row)
    assert not same({**row, "flags": []}, row)
    assert not same({k: v for k, v in row.items() if k != "order"}, row)
    assert not same({**row, "order": 1.0}, row)  # NaN matches only NaN
    assert same([row, row], (row, row)) and not same([row], [row, row])


def test_shapes_and_integers_must_agree():
    assert not same(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not same(np.arange(10_000), np.arange(10_000) + (np.arange(10_000) == 5))  # one count off
    assert same(np.array([True, False]), np.array([True, False])) and not same(np.array([True]), np.array([False]))
    assert not same("0.1", 0.1) and not same(None, 0.0)


def test_a_floor_lets_rounding_level_numbers_match_and_nothing_above_it():
    """The audit's largest relative sigma gap is one float32 rounding on every CPU (5.55e-8 on one, 5.40e-8
    on an AVX-512 one): no relative tolerance holds it, a floor does; a real gap (the flag's 1e-4) does not."""
    row = {"mismatch": 5.5470177562355616e-08, "error0_5": 0.0123}
    assert not same({**row, "mismatch": 5.403621738953035e-08}, row)
    assert same({**row, "mismatch": 5.403621738953035e-08}, row, floor=2.0**-23)
    assert not same({**row, "mismatch": 2e-4}, row, floor=2.0**-23)  # above the floor: compared as before
    assert not same({**row, "error0_5": 0.0124}, row, floor=2.0**-23)
    assert not same({**row, "mismatch": float("nan")}, row, floor=2.0**-23)
