"""Precomputed default views (app_pages/precomputed.py): values survive the round trip exactly, a
recorded call returns the shipped value without computing, a stale file is never used, and every
shipped file was made from the code as it is now (else: python app_pages/precomputed.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import explorer as ex
from app_pages import precomputed as P
from explorer import hallucination as H


def _round_trip(value, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "DIR", tmp_path)
    P.write("page", {"fn": {"key": value}})
    values, arrays = P._read("page")[2:]
    return P.decode(values["fn"]["key"], arrays)


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(plain)
def test_plain_values_round_trip_exactly(value):
    arrays = []
    encoded = P.encode(value, arrays)
    assert P.decode(encoded, {f"a{i}": a for i, a in enumerate(arrays)}) == value


def test_arrays_nan_dataclasses_trajectories_and_schedules_round_trip(tmp_path, monkeypatch):
    gm = ex.targets.get("gmm-1d-3modes")
    model = ex.AnalyticModel(gm, ex.schedules.get("vp-linear"))
    traj = ex.sample(model, model.prior_sample(5, 0), ex.timesteps(model.schedule, 4), "dpmpp-2m")
    run = H.Run(samples=np.arange(6.0).reshape(3, 2), denoised=np.ones((2, 3, 2), np.float32), t=np.array([2.0, 1.0]),
                solver="ddpm", options={"eta": 1.0})
    table = ex.schedules.Discrete.from_betas(np.linspace(1e-4, 0.02, 50))
    value = {"nan": math.nan, "inf": -math.inf, "ints": np.arange(4, dtype=np.int16), "c": np.array([1 + 2j]),
             "run": run, "traj": traj, "named": ex.schedules.get("edm", t_max=40.0), "table": table}
    back = _round_trip(value, tmp_path, monkeypatch)
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["ints"].dtype == np.int16 and np.array_equal(back["ints"], value["ints"])
    assert np.array_equal(back["c"], value["c"])
    assert isinstance(back["run"], H.Run) and back["run"].options == {"eta": 1.0}
    for f in ("samples", "denoised", "t"):
        assert getattr(back["run"], f).dtype == getattr(run, f).dtype and np.array_equal(getattr(back["run"], f), getattr(run, f))
    assert np.array_equal(back["traj"].x, traj.x) and np.array_equal(back["traj"].denoised, traj.denoised)
    assert back["traj"].schedule == traj.schedule and back["traj"].nfe == traj.nfe
    assert back["named"] == value["named"]
    assert np.array_equal(back["table"].alphas_cumprod, table.alphas_cumprod)


@dataclasses.dataclass
class Foreign:
    x: int = 1


@pytest.mark.parametrize("value, words", [
    (Foreign(), "cannot record a Foreign"),
    (np.array(["a"]), "numeric arrays"),
    ({1: 2}, "str keys"),
    (ex.interpolants.tabulated(np.linspace(0, 1, 5), np.linspace(1, 0.1, 5), np.linspace(0.01, 1, 5)), "exactly"),
])
def test_what_cannot_be_recorded_exactly_is_refused(value, words):
    with pytest.raises(TypeError, match=words):
        P.encode(value, [])


def test_only_the_explorers_dataclasses_are_built():
    with pytest.raises(ValueError, match="only the explorer's"):
        P.decode({"__dataclass__": "os:system", "fields": {}}, {})


def test_a_recorded_call_returns_the_shipped_value_and_a_stale_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "DIR", tmp_path)
    monkeypatch.delenv(P.RECORD_ENV, raising=False)
    calls = []

    @P.default("fake")
    def slow(a, b=1):
        calls.append((a, b))
        return {"sum": np.array([a + b])}

    P.write("fake", {slow.__qualname__: {P.key_of((2,), {"b": 3}): {"sum": np.array([99])}}})
    P.shipped.cache_clear()
    assert slow(2, b=3)["sum"][0] == 99 and calls == []  # shipped, not computed
    assert slow(2, b=4)["sum"][0] == 6 and calls == [(2, 4)]  # other arguments compute
    assert P.is_fresh("fake")
    monkeypatch.setattr(P, "fingerprint", lambda page, files=(): "other code")  # the code changed since
    P.shipped.cache_clear()
    try:
        assert not P.is_fresh("fake")
        assert slow(2, b=3)["sum"][0] == 5 and calls[-1] == (2, 3)
    finally:
        P.shipped.cache_clear()


def test_recording_keeps_only_the_calls_only_allows(monkeypatch):
    """Mode interpolation ships its preview's runs (n <= PREVIEW), not the full set sampled after them."""
    monkeypatch.setenv(P.RECORD_ENV, "1")
    monkeypatch.setitem(P._RECORDED, "only-page", {})

    @P.default("only-page", only=lambda n, **_: n <= 100)  # by name, however the call passes it
    def run(name, n=100):
        return np.full(n, 1.0)

    assert len(run("a", 100)) == 100 and len(run("a", 1000)) == 1000  # both compute
    assert len(run(name="b", n=1000)) == 1000 and len(run("c")) == 100
    assert list(P._RECORDED["only-page"][run.__qualname__]) == [P.key_of(("a", 100), {}), P.key_of(("c",), {})]


def test_the_fingerprint_follows_the_files_the_values_came_from(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    for rel in ("explorer/a.py", "explorer/b.py", "app_pages/audit.py", "app_pages/controls.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    monkeypatch.setattr(P, "ROOT", root)
    monkeypatch.setattr(P, "__file__", str(root / "app_pages" / "controls.py"))
    P.fingerprint.cache_clear()
    try:
        one = P.fingerprint("audit", ("explorer/a.py",))
        assert one != P.fingerprint("schedules", ("explorer/a.py",))  # the page's own file counts
        (root / "explorer" / "b.py").write_text("x = 2\n")  # a file the values did not come from
        P.fingerprint.cache_clear()
        assert P.fingerprint("audit", ("explorer/a.py",)) == one
        (root / "explorer" / "a.py").write_text("x = 2\n")  # one they did
        P.fingerprint.cache_clear()
        assert P.fingerprint("audit", ("explorer/a.py",)) != one
    finally:
        P.fingerprint.cache_clear()


def test_recording_notes_the_explorer_files_whose_code_ran():
    value, used = P._run_traced(lambda n: ex.timesteps(ex.schedules.get("edm"), n), (4,), {})
    assert len(value) == 5
    assert {"explorer/foundations/timesteps.py", "explorer/foundations/schedules.py"} <= used
    assert "explorer/analyses/audit.py" not in used


@pytest.mark.parametrize("page", P.PAGES_WITH_DEFAULTS)
def test_every_shipped_default_view_is_fresh(page):
    assert P.path_of(page).is_file(), f"{P.path_of(page)} is missing: run python app_pages/precomputed.py {page}"
    assert P.is_fresh(page), (f"{P.path_of(page).name} was made from other code: run python app_pages/precomputed.py "
                              f"{page} (its first view is computed until then)")


def test_a_shipped_value_is_what_the_core_computes_now():
    """The audit's list of schedulers, recorded by the page, against the core's own answer."""
    values, arrays = P._read("audit")[2:]
    recorded = P.decode(values["scheduler_names"][P.key_of((), {})], arrays)
    assert recorded == [name for name, _ in ex.audit.scheduler_classes()] and len(recorded) > 40
