"""DC-Solver: UniPC with dynamic compensation of its misaligned buffer (DC-Solver: Improving
Predictor-Corrector Diffusion Sampler via Dynamic Compensation, Zhao et al.; official code
wl-zhao/DC-Solver, `dc_solver.py` and diffusers' `scheduling_dcsolver_multistep.py`).

UniPC's corrector moves the state x~_i to x_i but keeps the model output evaluated at x~_i in its
buffer: the newest output is misaligned with the state it stands for. Before step i the newest
output m_i is replaced by the Lagrange interpolant through the last K + 1 outputs (K = dc_order,
2 in the paper) in the time t, evaluated at

  t* = t_{i-1} + rho_i (t_i - t_{i-1}),   m_i <- sum_k m_{i-k} prod_{j != k} (t* - t_{i-j}) / (t_{i-k} - t_{i-j}),

and the compensated value stays in the buffer (later interpolants and the next UniC read it, as
in the official code). rho_i = 1 puts t* on the node t_i, where the interpolant is m_i itself:
that step is UniPC's (and the code skips it, so rho = 1 everywhere is UniPC bit for bit). Steps
before the buffer holds K + 1 outputs are not compensated (their rho is ignored), as in the
official code. The ratios rho_i are fitted per step against a reference path and predicted
for other NFE by a cascade polynomial regression: explorer.analyses.solver_search.
"""

from __future__ import annotations

from .common import combine, grid
from .registry import Option, solver
from .unipc import unip

DC_SOLVER = "DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic Compensation"
RHO_RANGE = (0.0, 2.0)


class RhoOption(Option):
    """rho: one number for every step, or one per step (a sequence or comma-separated text)."""

    def validate(self, solver: str, value):
        if isinstance(value, str) and "," in value:
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1):
            if len(value) == 0:
                raise ValueError(f"solver {solver!r}, option 'rho' got an empty list")
            return tuple(Option.validate(self, solver, v) for v in value)
        return Option.validate(self, solver, value)


def lagrange_weights(nodes, t: float) -> list[float]:
    """w_k = prod_{j != k} (t - nodes_j) / (nodes_k - nodes_j): the interpolant through (nodes_k, m_k)
    at t is sum_k w_k m_k."""
    out = []
    for k, tk in enumerate(nodes):
        w = 1.0
        for j, tj in enumerate(nodes):
            if j != k:
                w *= (t - tj) / (tk - tj)
        out.append(w)
    return out


def per_step(rho, n: int) -> list[float]:
    """rho as one ratio per step."""
    if isinstance(rho, tuple):
        if len(rho) != n:
            raise ValueError(f"rho has {len(rho)} values but the grid has {n} steps: give one per step (or one number)")
        return [float(r) for r in rho]
    return [float(rho)] * n


@solver(
    "dc-solver", order=lambda o: o["order"] + int(o["corrector"]), multistep=True, reference=DC_SOLVER,
    summary=(
        "UniPC whose newest buffered model output (evaluated before the corrector moved the state) is "
        "replaced by a Lagrange interpolant in t at t* = t_{i-1} + rho (t_i - t_{i-1}); rho = 1 is UniPC."
    ),
    options=[
        Option("order", "int", 3, "order p of the predictor UniP (warm-up with lower orders)", 1, 3),
        Option("variant", "choice", "bh1", "B(h): bh1 = h, bh2 = e^h - 1 (as UniPC)", choices=("bh1", "bh2")),
        Option("corrector", "bool", True, "apply UniC after every step but the last"),
        RhoOption("rho", "float", 1.0, "compensation ratio: t* = t_{i-1} + rho (t_i - t_{i-1}); 1 is UniPC; "
                  "one number for every step or one per step", *RHO_RANGE),
        Option("dc_order", "int", 2, "degree K of the Lagrange interpolant (through the last K + 1 outputs)", 1, 3),
    ],
)
def dc_solver(model, x, ts, rng, record, order=3, variant="bh1", corrector=True, rho=1.0, dc_order=2):
    g = grid(model.schedule, ts)
    n = len(ts) - 1
    rhos = per_step(rho, n)
    keep = max(order, dc_order + 1)
    lams, times, d_hist = [], [], []  # the buffer, newest first
    d = None
    for i in range(n):
        if d is None:
            d = model.denoise(x, ts[i])
        lams.insert(0, g.lam[i])
        times.insert(0, g.t[i])
        d_hist.insert(0, d)
        del lams[keep:], times[keep:], d_hist[keep:]

        # Dynamic compensation of the newest output (once the buffer holds K + 1 of them).
        if len(d_hist) > dc_order and rhos[i] != 1.0:
            t_star = times[1] + rhos[i] * (times[0] - times[1])
            d = combine(lagrange_weights(times[: dc_order + 1], t_star), d_hist[: dc_order + 1])
            d_hist[0] = d

        # UniPC's step on the (compensated) buffer.
        p = min(order, len(d_hist))
        x_pred, unic = unip(g, i, x, lams[:p], d_hist[:p], variant)

        if not corrector or i == n - 1:
            x = record(i, x_pred, d)
            d = None
            continue

        d_next = model.denoise(x_pred, ts[i + 1])
        x_corr = unic(d_next)
        x = record(i, x_corr, d)
        d = d_next if x is x_corr else None
