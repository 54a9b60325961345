"""USF: one solver that runs any *solver schedule*, a decision per step (A Unified Sampling Framework
for Solver Searching of Diffusion Probabilistic Models, Liu et al.; official code thu-nics/USF,
`uni_sampler/uni_sampler.py`).

Every step is the exponential integrator expanded in lambda from a start point s to the target t,
h = lambda_t - lambda_s, truncated after order p:

  data prediction   x_t = (sigma_t/sigma_s) x_s + alpha_t [h phi_1(-h) x0_s + sum_{j<p} h^{j+1} phi_{j+1}(-h) x0^(j)]
  noise prediction  x_t = (alpha_t/alpha_s) x_s - sigma_t [h phi_1(h) eps_s + sum_{j<p} h^{j+1} phi_{j+1}(h) eps^(j)]

with phi_{j+1}(z) = int_0^1 e^{(1-u) z} u^j / j! du, and the lambda-derivatives x0^(j) estimated
from earlier model outputs by solving the Taylor system sum_j (lambda_k - lambda_s)^j / j! a_j =
m_k - m_s over a set of points k (the "difference" estimate of the paper). A step's decisions:

  prediction   d (data, x0_hat) or n (noise, eps_hat), both read from the same model evaluations
  order p      1-4 (1 is DDIM)
  .points      how many earlier outputs estimate the first derivative (default p - 1; the higher
               derivatives use p - 1)
  @start       expand from the state `start` grid points back (1, the current state: multistep;
               2 or more: singlestep-like, as DPM-Solver-2 on a grid with its midpoints)
  /relax       the first-derivative term h^2 phi_2(z) a_1 replaced by: bh1 -> h^2/2 a_1 (UniPC's
               B(h) = h), bh2 -> h^2 phi_1(z)/2 a_1 (B(h) = e^h - 1: DPM-Solver(++)-2M's form),
               l<c> -> (1 + c h) h^2 phi_2(z) a_1 (the paper's searched linear relaxation)
  +c, +i       a corrector: the model is evaluated at the predicted state, which joins the history
               as the newest point, and the step is redone from the same start with order p + 1
               (its first derivative on points + 1 points, the new one included). +c (pseudo, UniC):
               the next step reuses that evaluation (free, except after the last step); +i
               (implicit): the corrected state is evaluated again (one more model call).
  +c/bh1, +c/bh2  the corrector's own first-derivative relaxation (UniC-1's rho = 1/2).

A schedule is one token per step, comma-separated: DPM-Solver++(2M) is `d1, d2/bh2, d2/bh2, ...`;
UniPC-3 (bh1, with UniC) is `d1+c/bh1, d2/bh1+c, d3+c, ..., d3`. `preset(name, n)` writes the
named ones. The official code's DPM-Solver-v3 prediction (needs precomputed model statistics),
analytic first step and U-Net skip coefficients are left out: they are not solver decisions on a
denoiser we can query. Points whose model output is used as noise are converted with the state
at which the model was evaluated (a pseudo-corrected state was not), as the official code does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from .common import combine, grid
from .registry import Option, solver
from .unipc import phi

USF = "A Unified Sampling Framework for Solver Searching of Diffusion Probabilistic Models"

PREDICTIONS = ("d", "n")
RELAXATIONS = ("taylor", "bh1", "bh2", "linear")
CORRECTORS = ("none", "pseudo", "implicit")
MAX_ORDER = 4


@dataclass(frozen=True)
class Step:
    """One step's decisions (see the module docstring)."""

    prediction: str = "d"
    order: int = 1
    points: int | None = None  # None: order - 1
    start: int = 1
    relax: str = "taylor"
    coef: float = 0.0  # the linear relaxation's c (relax == "linear")
    corrector: str = "none"
    corrector_relax: str = "taylor"

    @property
    def first_points(self) -> int:
        return self.order - 1 if self.points is None else self.points

    def token(self) -> str:
        """The step as text, e.g. 'd2/bh2', 'n3.1@2/l0.05+c'."""
        out = f"{self.prediction}{self.order}"
        if self.points is not None and self.points != self.order - 1:
            out += f".{self.points}"
        if self.start != 1:
            out += f"@{self.start}"
        if self.relax == "linear":
            out += f"/l{self.coef:.6g}"
        elif self.relax != "taylor":
            out += f"/{self.relax}"
        if self.corrector != "none":
            out += "+c" if self.corrector == "pseudo" else "+i"
            if self.corrector_relax != "taylor":
                out += f"/{self.corrector_relax}"
        return out


_TOKEN = re.compile(
    r"^(?P<pred>[dn])(?P<order>\d+)(?:\.(?P<points>\d+))?(?:@(?P<start>\d+))?"
    r"(?:/(?P<relax>bh1|bh2|l[-+0-9.eE]+))?(?:\+(?P<corr>[ci])(?:/(?P<crelax>bh1|bh2))?)?$"
)


def parse_step(text: str) -> Step:
    """A Step from its token (see Step.token); ValueError saying what is wrong."""
    m = _TOKEN.match(text.strip())
    if m is None:
        raise ValueError(
            f"{text.strip()!r} is not a step: write <d|n><order>[.<points>][@<start>][/bh1|/bh2|/l<c>][+c|+i[/bh1|/bh2]], "
            "e.g. 'd2/bh2' or 'd3+c'"
        )
    relax, coef = m["relax"] or "taylor", 0.0
    if relax.startswith("l"):
        try:
            coef = float(relax[1:])
        except ValueError:
            raise ValueError(f"{text.strip()!r}: the linear relaxation's coefficient {relax[1:]!r} is not a number") from None
        relax = "linear"
    step = Step(
        prediction=m["pred"], order=int(m["order"]), points=None if m["points"] is None else int(m["points"]),
        start=1 if m["start"] is None else int(m["start"]), relax=relax, coef=coef,
        corrector={None: "none", "c": "pseudo", "i": "implicit"}[m["corr"]], corrector_relax=m["crelax"] or "taylor",
    )
    return check_step(step)


def check_step(step: Step) -> Step:
    """step in canonical form (a linear relaxation's c to 6 significant digits, as its token writes it,
    and with c = 0 Taylor's; points = order - 1 is the default), if its decisions are consistent on
    their own (the history it needs is checked by check)."""
    if step.prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be 'd' (data) or 'n' (noise), got {step.prediction!r}")
    if isinstance(step.order, bool) or not isinstance(step.order, (int, np.integer)) or not 1 <= step.order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in [1, {MAX_ORDER}], got {step.order!r}")
    if step.points is not None and (step.order == 1 or not 1 <= step.points <= step.order - 1):
        raise ValueError(f"points (first-derivative estimate) must lie in [1, order - 1 = {step.order - 1}], "
                         f"got {step.points}")
    if isinstance(step.start, bool) or not isinstance(step.start, (int, np.integer)) or step.start < 1:
        raise ValueError(f"start must be a positive integer (1: the current state), got {step.start!r}")
    if step.relax not in RELAXATIONS:
        raise ValueError(f"relax must be one of {list(RELAXATIONS)}, got {step.relax!r}")
    if step.relax != "taylor" and step.order == 1:
        raise ValueError(f"relax {step.relax!r} needs a derivative term: order must be at least 2")
    if not math.isfinite(step.coef) or (step.relax != "linear" and step.coef != 0.0):
        raise ValueError(f"coef (linear relaxation) must be finite and only set with relax='linear', got {step.coef!r}")
    if step.corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {list(CORRECTORS)}, got {step.corrector!r}")
    if step.corrector_relax not in ("taylor", "bh1", "bh2"):
        raise ValueError(f"corrector_relax must be 'taylor', 'bh1' or 'bh2', got {step.corrector_relax!r}")
    if step.corrector_relax != "taylor" and step.corrector == "none":
        raise ValueError("corrector_relax needs a corrector")
    if step.relax == "linear":
        step = replace(step, coef=float(f"{step.coef:.6g}"))  # what its token says, exactly
    if step.relax == "linear" and step.coef == 0.0:
        step = replace(step, relax="taylor")  # 1 + 0 h: the Taylor coefficient itself
    if step.points == step.order - 1:
        step = replace(step, points=None)
    return step


def parse(schedule) -> tuple[Step, ...]:
    """A schedule as Steps: a comma-separated string of tokens, or a sequence of Steps, tokens or
    dicts of Step fields. ValueError naming the step that is wrong."""
    if isinstance(schedule, str):
        items = [part for part in schedule.replace(";", ",").split(",") if part.strip()]
    elif isinstance(schedule, (list, tuple)):
        items = list(schedule)
    else:
        raise ValueError(f"a schedule is a string of comma-separated steps or a list of steps, got {type(schedule).__name__}")
    if not items:
        raise ValueError("the schedule has no steps")
    steps = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, Step):
                steps.append(check_step(item))
            elif isinstance(item, str):
                steps.append(parse_step(item))
            elif isinstance(item, dict):
                steps.append(check_step(Step(**item)))
            else:
                raise ValueError(f"expected a Step, a token or a dict, got {type(item).__name__}")
        except (TypeError, ValueError) as err:
            raise ValueError(f"step {i}: {err}") from None
    return tuple(steps)


def check(steps) -> tuple[Step, ...]:
    """steps (parsed), if every step finds the history it needs: at step i the history holds the
    i + 1 grid points reached so far, so start <= i + 1 and order <= i + 1 (p - 1 earlier points
    besides the start)."""
    steps = parse(steps) if not (isinstance(steps, tuple) and all(isinstance(s, Step) for s in steps)) else steps
    for i, step in enumerate(steps):
        if step.start > i + 1:
            raise ValueError(f"step {i} ({step.token()}): start {step.start} needs {step.start} points, only {i + 1} exist")
        if step.order > i + 1:
            raise ValueError(f"step {i} ({step.token()}): order {step.order} needs {step.order} points, only {i + 1} exist")
    return steps


def to_text(steps) -> str:
    """The schedule as its canonical text, e.g. 'd1, d2/bh2, d2/bh2'."""
    return ", ".join(s.token() for s in parse(steps))


def nfe(steps) -> int:
    """Model evaluations a run of this schedule spends: one per grid point but the last, one per
    implicit corrector before the last step, and one at the end if the last step is corrected (its
    implicit evaluation would serve no later step, so it is not made)."""
    steps = parse(steps)
    return len(steps) + sum(s.corrector == "implicit" for s in steps[:-1]) + int(steps[-1].corrector != "none")


def effective_order(steps) -> int:
    """The lowest order (predictor + 1 with a corrector) of the steps after the first three (the
    warm-up): the global order the schedule can reach."""
    steps = parse(steps)
    tail = steps[3:] or steps
    return max(1, min(s.order + int(s.corrector != "none") for s in tail))


# Named schedules: the native solvers as decisions (their tests reproduce them to round-off).


def dpmpp(n: int, order: int = 2, prediction: str = "d") -> tuple[Step, ...]:
    """DPM-Solver++ multistep (prediction 'd') or DPM-Solver multistep ('n') of the given order:
    warm-up from order 1; order 2 in the 2M form (bh2), order 3 Taylor."""
    out = []
    for i in range(n):
        p = min(order, i + 1)
        out.append(Step(prediction, p, relax="bh2" if p == 2 else "taylor"))
    return tuple(out)


def unipc(n: int, order: int = 3, variant: str = "bh1", corrector: bool = True, prediction: str = "d") -> tuple[Step, ...]:
    """UniPC-p: UniP of order p (warm-up from 1; p = 2 with rho = 1/2, i.e. the B(h) relaxation),
    UniC after every step but the last (order p + 1; UniC-1 with rho = 1/2)."""
    out = []
    for i in range(n):
        p = min(order, i + 1)
        corr = corrector and i < n - 1
        out.append(Step(prediction, p, relax=variant if p == 2 else "taylor", corrector="pseudo" if corr else "none",
                        corrector_relax=variant if corr and p == 1 else "taylor"))
    return tuple(out)


PRESETS = {
    "dpmpp-2m": lambda n: dpmpp(n, 2),
    "dpmpp-3m": lambda n: dpmpp(n, 3),
    "ddim": lambda n: dpmpp(n, 1),
    "unipc-1": lambda n: unipc(n, 1),
    "unipc-2": lambda n: unipc(n, 2),
    "unipc-3": lambda n: unipc(n, 3),
    "dpm-solver-2m": lambda n: dpmpp(n, 2, prediction="n"),
}


def preset(name: str, n: int) -> tuple[Step, ...]:
    """The named schedule for n steps."""
    if name not in PRESETS:
        raise ValueError(f"unknown schedule preset {name!r}; choose from {list(PRESETS)}")
    return PRESETS[name](int(n))


def resolve(schedule, n: int) -> tuple[Step, ...]:
    """The Steps a `schedule` option stands for on a grid of n steps, checked (ValueError naming the option)."""
    try:
        steps = preset(schedule, n) if isinstance(schedule, str) and schedule in PRESETS else parse(schedule)
        if len(steps) != n:
            raise ValueError(f"schedule has {len(steps)} steps but the grid has {n}: give one decision per step")
        return check(steps)
    except ValueError as err:
        raise ValueError(f"solver 'usf', option 'schedule': {err}") from None


class ScheduleOption(Option):
    """The `schedule` option: a preset name (the choices a page offers) or any schedule, stored as
    its canonical text."""

    def validate(self, solver: str, value):
        if isinstance(value, str) and value in PRESETS:
            return value
        try:
            return to_text(value)
        except ValueError as err:
            raise ValueError(f"solver {solver!r}, option 'schedule': {err}") from None


# The update.


def _point_order(s: int, n_points: int, available: int) -> list[int]:
    """History indices (0 newest) that estimate a derivative for a step from index s: the points
    newer than the start first (nearest first), then the older ones (the official code's 'single'
    rule), n_points of them."""
    prefer = list(range(s - 1, -1, -1)) + list(range(s + 1, available))
    return prefer[:n_points]


def _derivative_weights(lams, lam_s, derivative: int) -> list[float]:
    """Weights w_k with a_derivative = sum_k w_k (m_k - m_s): the row of the inverse Taylor system
    sum_j (lambda_k - lambda_s)^j / j! a_j = m_k - m_s, j = 1..K, K = len(lams)."""
    dh = np.asarray(lams, dtype=np.float64) - lam_s
    K = len(dh)
    taylor = np.stack([dh ** j / math.factorial(j) for j in range(1, K + 1)], axis=1)  # (point k, derivative j)
    return np.linalg.inv(taylor)[derivative - 1].tolist()


def _relaxed(relax: str, coef: float, h: float, z: float) -> float:
    """The coefficient of the first derivative, h^2 phi_2(z) unless relaxed."""
    if relax == "bh1":
        return 0.5 * h * h
    if relax == "bh2":
        return 0.5 * h * h * phi(1, z)
    scale = 1.0 + coef * h if relax == "linear" else 1.0
    return scale * h * h * phi(2, z)


def _update(hist, target, prediction, order, s, sets, relax, coef):
    """x at `target` by the exponential integrator of `order` from hist[s]; sets[j - 1]: the history
    indices estimating derivative j. hist: newest first, entries (t, lam, alpha, sigma, x, x_eval, d)."""
    t1, lam1, a1, s1 = target
    start = hist[s]
    h = lam1 - start.lam
    if prediction == "d":
        z = -h
        base = [s1 / start.sigma, -a1 * math.expm1(-h)]  # (sigma_t/sigma_s) x_s + alpha_t h phi_1(-h) x0_s
        m = lambda k: hist[k].d  # noqa: E731
        sign, scale = 1.0, a1
    else:
        z = h
        base = [a1 / start.alpha, -s1 * math.expm1(h)]  # (alpha_t/alpha_s) x_s - sigma_t h phi_1(h) eps_s
        m = lambda k: hist[k].eps  # noqa: E731
        sign, scale = -1.0, s1
    coefficients, arrays = base, [start.x, m(s)]
    m_s = m(s)
    for j in range(1, order):
        c = _relaxed(relax, coef, h, z) if j == 1 else h ** (j + 1) * phi(j + 1, z)
        points = sets[j - 1]
        w = _derivative_weights([hist[k].lam for k in points], start.lam, j)
        for k, wk in zip(points, w):
            coefficients.append(sign * scale * c * wk)
            arrays.append(m(k) - m_s)
    return combine(coefficients, arrays)


class _Point:
    """A grid point in the history: time, lambda, alpha, sigma, the state x, the state the model
    was evaluated at (x_eval: differs from x after a pseudo-corrector), and x0_hat there."""

    __slots__ = ("t", "lam", "alpha", "sigma", "x", "x_eval", "d", "_eps")

    def __init__(self, t, lam, alpha, sigma, x, x_eval, d):
        self.t, self.lam, self.alpha, self.sigma = t, lam, alpha, sigma
        self.x, self.x_eval, self.d, self._eps = x, x_eval, d, None

    @property
    def eps(self):
        if self._eps is None:
            self._eps = (self.x_eval - self.alpha * self.d) / self.sigma
        return self._eps


def _sets(step: Step, s: int, available: int) -> list[list[int]]:
    """The predictor's derivative point sets: the first derivative on `points`, the others on order - 1."""
    return [_point_order(s, step.first_points if j == 1 else step.order - 1, available) for j in range(1, step.order)]


@solver(
    "usf", order=lambda o: effective_order(preset(o["schedule"], 8) if o["schedule"] in PRESETS else o["schedule"]),
    multistep=True, nfe_per_step=None, reference=USF,
    summary=(
        "A solver schedule: one decision per step (data or noise prediction, Taylor order 1-4, how many points "
        "estimate the derivative, start point, relaxation, corrector), run as the exponential integrator in "
        "lambda; presets reproduce DPM-Solver++(2M/3M) and UniPC to round-off."
    ),
    options=[
        ScheduleOption(
            "schedule", "choice", "dpmpp-2m",
            "the decision per step: a preset, or comma-separated tokens like 'd1, d2/bh2, d3+c' "
            "(<d|n><order>[.<points>][@<start>][/bh1|/bh2|/l<c>][+c|+i[/bh1|/bh2]])",
            choices=tuple(PRESETS),
        ),
    ],
)
def usf(model, x, ts, rng, record, schedule="dpmpp-2m"):
    n = len(ts) - 1
    steps = resolve(schedule, n)
    g = grid(model.schedule, ts)
    # The deepest history any step reads: its start, its points, and one more for a corrector.
    depth = max(s.start + s.order + 1 for s in steps)
    hist = []  # _Point, newest first
    d, x_eval = None, x
    for i, step in enumerate(steps):
        if d is None:
            d, x_eval = model.denoise(x, ts[i]), x
        hist.insert(0, _Point(g.t[i], g.lam[i], g.alpha[i], g.sigma[i], x, x_eval, d))
        del hist[depth:]
        target = (g.t[i + 1], g.lam[i + 1], g.alpha[i + 1], g.sigma[i + 1])

        # Predictor: order p from the start point.
        s = step.start - 1
        x_next = _update(hist, target, step.prediction, step.order, s, _sets(step, s, len(hist)), step.relax, step.coef)
        d_next = None
        if step.corrector != "none":
            # Corrector: the evaluation at the predicted state joins as the newest point (index 0);
            # redo the step from the same start with order p + 1, each derivative also on the new point.
            d_next = model.denoise(x_next, ts[i + 1])
            new = _Point(*target, x_next, x_next, d_next)
            sets = [[0] + [k + 1 for k in pts] for pts in _sets(step, s, len(hist))]
            sets.append(sets[-1] if sets else [0])  # the new top derivative: on the same points
            x_next = _update([new] + hist, target, step.prediction, step.order + 1, s + 1, sets,
                             step.corrector_relax, 0.0)
            x_eval = new.x_eval
            if step.corrector == "implicit" and i < n - 1:
                d_next, x_eval = model.denoise(x_next, ts[i + 1]), x_next
        x_rec = record(i, x_next, d)
        if x_rec is not x_next:  # a corrector of ex.sample moved the state: evaluate afresh
            d_next = None
        x, d = x_rec, d_next
