"""The stochastic-interpolant SDE family dX = [v - eps(t) s] dt + sqrt(2 eps(t)) dW_bar with a
chosen diffusion coefficient (see explorer/interpolants.py for the time direction and eps*)."""

from __future__ import annotations

from .. import interpolants
from .registry import Option, solver

SI = "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions"


@solver(
    "interpolant-sde", order=1, reference=SI,
    stochastic=lambda o: o["diffusion"] != "zero" and o["scale"] > 0,
    summary="The interpolant SDE family with diffusion eps(t): zero (the ODE), constant, or scale x the "
            "statistically optimal eps* = -sigma^2 lambda' (= g^2/2); Euler-Maruyama in t, or the exact "
            "linear-part (exponential) step for eps = scale eps*. Starts from a point-mass base.",
    options=[
        Option("diffusion", "choice", "optimal", "eps(t): zero (probability-flow ODE), constant, or optimal",
               choices=interpolants.DIFFUSIONS),
        Option("scale", "float", 1.0, "eps = scale (constant) or scale x eps* (optimal)", 0.0, 100.0),
        Option("method", "choice", "euler-maruyama", "Euler-Maruyama in t, or the exponential step (eps = scale eps*)",
               choices=("euler-maruyama", "exponential")),
    ],
)
def interpolant_sde(model, x, ts, rng, record, diffusion="optimal", scale=1.0, method="euler-maruyama"):
    s = model.schedule
    c = None
    if method == "exponential":
        if diffusion == "constant":
            raise ValueError("solver 'interpolant-sde': method 'exponential' needs diffusion 'optimal' or 'zero'")
        c = 0.0 if diffusion == "zero" else float(scale)
    interpolants.integrate(
        model, x, ts, rng, record, lambda t: float(interpolants.diffusion_coefficient(s, t, diffusion, scale)),
        method, c,
    )
