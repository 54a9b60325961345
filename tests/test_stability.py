"""Stability regions read off the solvers' own code, against closed-form oracles."""

import numpy as np
import pytest

import explorer as ex
from explorer import stability as st


@pytest.mark.parametrize(
    "solver, options, left",
    [
        ("euler", {}, -2.0),
        ("heun", {}, -2.0),
        ("ddim", {}, -2.0),
        ("plms", {"order": 1}, -2.0),
        ("plms", {"order": 2}, -1.0),
        ("plms", {"order": 3}, -6.0 / 11.0),
        ("plms", {"order": 4}, -3.0 / 10.0),
    ],
)
def test_known_real_intervals(solver, options, left):
    assert st.real_interval(solver, **options) == pytest.approx(left, abs=1e-6)
