"""The Scheduler audit page (app_pages/audit.py): the table and its flags, a row opened from the URL
(its per-step numbers are ex.audit.rerun's), rows with a message, bad input; and the page in a browser."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import explorer as ex  # noqa: E402
from explorer import figures  # noqa: E402
from apptest import array, assert_clean, charts, keyed_charts, open_app, open_page_from_url  # noqa: E402

PAGE = "app_pages/audit.py"
SMALL = dict(schedulers=["DDIMScheduler", "EulerDiscreteScheduler"], nfes="5, 10, 20", n="200")


def _page(**query):
    return open_app(PAGE, timeout=120, **query)


def _page_from_url(**query):
    """The page from a URL naming a row: the row selector exists only once the table has rows,
    so it takes its URL value on the page's second run (as open_page_from_url runs it)."""
    return open_page_from_url(PAGE, timeout=120, **query)


def test_default_page_has_the_table_the_flags_and_a_row():
    at = _page()
    assert_clean(at)
    assert at.title[0].value == "Scheduler audit"
    assert at.multiselect(key="schedulers").value == ["DDIMScheduler", "EulerDiscreteScheduler",
                                                       "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                                                       "HeunDiscreteScheduler"]
    frame = at.dataframe[0].value
    assert len(frame) > 50
    for column in ("row", "status", "flags", "order", "error_5", "error_40", "error0_40", "nfe_40", "floor0", "details"):
        assert column in frame.columns, column
    by_row = frame.set_index("row")
    # DDIM's default clip_sample=True clips the output to [-1, 1] on a target with modes at 1, 2, 3
    assert "clipping" in by_row.loc["DDIM · default", "flags"]
    assert "clipping" not in by_row.loc["DDIM · clip_sample=False", "flags"]
    assert by_row.loc["EulerDiscrete · default", "flags"] == ""
    assert abs(by_row.loc["EulerDiscrete · default", "order"] - 1.0) < 0.1
    assert by_row.loc["HeunDiscrete · default", "order"] > 1.8
    assert at.selectbox(key="row").value == "DDIM · default"
    assert {"row_nfe", "row_steps", "row_paths", "row_final", "flags_figure"} <= set(keyed_charts(at))


def test_url_opens_a_row_and_its_per_step_numbers_are_the_audits():
    at = _page_from_url(**SMALL, row="EulerDiscrete · default", at="10")
    assert_clean(at)
    assert at.selectbox(key="row").value == "EulerDiscrete · default"
    charts = keyed_charts(at)
    assert {"row_nfe", "row_steps", "row_paths", "row_final"} <= set(charts)
    row = ex.audit.diffusers(nfes=(5, 10, 20), schedulers=["EulerDiscreteScheduler"], configs=[{}], n_particles=200)[0]
    traj, ref = ex.audit.rerun(row, 10)
    expected = ex.metrics.path_error(traj, ref)
    drawn = array(charts["row_steps"]["data"][0]["y"], np.float64)
    assert len(drawn) == len(expected) == 11
    np.testing.assert_allclose(drawn[1:], expected[1:], rtol=1e-12)  # state 0 is the shared start: error 0, not drawn
    # the bottom panel: the relative gap per model call (Euler keeps fractional timesteps: a float32 gap at most)
    gap = array(charts["row_steps"]["data"][1]["y"], np.float64)
    assert len(gap) == traj.nfe
    np.testing.assert_allclose(np.nan_to_num(gap), np.nan_to_num(figures.audit.mismatch(traj)), rtol=1e-12)
    # error vs NFE draws the row's own numbers
    solid = array(charts["row_nfe"]["data"][0]["y"], np.float64)
    np.testing.assert_allclose(solid, [row["error_5"], row["error_10"], row["error_20"]], rtol=1e-12)


def test_a_stochastic_row_shows_its_distance_and_floor():
    at = _page_from_url(schedulers=["EulerAncestralDiscreteScheduler"], nfes="5, 10, 20", n="200",
               row="EulerAncestralDiscrete · default", at="10")
    assert_clean(at)
    labels = [m.label for m in at.metric]
    assert "Finite-sample floor (sigma 0)" in labels
    names = [t["name"] for t in keyed_charts(at)["row_nfe"]["data"]]
    assert any(name.endswith("(floor)") for name in names)


def test_rows_with_a_message_show_it():
    at = _page_from_url(schedulers=["AmusedScheduler"], nfes="5", n="50", row="Amused · default")
    assert not at.exception
    assert any("not supported by the adapter" in e.value for e in at.error), [e.value for e in at.error]
    assert not charts(at) or set(keyed_charts(at)) == {"flags_figure"}
    # a configuration diffusers fails on (DDIM's thresholding on 1-D samples): its message, not a crash
    at = _page_from_url(schedulers=["DDIMScheduler"], nfes="5", n="50", row="DDIM · thresholding=True")
    assert not at.exception
    assert any("step failed" in e.value for e in at.error), [e.value for e in at.error]


def test_bad_input_is_a_message():
    at = _page(**{**SMALL, "nfes": "5, ten"})
    assert not at.exception
    assert any("'ten' is not a number" in e.value for e in at.error), [e.value for e in at.error]
    # No scheduler chosen: the URL's empty value (?schedulers=). AppTest drops an empty list instead, so that
    # the page fell back to its five default classes and ran their audit (5-9 s) to show no message at all.
    at = _page(**{**SMALL, "schedulers": ""})
    assert not at.exception
    assert at.multiselect(key="schedulers").value == []
    assert [i.value for i in at.info] == ["Choose at least one scheduler class in the sidebar."]
    assert not at.dataframe and not charts(at)
