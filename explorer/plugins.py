"""Plug-ins: Python files or modules that declare solvers with ex.solvers.register, models with
ex.models.register, or both, when they are imported; loaded by path, by module name, from
EXPLORER_PLUGINS or from installed packages' entry points (groups "diffusion_explorer.solvers" and
"diffusion_explorer.models": the same loader serves both, so one module may declare both).

A plug-in is loaded once per process: loading it again returns the names its first load
registered, without running it again, as long as they are all still registered (as an import
does); reload=True runs it again and replaces what it declared (an edited file takes effect). If a
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
from .learned import registry as models

ENV = "EXPLORER_PLUGINS"  # paths or module names, os.pathsep-separated
GROUP = "diffusion_explorer.solvers"  # entry points: a module, or a callable that registers
MODELS_GROUP = "diffusion_explorer.models"  # the same, for plug-ins that declare models
GROUPS = (GROUP, MODELS_GROUP)
NOTHING = ("registered no solver or model: a plug-in calls ex.solvers.register(...) or ex.models.register(...) "
           "when imported")


class PluginError(ValueError):
    """A plug-in that cannot be loaded: missing, failed on import, or registered nothing."""


class Loaded(NamedTuple):
    """What load_configured did with one plug-in: its source, the names it registered (solvers,
    then models), the error message if it failed (then names is empty), and which of the names are
    models."""

    source: str
    names: tuple
    error: str | None
    models: tuple = ()


def _registries() -> dict:
    """What a plug-in may declare: kind -> (the registry, the declared callable of an entry)."""
    return {"solver": (solvers.registry._REGISTRY, lambda spec: spec.fn),
            "model": (models._REGISTRY, lambda spec: spec.factory)}


_LOADED: dict[str, dict] = {}  # source key -> {(kind, name): its function or factory} from the last load
_FILE_MODULES: dict[str, str] = {}  # resolved file path -> the module name it was loaded as
_LOCK = threading.RLock()


def load(path_or_module, reload: bool = False) -> list[str]:
    """Import a .py file (a path: str or Path, with a separator or ending in .py) or a module (a
    dotted name) that registers solvers or models, and return the names it registered, in order:
    its solvers, then its models (load_configured's Loaded.models says which are models).

    The file runs as a module named explorer_plugin_<stem> (its solvers' info()["source"]).
    Raises PluginError (a ValueError) naming the plug-in if the file is missing, the import raises
    (its exception is in the message and chained), or nothing was registered."""
    return [name for _, name in _load(path_or_module, reload)]


def _load(path_or_module, reload: bool) -> list[tuple]:
    """load(), as the (kind, name) pairs it registered."""
    if isinstance(path_or_module, os.PathLike) or _looks_like_path(str(path_or_module)):
        return _load_file(Path(path_or_module), reload)
    if not isinstance(path_or_module, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", path_or_module):
        raise PluginError(f"plug-in {path_or_module!r}: expected a path to a .py file or a dotted module name")
    return _load_module(path_or_module, reload)


def load_configured() -> list[Loaded]:
    """Load every plug-in named in EXPLORER_PLUGINS (paths or module names, os.pathsep-separated)
    and every entry point in the groups diffusion_explorer.solvers and diffusion_explorer.models
    (value "module" or "module:callable", the callable called with no arguments). Never raises: a
    plug-in that fails gets its message in .error and leaves the others loaded."""
    results = []
    for source in os.environ.get(ENV, "").split(os.pathsep):
        if source.strip():
            results.append(_guarded(source.strip(), lambda s=source.strip(): _load(s, False)))
    seen = set()
    for group in GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path, or in both groups
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep.dist, "name", None)
            label = f"entry point {ep.name} = {ep.value}" + (f" (package {dist})" if dist else "")
            results.append(_guarded(label, lambda ep=ep, label=label: _load_entry_point(ep, label)))
    return results


def _guarded(source: str, action) -> Loaded:
    try:
        keys = action()
    except Exception as err:  # a broken plug-in breaks only itself
        return Loaded(source, (), str(err) if isinstance(err, PluginError) else f"plug-in {source}: {_describe(err)}")
    return Loaded(source, tuple(n for _, n in keys), None, tuple(n for kind, n in keys if kind == "model"))


def _looks_like_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text or (os.altsep or "/") in text


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _load_file(path: Path, reload: bool) -> list[tuple]:
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
        keys = _run(resolved, label, run, reload)
    except PluginError:  # the module of a failed load goes; one that loaded before stays
        if previous_module is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous_module
        raise
    _FILE_MODULES[resolved] = module_name
    return keys


def _module_name_for(stem: str, resolved: str) -> str:
    """explorer_plugin_<stem>, with a hash of the path if another file already has that name."""
    name = "explorer_plugin_" + (re.sub(r"\W", "_", stem) or "file")
    if name in sys.modules or name in _FILE_MODULES.values():
        name += "_" + hashlib.sha1(resolved.encode()).hexdigest()[:8]
    return name


def _load_module(name: str, reload: bool) -> list[tuple]:
    label = f"plug-in module {name!r}"
    key = "module:" + name
    if key not in _LOADED and not reload and name in sys.modules:
        # imported before, not by load(): what it declared is its own; never re-run a module that
        # is not known to be a plug-in (reloading an arbitrary library is not harmless)
        owned = {(kind, n): declared(spec) for kind, (registry, declared) in _registries().items()
                 for n, spec in registry.items() if spec.source == name}
        if not owned:
            raise PluginError(f"{label} {NOTHING} (it was imported before and declares nothing)")
        _LOADED[key] = owned
        return list(owned)

    def run():
        if name in sys.modules:  # loaded before and its declarations removed since, or reload=True: run it again
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)

    return _run(key, label, run, reload)


def _load_entry_point(ep, label: str) -> list[tuple]:
    if ep.attr is None:
        return _load_module(ep.module, reload=False)

    def run():
        obj = ep.load()
        if not isinstance(obj, types.ModuleType):
            if not callable(obj):
                raise PluginError(f"{label}: {ep.attr!r} is neither a module nor a callable")
            obj()

    return _run("entry-point:" + ep.value, label, run, reload=False)


def _run(key: str, label: str, action, reload: bool) -> list[tuple]:
    """Run a plug-in and return the (kind, name) of the solvers and models it registered or replaced;
    on failure the registries are left exactly as they were (a broken plug-in leaves nothing behind)."""
    with _LOCK:  # the app's sessions run in threads
        kinds = _registries()

        def current(kind, name):
            registry, declared = kinds[kind]
            return declared(registry[name]) if name in registry else None

        previous = _LOADED.get(key, {})
        if previous and not reload and all(current(k, n) is fn for (k, n), fn in previous.items()):
            return list(previous)
        snapshot = {kind: dict(registry) for kind, (registry, _) in kinds.items()}

        def restore():
            for kind, (registry, _) in kinds.items():
                registry.clear()
                registry.update(snapshot[kind])

        for (kind, n), fn in previous.items():  # its own entries from the last load make way for the new run
            if current(kind, n) is fn:
                del kinds[kind][0][n]
        before = {kind: dict(registry) for kind, (registry, _) in kinds.items()}
        try:
            action()
        except (Exception, SystemExit) as err:
            restore()
            if isinstance(err, PluginError):
                raise
            raise PluginError(f"{label} failed on import: {_describe(err)}") from err
        new = [(kind, n) for kind, (registry, _) in kinds.items()
               for n, spec in registry.items() if before[kind].get(n) is not spec]  # added, or replaced
        if not new:
            restore()
            raise PluginError(f"{label} {NOTHING}")
        _LOADED[key] = {(kind, n): current(kind, n) for kind, n in new}
        return new
