"""Each solver declares itself once (order, options with types and ranges, paper),
so that the UI builds its controls from the declaration and cannot drift from the code."""

from __future__ import annotations

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


def solver(name, *, order, reference, summary, stochastic=False, multistep=False, nfe_per_step=1, options=()):
    """Register the decorated function fn(model, x, ts, rng, record, **options) as a solver.

    order: the global order of accuracy in the step size; stochastic: True, False or a
    function of the options; nfe_per_step: model evaluations per step (None: varies);
    reference: the paper's exact title; options: the declared Options."""

    def register(fn):
        _REGISTRY[name] = SolverSpec(
            name, fn, order, stochastic, multistep, nfe_per_step, reference, summary, tuple(options)
        )
        return fn

    return register


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
    }
