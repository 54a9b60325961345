"""The declarative sweep: solvers x NFE x targets x schedules x spacings x seeds, one row per run.

A spec (a TOML file or the same dict) names what to cross; every cell is one solver with its
options at one NFE on one grid spacing, from one seed's starting noise of one target under one
schedule. Only names, numbers and seeds travel to the workers; each cell rebuilds its exact model
and draws its own noise:

    x_T   = model.prior_sample(particles, default_rng([seed, 0]))
    noise = default_rng([seed, 1])            the stochastic solvers' draws
    draws = target.sample(n_ref, default_rng([seed, 2]))   for the distance to the target

and measures the final samples against the rk45 solve from the same x_T (error: RMS distance at
the final time), the target (distance: sliced W2 to the draws, n_ref = clip(4 particles, 5000,
20000)), its exact NLL (nll) and per-mode mass (coverage: total variation of the mode masses).
The rk45 solve is shared by every cell of the same (target, schedule, seed, particles): run()
solves each once, as a first sweep, and sends the final states along; the start and the draws are
remade where the cells run (each process keeps the last few), so cells are ordered to reuse them.

Spec keys (TOML):
    targets   = ["gmm-1d-3modes", {name = "gmm-2d-ring8", radius = 3.0}]   presets, with parameters
    schedules = ["vp-linear"]             (default ["vp-linear"])
    spacings  = ["uniform-lambda", "karras"]   (default ["uniform-lambda"])
    solvers   = ["euler", "dpmpp-2m", {name = "ddim", eta = 1.0, label = "ddim eta=1"}]
    nfes      = [5, 10, 20, 40]
    seeds     = [0, 1]                    (default [0])
    particles = 1000                      (default 1000)
    metrics   = ["error", "distance"]     (default; also "nll", "coverage")
A solver whose NFE per step does not divide an NFE skips that NFE (no cell).

run(spec, out=path) writes the table as it goes (every checkpoint_seconds and at the end) and,
when the file exists, skips the cells already in it: a stopped sweep resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import math
import time
import tomllib
from pathlib import Path

import numpy as np

from .. import solvers as _solvers
from ..foundations import schedules as _schedules
from ..foundations import targets as _targets
from ..foundations.analytic import AnalyticModel
from ..foundations.timesteps import SPACINGS, timesteps
from ..solvers.sampling import reference, sample
from . import sweeps
from .experiments import SlicedW2, steps_for
from .metrics import coverage_error, endpoint_error, nll

KEYS = ("targets", "schedules", "spacings", "solvers", "nfes", "seeds", "particles", "metrics")
METRICS = ("error", "distance", "nll", "coverage")
DEFAULTS = {"schedules": ["vp-linear"], "spacings": ["uniform-lambda"], "seeds": [0], "particles": 1000,
            "metrics": ["error", "distance"]}
# The columns that name a cell: a row with the same values is the same run.
CELL_COLUMNS = ("target", "target_params", "schedule", "spacing", "solver", "options", "nfe", "seed", "particles")


def read_spec(spec) -> dict:
    """A spec (path to a TOML file, or a dict) checked and completed with the defaults:
    targets [(name, params)], solvers [(label, name, options)], the rest lists of values."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"spec: no file {str(path)!r}")
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"spec {str(path)!r} is not valid TOML: {err}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be a path to a TOML file or a dict, got {spec!r}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ValueError(f"spec: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(KEYS)}")
    missing = [k for k in ("targets", "solvers", "nfes") if k not in spec]
    if missing:
        raise ValueError(f"spec: {', '.join(missing)} must be given")
    out = {**DEFAULTS, **spec}
    for key in ("targets", "schedules", "spacings", "solvers", "nfes", "seeds", "metrics"):
        if isinstance(out[key], (str, dict)) or not isinstance(out[key], (list, tuple)) or not out[key]:
            raise ValueError(f"spec: {key} must be a non-empty list, got {out[key]!r}")
    out["targets"] = [_target(v) for v in out["targets"]]
    for name in out["schedules"]:
        if name not in _schedules.names():
            raise ValueError(f"spec: schedules: {name!r} is not one of {_schedules.names()}")
    for name in out["spacings"]:
        if name not in SPACINGS:
            raise ValueError(f"spec: spacings: {name!r} is not one of {list(SPACINGS)}")
    out["solvers"] = [_solver(v) for v in out["solvers"]]
    labels = [label for label, _, _ in out["solvers"]]
    if len(set(labels)) != len(labels):
        raise ValueError(f"spec: solvers: two solvers have the same label ({labels}): give one a label")
    for key in ("nfes", "seeds"):
        for v in out[key]:
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "nfes" else 0):
                raise ValueError(f"spec: {key} must be {'positive' if key == 'nfes' else 'non-negative'} integers, "
                                 f"got {v!r}")
    p = out["particles"]
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise ValueError(f"spec: particles must be an integer >= 2, got {p!r}")
    for m in out["metrics"]:
        if m not in METRICS:
            raise ValueError(f"spec: metrics: {m!r} is not one of {list(METRICS)}")
    return out


def _target(value) -> tuple[str, dict]:
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        name, params = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        raise ValueError(f"spec: targets: each is a preset name or {{name = ..., <parameter> = ...}}, got {value!r}")
    if name not in _targets.names():
        raise ValueError(f"spec: targets: {name!r} is not one of {_targets.names()}")
    try:
        _targets.get(name, **params)
    except (ValueError, TypeError) as err:  # a parameter it does not take, or a bad value
        raise ValueError(f"spec: targets: {err}") from None
    return name, params


def _solver(value) -> tuple[str, str, dict]:
    if isinstance(value, str):
        name, options, label = value, {}, value
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        name = value["name"]
        options = {k: v for k, v in value.items() if k not in ("name", "label")}
        label = value.get("label") or (name + "".join(f" {k}={v}" for k, v in sorted(options.items())))
    else:
        raise ValueError(f"spec: solvers: each is a solver name or {{name = ..., label = ..., <option> = ...}}, "
                         f"got {value!r}")
    if name not in _solvers.names():
        raise ValueError(f"spec: solvers: {name!r} is not a registered solver ({', '.join(_solvers.names())})")
    try:
        _solvers.spec(name).resolve(options)
    except ValueError as err:  # an unknown option or a value out of range
        raise ValueError(f"spec: solvers: {err}") from None
    return str(label), name, options


def cells(spec) -> list[dict]:
    """Every cell of the spec, ordered target, schedule, seed, spacing, solver, NFE (so neighbours
    share their rk45 reference and target draws)."""
    spec = read_spec(spec)
    out = []
    for target, params in spec["targets"]:
        for schedule in spec["schedules"]:
            for seed in spec["seeds"]:
                for spacing in spec["spacings"]:
                    for label, name, options in spec["solvers"]:
                        for nfe in spec["nfes"]:
                            if steps_for(name, nfe) is None:
                                continue
                            out.append(dict(target=target, target_params=dict(params), schedule=schedule,
                                            spacing=spacing, solver=name, options=dict(options), label=label,
                                            nfe=int(nfe), seed=int(seed), particles=int(spec["particles"]),
                                            metrics=list(spec["metrics"])))
    return out


def cell_key(row: dict) -> tuple:
    """What names a cell, as text (the same for a cell, its row, and the row read back from a file)."""
    return tuple(v if isinstance(v, str) else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list))
                 else str(v) for v in (row[c] for c in CELL_COLUMNS))


def start_of(cell: dict) -> tuple:
    """What a cell's start depends on: (target, target_params as JSON, schedule, seed, particles)."""
    return (cell["target"], json.dumps(cell["target_params"], sort_keys=True), cell["schedule"], int(cell["seed"]),
            int(cell["particles"]))


@functools.lru_cache(maxsize=8)
def _start(target: str, params: str, schedule: str, seed: int, particles: int):
    """(model, x_T, SlicedW2 to the target draws) of one start_of key."""
    gm = _targets.get(target, **json.loads(params))
    model = AnalyticModel(gm, _schedules.get(schedule))
    x_T = model.prior_sample(particles, np.random.default_rng([seed, 0]))
    n_ref = int(np.clip(4 * particles, 5000, 20000))
    return model, x_T, SlicedW2(gm.sample(n_ref, np.random.default_rng([seed, 2])))


def reference_final(key: tuple):
    """The rk45 solve's final state from the start of a start_of key (None if it diverged)."""
    model, x_T, _ = _start(*key)
    ref = reference(model, x_T, timesteps(model.schedule, 1))
    return None if ref.diverged else np.asarray(ref.sample)


_reference_final = functools.lru_cache(maxsize=8)(reference_final)


def measure(cell: dict, references: dict | None = None) -> dict:
    """One cell's row: the cell's columns (target_params and options as JSON text), n_steps,
    nfe_spent, the metrics (NaN where the run diverged), diverged_at, reason, seconds.
    references: start_of(cell) -> reference_final, when solved already (else solved here, and kept
    for the cells after it)."""
    start = time.perf_counter()
    key = start_of(cell)
    params = key[1]
    model, x_T, distance = _start(*key)
    steps = steps_for(cell["solver"], cell["nfe"])
    ts = timesteps(model.schedule, steps, cell["spacing"])
    traj = sample(model, x_T, ts, cell["solver"], rng=np.random.default_rng([cell["seed"], 1]), **cell["options"])
    ref_final = None
    if "error" in cell["metrics"]:
        ref_final = references[key] if references is not None and key in references else _reference_final(key)
    row = dict(target=cell["target"], target_params=params, schedule=cell["schedule"], spacing=cell["spacing"],
               solver=cell["solver"], options=json.dumps(cell["options"], sort_keys=True), label=cell["label"],
               nfe=cell["nfe"], seed=cell["seed"], particles=cell["particles"], n_steps=int(steps),
               nfe_spent=int(traj.nfe))
    row.update(dict.fromkeys(cell["metrics"], math.nan))
    if not traj.diverged:
        x = np.asarray(traj.sample)
        gm = model.target
        if "error" in row and ref_final is not None:
            row["error"] = endpoint_error(x, ref_final)
        if "distance" in row:
            row["distance"] = distance(x)
        if "nll" in row:
            row["nll"] = float(nll(x, gm))
        if "coverage" in row:
            row["coverage"] = float(coverage_error(x, gm))
    row.update(diverged_at=traj.diverged_at, reason=traj.diverged_reason, seconds=time.perf_counter() - start)
    return row


def pending(spec, out=None, resume: bool = True) -> tuple[list[dict], list[dict], dict]:
    """(every cell of spec, the cells still to run, the rows kept from out by cell_key): with resume and
    an existing out, the cells whose rows are in it are not pending."""
    all_cells = cells(spec)
    metrics = all_cells[0]["metrics"] if all_cells else []
    kept = {}
    if out is not None:
        sweeps._format(out)  # a bad suffix fails before any work
        if resume and Path(out).is_file():
            for row in sweeps.load(out):
                missing = [c for c in (*CELL_COLUMNS, *metrics) if c not in row]
                if missing:
                    raise ValueError(f"out: {str(out)!r} has no column {', '.join(missing)}: it is not this sweep's "
                                     "table (write to another file, or pass resume=False to replace it)")
                kept[cell_key(row)] = row
    return all_cells, [c for c in all_cells if cell_key(c) not in kept], kept


def run(spec, executor=None, progress=None, out=None, resume: bool = True, checkpoint_seconds: float = 10.0,
        **options) -> list[dict]:
    """Every cell of spec through ex.sweeps.run(executor, progress) -> rows in the order of cells().

    out: a .csv or .parquet path the table is written to, every checkpoint_seconds while cells
    finish and at the end (also when the sweep stops on an error or Ctrl-C). With resume and an
    existing out, the cells already in it are not run again (pending()); its other rows are kept
    after the spec's. options go to ex.sweeps.run (batch_size, task_seconds, connect_timeout)."""
    all_cells, todo, kept = pending(spec, out, resume)
    report, close = sweeps._progress(progress, len(todo))
    new, last = {}, [time.monotonic()]

    def table() -> list[dict]:
        rows, seen = [], set()
        for c in all_cells:
            k = cell_key(c)
            row = new.get(k, kept.get(k))
            if row is not None:
                rows.append(row)
                seen.add(k)
        return rows + [row for k, row in kept.items() if k not in seen]

    def arrived(done, total, cell, row):
        new[cell_key(cell)] = row
        report(done, total, cell, row)
        if out is not None and time.monotonic() - last[0] >= checkpoint_seconds:
            sweeps.save(table(), out)
            last[0] = time.monotonic()

    try:
        connect = {k: options.pop(k) for k in ("connect_timeout",) if k in options}
        with sweeps.connect(executor, **connect) as where:
            # One rk45 solve per start, shared by its cells (on a cluster, each solved once, not once per worker).
            starts = list(dict.fromkeys(start_of(c) for c in todo if "error" in c["metrics"]))
            references = dict(zip(starts, sweeps.run(starts, reference_final, where)))
            sweeps.run(todo, functools.partial(measure, references=references), where, arrived, **options)
    finally:
        close()
        if out is not None and (new or not Path(out).is_file()):
            sweeps.save(table(), out)
    return table()
