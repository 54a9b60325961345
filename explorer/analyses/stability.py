"""Linear stability of the samplers, read off the solvers' own step code.

Test problems (z = h * eigenvalue, h the step in the method's own integration variable):
- "t" (euler, heun): the probability-flow ODE dx/dt = f(x, t) in the schedule's time;
  test equation dx/dt = lambda x.
- "sigma/alpha" (ddim, plms, heavy-ball on plms, ghvb, bdia): with y = x / alpha and
  s = sigma / alpha = e^{-lambda} the ODE is dy/ds = eps_hat, DDIM is Euler's method and
  PLMS / Heavy Ball / GHVB are (momentum) Adams methods in (s, y), as in the momentum paper;
  test equation dy/ds = lambda y.
- "lambda" (dpmpp-2m, dpmpp-3m, unipc, deis, dpm-solver-2/3, dpmpp-2s, heavy-ball on dpmpp-2m,
  sa-solver with tau = 0, dpmpp-2m-sde with eta = 0, and ddim seen this way):
  exponential integrators solve the linear part exactly, so y' = lambda y alone is no test.
  With y = x / alpha and lambda the half log-SNR the ODE is exactly
      dy/dlambda = -y + x0_hat,
  and the integrators treat -y exactly and extrapolate x0_hat. The test problem freezes the
  denoiser to a linear map, x0_hat = mu y (a Gaussian target N(0, v I) has mu = alpha^2 v /
  (alpha^2 v + sigma^2) in (0, 1); mixtures between modes and guidance give mu > 1), so that
  dy/dlambda = (mu - 1) y and z = h (mu - 1). The amplification then depends on the step h in
  lambda as well as on z (keyword h, default H_LAMBDA); as h -> 0 the regions tend to those of
  the underlying Adams methods (ddim: Euler's disc, dpmpp-2m: AB2's), e.g. ddim's amplification
  is 1 + z (1 - e^{-h}) / h.

How a region is derived: a fake model whose denoiser makes the drift exactly lambda x (or
x0_hat = mu y) is run through the registered solver function itself (ex.solvers.spec(name).fn)
on a grid with equal steps in its variable (schedule alpha = 1, sigma = t, so t = sigma/alpha),
with complex states, a few particles per z. During the first steps the model adds random
perturbations to its output, so that the method's history (past x, eps, velocities) is
generic; afterwards the recorded states obey a constant-coefficient linear recurrence
x_{n+1} = a_1 x_n + ... + a_p x_{n-p+1}, whose order p (the smallest that fits every run to
round-off) and coefficients are fitted from the runs. The a_j are polynomials in z (the step
code is affine in the model output, which is affine in z), recovered exactly from runs at 16
points on the unit circle. The characteristic polynomial zeta^p - a_1 zeta^{p-1} - ... - a_p
then gives regions (all roots |zeta| <= 1), spectral radii and the boundary locus for any z
without running the solver again, and cannot drift from the solver code.

Plug-in solvers (registered outside explorer.solvers, see ex.plugins) are covered the same way
when they are deterministic and their step is linear in the model output: their variable is the
first of "sigma/alpha" and "lambda" in which their runs on the test problem obey such a
recurrence (on the test problem alpha = 1, so a method in t is one in sigma/alpha; pass
variable="t" to measure a run's h in t). covered() lists them with the built-ins, not_covered()
says why the others are not.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from .. import solvers
from ..foundations.schedules import SigmaIsTime

H_LAMBDA = 0.5  # default step in lambda for the exponential integrators' test problem
TOL = 1e-9  # |zeta| <= 1 + TOL counts as stable (roots on the unit circle: z = 0 has zeta = 1)

_VARIABLES = {
    "euler": "t",
    "heun": "t",
    "ddim": "sigma/alpha",
    "plms": "sigma/alpha",
    "ghvb": "sigma/alpha",
    "bdia": "sigma/alpha",
    "heavy-ball": None,  # by its base: plms -> sigma/alpha, dpmpp-2m -> lambda
    "dpmpp-2m": "lambda",
    "dpmpp-3m": "lambda",
    "unipc": "lambda",
    "deis": "lambda",
    "dpm-solver-2": "lambda",
    "dpm-solver-3": "lambda",
    "dpmpp-2s": "lambda",
    "sa-solver": "lambda",  # with tau = 0 (no noise)
    "dpmpp-2m-sde": "lambda",  # with eta = 0 (no noise: dpmpp-2m)
}
# Covered with their default options (sa-solver and dpmpp-2m-sde need their noise turned off).
SUPPORTED = [name for name in _VARIABLES if name not in ("sa-solver", "dpmpp-2m-sde")]

_WARM = 8  # perturbed steps: enough for every warm-up and to fill every history
_WINDOW = 12  # unperturbed steps fitted (the last step is left out: some solvers treat it apart)
_MAX_ORDER = 6
_N_CIRCLE = 16  # z samples on the unit circle: recovers polynomial coefficients up to degree 15


def variable(solver: str, **options) -> str:
    """The integration variable whose step h scales the eigenvalues: "t", "sigma/alpha" or "lambda".

    ddim is Euler in sigma/alpha; variable="lambda" views it as an exponential integrator instead.
    A plug-in's variable is found from its runs (see the module docstring), or given as variable=."""
    if solver not in _VARIABLES:
        if _is_plugin(solver):
            return _plugin_variable(solver, options)
        raise ValueError(f"stability of {solver!r} is not covered; covered: {covered()}")
    chosen = options.get("variable")
    if solver == "heavy-ball":
        base = options.get("base", solvers.spec("heavy-ball").resolve({})["base"])
        own = "sigma/alpha" if base == "plms" else "lambda"
    else:
        own = _VARIABLES[solver]
    if chosen is None or chosen == own:
        return own
    if solver == "ddim" and chosen == "lambda":
        return "lambda"
    raise ValueError(f"{solver!r} has no stability view in variable {chosen!r} (its own: {own!r})")


def _is_plugin(solver: str) -> bool:
    """Registered, and not by a module of explorer.solvers (a plug-in or an adapter's solver)."""
    return solver in solvers.names() and not solvers.spec(solver).source.startswith("explorer.solvers.")


def _plugin_variable(solver: str, options: dict) -> str:
    options = dict(options)
    chosen = options.pop("variable", None)
    options.pop("h", None)
    spec = solvers.spec(solver)
    resolved = spec.resolve(options)
    if spec.draws_noise(resolved):
        raise ValueError(f"{solver!r} with these options draws noise: its linear stability is not covered")
    if chosen is not None:
        if chosen not in ("t", "sigma/alpha", "lambda"):
            raise ValueError(f"variable must be 't', 'sigma/alpha' or 'lambda', got {chosen!r}")
        return chosen
    var, why = _detected_variable(solver, spec.fn, tuple(sorted(resolved.items())))
    if var is None:
        raise ValueError(why)
    return var


@functools.lru_cache(maxsize=256)
def _detected_variable(solver: str, fn, key: tuple):
    """(variable, None), or (None, why not): the first of sigma/alpha and lambda in which the runs fit."""
    reasons = []
    for var in ("sigma/alpha", "lambda"):
        try:
            _recurrence_cached(solver, fn, key, var, H_LAMBDA if var == "lambda" else None)
            return var, None
        except Exception as err:  # the plug-in's own code may raise on the test problem
            reasons.append(f"with equal steps in {var}: {type(err).__name__}: {err}")
    return None, (
        f"stability of {solver!r} is not covered: its runs on the test problem follow no linear recurrence with "
        f"constant coefficients (is its step linear in the model output, and the same at every step?); "
        + "; ".join(reasons)
    )


def covered() -> list[str]:
    """SUPPORTED, then every registered plug-in solver whose region can be computed with its
    default options (see not_covered for the others)."""
    return list(SUPPORTED) + [name for name, why in _plugin_status().items() if why is None]


def not_covered() -> dict:
    """{plug-in solver: why its region cannot be computed with its default options}."""
    return {name: why for name, why in _plugin_status().items() if why is not None}


def _plugin_status() -> dict:
    status = {}
    for name in solvers.names():
        if _is_plugin(name):
            try:
                variable(name)
                status[name] = None
            except ValueError as err:
                status[name] = str(err)
    return status


def _split(solver: str, options: dict):
    """(solver options resolved, variable, step in lambda or None)."""
    options = dict(options)
    h = float(options.pop("h", H_LAMBDA))
    chosen = options.pop("variable", None)
    spec = solvers.spec(solver)
    resolved = spec.resolve(options)
    if spec.draws_noise(resolved):
        raise ValueError(f"{solver!r} with these options draws noise: its linear stability is not covered")
    var = variable(solver, **resolved, variable=chosen)
    if var == "lambda" and not h > 0:
        raise ValueError(f"h (the step in lambda) must be positive, got {h!r}")
    return resolved, var, (h if var == "lambda" else None)


class _LinearModel:
    """The test problem as a model: drift lambda x in the solver's variable (alpha = 1, sigma = t),
    plus random perturbations of the output while .kick is set. rate: z / h per particle."""

    def __init__(self, var: str, rate, h_lambda, rng):
        self.schedule = SigmaIsTime(1e-300, 1e300, 0.0, math.inf)
        self.var, self.rate, self.h, self.rng, self.kick = var, rate, h_lambda, rng, True

    def denoise(self, x, t):
        if self.var == "lambda":
            d = (1.0 + self.rate) * x  # x0_hat = mu y, mu - 1 = z / h
        else:
            d = x - t * self.rate * x  # eps = (x - x0_hat) / t = rate * x
        if self.kick:  # as large as the state, so that every past value is generic, not the dominant mode's
            size = 10.0 * (np.abs(x) + np.abs(d) + 1.0)
            d = d + size * (self.rng.standard_normal(x.shape) + 1j * self.rng.standard_normal(x.shape))
        return d


def _grid(var: str, n_steps: int, h_lambda) -> list[float]:
    """A grid with equal steps in the variable: t (= sigma/alpha here) from n_steps + 1 down to 1
    (h = -1), or lambda from 0 up in steps h_lambda (t = e^{-lambda})."""
    if var == "lambda":
        return [math.exp(-h_lambda * i) for i in range(n_steps + 1)]
    return [float(n_steps + 1 - i) for i in range(n_steps + 1)]


def _run(solver: str, options: dict, var: str, h_lambda, z: np.ndarray, replicas: int, seed: int = 0, fn=None):
    """Recorded states (n_steps + 1, len(z), replicas) of the solver (its function fn, by default the
    registered one) on the test problem."""
    fn = fn or solvers.spec(solver).fn
    n_steps = _WARM + _WINDOW + 1
    h = h_lambda if var == "lambda" else -1.0
    rate = np.repeat(np.asarray(z, dtype=complex)[:, None] / h, replicas, axis=1).reshape(-1, 1)
    model = _LinearModel(var, rate, h_lambda, np.random.default_rng(seed))
    xs = [np.ones_like(rate)]

    def record(i, x_next, denoised):
        xs.append(x_next)
        if i == _WARM - 1:
            model.kick = False  # from here on the method runs on the homogeneous test problem
        return x_next

    with np.errstate(all="ignore"):
        fn(model, xs[0], _grid(var, n_steps, h_lambda), None, record, **options)
    return np.stack(xs)[:, :, 0].reshape(n_steps + 1, len(z), replicas)


def _fit(x: np.ndarray, p: int):
    """Recurrence coefficients a (len(z), p) and relative residual from states (n, len(z), R)."""
    window = x[_WARM : -1]  # homogeneous steps, the last left out
    rows, targets = [], []
    for n in range(p, min(len(window), 2 * p + 3)):  # early rows: before one root dominates
        rows.append(np.stack([window[n - j] for j in range(1, p + 1)], axis=-1))  # (nz, R, p)
        targets.append(window[n])
    A = np.concatenate(rows, axis=1)  # (nz, rows, p)
    b = np.concatenate(targets, axis=1)
    scale = np.maximum(np.abs(A).max(axis=2), np.abs(b))  # row scaling against growth
    scale[scale == 0] = 1.0
    A, b = A / scale[..., None], b / scale
    a = np.stack([np.linalg.lstsq(Ai, bi, rcond=None)[0] for Ai, bi in zip(A, b)])
    residual = np.abs(np.einsum("zrp,zp->zr", A, a) - b).max()
    return a, residual


@functools.lru_cache(maxsize=256)
def _recurrence_cached(solver: str, fn, key: tuple, var: str, h_lambda):
    """fn is in the key: a solver registered again under the same name (a reloaded plug-in) is a new method."""
    options = dict(key)
    z = np.exp(2j * np.pi * np.arange(_N_CIRCLE) / _N_CIRCLE)
    x = _run(solver, options, var, h_lambda, z, replicas=_MAX_ORDER + 2, fn=fn)
    for p in range(1, _MAX_ORDER + 1):
        a, residual = _fit(x, p)
        if residual < 1e-9:
            break
    else:
        raise RuntimeError(f"{solver!r} {options}: no linear recurrence of order <= {_MAX_ORDER} fits its runs")
    coeffs = np.fft.fft(a, axis=0) / _N_CIRCLE  # (degree, p): a_j(z) = sum_d coeffs[d, j] z^d
    top = np.abs(coeffs).max()
    coeffs[np.abs(coeffs) < 1e-10 * max(1.0, top)] = 0.0
    if np.all(np.abs(coeffs.imag) < 1e-10 * max(1.0, top)):
        coeffs = coeffs.real
    degree = int(np.nonzero(np.any(coeffs != 0, axis=1))[0].max())
    coeffs = coeffs[: degree + 1]
    coeffs.setflags(write=False)
    return coeffs


def recurrence(solver: str, **options) -> np.ndarray:
    """C (degree + 1, p): the method on the test problem is x_{n+1} = sum_j a_j(z) x_{n-j},
    a_j(z) = sum_d C[d, j] z^d (j = 0..p-1), fitted from runs of the solver's own code."""
    resolved, var, h = _split(solver, options)
    return _recurrence_cached(solver, solvers.spec(solver).fn, tuple(sorted(resolved.items())), var, h)


def characteristic(solver: str, z, **options) -> np.ndarray:
    """Coefficients (..., p + 1), highest power first, of the characteristic polynomial
    zeta^p - a_1(z) zeta^{p-1} - ... - a_p(z) at each z."""
    C = recurrence(solver, **options)
    z = np.asarray(z, dtype=complex)
    powers = z[..., None] ** np.arange(C.shape[0])
    a = powers @ C  # (..., p)
    return np.concatenate([np.ones(z.shape + (1,), dtype=complex), -a], axis=-1)


def roots(solver: str, z, **options) -> np.ndarray:
    """The p roots zeta (..., p) of the characteristic polynomial at each z."""
    c = characteristic(solver, z, **options)
    p = c.shape[-1] - 1
    if p == 1:
        return -c[..., 1:]
    if p == 2:  # zeta^2 + b zeta + c: the quadratic formula, much faster than eigenvalues
        b, c0 = c[..., 1], c[..., 2]
        root = np.sqrt(b * b - 4.0 * c0)
        big = np.where(np.abs(-b + root) >= np.abs(-b - root), -b + root, -b - root) / 2.0
        small = np.divide(c0, big, out=np.zeros_like(big), where=big != 0)  # product of roots = c
        return np.stack([big, small], axis=-1)
    flat = c.reshape(-1, p + 1)
    # real coefficients (a real recurrence at real z: a run's h*lambda, the Jacobians being symmetric) take
    # LAPACK's real eigenvalue routine, about 2.5x faster than the complex one on these small matrices
    real = not np.any(flat.imag)
    companion = np.zeros((flat.shape[0], p, p), dtype=float if real else complex)
    companion[:, 0, :] = -(flat.real if real else flat)[:, 1:]
    companion[:, np.arange(1, p), np.arange(p - 1)] = 1.0
    return np.linalg.eigvals(companion).astype(complex, copy=False).reshape(c.shape[:-1] + (p,))


def spectral_radius(solver: str, z, **options) -> np.ndarray:
    """max |zeta| over the roots of the characteristic polynomial, at each z (float array)."""
    return np.abs(roots(solver, z, **options)).max(axis=-1)


def region(solver: str, z, **options) -> np.ndarray:
    """True where the method is stable on the test equation: every root has |zeta| <= 1 (+ TOL)."""
    return spectral_radius(solver, z, **options) <= 1.0 + TOL


def real_interval(solver: str, **options) -> float:
    """The left end -x of the largest [-x, 0] inside the region (-inf if it reaches -1e4)."""
    def stable(x):
        return region(solver, -np.asarray(x, dtype=float), **options)

    xs = np.concatenate([np.linspace(0.0, 10.0, 2001)[1:], np.geomspace(10.0, 1e4, 400)[1:]])
    ok = stable(xs)
    if ok.all():
        return -math.inf
    first = int(np.argmin(ok))
    lo, hi = (xs[first - 1] if first else 0.0), xs[first]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable([mid])[0] else (lo, mid)
    return -lo if lo > 0 else 0.0


def boundary(solver: str, n: int = 721, full_locus: bool = False, **options) -> np.ndarray:
    """The boundary locus: every z with a root zeta = e^{i theta}, theta in [0, 2 pi] (n values).

    Each branch of z(theta) is continued in theta; pieces are separated by NaN. Unless
    full_locus, points where another root has |zeta| > 1 (locus inside the unstable set, not
    the region's edge) are NaN too."""
    C = recurrence(solver, **options)
    degree, p = C.shape[0] - 1, C.shape[1]
    theta = np.linspace(0.0, 2.0 * np.pi, int(n))
    zeta = np.exp(1j * theta)
    # P(zeta, z) = zeta^p - sum_j a_j(z) zeta^{p-1-j} = sum_d q_d(zeta) z^d.
    q = -(zeta[:, None] ** (p - 1 - np.arange(p))) @ C.T  # (n, degree + 1)
    q[:, 0] += zeta**p
    branches = np.full((len(theta), degree), np.nan + 0j)
    for k in range(len(theta)):
        poly = q[k, ::-1]
        nz = np.nonzero(np.abs(poly) > 1e-14 * np.abs(poly).max())[0]
        r = np.roots(poly[nz[0]:]) if len(nz) else np.array([])
        r = np.concatenate([r, np.full(degree - len(r), np.nan + 0j)])
        if k and len(r) > 1:  # continue each branch: the ordering closest to the last point
            prev = branches[k - 1]
            r = min(
                (np.array(perm) for perm in itertools.permutations(r)),
                key=lambda c: np.nansum(np.abs(c - prev)),
            )
        branches[k] = r
    if not full_locus:
        flat = branches.reshape(-1)
        finite = np.isfinite(flat)
        keep = np.zeros_like(finite)
        keep[finite] = spectral_radius(solver, flat[finite], **options) <= 1.0 + 1e-6
        branches = np.where(keep.reshape(branches.shape), branches, np.nan)
    pieces = [np.concatenate([branches[:, b], [np.nan]]) for b in range(degree)]
    return np.concatenate(pieces)[:-1] if pieces else np.array([], dtype=complex)


def linear_system(solver: str, A, x0, t_end: float, n_steps: int, **options) -> np.ndarray:
    """States (n_steps + 1, D) of the solver on x' = A x, x(0) = x0, with n_steps equal steps to t_end.

    The solver runs through ex.sample (same warm-up) on a model whose drift in the solver's
    variable is A x: t (or sigma/alpha) runs backwards as 1 + t_end - t; for the exponential
    integrators lambda = t and the model's x0_hat = (I + A) x, so that dx/dlambda = -x + x0_hat = A x.
    States after a step that overflows are NaN (as in ex.sample)."""
    from ..solvers.sampling import sample

    options = dict(options)
    options.pop("h", None)
    resolved, var, _ = _split(solver, options)
    A = np.asarray(A, dtype=np.float64)
    x0 = np.asarray(x0, dtype=np.float64).reshape(1, -1)
    if A.ndim != 2 or A.shape != (x0.shape[1], x0.shape[1]):
        raise ValueError(f"A must be a square matrix matching x0 ({x0.shape[1]} dimensions), got shape {A.shape}")
    if not (t_end > 0 and int(n_steps) >= 1):
        raise ValueError(f"need t_end > 0 and n_steps >= 1, got {t_end!r}, {n_steps!r}")
    t = np.linspace(0.0, float(t_end), int(n_steps) + 1)
    model = _SystemModel(A, var)
    ts = np.exp(-t) if var == "lambda" else 1.0 + float(t_end) - t
    traj = sample(model, x0, ts, solver=solver, **resolved)
    return np.asarray(traj.x)[:, 0, :]


class _SystemModel:
    """x' = A x as a model (alpha = 1, sigma = t): x0_hat = x + t A x (backward time t), or (I + A) x in lambda."""

    def __init__(self, A, var: str):
        self.A, self.var = A, var
        self.schedule = SigmaIsTime(1e-300, 1e300, 0.0, math.inf)

    def denoise(self, x, t):
        Ax = x @ self.A.T
        return x + Ax if self.var == "lambda" else x + t * Ax


def denoise_jacobian(model, x, t: float) -> np.ndarray:
    """(N, D, D) exact Jacobian of the analytic denoiser: grad_x E[x0 | x_t = x] = (alpha / sigma^2) Cov[x0 | x_t = x].

    For a mixture, Cov[x0 | x] = sum_k r_k (C_k + m_k m_k^T) - m m^T, with r_k the posterior
    component probabilities, m_k, C_k the posterior mean and covariance given component k,
    m = sum_k r_k m_k. Classifier-free guidance combines its two models' Jacobians linearly."""
    from .guidance import CFGModel
    from ..foundations.analytic import AnalyticModel

    if isinstance(model, CFGModel):
        J = denoise_jacobian(model.cond, x, t)
        return J if model.w == 0.0 else (1.0 + model.w) * J - model.w * denoise_jacobian(model.uncond, x, t)
    if not (isinstance(model, AnalyticModel) and type(model).denoise is AnalyticModel.denoise):
        raise ValueError(f"the exact Jacobian needs an AnalyticModel (or a CFGModel of two), got {type(model).__name__}")
    gm = model.target
    x = np.asarray(x, dtype=np.float64)
    a, sg = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    r = gm.noised(x, a, sg, need=("resp",))["resp"]  # (N, K)
    lam, U = np.linalg.eigh(gm.covs)  # S_k = U diag(lam) U^T
    v = a * a * lam + sg * sg  # eigenvalues of alpha^2 S_k + sigma^2 I
    y = np.einsum("kde,nkd->nke", U, x[:, None, :] - a * gm.means[None])
    m_k = gm.means[None] + np.einsum("kde,nke->nkd", U, (a * lam / v) * y)  # E[x0 | x, k], (N, K, D)
    C_k = np.einsum("kde,ke,kfe->kdf", U, lam * sg * sg / v, U)  # Cov[x0 | x, k], (K, D, D)
    m = np.einsum("nk,nkd->nd", r, m_k)
    cov = np.einsum("nk,kde->nde", r, C_k) + np.einsum("nk,nkd,nke->nde", r, m_k, m_k) - m[:, :, None] * m[:, None, :]
    return (a / (sg * sg)) * cov


_FAMILY = {  # the variable of solvers outside SUPPORTED, for step_eigenvalues
    "ddpm": "sigma/alpha", "euler-maruyama": "t", "rk45": "t", "time-shift": "sigma/alpha",
}


def drift_jacobian(model, x, t: float, var: str) -> np.ndarray:
    """(N, D, D) Jacobian of the probability-flow drift in the variable var at (x, t):
    "t": d/dx of dx/dt = alpha' x0_hat + sigma' (x - alpha x0_hat) / sigma;
    "sigma/alpha": d/dy of dy/ds = eps_hat (y = x / alpha, s = sigma / alpha) = (alpha / sigma)(I - alpha J);
    "lambda": d/dy of dy/dlambda = -y + x0_hat (y = x / alpha) = -I + alpha J, J the denoiser's Jacobian."""
    s = model.schedule
    a, sg = float(s.alpha(t)), float(s.sigma(t))
    J = denoise_jacobian(model, x, t)
    eye = np.eye(J.shape[-1])
    if var == "t":
        da, ds = float(s.d_alpha(t)), float(s.d_sigma(t))
        return (da - ds * a / sg) * J + (ds / sg) * eye
    if var == "sigma/alpha":
        return (a / sg) * (eye - a * J)
    if var == "lambda":
        return -eye + a * J
    raise ValueError(f"variable must be 't', 'sigma/alpha' or 'lambda', got {var!r}")


def step_sizes(schedule, ts, var: str) -> np.ndarray:
    """(n_steps,) the steps h_i of the grid ts in the variable var (negative in t and sigma/alpha)."""
    ts = np.asarray(ts, dtype=np.float64)
    if var == "t":
        u = ts
    elif var == "sigma/alpha":
        u = np.asarray(schedule.sigma(ts)) / np.asarray(schedule.alpha(ts))
    elif var == "lambda":
        u = np.asarray(schedule.lambda_(ts))
    else:
        raise ValueError(f"variable must be 't', 'sigma/alpha' or 'lambda', got {var!r}")
    return np.diff(u)


def step_eigenvalues(model, traj, particles=None, var=None) -> np.ndarray:
    """(n_steps, n_particles, D) complex: h_i times the eigenvalues of the drift's Jacobian in the
    solver's variable (see drift_jacobian) at the particles x_i each step starts from.

    These are the z the method sees at step i; a multistep method is stable there (with equal
    steps) when they lie in region(solver, z). Exact for AnalyticModel mixtures and CFG on them.
    Steps after a divergence are NaN. particles: an index array, slice or mask (default all);
    var: the variable, by default the solver's own (see variable)."""
    opts = {k: v for k, v in getattr(traj, "options", {}).items() if not k.startswith("corrector_")}
    var = var or (variable(traj.solver, **opts) if traj.solver in _VARIABLES or _is_plugin(traj.solver)
                  else _FAMILY.get(traj.solver))
    if var is None:
        raise ValueError(f"no integration variable known for solver {traj.solver!r}; pass var")
    xs = np.asarray(traj.x)
    sel = slice(None) if particles is None else particles
    h = step_sizes(model.schedule, traj.t, var)
    out = []
    for i in range(traj.n_steps):
        x = xs[i][sel].reshape(-1, xs.shape[-1]) if xs.ndim == 3 else xs[i][sel]
        if not np.all(np.isfinite(x)):
            out.append(np.full(x.shape, np.nan + 0j))
            continue
        M = drift_jacobian(model, x, float(traj.t[i]), var)
        out.append(h[i] * np.sort_complex(np.linalg.eigvals(M)))
    return np.stack(out)
