"""ex.sweeps: the same results in-process and on a real Dask cluster (a LocalCluster of two worker
processes shared by the module, and a scheduler and workers started with the `dask` command line on
loopback, reached by address); a worker killed mid-sweep loses and duplicates nothing; progress sees
every cell; bad executors are ValueErrors; tables round-trip exactly; the declarative sweep and its
command line resume. Cells are tiny: the whole file is meant to stay near 20 s on 2 cores."""

from __future__ import annotations

import functools
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer as ex
from explorer.analyses import solver_sweep

SPEC = dict(targets=["gmm-1d-3modes", {"name": "gmm-2d-ring8"}], solvers=["euler", "heun", "dpmpp-2m",
            {"name": "ddim", "eta": 1.0, "label": "ddpm-like"}], nfes=[4, 8], seeds=[0, 1], particles=64,
            metrics=["error", "distance", "nll", "coverage"])


def same(a, b) -> bool:
    """Equal to the bit (NaN equal to NaN): every leaf pickles to the same bytes."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return pickle.dumps(a) == pickle.dumps(b)


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "wall_time")} for r in rows]


def final_state(cell):
    """A real run per cell: the solver's final samples (an array) and their error."""
    solver, nfe, seed = cell
    model = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    x_T = model.prior_sample(32, np.random.default_rng(seed))
    traj = ex.sample(model, x_T, ex.timesteps(model.schedule, nfe), solver, rng=np.random.default_rng([seed, 1]))
    return {"cell": cell, "x": np.asarray(traj.sample), "nfe": traj.nfe}


def slow_pid(cell, seconds=0.03):
    time.sleep(seconds)
    return cell, os.getpid()


def fails_on_three(cell):
    if cell == 3:
        raise ArithmeticError("three is bad")
    return cell


CELLS = [(s, n, seed) for s in ("euler", "ddim", "dpmpp-2m") for n in (2, 6, 10) for seed in (0, 1)]


@pytest.fixture(scope="module")
def cluster():
    client = ex.sweeps.local_cluster(2)
    yield client
    client.shutdown()


# ---------------------------------------------------------------- in-process and on a cluster


def test_in_process_keeps_order_and_reports_every_cell():
    calls = []
    out = ex.sweeps.run(CELLS, final_state, progress=lambda *a: calls.append(a))
    assert [r["cell"] for r in out] == CELLS
    assert [(d, t, c) for d, t, c, _ in calls] == [(i + 1, len(CELLS), c) for i, c in enumerate(CELLS)]
    assert all(r is out[i] for i, (*_, r) in enumerate(calls))
    assert ex.sweeps.run([], final_state) == []


def test_local_cluster_gives_the_in_process_bits(cluster):
    here = ex.sweeps.run(CELLS, final_state)
    calls = []
    there = ex.sweeps.run(CELLS, final_state, cluster, progress=lambda *a: calls.append(a))
    assert same(here, there)
    # every cell reported once, as it arrived, with its own result
    assert [c[0] for c in calls] == list(range(1, len(CELLS) + 1)) and {c[1] for c in calls} == {len(CELLS)}
    assert sorted(c[2] for c in calls) == sorted(CELLS)
    assert all(same(c[3], here[CELLS.index(c[2])]) for c in calls)
    # one cell per task, and cells that finish out of order (2 NFE before 10): still in the order of cells
    uneven = [(s, n, 0) for n in (40, 2, 30, 2, 20, 2) for s in ("dpmpp-2m",)]
    assert same(ex.sweeps.run(uneven, final_state, cluster, batch_size=1), ex.sweeps.run(uneven, final_state))


def test_the_declarative_sweep_on_a_cluster_equals_in_process(cluster):
    here = solver_sweep.run(SPEC)
    there = solver_sweep.run(SPEC, executor=cluster)
    assert len(here) == 2 * 2 * (3 * 2 + 2) and same(untimed(here), untimed(there))
    assert [r["label"] for r in here[:8]] == ["euler"] * 2 + ["heun"] * 2 + ["dpmpp-2m"] * 2 + ["ddpm-like"] * 2


def test_small_cells_are_batched_into_few_tasks(cluster):
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        out = ex.sweeps.run(range(600), math.sqrt, cluster)
    assert out == [math.sqrt(i) for i in range(600)]
    assert len(stream.data) < 60, len(stream.data)  # 600 microsecond cells in a few tasks, not 600
    with get_task_stream(cluster) as stream:
        ex.sweeps.run(range(20), math.sqrt, cluster, batch_size=1)
    assert len(stream.data) == 21  # one a cell, and fn's own


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(cluster):
    pids = list(cluster.run(os.getpid).values())
    cells = list(range(60))
    calls, killed = [], []

    def progress(done, total, cell, result):
        calls.append(cell)
        if done == 10:  # both workers have tasks running and queued: kill one outright
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    out = ex.sweeps.run(cells, slow_pid, cluster, progress=progress, batch_size=2)
    assert killed and [c for c, _ in out] == cells
    assert sorted(calls) == cells  # each cell reported exactly once
    assert pids[0] not in {pid for c, pid in out if c >= 30}  # the dead worker ran nothing late
    cluster.wait_for_workers(2, timeout=30)  # the nanny restarts it for the tests after this one


# ---------------------------------------------------------------- a scheduler started by hand


@pytest.fixture(scope="module")
def hand_started(tmp_path_factory):
    """`dask scheduler` and `dask worker` (2 processes, 1 thread each) on loopback: a remote cluster's stand-in."""
    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(file)], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 30
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        import json

        address = json.loads(file.read_text())["address"]
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], cwd=folder, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
        with Client(address, timeout=10) as c:
            c.shutdown()  # the scheduler closes its workers: quicker than signals to each
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_scheduler_started_by_hand_by_address_and_by_environment(hand_started, monkeypatch):
    # Its workers import explorer (installed) but not this test file: the cells run explorer's own function.
    assert hand_started.startswith("tcp://127.0.0.1:")
    cells = solver_sweep.cells(SPEC)
    here = untimed(ex.sweeps.run(cells, solver_sweep.measure))
    assert same(untimed(ex.sweeps.run(cells, solver_sweep.measure, hand_started)), here)
    monkeypatch.setenv("EXPLORER_DASK_ADDRESS", hand_started)
    assert same(untimed(solver_sweep.run(SPEC, executor="dask")), here)
    with pytest.raises(RuntimeError, match="cannot import the module of fn or of the cells \\(test_sweeps\\)"):
        ex.sweeps.run(CELLS[:2], final_state, "dask")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("executor, words", [
    ("local_cluster", "executor must be None, 'local-cluster'"),
    ("threads", "got the string 'threads'"),
    (2, "executor must be"),
    (object(), "executor must be"),
    ("dask", "EXPLORER_DASK_ADDRESS, which is not set"),
])
def test_bad_executors_are_value_errors(executor, words, monkeypatch):
    monkeypatch.delenv("EXPLORER_DASK_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="executor") as err:
        ex.sweeps.run([1, 2], abs, executor)
    assert words in str(err.value)


def test_bad_addresses_and_arguments_are_value_errors(monkeypatch, cluster):
    monkeypatch.setenv("EXPLORER_DASK_ADDRESS", "my laptop")
    with pytest.raises(ValueError, match="EXPLORER_DASK_ADDRESS='my laptop' is not a scheduler address"):
        ex.sweeps.run([1], abs, "dask")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"executor 'tcp://127.0.0.1:9': no Dask scheduler answered there within 0.5 s"):
        ex.sweeps.run([1], abs, "tcp://127.0.0.1:9", connect_timeout=0.5)
    assert time.monotonic() - start < 10
    for kwargs, words in [(dict(fn=3), "fn must be a callable"), (dict(cells=5), "cells must be a sequence"),
                          (dict(cells="abc"), "cells must be a sequence"),
                          (dict(progress="bar"), "progress must be None, True or a callable"),
                          (dict(batch_size=0), "batch_size must be a positive integer"),
                          (dict(task_seconds=-1), "task_seconds must be a positive number")]:
        args = dict(cells=[1], fn=abs) | kwargs
        with pytest.raises(ValueError, match=words):
            ex.sweeps.run(**args)
    from distributed import Client

    closed = Client(cluster.scheduler.address, set_as_default=False)
    closed.close()
    with pytest.raises(ValueError, match="Client is closed"):
        ex.sweeps.run([1], abs, closed)


def test_a_failing_cell_stops_the_sweep_and_is_named(cluster):
    for executor in (None, cluster):
        with pytest.raises(ArithmeticError, match="three is bad") as err:
            ex.sweeps.run([1, 2, 3, 4], fails_on_three, executor)
        assert "in the sweep cell 3" in getattr(err.value, "__notes__", []), executor


def test_progress_true_draws_a_bar(capsys):
    assert ex.sweeps.run([1, 4], math.sqrt, progress=True) == [1.0, 2.0]
    assert "sweep" in capsys.readouterr().err


# ---------------------------------------------------------------- tables


ROWS = [dict(a=1, b=0.1, c="x", d=None, e=True, f={"eta": 0.5}, g=np.float64(1 / 3), h=[1, 2]),
        dict(a=2, b=float("nan"), c="y,z \"q\"", d=3, e=False, f={}, g=float("inf"), h=[])]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip(tmp_path, suffix):
    path = ex.sweeps.save(ROWS, tmp_path / f"t{suffix}")
    back = ex.sweeps.load(path)
    want = [dict(a=1, b=0.1, c="x", d=None, e=True, f='{"eta": 0.5}', g=1 / 3, h="[1, 2]"),
            dict(a=2, b=float("nan"), c="y,z \"q\"", d=3, e=False, f="{}", g=float("inf"), h="[]")]
    assert same(back, want)
    assert list(ex.sweeps.frame(ROWS).columns) == list("abcdefgh")
    with pytest.raises(ValueError, match="path must end in .csv or .parquet"):
        ex.sweeps.save(ROWS, tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match="rows must be dicts"):
        ex.sweeps.save([1, 2], tmp_path / "t.csv")


@settings(max_examples=40)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.none(), min_size=1, max_size=5))
def test_csv_keeps_every_float_exactly(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    back = [r["v"] for r in ex.sweeps.load(ex.sweeps.save([{"v": v} for v in values], path))]
    if all(v is None for v in values):
        assert back == values
    else:
        assert same([None if v is None else float(v) for v in back], values)
