"""An example plug-in: Heun's method in sigma/alpha, EDM's Heun on any schedule.

In y = x / alpha and s = sigma / alpha (= e^{-lambda}) the probability-flow ODE of every schedule
reads dy/ds = eps_hat = (y - x0_hat) / s: EDM's sigma(t) = t, s(t) = 1 (Karras et al. 2022, Sec. 3,
where it beats Heun in the VP's own time). This takes Heun steps there: second order, two model
evaluations a step (Euler's one on a last step to sigma = 0). On edm and ve (alpha = 1, sigma = t)
it is the built-in `heun`. Load it with ex.plugins.load("examples/my_solver.py") or
EXPLORER_PLUGINS=examples/my_solver.py.
"""

import explorer as ex


def heun_sigma(model, x, ts, rng, record):
    s = model.schedule
    for i in range(len(ts) - 1):
        a, a_next = float(s.alpha(ts[i])), float(s.alpha(ts[i + 1]))
        k, k_next = float(s.sigma(ts[i])) / a, float(s.sigma(ts[i + 1])) / a_next
        d = model.denoise(x, ts[i])
        y = x / a
        eps = (y - d) / k
        # Euler step.
        y_next = y + (k_next - k) * eps
        # Apply 2nd order correction (not at sigma = 0, where eps is undefined).
        if k_next > 0:
            eps_next = (y_next - model.denoise(a_next * y_next, ts[i + 1])) / k_next
            y_next = y + (k_next - k) * 0.5 * (eps + eps_next)
        x = record(i, a_next * y_next, d)


ex.solvers.register(
    "heun-sigma", heun_sigma, order=2, nfe_per_step=2,
    reference="Elucidating the Design Space of Diffusion-Based Generative Models",
    summary="Heun's method on dy/ds = eps_hat in y = x / alpha, s = sigma / alpha: EDM's Heun on any schedule.",
)
