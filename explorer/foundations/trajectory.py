"""The record of one sampling run (a plain object: compute once, then draw), and its file format.

A Trajectory saves to one `.npz` file read back without pickle (`np.load(allow_pickle=False)`),
so a run made elsewhere (another library, another machine) can be brought in: arrays `t`, `x`,
`denoised` (torch states are written as numpy), and a JSON string `meta` with nfe, solver, options,
diverged_at, diverged_reason, wall_time, extras' non-array values and the schedule. The schedule is
stored as what rebuilds it: a named schedule by name + params (`ex.schedules.get(name, **params)`),
a `Discrete` table by its alphas_cumprod, a `Tabulated` one by its table, and any other (a formula
`Interpolant`) as a table (t, alpha, sigma) that includes every time of the trajectory, rebuilt with
`ex.interpolants.tabulated` (exact at those times, monotone-cubic between them; meta says so).
A hand-made file needs only `t` (n + 1,) and `x` (n + 1, N, ...): the rest defaults (denoised NaN,
nfe 0, solver "imported", no schedule).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

FORMAT = "diffusion-explorer trajectory 1"


@dataclass
class Trajectory:
    """States on the time grid and the model's x0-prediction at every step.

    t: (n_steps + 1,) the grid; x: (n_steps + 1, N, D) states, x[-1] the sample;
    denoised: (n_steps, N, D) the x0-prediction at (x[i], t[i]); nfe: model evaluations
    spent; diverged_at: index of the step whose result was NaN/inf (later states are NaN),
    or None. schedule: the Schedule the states are coordinates of (x = alpha(t) x0 + sigma(t) eps;
    ex.sample sets the model's), or None when unknown. extras: records a producer adds beyond
    these (ex.adapters.run_diffusers: per-call timesteps and noise levels; see its docstring).
    """

    t: np.ndarray
    x: object
    denoised: object
    nfe: int
    solver: str
    options: dict = field(default_factory=dict)
    diverged_at: int | None = None
    diverged_reason: str | None = None
    wall_time: float = 0.0
    schedule: object = None
    extras: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.t) - 1

    @property
    def sample(self):
        """The final state x[-1]."""
        return self.x[-1]

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def __repr__(self) -> str:
        shape = tuple(self.x.shape)
        status = f", diverged_at={self.diverged_at}" if self.diverged else ""
        return f"Trajectory(solver={self.solver!r}, steps={self.n_steps}, x={shape}, nfe={self.nfe}{status})"

    def save(self, path) -> str:
        """Write this trajectory to path (.npz, no pickle; see the module docstring). Returns the path."""
        return save(self, path)

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Read a trajectory written by save, or a hand-made .npz with at least t and x."""
        return load(path)


# The file format.


def _numpy(a):
    """A numpy array of a numpy array or torch tensor (torch is imported only if a tensor is given)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _jsonable(value):
    """value as JSON data: numpy scalars and arrays become numbers and lists, tuples lists; anything
    else (a callable option) is written as its repr, since a file cannot hold code."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # strict JSON has no NaN/inf
    return repr(value)


def _schedule_record(schedule, t) -> tuple[dict, dict]:
    """(JSON description, arrays) that rebuild schedule; see the module docstring."""
    from . import interpolants, schedules

    if schedule is None:
        return {"kind": "none"}, {}
    if isinstance(schedule, schedules.Discrete):
        return ({"kind": "discrete", "t_min": schedule.t_min, "t_max": schedule.t_max},
                {"schedule.alphas_cumprod": schedule.alphas_cumprod})
    if isinstance(schedule, interpolants.Tabulated):
        tt, a, s = schedule.table
        return ({"kind": "tabulated", "t_min": schedule.t_min, "t_max": schedule.t_max, "exact": True},
                {"schedule.t": tt, "schedule.alpha": a, "schedule.sigma": s})
    if getattr(schedule, "name", None) in schedules.names():
        params = schedule.params()
        try:
            same = schedules.get(schedule.name, **params) == schedule
        except ValueError:
            same = False
        if same:
            return {"kind": "named", "name": schedule.name, "params": _jsonable(params)}, {}
    # A formula: tabulate it on its interval, with every time of the trajectory as a node.
    hi = schedule.t_hi if math.isfinite(schedule.t_hi) else max(schedule.t_max, float(np.max(t)))
    nodes = np.unique(np.concatenate([np.linspace(schedule.t_lo, hi, 1025), np.asarray(t, dtype=np.float64),
                                      [schedule.t_min, schedule.t_max]]))
    nodes = nodes[(nodes >= schedule.t_lo) & (nodes <= hi)]
    return ({"kind": "tabulated", "t_min": schedule.t_min, "t_max": schedule.t_max, "exact": False,
             "from": repr(schedule)},
            {"schedule.t": nodes, "schedule.alpha": np.asarray(schedule.alpha(nodes), dtype=np.float64),
             "schedule.sigma": np.asarray(schedule.sigma(nodes), dtype=np.float64)})


def _rebuild_schedule(record: dict, arrays, where: str):
    from . import interpolants, schedules

    kind = record.get("kind", "none")
    try:
        if kind == "none":
            return None
        if kind == "named":
            return schedules.get(record["name"], **record.get("params", {}))
        if kind == "discrete":
            return schedules.from_alphas_cumprod(arrays["schedule.alphas_cumprod"], t_min=record["t_min"],
                                                 t_max=record["t_max"])
        if kind == "tabulated":
            return interpolants.tabulated(arrays["schedule.t"], arrays["schedule.alpha"], arrays["schedule.sigma"],
                                          t_min=record["t_min"], t_max=record["t_max"])
    except KeyError as err:
        raise ValueError(f"{where}: the {kind} schedule needs {err.args[0]!r}, which the file lacks") from None
    except ValueError as err:
        raise ValueError(f"{where}: its schedule does not rebuild: {err}") from None
    raise ValueError(f"{where}: unknown schedule kind {kind!r}")


def save(traj: Trajectory, path) -> str:
    """Write traj to path as .npz (see the module docstring); numpy appends .npz when missing."""
    if not isinstance(traj, Trajectory):
        raise ValueError(f"traj must be an ex.Trajectory, got {type(traj).__name__}")
    t = np.asarray(traj.t, dtype=np.float64)
    schedule, schedule_arrays = _schedule_record(traj.schedule, t)
    arrays, extras = {}, {}
    for key, value in (traj.extras or {}).items():
        value_np = _numpy(value) if hasattr(value, "detach") else value
        if isinstance(value_np, np.ndarray) and value_np.dtype.kind in "biuf":
            arrays[f"extras.{key}"] = value_np
        else:
            extras[str(key)] = _jsonable(value)
    meta = {
        "format": FORMAT, "nfe": int(traj.nfe), "solver": str(traj.solver), "options": _jsonable(traj.options),
        "diverged_at": None if traj.diverged_at is None else int(traj.diverged_at),
        "diverged_reason": traj.diverged_reason, "wall_time": float(traj.wall_time), "schedule": schedule,
        "extras": extras,
    }
    out = {"t": t, "x": _numpy(traj.x), "meta": np.array(json.dumps(meta)), **schedule_arrays, **arrays}
    if traj.denoised is not None:
        out["denoised"] = _numpy(traj.denoised)
    path = os.fspath(path)
    np.savez(path, **out)
    return path if path.endswith(".npz") else path + ".npz"


def load(path) -> Trajectory:
    """Read a Trajectory from an .npz written by save, or a hand-made one with at least t and x.
    A file that is not such an .npz raises ValueError naming the file and what is wrong."""
    where = f"trajectory file {os.fspath(path)!r}"
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"{where}: not an .npz archive (save writes one; np.savez makes one by hand)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except ValueError as err:  # object arrays (pickled data) are refused
        raise ValueError(f"{where}: cannot be read without pickle ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{where}: not an .npz archive ({err})") from None
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"{where}: an empty or non-.npz file (need at least arrays 't' and 'x')")
    missing = [key for key in ("t", "x") if key not in arrays]
    if missing:
        raise ValueError(f"{where}: missing array(s) {missing}; a trajectory needs 't' (n + 1,) and 'x' (n + 1, N, ...)")
    t, x = arrays["t"], arrays["x"]
    if t.ndim != 1 or len(t) < 1 or t.dtype.kind not in "iuf":
        raise ValueError(f"{where}: 't' must be a 1-D array of times, got shape {t.shape} dtype {t.dtype}")
    t = t.astype(np.float64)
    if x.ndim < 2 or x.shape[0] != len(t) or x.dtype.kind not in "iuf":
        raise ValueError(f"{where}: 'x' must be numeric with shape (len(t) = {len(t)}, N, ...), got shape {x.shape} "
                         f"dtype {x.dtype}")
    n = len(t) - 1
    denoised = arrays.get("denoised")
    if denoised is None:
        denoised = np.full((n,) + x.shape[1:], np.nan)
    elif denoised.shape != (n,) + x.shape[1:]:
        raise ValueError(f"{where}: 'denoised' must have shape {(n,) + x.shape[1:]}, got {denoised.shape}")
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: 'meta' is not valid JSON ({err})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: 'meta' must be a JSON object")
    extras = dict(meta.get("extras", {}))
    extras.update({key[len("extras."):]: value for key, value in arrays.items() if key.startswith("extras.")})
    diverged_at = meta.get("diverged_at")
    return Trajectory(
        t=t, x=x, denoised=denoised, nfe=int(meta.get("nfe", 0)), solver=str(meta.get("solver", "imported")),
        options=dict(meta.get("options", {})), diverged_at=None if diverged_at is None else int(diverged_at),
        diverged_reason=meta.get("diverged_reason"), wall_time=float(meta.get("wall_time", 0.0)),
        schedule=_rebuild_schedule(meta.get("schedule", {"kind": "none"}), arrays, where), extras=extras,
    )
