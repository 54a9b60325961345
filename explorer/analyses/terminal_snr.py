"""Where sampling starts when the schedule's last step is not pure noise, and three fixes.

Stable Diffusion's table (scaled-linear betas 0.00085..0.012 over 1000 steps) ends at
abar_T = 0.00466: x_T = 0.068 x0 + 0.998 eps still carries 6.8% of the signal, yet samplers
start from N(0, I). For Gaussian data N(m, S) every piece is affine and the cost is exact.
In an eigendirection of S with variance s, write r_t = sqrt(alpha_t^2 s + sigma_t^2) for the
std of p_t; the probability-flow ODE keeps z = (x_t - alpha_t m) / r_t fixed along each path, so

    x_end = alpha_end m + (r_end / r_start) (x_start - alpha_start m).

From N(0, I) instead of p_T = N(alpha_T m, r_T^2) the sample's mean becomes
m (alpha_end - alpha_T r_end / r_T) (pulled toward 0, the more the larger s) and its std
r_end / r_T (shrunk by 1 / r_T). The reverse SDE keeps (x_t - alpha_t m) r_t^-2 alpha_t's
ratio instead: its mean factor is r_end^2 alpha_T / (alpha_end r_T^2) (it forgets the start faster).

The fixes, side by side (`compare_starts`):
- the exact start: draw x_T from the true p_T (the explorer can; a real model cannot);
- zero terminal SNR ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Lin et al.):
  rescale sqrt(abar) so that abar_T = 0 (first value kept), sample on "trailing" steps that start
  at T (a real model must be retrained on the new table; the exact model is right on any table);
- One More Step (mhh0318/OneMoreStep, `pipeline_oms.py`, `oms_step`): one extra DDPM posterior
  step from a zero-SNR time (abar = 0) to the grid's first time, with an x0-prediction from pure
  noise. The MSE-optimal prediction from pure noise is E[x0] (E[x0 | c] with a prompt): the noise
  carries nothing about x0. The step's coefficient on its input is sqrt(abar_t / abar_prev)
  (1 - abar_prev) / (1 - abar_t) = 0 at abar_t = 0, so it returns sqrt(abar_T) E[x0] + fresh noise:
  the start's mean becomes right (the brightness bias goes) but its spread stays (1 - abar_T) I,
  missing abar_T Cov(x0): the sample's spread stays shrunk by sqrt(1 - abar_T) / r_T.
  The official code scales that noise by the posterior variance (1 - abar_T), not its square root
  (`variance = clamp(variance) * variance_noise`); variance="oms-code" reproduces it.
"""

from __future__ import annotations

import numpy as np

from ..foundations.analytic import AnalyticModel
from ..foundations.mixture import GaussianMixture
from ..foundations.random import as_generator
from ..foundations.schedules import Discrete, Schedule
from ..solvers.sampling import sample as _sample

SD_BETA_START, SD_BETA_END, SD_STEPS = 0.00085, 0.012, 1000
SPACINGS = ("leading", "linspace", "trailing")
METHODS = ("N(0, I) start", "exact p_T start", "zero terminal SNR", "One More Step")


# The tables.


def scaled_linear_betas(beta_start: float = SD_BETA_START, beta_end: float = SD_BETA_END, T: int = SD_STEPS) -> np.ndarray:
    """Stable Diffusion's "scaled_linear" betas: linspace(sqrt(beta_start), sqrt(beta_end), T)^2."""
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start!r}, beta_end={beta_end!r}")
    if isinstance(T, bool) or not float(T).is_integer() or int(T) < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    return np.linspace(beta_start**0.5, beta_end**0.5, int(T)) ** 2


def stable_diffusion(**kwargs) -> Discrete:
    """The table of Stable Diffusion 1.x/2.x (abar_999 = 0.00466, sqrt = 0.0683) as a Discrete schedule."""
    return Discrete.from_betas(scaled_linear_betas(**kwargs))


def rescale_zero_terminal_snr(alphas_cumprod) -> np.ndarray:
    """Lin et al., Algorithm 1: sqrt(abar) shifted so that its last value is 0 and scaled so that
    its first is unchanged, sqrt(abar)' = (sqrt(abar) - sqrt(abar_T)) sqrt(abar_0) / (sqrt(abar_0) - sqrt(abar_T))."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    if abar.ndim != 1 or len(abar) < 3 or not np.all((abar > 0) & (abar < 1)) or not np.all(np.diff(abar) < 0):
        raise ValueError("alphas_cumprod must be a 1-D table of at least 3 values decreasing strictly inside (0, 1)")
    a = np.sqrt(abar)
    a0, aT = a[0], a[-1]
    rescaled = (a - aT) * (a0 / (a0 - aT))
    rescaled[-1] = 0.0
    return rescaled**2


class ZeroTerminalSNR(Schedule):
    """A table whose last entry is abar_T = 0: pure noise at t = T (lambda = -inf there).

    Times 0..T-1 are the Discrete schedule of the other entries (log abar linear between integers);
    on the last interval alpha falls linearly to 0, alpha = alpha_{T-1} (T - t), so that the start
    x_T ~ N(0, I) is the exact p_T and every time in between has an exact inverse of lambda."""

    name = "zero-terminal-snr"

    def __init__(self, alphas_cumprod):
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or len(abar) < 3 or abar[-1] != 0.0:
            raise ValueError("alphas_cumprod must be a 1-D table of at least 3 values ending in exactly 0")
        self._head = Discrete(abar[:-1])  # validates the rest: strictly decreasing inside (0, 1)
        T = float(len(abar) - 1)
        super().__init__(0.0, T, 0.0, T)
        self.alphas_cumprod = abar
        self._T = T
        self._a_last = float(np.sqrt(abar[-2]))

    def params(self):
        return {"T": len(self.alphas_cumprod), "abar_0": float(self.alphas_cumprod[0]), **super().params()}

    def __eq__(self, other):
        return type(self) is type(other) and np.array_equal(self.alphas_cumprod, other.alphas_cumprod)

    def __hash__(self):
        return hash((self.name, self.alphas_cumprod.tobytes()))

    def _tail(self, t):
        t = np.asarray(t, dtype=np.float64)
        return t, t > self._T - 1.0

    def alpha(self, t):
        t, tail = self._tail(t)
        head = self._head.alpha(np.minimum(t, self._T - 1.0))
        return np.where(tail, self._a_last * (self._T - t), head)

    def sigma(self, t):
        a = self.alpha(t)
        return np.sqrt(1.0 - a * a)

    def d_alpha(self, t):
        t, tail = self._tail(t)
        return np.where(tail, -self._a_last, self._head.d_alpha(np.minimum(t, self._T - 1.0)))

    def d_sigma(self, t):
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)

    def lambda_(self, t):
        a = self.alpha(t)
        with np.errstate(divide="ignore"):
            return np.log(a) - 0.5 * np.log1p(-a * a)

    def t_of_lambda(self, lam):
        lam = np.asarray(lam, dtype=np.float64)
        a = np.exp(-0.5 * np.logaddexp(0.0, -2.0 * lam))  # alpha of that lambda
        tail = a < self._a_last
        return np.where(tail, self._T - a / self._a_last, self._head.t_of_lambda(np.maximum(lam, self._head.lambda_(self._T - 1.0))))


def zero_snr_stable_diffusion() -> ZeroTerminalSNR:
    """Stable Diffusion's table rescaled to zero terminal SNR (Lin et al.)."""
    return ZeroTerminalSNR(rescale_zero_terminal_snr(stable_diffusion().alphas_cumprod))


def table_timesteps(n_steps: int, spacing: str = "leading", T: int = SD_STEPS, steps_offset: int = 1) -> np.ndarray:
    """n_steps + 1 decreasing table times, as diffusers' DDIM places them, ending at t = 0.

    leading: k T // n + steps_offset for k = n-1..0 (Stable Diffusion's config, offset 1: the first
    step starts at 981 for 50 steps, 901 for 10, never at T - 1); trailing: round(T - k T / n) - 1
    (starts at T - 1); linspace: n + 1 rounded points of linspace(T - 1, 0). The final step goes to
    t = 0 (the table's first entry, as with set_alpha_to_one=False)."""
    if isinstance(n_steps, bool) or not float(n_steps).is_integer() or not 1 <= int(n_steps) <= T - 1:
        raise ValueError(f"n_steps must be an integer in [1, {T - 1}], got {n_steps!r}")
    n = int(n_steps)
    if spacing == "leading":
        ts = np.arange(n)[::-1] * (T // n) + int(steps_offset)
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, n + 1))
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    ts = np.asarray(ts, dtype=np.float64)
    if ts[-1] != 0.0:
        ts = np.append(ts, 0.0)
    return ts


def brightness_target(kind: str = "gaussian", mean: float = 1.5, spread: float = 4.0, content_std: float = 0.5,
                      levels: int = 5) -> GaussianMixture:
    """2D data with a wide first coordinate ("brightness") and a narrow second one ("content").

    kind "gaussian": N((mean, 0), diag(spread^2, content_std^2)), where every cost has a closed form;
    "levels": `levels` equal modes along the brightness axis (std 0.35 each) placed so that the mixture's
    brightness has the same mean and std, a dark-to-bright set of images whose weights the start can bias."""
    for name, value in (("spread", spread), ("content_std", content_std)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(mean):
        raise ValueError(f"mean must be a finite number, got {mean!r}")
    if kind == "gaussian":
        return GaussianMixture([[mean, 0.0]], np.array([[spread**2, content_std**2]]))
    if kind == "levels":
        if isinstance(levels, bool) or not float(levels).is_integer() or int(levels) < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        k = np.arange(int(levels)) - (int(levels) - 1) / 2
        within = 0.35
        if spread <= within:
            raise ValueError(f"spread must exceed the modes' std {within} for kind='levels', got {spread!r}")
        step = np.sqrt((spread**2 - within**2) / np.mean(k * k))
        means = np.stack([mean + step * k, np.zeros_like(k)], axis=1)
        return GaussianMixture(means, np.tile([within**2, content_std**2], (len(k), 1)))
    raise ValueError(f"kind must be 'gaussian' or 'levels', got {kind!r}")


def projected_density(target: GaussianMixture, schedule: Schedule, t: float, direction, u) -> np.ndarray:
    """The exact density of e . x_t at the points u (a 1D mixture: means alpha e . mu_k,
    variances alpha^2 e^T S_k e + sigma^2)."""
    e = np.asarray(direction, dtype=np.float64)
    e = e / np.linalg.norm(e)
    a, sg = _ab(schedule, t)
    m = a * target.means @ e
    v = a * a * np.einsum("d,kde,e->k", e, target.covs, e) + sg * sg
    u = np.asarray(u, dtype=np.float64)[:, None]
    return np.sum(target.weights * np.exp(-0.5 * (u - m) ** 2 / v) / np.sqrt(2 * np.pi * v), axis=1)


# Gaussian data: the exact maps.


def _eig(cov) -> tuple[np.ndarray, np.ndarray]:
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a (D, D) matrix, got shape {cov.shape}")
    s, U = np.linalg.eigh(0.5 * (cov + cov.T))
    if np.any(s <= 0):
        raise ValueError("cov must be positive definite")
    return s, U


def _ab(schedule, t) -> tuple[float, float]:
    return float(schedule.alpha(t)), float(schedule.sigma(t))


def flow_map(mean, cov, schedule: Schedule, t_start: float, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """The probability-flow ODE of data N(mean, cov) from t_start to t_end, exactly: x_end = A x_start + b with
    A = U diag(r_end / r_start) U^T, r_t = sqrt(alpha_t^2 s + sigma_t^2) (s the eigenvalues of cov),
    b = alpha_end mean - alpha_start A mean."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s, U = _eig(cov)
    a0, s0 = _ab(schedule, t_start)
    a1, s1 = _ab(schedule, t_end)
    A = U @ np.diag(np.sqrt(a1 * a1 * s + s1 * s1) / np.sqrt(a0 * a0 * s + s0 * s0)) @ U.T
    return A, a1 * mean - a0 * A @ mean


def sde_map(mean, cov, schedule: Schedule, t_start: float, t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reverse-time SDE of data N(mean, cov) from t_start to t_end, exactly: x_end = A x_start + b + N(0, Q)
    with A = U diag(alpha_start r_end^2 / (alpha_end r_start^2)) U^T (the deviation from alpha_t mean moves as
    r_t^2 / alpha_t), b = alpha_end mean - alpha_start A mean and Q = U diag(r_end^2 - a^2 r_start^2) U^T, the
    noise that makes the exact start p_start land exactly on p_end."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s, U = _eig(cov)
    a0, s0 = _ab(schedule, t_start)
    a1, s1 = _ab(schedule, t_end)
    r0, r1 = a0 * a0 * s + s0 * s0, a1 * a1 * s + s1 * s1  # variances
    gain = a0 * r1 / (a1 * r0)
    A = U @ np.diag(gain) @ U.T
    Q = U @ np.diag(np.maximum(r1 - gain * gain * r0, 0.0)) @ U.T
    return A, a1 * mean - a0 * A @ mean, Q


def pushforward(A, b, start_mean, start_cov, noise_cov=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of A x + b (+ N(0, noise_cov)) for x ~ N(start_mean, start_cov)."""
    A = np.atleast_2d(A)
    mean = A @ np.atleast_1d(start_mean) + b
    cov = A @ np.atleast_2d(start_cov) @ A.T
    return mean, cov if noise_cov is None else cov + noise_cov


def start_moments(method: str, mean, cov, schedule: Schedule, t_start: float, oms_variance: str = "posterior"):
    """Mean and covariance of the start x_{t_start} each method draws, for data N(mean, cov):
    N(0, I); the exact p_T = N(alpha mean, alpha^2 cov + sigma^2 I); One More Step
    N(alpha mean, sigma^2 I) (or sigma^4 I with the official code's noise)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    D = len(mean)
    a, sg = _ab(schedule, t_start)
    if method == "N(0, I) start":
        return np.zeros(D), np.eye(D)
    if method == "exact p_T start":
        return a * mean, a * a * np.atleast_2d(cov) + sg * sg * np.eye(D)
    if method == "One More Step":
        std = _oms_std(sg, oms_variance)
        return a * mean, std * std * np.eye(D)
    raise ValueError(f"method must be one of {METHODS[:2] + METHODS[3:]} (zero terminal SNR starts exactly), got {method!r}")


def shrink(mean, cov, schedule: Schedule, t_start: float, t_end: float, kind: str = "ode",
           method: str = "N(0, I) start", direction=None, oms_variance: str = "posterior") -> dict:
    """What a start costs along one direction e (default: cov's top eigenvector, the "brightness"):
    the sample's mean and std along e against the exact p_end's, through the exact ODE (kind="ode")
    or SDE (kind="sde") map. Returns mean, std (of the samples along e), true_mean, true_std,
    mean_factor = mean / true_mean and std_factor = std / true_std (1 and 1: no cost)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if direction is None:
        direction = _eig(cov)[1][:, -1]
    e = np.asarray(direction, dtype=np.float64)
    e = e / np.linalg.norm(e)
    if kind == "ode":
        A, b = flow_map(mean, cov, schedule, t_start, t_end)
        Q = None
    elif kind == "sde":
        A, b, Q = sde_map(mean, cov, schedule, t_start, t_end)
    else:
        raise ValueError(f"kind must be 'ode' or 'sde', got {kind!r}")
    m0, c0 = start_moments(method, mean, cov, schedule, t_start, oms_variance)
    out_mean, out_cov = pushforward(A, b, m0, c0, Q)
    a1, s1 = _ab(schedule, t_end)
    true_mean, true_cov = a1 * mean, a1 * a1 * cov + s1 * s1 * np.eye(len(mean))
    m, tm = float(e @ out_mean), float(e @ true_mean)
    sd, tsd = float(np.sqrt(e @ out_cov @ e)), float(np.sqrt(e @ true_cov @ e))
    return dict(mean=m, std=sd, true_mean=tm, true_std=tsd, mean_factor=m / tm if tm != 0 else np.nan,
                std_factor=sd / tsd, out_mean=out_mean, out_cov=out_cov)


# The starts.


def _oms_std(sigma: float, variance: str) -> float:
    if variance == "posterior":
        return sigma
    if variance == "oms-code":  # the official oms_step multiplies the noise by the variance 1 - abar
        return sigma * sigma
    raise ValueError(f"variance must be 'posterior' or 'oms-code', got {variance!r}")


def naive_start(n: int, dim: int, rng) -> np.ndarray:
    """x_T ~ N(0, I), what every pipeline draws (init_noise_sigma = 1 on a VP table)."""
    return as_generator(rng).standard_normal((int(n), int(dim)))


def one_more_step(model, n: int, t: float, rng, variance: str = "posterior") -> np.ndarray:
    """One More Step's extra step with the MSE-optimal x0-prediction, from pure noise to time t.

    oms_step is DDPM's posterior from abar_t = 0 to abar_prev = abar(t): mean sqrt(abar_prev) x0_hat +
    0 x_pure (the input's coefficient vanishes at zero SNR), std sqrt(1 - abar_prev). From pure noise,
    the prediction minimising E||x0 - x0_hat||^2 is E[x0] (E[x0 | c] for a conditional model: pass
    the ConditionalModel). So the pure-noise draw is never used: returns alpha(t) E[x0] + std z."""
    target = getattr(model, "target", None)
    if not isinstance(target, GaussianMixture):
        raise ValueError("model must carry its target (a GaussianMixture) to give the MSE-optimal E[x0]")
    a, sg = _ab(model.schedule, t)
    z = as_generator(rng).standard_normal((int(n), target.dim))
    return a * target.mean() + _oms_std(sg, variance) * z


def compare_starts(target: GaussianMixture, n_steps: int = 50, spacing: str = "leading", solver: str = "ddim",
                   n: int = 4000, seed: int = 0, oms_variance: str = "posterior", methods=METHODS) -> list[dict]:
    """Each start on Stable Diffusion's table with the exact model, from the same seed.

    "N(0, I) start", "exact p_T start" and "One More Step" run on the table's `spacing` grid of n_steps;
    "zero terminal SNR" on the rescaled table with trailing steps from pure noise (t = T, abar = 0).
    All end at table time 0 (alpha 0.99957, sigma 0.029), where the exact marginal p_0 is known.
    One record per method: name, t_start, abar_start, traj (the run), sample, nfe, and along the
    target's top-variance direction ("brightness") mean, std, true_mean, true_std."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {METHODS}, got {unknown}")
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture, got {type(target).__name__}")
    sd = stable_diffusion()
    ts = table_timesteps(n_steps, spacing)
    e = _eig(target.covariance())[1][:, -1]
    e = e * np.sign(e @ target.mean()) if e @ target.mean() != 0 else e
    a_end, s_end = _ab(sd, 0.0)
    true_mean = a_end * float(e @ target.mean())
    true_std = float(np.sqrt(a_end**2 * e @ target.covariance() @ e + s_end**2))
    out = []
    for name in methods:
        rng = np.random.default_rng([seed, 0])  # the same noise for every method
        if name == "zero terminal SNR":
            schedule = zero_snr_stable_diffusion()
            grid = table_timesteps(n_steps, "trailing")  # starts at index T - 1 = 999, where abar = 0
            x_T = naive_start(n, target.dim, rng)
        else:
            schedule, grid = sd, ts
            model = AnalyticModel(target, sd)
            if name == "N(0, I) start":
                x_T = naive_start(n, target.dim, rng)
            elif name == "exact p_T start":
                x_T = model.prior_sample(n, rng, t=grid[0], exact=True)
            else:
                x_T = one_more_step(model, n, grid[0], rng, oms_variance)
        model = AnalyticModel(target, schedule)
        traj = _sample(model, x_T, grid, solver, rng=np.random.default_rng([seed, 1]))
        x = np.asarray(traj.x[-1])
        b = x @ e
        out.append(dict(name=name, t_start=float(grid[0]), abar_start=float(schedule.alpha(grid[0]) ** 2),
                        traj=traj, sample=x, nfe=traj.nfe, mean=float(b.mean()), std=float(b.std()),
                        true_mean=true_mean, true_std=true_std, direction=e))
    return out


def summary(rows: list[dict], target: GaussianMixture, solver: str = "ddim", seed: int = 0) -> list[dict]:
    """One flat record per start for a table: where it starts (t, sqrt(abar)), NFE (One More Step's extra
    network call counted), the brightness mean and std against the exact p_0's, the closed form where there is
    one (Gaussian data; DDIM and the deterministic solvers follow the ODE map, DDPM the SDE's), the sliced W2 to
    draws of p_0 (twice as many as the samples, 2000 to 8000), and for a mixture the total variation of its per-mode mass."""
    sd = stable_diffusion()
    from .metrics import sliced_wasserstein

    a0, s0 = _ab(sd, 0.0)
    n_ref = int(np.clip(2 * len(rows[0]["sample"]), 2000, 8000))
    p0 = a0 * target.sample(n_ref, np.random.default_rng([seed, 9]))
    p0 = p0 + s0 * np.random.default_rng([seed, 10]).standard_normal(p0.shape)
    kind = "sde" if solver == "ddpm" else "ode"
    out = []
    for r in rows:
        rec = {"start": r["name"], "t_start": r["t_start"], "sqrt_abar_start": float(np.sqrt(r["abar_start"])),
               "nfe": r["nfe"] + (1 if r["name"] == "One More Step" else 0),
               "mean": r["mean"], "true_mean": r["true_mean"], "std": r["std"], "true_std": r["true_std"]}
        if target.n_components == 1 and r["name"] != "zero terminal SNR":
            sh = shrink(target.means[0], target.covs[0], sd, r["t_start"], 0.0, kind=kind, method=r["name"],
                        direction=r["direction"])
            rec.update(closed_form_mean=sh["mean"], closed_form_std=sh["std"])
        elif r["name"] == "zero terminal SNR" or target.n_components == 1:
            rec.update(closed_form_mean=r["true_mean"], closed_form_std=r["true_std"])
        rec["w2_to_p0"] = sliced_wasserstein(r["sample"], p0, n_projections=64, rng=seed)
        if target.n_components > 1:
            from .metrics import coverage_error

            rec["mode_mass_error"] = coverage_error(r["sample"] / a0, target)
        out.append(rec)
    return out
