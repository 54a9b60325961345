"""Each solver declares itself once (order, options with types and ranges, paper),
so that the UI builds its controls from the declaration and cannot drift from the code."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Option:
    """One solver option: its type ("float", "int", "bool" or "choice"), default, range and meaning."""

    name: str
    kind: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def validate(self, solver: str, value):
        """The value converted to the option's type, or ValueError naming solver and option."""
        where = f"solver {solver!r}, option {self.name!r}"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be True or False, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{where} must be one of {list(self.choices)}, got {value!r}")
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
        if self.kind == "int":
            if not number.is_integer():
                raise ValueError(f"{where} must be an integer, got {value!r}")
            number = int(number)
        if number != number or (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise ValueError(f"{where} must lie in [{self.low}, {self.high}], got {value!r}")
        return number

    def describe(self) -> dict:
        out = {"type": self.kind, "default": self.default, "help": self.help}
        if self.kind in ("float", "int"):
            out["range"] = (self.low, self.high)
        if self.kind == "choice":
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class SolverSpec:
    name: str
    fn: Callable
    order: int | Callable  # or a function of the resolved options (plms: its order option)
    stochastic: bool | Callable  # or a function of the resolved options (ddim: eta > 0)
    multistep: bool
    nfe_per_step: int | None
    reference: str
    summary: str
    options: tuple = field(default_factory=tuple)
    source: str = "?"  # the module that declared it: explorer.solvers.<file> for the built-ins

    def order_for(self, options: dict) -> int:
        """The global order of accuracy with these (resolved) options."""
        return int(self.order(options) if callable(self.order) else self.order)

    def draws_noise(self, options: dict) -> bool:
        """Whether a run with these (resolved) options draws random numbers."""
        return bool(self.stochastic(options) if callable(self.stochastic) else self.stochastic)

    def resolve(self, given: dict) -> dict:
        """Defaults filled in and every value checked; unknown names are refused."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            valid = sorted(known) or "none"
            raise ValueError(f"solver {self.name!r} has no option {', '.join(map(repr, unknown))}; its options: {valid}")
        return {name: opt.validate(self.name, given.get(name, opt.default)) for name, opt in known.items()}


_REGISTRY: dict[str, SolverSpec] = {}
_OPTION_KINDS = ("float", "int", "bool", "choice")


def _as_option(name, declared) -> Option:
    """An Option from an Option or from the dict info() gives: {"type", "default", "help", "range" | "choices"}."""
    if isinstance(declared, Option):
        return declared
    if not isinstance(declared, dict):
        raise ValueError(f"option {name!r} must be an Option or a dict like info()['options'] gives, got {declared!r}")
    kind = declared.get("type")
    if kind not in _OPTION_KINDS:
        raise ValueError(f"option {name!r}: 'type' must be one of {list(_OPTION_KINDS)}, got {kind!r}")
    if "default" not in declared:
        raise ValueError(f"option {name!r} needs a 'default'")
    low, high = declared.get("range", (None, None))
    option = Option(name, kind, declared["default"], str(declared.get("help", "")), low, high,
                    tuple(declared.get("choices", ())))
    option.validate("(declaration)", option.default)  # the default must be a valid value
    return option


def _declaring_module() -> str:
    """The module whose code called register() (through the @solver decorator or not): a plug-in
    that registers a built-in's function under a new name, or a functools.partial, owns it."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


def register(name, fn, *, order, reference="", summary="", stochastic=False, multistep=False, nfe_per_step=1,
             options=(), replace=False) -> str:
    """Declare fn(model, x, ts, rng, record, **options) as the solver `name`: the declaration the
    built-ins make, so the solver runs through ex.sample and appears in every page and notebook.

    fn integrates from x at ts[0] down the grid ts, evaluating model.denoise(x, t) (the
    x0-prediction; model.schedule gives alpha, sigma, lambda), and calls
    x = record(i, x_next, denoised) once per step i. order: global order in the step size (or a
    function of the resolved options); stochastic: whether it draws from rng (bool or function);
    nfe_per_step: model evaluations per step (None: varies); options: Options, or
    {name: {"type", "default", "help", "range" | "choices"}}; replace: overwrite a solver of that
    name. Returns the name."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a solver named {name!r} is already registered ({_REGISTRY[name].source}); "
                         "choose another name or pass replace=True")
    if not callable(fn):
        raise ValueError(f"solver {name!r}: fn must be callable fn(model, x, ts, rng, record, **options), got {fn!r}")
    if not callable(order) and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
        raise ValueError(f"solver {name!r}: order must be a positive integer (or a function of the options), got {order!r}")
    if nfe_per_step is not None and (isinstance(nfe_per_step, bool) or not isinstance(nfe_per_step, int)
                                     or nfe_per_step < 1):
        raise ValueError(f"solver {name!r}: nfe_per_step must be a positive integer or None, got {nfe_per_step!r}")
    if isinstance(options, dict):
        options = [_as_option(key, value) for key, value in options.items()]
    else:
        options = [_as_option(getattr(o, "name", "?"), o) for o in options]
    source = _declaring_module()
    _REGISTRY[name] = SolverSpec(name, fn, order, stochastic, bool(multistep), nfe_per_step, str(reference),
                                 str(summary), tuple(options), source)
    return name


def unregister(name: str) -> None:
    """Remove a registered solver (a plug-in's; the built-ins stay)."""
    if spec(name).source.startswith("explorer.solvers."):
        raise ValueError(f"{name!r} is a built-in solver: it cannot be unregistered")
    del _REGISTRY[name]


def solver(name, *, order, reference, summary, stochastic=False, multistep=False, nfe_per_step=1, options=()):
    """Decorator form of register(), used by the built-in solvers."""

    def decorate(fn):
        register(name, fn, order=order, reference=reference, summary=summary, stochastic=stochastic,
                 multistep=multistep, nfe_per_step=nfe_per_step, options=options)
        return fn

    return decorate


def names() -> list[str]:
    """Canonical names of every solver."""
    return list(_REGISTRY)


def spec(name: str) -> SolverSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose from {names()}") from None


def order(name: str, **options) -> int:
    """The solver's global order of accuracy with these options (defaults for the rest)."""
    s = spec(name)
    return s.order_for(s.resolve(options))


def info(name: str) -> dict:
    """order, stochastic, multistep, nfe_per_step, reference (paper title), summary and options."""
    s = spec(name)
    return {
        "name": s.name,
        "order": s.order_for(s.resolve({})),  # with the default options; see order(name, **options)
        "stochastic": s.draws_noise(s.resolve({})),  # with the default options
        "multistep": s.multistep,
        "nfe_per_step": s.nfe_per_step,
        "reference": s.reference,
        "summary": s.summary,
        "options": {o.name: o.describe() for o in s.options},
        "source": s.source,
    }
