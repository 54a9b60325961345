"""Plug-ins: Python files or modules that declare solvers with ex.solvers.register when they
are imported, loaded by path, by module name, from EXPLORER_PLUGINS or from installed packages'
entry points (group "diffusion_explorer.solvers").

A plug-in is loaded once per process: loading it again returns the names its first load
registered, without running it again, as long as they are all still registered (as an import
does); reload=True runs it again and replaces its solvers (an edited file takes effect). If a
plug-in fails, whatever it registered before failing is removed, and the error names it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import threading
import types
from pathlib import Path
from typing import NamedTuple

from . import solvers

ENV = "EXPLORER_PLUGINS"  # paths or module names, os.pathsep-separated
GROUP = "diffusion_explorer.solvers"  # entry points: a module, or a callable that registers


class PluginError(ValueError):
    """A plug-in that cannot be loaded: missing, failed on import, or registered no solver."""


class Loaded(NamedTuple):
    """What load_configured did with one plug-in: its source, the solvers it registered, and
    the error message if it failed (then names is empty)."""

    source: str
    names: tuple
    error: str | None


_LOADED: dict[str, dict] = {}  # source key -> {solver name: its function} from the last load
_FILE_MODULES: dict[str, str] = {}  # resolved file path -> the module name it was loaded as
_LOCK = threading.RLock()


def load(path_or_module, reload: bool = False) -> list[str]:
    """Import a .py file (a path: str or Path, with a separator or ending in .py) or a module (a
    dotted name) that registers solvers, and return the names it registered, in order.

    The file runs as a module named explorer_plugin_<stem> (its solvers' info()["source"]).
    Raises PluginError (a ValueError) naming the plug-in if the file is missing, the import raises
    (its exception is in the message and chained), or nothing was registered."""
    if isinstance(path_or_module, os.PathLike) or _looks_like_path(str(path_or_module)):
        return _load_file(Path(path_or_module), reload)
    if not isinstance(path_or_module, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", path_or_module):
        raise PluginError(f"plug-in {path_or_module!r}: expected a path to a .py file or a dotted module name")
    return _load_module(path_or_module, reload)


def load_configured() -> list[Loaded]:
    """Load every plug-in named in EXPLORER_PLUGINS (paths or module names, os.pathsep-separated)
    and every entry point in the group diffusion_explorer.solvers (value "module" or
    "module:callable", the callable called with no arguments). Never raises: a plug-in that
    fails gets its message in .error and leaves the others loaded."""
    results = []
    for source in os.environ.get(ENV, "").split(os.pathsep):
        if source.strip():
            results.append(_guarded(source.strip(), lambda s=source.strip(): load(s)))
    seen = set()
    for ep in importlib.metadata.entry_points(group=GROUP):
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(ep.dist, "name", None)
        label = f"entry point {ep.name} = {ep.value}" + (f" (package {dist})" if dist else "")
        results.append(_guarded(label, lambda ep=ep, label=label: _load_entry_point(ep, label)))
    return results


def _guarded(source: str, action) -> Loaded:
    try:
        return Loaded(source, tuple(action()), None)
    except Exception as err:  # a broken plug-in breaks only itself
        return Loaded(source, (), str(err) if isinstance(err, PluginError) else f"plug-in {source}: {_describe(err)}")


def _looks_like_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text or (os.altsep or "/") in text


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _load_file(path: Path, reload: bool) -> list[str]:
    label = f"plug-in file {str(path)!r}"
    if not path.is_file():
        raise PluginError(f"{label}: no such file" + (" (a directory: name the .py file)" if path.is_dir() else ""))
    if path.suffix != ".py":
        raise PluginError(f"{label}: not a Python file (expected a .py file)")
    resolved = str(path.resolve())
    module_name = _FILE_MODULES.get(resolved) or _module_name_for(path.stem, resolved)

    def run():
        spec = importlib.util.spec_from_file_location(module_name, resolved)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # as an import does: dataclasses, pickling and tracebacks find it
        spec.loader.exec_module(module)

    previous_module = sys.modules.get(module_name)
    try:
        names = _run(resolved, label, run, reload)
    except PluginError:  # the module of a failed load goes; one that loaded before stays
        if previous_module is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous_module
        raise
    _FILE_MODULES[resolved] = module_name
    return names


def _module_name_for(stem: str, resolved: str) -> str:
    """explorer_plugin_<stem>, with a hash of the path if another file already has that name."""
    name = "explorer_plugin_" + (re.sub(r"\W", "_", stem) or "file")
    if name in sys.modules or name in _FILE_MODULES.values():
        name += "_" + hashlib.sha1(resolved.encode()).hexdigest()[:8]
    return name


def _load_module(name: str, reload: bool) -> list[str]:
    label = f"plug-in module {name!r}"
    key = "module:" + name
    if key not in _LOADED and not reload and name in sys.modules:
        # imported before, not by load(): its solvers are those it declared; never re-run a module
        # that is not known to be a plug-in (reloading an arbitrary library is not harmless)
        owned = [n for n in solvers.names() if solvers.spec(n).source == name]
        if not owned:
            raise PluginError(f"{label} registered no solver (it was imported before and declares none): a plug-in "
                              "calls ex.solvers.register(...) when imported")
        _LOADED[key] = {n: solvers.spec(n).fn for n in owned}
        return owned

    def run():
        if name in sys.modules:  # loaded before and its solvers removed since, or reload=True: run it again
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)

    return _run(key, label, run, reload)


def _load_entry_point(ep, label: str) -> list[str]:
    if ep.attr is None:
        return _load_module(ep.module, reload=False)

    def run():
        obj = ep.load()
        if not isinstance(obj, types.ModuleType):
            if not callable(obj):
                raise PluginError(f"{label}: {ep.attr!r} is neither a module nor a callable")
            obj()

    return _run("entry-point:" + ep.value, label, run, reload=False)


def _run(key: str, label: str, action, reload: bool) -> list[str]:
    """Run a plug-in and return the solvers it registered or replaced; on failure the registry is
    left exactly as it was (a broken plug-in leaves nothing behind)."""
    with _LOCK:  # the app's sessions run in threads
        registry = solvers.registry._REGISTRY
        previous = _LOADED.get(key, {})
        if previous and not reload and all(n in registry and registry[n].fn is fn for n, fn in previous.items()):
            return list(previous)
        snapshot = dict(registry)
        for n, fn in previous.items():  # its own solvers from the last load make way for the new run
            if n in registry and registry[n].fn is fn:
                del registry[n]
        before = dict(registry)
        try:
            action()
        except (Exception, SystemExit) as err:
            registry.clear()
            registry.update(snapshot)
            if isinstance(err, PluginError):
                raise
            raise PluginError(f"{label} failed on import: {_describe(err)}") from err
        new = [n for n, s in registry.items() if before.get(n) is not s]  # added, or replaced (replace=True)
        if not new:
            registry.clear()
            registry.update(snapshot)
            raise PluginError(f"{label} registered no solver: a plug-in calls ex.solvers.register(...) when imported")
        _LOADED[key] = {n: registry[n].fn for n in new}
        return new
