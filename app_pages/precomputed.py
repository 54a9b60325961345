"""Precomputed default views: what a page's slow functions return for the inputs the page opens
with, shipped in data/precomputed/<page>.npz, so that a fresh app process shows each page's
first view without recomputing it.

A page marks a slow function with `@precomputed.default("<page>")` (under its st.cache_data).
A call whose arguments were recorded returns the recorded value; any other call computes. The file
records a fingerprint of the code and libraries the values came from (the explorer's files whose
code ran while they were computed, the page, this module and the shared controls; numpy, scipy,
torch and diffusers versions): when any of them changes, the file is ignored, so a stale value is
never shown; a test fails until the files are regenerated:

    python app_pages/precomputed.py            # runs every page's default view and records it

Values are stored as JSON beside numeric arrays in one compressed .npz (loaded with
allow_pickle=False), trajectories in their own .npz format and dataclasses of the explorer by name:
nothing in these files is unpickled."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

import explorer as ex
from explorer.foundations.trajectory import _rebuild_schedule, _schedule_record  # the trajectory file's schedule record

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "data" / "precomputed"
RECORD_ENV = "EXPLORER_PRECOMPUTE_RECORD"  # set: compute every call and record it (the regenerating command)
LIBRARIES = ("numpy", "scipy", "torch", "diffusers")
_LOCK = threading.Lock()
_RECORDED: dict[str, dict[str, dict]] = {}  # page -> function -> key -> value
_USED: dict[str, set] = {}  # page -> the explorer files whose code ran while its values were computed


# ---------------------------------------------------------------- what the values came from


@functools.cache
def fingerprint(page: str, files: tuple = ()) -> str:
    """sha256 of the files the page's values came from (`files`: the explorer's modules whose code ran
    while they were computed, as recorded), the page, its shared controls, this module, and the
    libraries' versions."""
    h = hashlib.sha256()
    paths = [ROOT / f for f in files] + [ROOT / "app_pages" / f"{page}.py", ROOT / "app_pages" / "controls.py",
                                         Path(__file__).resolve()]
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes() if path.is_file() else b"(missing)")
    for lib in LIBRARIES:
        try:
            version = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{lib}=={version}".encode())
    return h.hexdigest()


def _run_traced(fn, args, kwargs) -> tuple:
    """fn(*args, **kwargs) and the explorer files whose code ran during it (relative paths)."""
    core, seen = str(ROOT / "explorer"), set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(core):
            seen.add(frame.f_code.co_filename)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        value = fn(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return value, {str(Path(f).relative_to(ROOT)) for f in seen}


def key_of(args: tuple, kwargs: dict) -> str:
    """The arguments as text (the pages pass hashable plain values: str, numbers, tuples)."""
    return repr((args, sorted(kwargs.items())))


# ---------------------------------------------------------------- values to JSON and back


def encode(value, arrays: list):
    """value as JSON, its arrays appended to `arrays` and referred to by position."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if np.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise TypeError(f"only numeric arrays can be recorded, got dtype {value.dtype}")
        arrays.append(value)
        return {"__array__": len(arrays) - 1}
    if isinstance(value, (list, tuple)):
        items = [encode(v, arrays) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"only dicts with str keys can be recorded, got keys {list(value)[:3]}")
        return {"__dict__": {k: encode(v, arrays) for k, v in value.items()}}
    if isinstance(value, ex.Trajectory):  # its own .npz format (the schedule included), kept as bytes
        with tempfile.TemporaryDirectory() as folder:
            data = Path(value.save(Path(folder) / "t.npz")).read_bytes()
        return {"__trajectory__": encode(np.frombuffer(data, dtype=np.uint8), arrays)}
    if isinstance(value, ex.schedules.Schedule):  # exactly rebuildable ones: named, or a discrete table
        record, tables = _schedule_record(value, [])
        if record["kind"] not in ("named", "discrete"):
            raise TypeError(f"cannot record the schedule {value!r} exactly")
        return {"__schedule__": record, "tables": {k: encode(v, arrays) for k, v in tables.items()}}
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("explorer."):
        fields = {f.name: encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}
        return {"__dataclass__": f"{type(value).__module__}:{type(value).__qualname__}", "fields": fields}
    raise TypeError(f"cannot record a {type(value).__name__}")


def decode(value, arrays):
    if isinstance(value, list):
        return [decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__array__" in value:
        return arrays[f"a{value['__array__']}"]
    if "__tuple__" in value:
        return tuple(decode(v, arrays) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode(v, arrays) for k, v in value["__dict__"].items()}
    if "__trajectory__" in value:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "t.npz"
            path.write_bytes(decode(value["__trajectory__"], arrays).tobytes())
            return ex.Trajectory.load(path)
    if "__schedule__" in value:
        tables = {k: decode(v, arrays) for k, v in value["tables"].items()}
        return _rebuild_schedule(value["__schedule__"], tables, "a precomputed value")
    if "__dataclass__" in value:
        module, name = value["__dataclass__"].split(":")
        if not module.startswith("explorer."):
            raise ValueError(f"refusing to build {value['__dataclass__']}: only the explorer's dataclasses")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: decode(v, arrays) for k, v in value["fields"].items()})
    raise ValueError(f"unknown record {sorted(value)[:3]}")


# ---------------------------------------------------------------- the shipped files


def path_of(page: str) -> Path:
    return DIR / f"{page}.npz"


def _read(page: str):
    """(files, fingerprint, values, arrays) of the page's file: an .npz of an 'index' JSON and arrays a0, a1, ..."""
    with np.load(path_of(page), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "index"}
        index = json.loads(str(data["index"]))
    return tuple(index["files"]), index["fingerprint"], index["values"], arrays


@functools.cache
def shipped(page: str) -> tuple[dict, dict]:
    """The page's recorded values (function -> key -> encoded value) and their arrays, or ({}, {}) if
    the file is missing or any file they came from has changed since (the fingerprint differs)."""
    if not path_of(page).is_file():
        return {}, {}
    files, made_from, values, arrays = _read(page)
    return (values, arrays) if made_from == fingerprint(page, files) else ({}, {})


def is_fresh(page: str) -> bool:
    if not path_of(page).is_file():
        return False
    files, made_from = _read(page)[:2]
    return made_from == fingerprint(page, files)


def default(page: str, only=None):
    """Mark a page's slow function: recorded arguments return the shipped value. `only`, if given, says which
    of the default view's calls are recorded (the others compute, as any other call): it is called with the
    call's arguments by name, defaults filled in, however the page passed them."""

    def wrap(fn):
        name = fn.__qualname__
        signature = inspect.signature(fn)

        def kept(args, kwargs) -> bool:
            if only is None:
                return True
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return only(**bound.arguments)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            key = key_of(args, kwargs)
            if os.environ.get(RECORD_ENV) and kept(args, kwargs):
                value, used = _run_traced(fn, args, kwargs)
                with _LOCK:
                    _RECORDED.setdefault(page, {}).setdefault(name, {})[key] = value
                    _USED.setdefault(page, set()).update(used)
                return value
            values, arrays = shipped(page)
            found = values.get(name, {}).get(key)
            return fn(*args, **kwargs) if found is None else decode(found, arrays)

        return inner

    return wrap


def write(page: str, values: dict, files=()) -> Path:
    """Record values (function -> key -> value) for the page, with the fingerprint of the files they came
    from (relative paths) as they are now."""
    DIR.mkdir(parents=True, exist_ok=True)
    arrays: list = []
    encoded = {fn: {key: encode(v, arrays) for key, v in calls.items()} for fn, calls in values.items()}
    files = tuple(sorted(files))
    index = json.dumps({"page": page, "files": files, "fingerprint": fingerprint(page, files), "values": encoded},
                       separators=(",", ":"))
    np.savez_compressed(path_of(page), index=np.array(index), **{f"a{i}": a for i, a in enumerate(arrays)})
    return path_of(page)


# ---------------------------------------------------------------- the regenerating command

PAGES_WITH_DEFAULTS = ("trajectories", "solver_lab", "stability", "mode_interpolation", "images", "schedules", "audit",
                       "learned_fields", "starts", "guidance")  # pages with marked functions


def regenerate(pages=PAGES_WITH_DEFAULTS) -> list[Path]:
    """Open each page's default view (streamlit's AppTest, in this process) with recording on and
    write what its marked functions computed."""
    from streamlit.testing.v1 import AppTest

    os.environ[RECORD_ENV] = "1"
    written = []
    for page in pages:
        _RECORDED.pop(page, None)
        _USED.pop(page, None)
        at = AppTest.from_file(str(ROOT / "app_pages" / f"{page}.py"), default_timeout=600)  # a fresh session on it
        at.run()
        if at.exception:
            raise RuntimeError(f"{page}: {[e.message for e in at.exception]}")
        values = _RECORDED.get(page, {})
        if values:
            written.append(write(page, values, _USED.get(page, ())))
            print(f"{page}: {sum(len(v) for v in values.values())} values from {sorted(values)} "
                  f"-> {written[-1].relative_to(ROOT)} ({written[-1].stat().st_size / 1e3:.0f} kB)", flush=True)
    return written


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from app_pages import precomputed  # the module the pages import (this file runs as __main__)

    precomputed.regenerate(tuple(sys.argv[1:]) or PAGES_WITH_DEFAULTS)
