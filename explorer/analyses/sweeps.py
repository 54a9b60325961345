"""Sweeps: one function over many independent cells, in this process or on a Dask cluster.

A sweep is a list of cells, plain picklable descriptions of one run each (names, numbers, seeds),
and a function fn(cell) -> result that depends on its cell alone (every cell carries its own seed;
nothing is read from global state). `run(cells, fn, executor)` returns [fn(cell) for cell in cells]
in the order of `cells`, bit-identical whichever executor computed them:

  executor=None        in this process, cell after cell: no set-up (what the app's pages use)
  "local-cluster"      a dask.distributed LocalCluster started for this call (one worker process of
                       one thread per core) and closed after it; local_cluster() makes one to reuse
  a distributed.Client that client's cluster
  "tcp://host:8786"    the Dask scheduler at that address (e.g. one started with `dask scheduler`)
  "dask"               the scheduler named by the environment variable EXPLORER_DASK_ADDRESS

On a cluster, fn (with whatever it closes over: a functools.partial's model, starting noise and
reference) travels to the workers once, as the result of one task that every batch depends on (a
worker that dies takes it along and the scheduler computes it again elsewhere); the cells travel in
batches. Each task costs Dask a few milliseconds, so small cells are batched: the first cells go one
per task, and later tasks take as many cells as fit in about `task_seconds` of the measured time per
cell (never more than a share of what remains that keeps every worker busy to the end). A worker
that dies mid-sweep loses nothing and duplicates nothing: the scheduler runs its unfinished tasks
again, each task's result is collected once, and each cell's result fills its own slot.

Results are the same bits on any executor when fn is deterministic in its cell and each process
does its math on the same number of threads (LocalCluster's workers run one; OMP_NUM_THREADS=1 here
makes this process match).

Tables: a sweep's results are usually one flat dict per cell (a tidy table, one row per cell);
`save(rows, "results.csv" | "results.parquet")` writes them, `load(path)` reads them back as the
same rows, `frame(rows)` makes a pandas DataFrame. `connect(executor)` holds one cluster open for a
sweep of several phases.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np

ADDRESS_VARIABLE = "EXPLORER_DASK_ADDRESS"
TASK_SECONDS = 0.2  # a task's target length: Dask's own cost per task is ~2 ms
EXECUTORS = "None, 'local-cluster', 'dask' (the scheduler at $EXPLORER_DASK_ADDRESS), a scheduler address " \
            "such as 'tcp://127.0.0.1:8786', or a dask.distributed.Client"
_ADDRESS = re.compile(r"^[a-z][a-z0-9+]*://\S+$|^[\w.\-]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$")
_INSTALL = "pip install 'diffusion-explorer[cluster]' (dask and distributed)"


def run(cells, fn, executor=None, progress=None, *, batch_size: int | None = None,
        task_seconds: float = TASK_SECONDS, connect_timeout: float = 10.0) -> list:
    """[fn(cell) for cell in cells], computed by `executor` (see the module docstring), in the order
    of cells. progress: None, True (a tqdm bar) or a callable progress(done, total, cell, result),
    called once per cell as its result arrives (in the order cells finish). batch_size: cells per
    task on a cluster (default: measured, about task_seconds of work per task). A cell that raises
    stops the sweep with its exception, a note naming the cell added."""
    if not callable(fn):
        raise ValueError(f"fn must be a callable fn(cell), got {fn!r}")
    if isinstance(cells, (str, bytes, dict)):
        raise ValueError(f"cells must be a sequence of cells, got a {type(cells).__name__}")
    try:
        cells = list(cells)
    except TypeError:
        raise ValueError(f"cells must be a sequence of cells, got {cells!r}") from None
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not (isinstance(task_seconds, (int, float)) and math.isfinite(task_seconds) and task_seconds > 0):
        raise ValueError(f"task_seconds must be a positive number, got {task_seconds!r}")
    if not (isinstance(connect_timeout, (int, float)) and math.isfinite(connect_timeout) and connect_timeout > 0):
        raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    connect = _executor(executor, connect_timeout)  # checked before any work starts
    report, close = _progress(progress, len(cells))
    try:
        if connect is None:
            return _in_process(cells, fn, report)
        with connect() as client:
            return _on_cluster(client, cells, fn, report, batch_size, float(task_seconds))
    finally:
        close()


@contextlib.contextmanager
def connect(executor=None, connect_timeout: float = 10.0):
    """The executor held open for several sweeps: yields None (in-process) or a distributed.Client
    ("local-cluster" starts one cluster for the whole block; an address connects once), to pass as
    run's executor. A sweep of two phases (references, then runs) uses it to start one cluster."""
    opened = _executor(executor, connect_timeout)
    if opened is None:
        yield None
        return
    with opened() as client:
        yield client


def _in_process(cells, fn, report) -> list:
    out = []
    for i, cell in enumerate(cells):
        out.append(_call(fn, cell))
        report(i + 1, len(cells), cell, out[-1])
    return out


def _call(fn, cell):
    try:
        return fn(cell)
    except Exception as err:
        err.add_note(f"in the sweep cell {_short(cell)}")
        raise


def _short(cell) -> str:
    text = repr(cell)
    return text if len(text) <= 300 else text[:297] + "..."


def _evaluate(fn, cells) -> list[tuple]:
    """One task on a worker: (fn(cell), seconds) for each cell of a batch."""
    out = []
    for cell in cells:
        start = time.perf_counter()
        value = _call(fn, cell)
        out.append((value, time.perf_counter() - start))
    return out


def _modules(fn, cell) -> str:
    names = {getattr(fn, "__module__", None), getattr(getattr(fn, "func", None), "__module__", None),
             type(cell).__module__}
    return ", ".join(sorted(n for n in names if n and n != "builtins")) or "builtins"


def _identity(value):
    return value


def _on_cluster(client, cells, fn, report, batch_size, task_seconds) -> list:
    from distributed import as_completed
    from distributed.client import FutureCancelledError as CancelledError

    n = len(cells)
    results = [None] * n
    if n == 0:
        return results
    shared = client.submit(_identity, fn, pure=False)  # fn reaches each worker once, not once per task
    pending, seconds, done = {}, [], 0
    queue = as_completed(loop=client.loop)
    start = 0
    counted = [0.0, 1]  # when the worker threads were last counted, and how many (workers may join later)

    def threads() -> int:
        if time.monotonic() - counted[0] > 1.0:
            counted[:] = [time.monotonic(), max(1, sum(client.nthreads().values()))]
        return counted[1]

    def submit(size: int):
        nonlocal start
        index = list(range(start, min(n, start + size)))
        start += len(index)
        future = client.submit(_evaluate, shared, [cells[i] for i in index], pure=False)
        pending[future] = index
        queue.add(future)

    def next_size() -> int:
        if batch_size is not None:
            return batch_size
        if not seconds:
            return 1
        per_cell = max(sum(seconds) / len(seconds), 1e-6)
        fair = math.ceil((n - start) / (2 * threads()))  # the rest still split among every thread
        return max(1, min(int(task_seconds / per_cell), fair))

    try:
        for _ in range(min(threads(), n)):
            submit(next_size())
        for future in queue:
            index = pending.pop(future)
            try:
                outcome = future.result()
            except CancelledError as err:
                raise RuntimeError(
                    f"the cluster dropped the sweep's tasks ({err}). The usual cause: the scheduler or the workers "
                    f"cannot import the module of fn or of the cells ({_modules(fn, cells[index[0]])}): install it "
                    "there, send it with client.upload_file(path), or define fn in the script or notebook that "
                    "runs the sweep (its functions travel by value); the scheduler's log names the error") from err
            for i, (value, took) in zip(index, outcome):
                results[i] = value
                seconds.append(took)
                done += 1
                report(done, n, cells[i], value)
            while start < n and len(pending) < 2 * threads():
                submit(next_size())
    finally:
        client.cancel([*pending, shared])
    return results


# ---------------------------------------------------------------- executors


def _executor(executor, connect_timeout):
    """None (in-process) or a function returning a context that yields a Client; checks the value."""
    if executor is None:
        return None
    if isinstance(executor, str):
        if executor == "local-cluster":
            return _local
        if executor == "dask":
            address = os.environ.get(ADDRESS_VARIABLE, "").strip()
            if not address:
                raise ValueError(f"executor='dask' runs on the scheduler named by {ADDRESS_VARIABLE}, "
                                 f"which is not set (e.g. {ADDRESS_VARIABLE}=tcp://127.0.0.1:8786)")
            if not _ADDRESS.match(address):
                raise ValueError(f"{ADDRESS_VARIABLE}={address!r} is not a scheduler address such as "
                                 "tcp://127.0.0.1:8786")
            return lambda: _remote(address, connect_timeout)
        if _ADDRESS.match(executor.strip()):
            return lambda: _remote(executor.strip(), connect_timeout)
        raise ValueError(f"executor must be {EXECUTORS}; got the string {executor!r}")
    client_type = _client_type()
    if client_type is not None and isinstance(executor, client_type):
        if executor.status in ("closing", "closed"):
            raise ValueError("executor: this dask.distributed.Client is closed")
        return lambda: contextlib.nullcontext(executor)
    raise ValueError(f"executor must be {EXECUTORS}; got {executor!r}")


def _client_type():
    try:
        from distributed import Client
    except ImportError:
        return None
    return Client


def _distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"running a sweep on a cluster needs dask.distributed: {_INSTALL}") from err
    return distributed


@contextlib.contextmanager
def _local():
    client = local_cluster()
    try:
        yield client
    finally:
        _shutdown(client)


@contextlib.contextmanager
def _remote(address: str, connect_timeout: float):
    distributed = _distributed()
    try:
        client = distributed.Client(address, timeout=connect_timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"executor {address!r}: no Dask scheduler answered there within {connect_timeout:g} s "
                         f"({type(err).__name__}: {err})") from err
    try:
        yield client
    finally:
        client.close()


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A distributed.Client on a new LocalCluster of n_workers worker processes (default: one per
    core) with threads_per_worker threads each: pass it as `executor` to reuse the cluster across
    sweeps; client.shutdown() stops it (and multiprocessing's resource tracker, if the cluster started
    it: a Jupyter kernel then shuts down at once, see _release_tracker). kwargs go to LocalCluster.

    Two of Dask's defaults are changed. Its nannies set MALLOC_TRIM_THRESHOLD_=65536 in the workers,
    which made numpy cells of arrays >= 128 KB about 40% slower here (page faults): it is left unset.
    And starting the workers writes their OMP_NUM_THREADS=1 (and MKL/OpenBLAS's, PYTHONHASHSEED) into
    this process's environment, where a torch imported later would read it: the environment is put
    back as it was."""
    distributed = _distributed()
    import dask

    if n_workers is None:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    tracker_started = not _tracker_running()  # then the nannies' semaphores start it: released at shutdown()
    spawn_env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    keys = {*spawn_env, *dask.config.get("distributed.nanny.environ"), "PYTHONHASHSEED"}
    saved = {k: os.environ.get(k) for k in keys}
    options = dict(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker), processes=True,
                   dashboard_address=":0", silence_logs=logging.ERROR)
    options.update(kwargs)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = distributed.LocalCluster(**options)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    client = distributed.Client(cluster, set_as_default=False)
    client._explorer_started_tracker = tracker_started  # read by _shutdown
    if tracker_started:
        shutdown = client.shutdown

        def shutdown_and_release():
            shutdown()
            _release_tracker()

        shutdown_and_release.__doc__ = shutdown.__doc__
        client.shutdown = shutdown_and_release
    return client


def _tracker():
    """multiprocessing's resource tracker of this process (None where there is none)."""
    try:
        from multiprocessing import resource_tracker
    except ImportError:  # Windows
        return None
    return getattr(resource_tracker, "_resource_tracker", None)


def _tracker_running() -> bool:
    tracker = _tracker()
    return tracker is None or getattr(tracker, "_fd", None) is not None


def _release_tracker():
    """Stop the resource tracker the cluster started, once no semaphore of this process is left.

    The nannies' queues are semaphores, which start multiprocessing's resource tracker: a child
    process that ignores SIGTERM and lives until this process exits. A Jupyter kernel terminates its
    children before it exits and waits up to 4.4 s for this one, longer than jupyter_client waits for
    the kernel (2.5 s, then SIGTERM): a notebook that had used a local cluster took 2.5 s more to
    shut down. The tracker is stopped only if the cluster started it and nothing still holds a
    semaphore (a tracker stopped under a live one would unlink it and warn); multiprocessing starts
    it again when anything needs it."""
    from multiprocessing import synchronize, util

    tracker = _tracker()
    stop = getattr(tracker, "_stop", None)
    if stop is None or getattr(tracker, "_fd", None) is None:
        return
    if any(getattr(f, "_callback", None) is synchronize.SemLock._cleanup for f in list(util._finalizer_registry.values())):
        return
    stop()


def _shutdown(client):
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()
    if getattr(client, "_explorer_started_tracker", False):  # a local_cluster that started the tracker
        _release_tracker()


# ---------------------------------------------------------------- progress


def _progress(progress, total: int):
    """(report(done, total, cell, result), close)."""
    if progress is None or progress is False:
        return (lambda *a: None), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="sweep", unit="cell", leave=False)
        return (lambda *a: bar.update(1)), bar.close
    if callable(progress):
        return progress, (lambda: None)
    raise ValueError(f"progress must be None, True or a callable progress(done, total, cell, result), got {progress!r}")


# ---------------------------------------------------------------- tables


def _plain(value):
    """A table cell: numbers, strings, booleans and None as they are; numpy scalars as Python's;
    dicts, lists, tuples and arrays as JSON text (keys sorted)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return value


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _rows(rows) -> tuple[list[str], list[dict]]:
    if isinstance(rows, (str, bytes, dict)):
        raise ValueError(f"rows must be a list of dicts (one per cell), got a {type(rows).__name__}")
    rows = list(rows)
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"rows must be dicts (one per cell), got {row!r}")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for k in columns:
        if not isinstance(k, str):
            raise ValueError(f"rows: column names must be strings, got {k!r}")
    return columns, [{k: _plain(row.get(k)) for k in columns} for row in rows]


def _format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"path must end in .csv or .parquet, got {str(path)!r}")
    return suffix[1:]


def save(rows, path) -> str:
    """Write a tidy table (one dict per cell) to path, .csv or .parquet (by its suffix); returns the
    path. Dicts and lists are written as JSON text, floats exactly (CSV: Python's shortest repr; a
    NaN reads back as NaN, without its sign).
    The file is written beside path and renamed into place: a sweep stopped mid-write leaves the
    previous table whole."""
    kind = _format(path)
    columns, rows = _rows(rows)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if kind == "csv":
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                for row in rows:
                    writer.writerow(["" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                                     for k in columns])
        else:
            pa, pq = _pyarrow()
            arrays = {}
            for k in columns:
                values = [row[k] for row in rows]
                try:
                    arrays[k] = pa.array(values)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # mixed kinds: text, as in a CSV
                    arrays[k] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
            pq.write_table(pa.table(arrays) if arrays else pa.table({}), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"Parquet tables need pyarrow: {_INSTALL.replace('(dask and distributed)', '(pyarrow)')}") \
            from err
    return pa, pq


def load(path) -> list[dict]:
    """The rows save() wrote (JSON text stays text). From CSV, each column gets the narrowest type
    all its values read as: int, float, bool, else str; empty cells are None."""
    kind = _format(path)
    if not Path(path).is_file():
        raise ValueError(f"path: no table at {str(path)!r}")
    if kind == "parquet":
        _, pq = _pyarrow()
        return pq.read_table(path).to_pylist()
    with open(path, newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        raw = [row for row in reader]
    typed = {k: _column([r[j] if j < len(r) else "" for r in raw]) for j, k in enumerate(columns)}
    return [{k: typed[k][i] for k in columns} for i in range(len(raw))]


def _column(texts: list[str]) -> list:
    present = [t for t in texts if t != ""]
    for parse in (int, float, _bool):
        try:
            values = {t: parse(t) for t in present}
        except ValueError:
            continue
        return [None if t == "" else values[t] for t in texts]
    return [None if t == "" else t for t in texts]


def _bool(text: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError(text)
    return text == "True"


def frame(rows):
    """The rows as a pandas DataFrame (one row per cell; dicts and lists as JSON text)."""
    import pandas as pd

    columns, rows = _rows(rows)
    return pd.DataFrame(rows, columns=columns)
