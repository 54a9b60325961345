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
            {"name": "ddim", "eta": 1.0, "label": "ddpm-like"}], nfes=[4, 8], seeds=[0], particles=64,
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


SPAWN_ENV = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")
ENV = {}


@pytest.fixture(scope="module")
def cluster():
    ENV["before"] = {k: os.environ.get(k) for k in SPAWN_ENV}
    client = ex.sweeps.local_cluster(2)
    ENV["after"] = {k: os.environ.get(k) for k in SPAWN_ENV}
    yield client
    client.shutdown()


def test_local_cluster_workers_and_this_process_environment(cluster):
    workers = cluster.run(lambda: {k: os.environ.get(k) for k in SPAWN_ENV})
    assert len(workers) == 2 and all(w["MALLOC_TRIM_THRESHOLD_"] is None for w in workers.values())  # unset there
    assert all(w["OMP_NUM_THREADS"] == "1" for w in workers.values())  # one math thread per worker
    assert ENV["after"] == ENV["before"]  # what the nannies wrote here is put back
    assert cluster.nthreads() and set(cluster.nthreads().values()) == {1}



RELEASE = """
import multiprocessing, os
from multiprocessing import resource_tracker
from explorer.analyses import sweeps
lock = multiprocessing.get_context("spawn").Lock()  # a semaphore: starts the tracker, as the nannies' queues do
tracker = resource_tracker._resource_tracker
pid = tracker._pid
sweeps._release_tracker()
held = tracker._fd is not None  # kept while the lock lives
del lock
sweeps._release_tracker()
print(held, tracker._fd is None, pid is not None and not os.path.exists(f"/proc/{pid}"))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_shutdown_releases_the_resource_tracker_once_no_semaphore_is_left():
    # the tracker ignores SIGTERM: left running, a Jupyter kernel's shutdown waited 2.5 s for it (notebook 08)
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.split() == ["True", "True", "True"], out.stdout


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
    assert len(here) == 2 * 4 * 2 and same(untimed(here), untimed(there))
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


def test_the_sweeps_of_the_analyses_give_the_same_records_on_a_cluster(cluster):
    """work_precision, the guidance sweep and the grid search's runs, each tiny, in-process and on the
    cluster: the same records to the bit. (The scheduler audit and quality against NFE go through the same
    ex.sweeps.run; on a cluster each worker first imports diffusers or torch, seconds each, so their check
    is `benchmarks/bench_sweeps.py --check`.)"""
    from explorer.analyses import grid_search, guidance

    ring = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("vp-linear"))
    x_T = ring.prior_sample(100, np.random.default_rng(0))
    fit, holdout = grid_search.particles(ring, 100, 0), grid_search.particles(ring, 100, 1)
    runs = {
        "work_precision": lambda e: untimed(ex.experiments.work_precision(
            ring, x_T, {"euler": "euler", "heun": "heun", "ddpm": "ddpm"}, (3, 4, 8), executor=e)),
        "guidance": lambda e: guidance.guidance_sweep(guidance.labelled("gmm-2d-ring8"), ring.schedule, 0,
                                                      ws=(0.0, 8.0), n=100, executor=e),
        "grid_search": lambda e: vars(grid_search.optimise(ring, "dpmpp-2m", 4, fit=fit, holdout=holdout,
                                                           max_evals=20, executor=e)) | {"wall_time": 0},
    }
    for name, run in runs.items():
        here, there = run(None), run(cluster)
        assert same(here, there), name
    assert len(here["history"]) == 2 * 20 and here["error"] < here["baseline"]["uniform-lambda"]["error"]


# ---------------------------------------------------------------- a scheduler started by hand


def _scheduler_address(file: Path, timeout: float) -> str:
    """The address in a scheduler file, once the scheduler has written it whole: the file appears (empty)
    before its JSON does, and a read in between failed once with JSONDecodeError."""
    import json

    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def hand_started(tmp_path_factory):
    """`dask scheduler` and `dask worker` (one process of two threads, no nanny: cheaper to start than two)
    on loopback, a remote cluster's stand-in. Both start at once (their imports take a second or two each):
    the worker finds the scheduler through its file as soon as it is written."""
    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(file)], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(file), "--nworkers", "1", "--nthreads",
                                       "2", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], cwd=folder, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = _scheduler_address(file, timeout=30)
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(1, timeout=60)
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
    from distributed import Client, get_task_stream

    cells = solver_sweep.cells(SPEC)
    here = untimed(ex.sweeps.run(cells, solver_sweep.measure))
    with Client(hand_started, timeout=10) as watcher, get_task_stream(watcher) as by_address:
        assert same(untimed(ex.sweeps.run(cells, solver_sweep.measure, hand_started)), here)
    monkeypatch.setenv("EXPLORER_DASK_ADDRESS", hand_started)
    with Client(hand_started, timeout=10) as watcher, get_task_stream(watcher) as by_environment:
        assert same(untimed(solver_sweep.run(SPEC, executor="dask")), here)
    for stream in (by_address, by_environment):  # the cells ran there, not here
        assert sum(t["key"].startswith("_evaluate") for t in stream.data) >= 2
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
    with pytest.raises(ValueError, match="executor"):
        with ex.sweeps.connect(executor):
            pass


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
                          (dict(task_seconds=-1), "task_seconds must be a positive number"),
                          (dict(connect_timeout=0), "connect_timeout must be a positive number")]:
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
    canonical = [v if v is None or not math.isnan(v) else math.nan for v in values]  # a NaN's sign is not kept
    assert same([None if v is None else float(v) for v in back], canonical)


# ---------------------------------------------------------------- the declarative sweep and its command line


SPEC_TOML = """
targets = ["gmm-1d-3modes", {name = "gmm-2d-ring8"}]
solvers = ["euler", "heun", {name = "ddim", eta = 1.0, label = "ddpm-like"}]
nfes = [4, 8]
seeds = [%s]
particles = 64
metrics = ["error", "distance"]
"""


def _spec_file(folder, seeds) -> Path:
    path = folder / f"spec{len(seeds)}.toml"
    path.write_text(SPEC_TOML % ", ".join(map(str, seeds)))
    return path


def test_command_line_sweep_resumes_on_a_cluster_and_plots(tmp_path, capsys, cluster):
    from explorer.__main__ import main

    out = tmp_path / "results.csv"
    main(["sweep", str(_spec_file(tmp_path, [0])), "--out", str(out)])
    first = ex.sweeps.load(out)
    assert len(first) == 2 * 3 * 2 and "12 cells: 0 already in" in capsys.readouterr().out
    # one more seed, on the cluster by its address: only the new seed's cells run
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        main(["sweep", str(_spec_file(tmp_path, [0, 1])), "--out", str(out), "--executor", cluster.scheduler.address])
    assert len(stream.data) >= 2  # ran there
    assert "24 cells: 12 already in" in capsys.readouterr().out
    both = ex.sweeps.load(out)
    seed0 = [r for r in both if r["seed"] == 0]
    assert same(seed0, first)  # kept as they were, to their wall times
    assert same(untimed(both), untimed(solver_sweep.run(_spec_file(tmp_path, [0, 1]))))
    main(["plot", str(out)])
    html = out.with_suffix(".html").read_text()
    assert "gmm-2d-ring8" in html and "ddpm-like" in html


def test_a_stopped_sweep_resumes_where_it_stopped(tmp_path):
    spec = _spec_file(tmp_path, [0, 1])
    out = tmp_path / "results.parquet"

    def stop_at_seven(done, total, cell, row):
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        solver_sweep.run(spec, out=out, progress=stop_at_seven, checkpoint_seconds=1e9)
    assert len(ex.sweeps.load(out)) == 7  # what had finished is on disk
    calls = []
    rows = solver_sweep.run(spec, out=out, progress=lambda *a: calls.append(a))
    assert len(calls) == 24 - 7 and calls[-1][:2] == (17, 17)
    assert same(untimed(rows), untimed(solver_sweep.run(spec))) and same(rows, ex.sweeps.load(out))
    with pytest.raises(ValueError, match="has no column"):
        solver_sweep.run(spec, out=ex.sweeps.save([{"a": 1}], tmp_path / "other.csv"))


@pytest.mark.parametrize("change, words", [
    (dict(targets=["gmm-9d"]), "targets: 'gmm-9d' is not one of"),
    (dict(targets=[{"name": "gmm-2d-ring8", "radius": 2.0, "wobble": 1}]), "no parameter wobble"),
    (dict(solvers=["rk4"]), "'rk4' is not a registered solver"),
    (dict(solvers=[{"name": "ddim", "eta": 7.0}]), "eta"),
    (dict(solvers=["euler", "euler"]), "same label"),
    (dict(nfes=[0]), "nfes must be positive integers"),
    (dict(nfes=5), "nfes must be a non-empty list"),
    (dict(spacings=["log"]), "spacings: 'log' is not one of"),
    (dict(metrics=["fid"]), "metrics: 'fid' is not one of"),
    (dict(particles=1), "particles must be an integer >= 2"),
    (dict(seed=[0]), "unknown key(s) seed"),
])
def test_bad_specs_are_value_errors_naming_the_key(change, words):
    spec = dict(targets=["gmm-1d-3modes"], solvers=["euler"], nfes=[4]) | change
    with pytest.raises(ValueError, match="spec") as err:
        solver_sweep.cells(spec)
    assert words in str(err.value)


def test_the_table_figure():
    from explorer.figures.sweeps import sweep_table

    rows = solver_sweep.run(dict(targets=["gmm-1d-3modes"], solvers=["euler", "heun"], nfes=[4, 8], seeds=[0, 1],
                                 particles=32, spacings=["uniform-lambda", "karras"]))
    fig = sweep_table(rows)
    names = [t.name for t in fig.data]
    assert names == ["euler uniform-lambda", "heun uniform-lambda", "euler karras", "heun karras"]
    euler = [r["error"] for r in rows if r["solver"] == "euler" and r["nfe"] == 4 and r["spacing"] == "karras"]
    assert len(euler) == 2 and euler[0] != euler[1]  # the two seeds
    assert fig.data[2].y[0] == np.median(euler) and fig.data[2].error_y.array[0] == max(euler) - np.median(euler)
    with pytest.raises(ValueError, match="y: the table has no column 'fid'"):
        sweep_table(rows, y="fid")
