"""SA-Solver: stochastic Adams predictor-corrector on the variance-controlled reverse SDE,
in data prediction.

With tau >= 0 (tau = 0: the probability-flow ODE, tau = 1: the reverse SDE) and a step
h = lambda_{i+1} - lambda_i, the SDE's variation-of-constants form is exactly
x_{i+1} = (sigma_{i+1}/sigma_i) e^{-tau^2 h} x_i
          + (1 + tau^2) sigma_{i+1} int e^{-tau^2 (lambda_{i+1} - lambda)} e^lambda x0_hat dlambda
          + sigma_{i+1} sqrt(1 - e^{-2 tau^2 h}) xi.
The predictor (Adams-Bashforth) puts the Lagrange polynomial through x0_hat at the last p grid
points into the integral; the corrector (Adams-Moulton) puts it through the evaluation at the
predicted point and the last q - 1 grid points, with the same noise xi. At tau = 0 the pair
(p, p + 1) is UniPC-p (bh1) with its corrector.
"""

from __future__ import annotations

import math

from ..foundations.random import standard_normal_like
from .common import combine, grid
from .registry import Option, solver
from .unipc import moment_weights, phi

SA_SOLVER = "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"


def adams_weights(lams, lam_start: float, h: float, c: float) -> list[float]:
    """Weights w_m with int_{lam_start}^{lam_start + h} e^{c (lambda - lam_start - h)} L(lambda) dlambda
    = sum_m w_m L(lams_m) for every polynomial L of degree < len(lams).

    With s = (lambda - lam_start)/h the moments are h k! phi_{k+1}(-c h). At two nodes phi_2(-c h) is
    replaced by its leading term 1/2, as in the authors' code: an O(h^3) change that keeps the order.
    """
    s = [(lam - lam_start) / h for lam in lams]
    moments = [h * math.factorial(k) * phi(k + 1, -c * h) for k in range(len(lams))]
    if len(lams) == 2:
        moments[1] = 0.5 * h
    return moment_weights(s, moments)


@solver(
    "sa-solver", order=lambda o: min(o["predictor_order"] + 1, o["corrector_order"]) if o["corrector_order"] else o["predictor_order"], multistep=True, reference=SA_SOLVER, stochastic=lambda o: o["tau"] > 0,
    summary=(
        "SA-Solver: stochastic Adams-Bashforth predictor and Adams-Moulton corrector (free: it reuses "
        "the next evaluation) on an SDE whose noise tau sets; tau = 0 is the ODE, where the order is "
        "min(predictor + 1, corrector) (4 with the defaults; the predictor's order without corrector)."
    ),
    options=[
        Option("tau", "float", 1.0, "stochasticity: 0 the probability-flow ODE, 1 the reverse SDE", 0.0, 3.0),
        Option("predictor_order", "int", 3, "Adams-Bashforth predictor: number of past x0_hat it interpolates", 1, 4),
        Option(
            "corrector_order", "int", 4,
            "Adams-Moulton corrector: number of points it interpolates, the new one included (0: no corrector)",
            0, 4,
        ),
    ],
)
def sa_solver(model, x, ts, rng, record, tau=1.0, predictor_order=3, corrector_order=4):
    g = grid(model.schedule, ts)
    n = len(ts) - 1
    c = 1.0 + tau * tau
    keep = max(predictor_order, corrector_order - 1)
    lams, d_hist = [], []  # past grid points' lambda and x0_hat, newest first
    d = None
    for i in range(n):
        if d is None:
            d = model.denoise(x, ts[i])
        lams.insert(0, g.lam[i])
        d_hist.insert(0, d)
        del lams[keep:], d_hist[keep:]

        h = g.lam[i + 1] - g.lam[i]
        decay = (g.sigma[i + 1] / g.sigma[i]) * math.exp(-tau * tau * h)
        gain = c * g.alpha[i + 1]  # (1 + tau^2) sigma_{i+1} e^{lambda_{i+1}}
        noise = 0.0
        if tau > 0:  # one draw per step, shared by predictor and corrector
            noise = g.sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * tau * tau * h)) * standard_normal_like(x, rng)

        # SA-Predictor: Lagrange interpolation of the last p points (fewer during warm-up).
        p = min(predictor_order, len(d_hist))
        w = adams_weights(lams[:p], g.lam[i], h, c)
        x_pred = decay * x + gain * combine(w, d_hist[:p]) + noise

        if corrector_order == 0 or i == n - 1:  # the last step is not corrected: it would cost an evaluation
            x = record(i, x_pred, d)
            d = None
            continue

        # SA-Corrector: the evaluation at the predicted point joins the interpolation.
        d_next = model.denoise(x_pred, ts[i + 1])
        q = min(corrector_order, len(d_hist) + 1)
        w = adams_weights([g.lam[i + 1]] + lams[: q - 1], g.lam[i], h, c)
        x_corr = decay * x + gain * combine(w, [d_next] + d_hist[: q - 1]) + noise
        x = record(i, x_corr, d)
        # The next predictor reuses that evaluation, unless a corrector moved the state.
        d = d_next if x is x_corr else None
