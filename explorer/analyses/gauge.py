"""What a learned field is ("On gauge freedom, conservativity and intrinsic dimensionality estimation in
diffusion models", Horvat & Pfister): gauge freedom, conservativity, and the dimension read off the score.

Gauge freedom. The marginals of the probability-flow ODE obey dp/dt = -div(p v). Adding to v a field u
with div(p u) = 0 changes no marginal. In 2D, u = J grad log p (J the rotation by 90 degrees) is one:
div(p J grad log p) = div(J grad p) = 0. So the score s may be replaced by s + c J s for any c:
GaugeModel runs a solver on it. Every marginal stays exactly p_t; the paths turn, and the solver's
error changes with them.

Conservativity. A true score is a gradient: its Jacobian is symmetric and its curl (2D:
d s_y/dx - d s_x/dy) vanishes. A network's output need not be. score_jacobian gives the Jacobian (closed
form for a mixture, autograd for a torch model, central differences otherwise). helmholtz splits a field on
a grid into a p-weighted gradient part and the rest, the least-squares fit of a potential with weights p:
what is left is p-orthogonal to every gradient, i.e. div(p r) = 0 in the limit, the part that (to first
order) leaves the marginals alone. For s + c J s exactly the c J s part is left: the fraction |c| / sqrt(1 + c^2).

Intrinsic dimension. For data on a d-dimensional set, at small noise the score points back to the set:
with x_t = alpha x0 + sigma eps, -sigma^2 grad s = I - (alpha^2 / sigma^2) Cov[x0 | x_t] has eigenvalues
near 1 across the set and near 0 along it, so d is the number of eigenvalues below 1/2 (the rule here; the
diffusion-ID papers read the largest gap in the spectrum, which needs D > d + 1). No official code of the
gauge paper was found; the ID estimate follows its statement that the Jacobian (or the stacked scores, as
in Stanczuk et al., GBATZOLIS/ID-diff) at small noise spans the normal space, conservative or not.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..foundations.analytic import AnalyticModel, DenoiserModel
from ..foundations.mixture import GaussianMixture

J = np.array([[0.0, -1.0], [1.0, 0.0]])  # rotation by +90 degrees


# Gauge freedom.


class GaugeModel(DenoiserModel):
    """A 2D model whose score is s + c J s: x0_hat' = x0_hat + c (sigma^2 / alpha) J s.

    Its probability-flow ODE has the same marginals as the model's (div(p J s) = 0 for s = grad log p)."""

    def __init__(self, model, c: float):
        c = float(c)
        if not math.isfinite(c):
            raise ValueError(f"c must be a finite number, got {c!r}")
        if getattr(model, "dim", 2) != 2:
            raise ValueError(f"the gauge rotation J s is defined in 2D; the model has dim {model.dim}")
        self.model, self.c = model, c
        self.schedule = model.schedule
        self.target = getattr(model, "target", None)

    @property
    def dim(self) -> int:
        return 2

    def __repr__(self) -> str:
        return f"GaugeModel(c={self.c:g}, {self.model!r})"

    def denoise(self, x, t):
        d = self.model.denoise(x, t)
        if self.c == 0.0:
            return d
        a, sg = self._coeffs(t, x)
        s = (a * d - x) / (sg * sg)
        return d + self.c * (sg * sg / a) * (s @ J.T)


def gauge_velocity(model, x, t, c: float) -> np.ndarray:
    """The added drift: the probability-flow velocity of GaugeModel(model, c) minus the model's,
    -c (g^2 / 2) J s with g^2 / 2 = sigma sigma' - (alpha' / alpha) sigma^2."""
    return GaugeModel(model, c).velocity(x, t) - model.velocity(x, t)


def gauge_runs(model, cs=(0.0, 1.5), n: int = 600, n_steps: int = 40, t_end: float | None = None, seed: int = 0,
               rtol: float = 1e-7) -> dict:
    """The exact probability-flow path (rk45) of the same n draws from the exact p_T under each gauge c,
    recorded on a uniform-lambda grid of n_steps to t_end: label "c = ..." -> Trajectory (one per distinct c)."""
    from ..foundations.timesteps import timesteps
    from ..solvers.sampling import reference

    x_T = model.prior_sample(int(n), np.random.default_rng([seed, 0]), exact=True)
    ts = timesteps(model.schedule, n_steps, t_end=t_end)
    return {f"c = {c:g}": reference(GaugeModel(model, c), x_T, ts, rtol=rtol, atol=rtol) for c in dict.fromkeys(map(float, cs))}


def gauge_errors(model, cs=(0.0, 0.25, 0.5, 1.0, 1.5), solvers=("euler", "dpmpp-2m"), n_steps: int = 20, n: int = 200,
                 t_end: float | None = None, seed: int = 0) -> list[dict]:
    """Each solver's RMS error at the end against rk45 on the same rotated ODE, from the same exact draws of p_T,
    for each gauge c: records c, solver, error."""
    from ..foundations.timesteps import timesteps
    from ..solvers.sampling import reference, sample
    from .metrics import endpoint_error

    x_T = model.prior_sample(int(n), np.random.default_rng([seed, 0]), exact=True)
    ts = timesteps(model.schedule, n_steps, t_end=t_end)
    out = []
    for c in cs:
        gm = GaugeModel(model, c)
        ref = reference(gm, x_T, ts, rtol=1e-8, atol=1e-8)  # the errors measured are >= 1e-2
        for solver in solvers:
            traj = sample(gm, x_T, ts, solver)
            err = float("inf") if traj.diverged else endpoint_error(traj.x[-1], ref.x[-1])
            out.append(dict(c=float(c), solver=solver, error=err))
    return out


def error_growth(records) -> dict:
    """How much each solver's error grows from the smallest gauge c of gauge_errors' records to the largest:
    solver -> dict(from, to, factor), for the solvers with a finite, positive error at both ends."""
    out = {}
    for solver in dict.fromkeys(r["solver"] for r in records):
        rs = sorted((r for r in records if r["solver"] == solver), key=lambda r: r["c"])
        lo, hi = rs[0]["error"], rs[-1]["error"]
        if len(rs) > 1 and np.isfinite(lo) and np.isfinite(hi) and lo > 0:
            out[solver] = {"from": float(lo), "to": float(hi), "factor": float(hi / lo)}
    return out


def coordinate_density(target: GaussianMixture, schedule, t: float, axis: int, u) -> np.ndarray:
    """The exact density of coordinate `axis` of x_t at the points u (a 1D mixture)."""
    a, sg = float(schedule.alpha(t)), float(schedule.sigma(t))
    m = a * target.means[:, axis]
    v = a * a * target.covs[:, axis, axis] + sg * sg
    u = np.asarray(u, dtype=np.float64)[:, None]
    return np.sum(target.weights * np.exp(-0.5 * (u - m) ** 2 / v) / np.sqrt(2 * np.pi * v), axis=1)


# Jacobians and curl.


def _mixture_jacobian(target: GaussianMixture, x, alpha: float, sigma: float) -> np.ndarray:
    """grad s of the noised mixture, exactly: sum_k r_k (-P_k + s_k s_k^T) - s s^T, P_k = (alpha^2 S_k + sigma^2 I)^-1."""
    D = target.dim
    P = np.linalg.inv(alpha * alpha * target.covs + sigma * sigma * np.eye(D))  # (K, D, D)
    r = target.noised(x, alpha, sigma, need=("resp",))["resp"]  # (N, K)
    sk = -np.einsum("kde,nke->nkd", P, x[:, None, :] - alpha * target.means[None])  # (N, K, D)
    s = np.einsum("nk,nkd->nd", r, sk)
    jac = -np.einsum("nk,kde->nde", r, P) + np.einsum("nk,nkd,nke->nde", r, sk, sk) - np.einsum("nd,ne->nde", s, s)
    return jac


def score_jacobian(model, x, t, method: str = "auto", h: float = 1e-4) -> np.ndarray:
    """(N, D, D) the Jacobian d s_i / d x_j of the model's score at time t.

    method "exact" (an AnalyticModel: the closed form), "autograd" (a torch model: differentiates the
    network), "fd" (central differences with step h times max(1, |x|)); "auto" picks the first that applies."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {x.shape}")
    if method == "auto":
        method = "exact" if isinstance(model, AnalyticModel) else ("autograd" if hasattr(model, "net") else "fd")
    if method == "exact":
        if not isinstance(model, AnalyticModel):
            raise ValueError("method='exact' needs an AnalyticModel")
        return _mixture_jacobian(model.target, x, float(model.schedule.alpha(t)), float(model.schedule.sigma(t)))
    if method == "autograd":
        import torch  # torch models only

        xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        with torch.enable_grad():
            s = model.score(xt, float(t))
            rows = [torch.autograd.grad(s[:, i].sum(), xt, retain_graph=i < x.shape[1] - 1)[0] for i in range(x.shape[1])]
        return torch.stack(rows, dim=1).detach().numpy().astype(np.float64)
    if method == "fd":
        step = h * np.maximum(1.0, np.abs(x).max())
        cols = []
        for j in range(x.shape[1]):
            e = np.zeros_like(x)
            e[:, j] = step
            cols.append((np.asarray(model.score(x + e, t)) - np.asarray(model.score(x - e, t))) / (2 * step))
        return np.stack(cols, axis=2)
    raise ValueError(f"method must be 'auto', 'exact', 'autograd' or 'fd', got {method!r}")


def curl(jacobian) -> np.ndarray:
    """The 2D curl d s_y / dx - d s_x / dy from Jacobians (..., 2, 2); 0 for any gradient field."""
    jac = np.asarray(jacobian)
    if jac.shape[-2:] != (2, 2):
        raise ValueError(f"curl is defined for 2D fields: Jacobians of shape (..., 2, 2), got {jac.shape}")
    return jac[..., 1, 0] - jac[..., 0, 1]


def time_of(schedule, noise: float) -> float:
    """The time at which sigma / alpha = noise (k-diffusion's sigma), on any schedule."""
    if not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive number, got {noise!r}")
    return float(schedule.t_of_lambda(-math.log(noise)))


def grid_box(target: GaussianMixture, alpha: float, sigma: float, pad: float = 2.0) -> np.ndarray:
    """(2, 2) a square box around the noised target: alpha times its extent, widened by pad sigma."""
    lo = np.min(target.means - 3.0 * target.stds()[:, None], axis=0)
    hi = np.max(target.means + 3.0 * target.stds()[:, None], axis=0)
    centre, half = 0.5 * alpha * (lo + hi), 0.5 * alpha * (hi - lo).max() + pad * sigma
    return np.stack([centre - half, centre + half], axis=1)


def field_on_grid(model, t: float, n: int = 41, box=None, target: GaussianMixture | None = None,
                  method: str = "auto") -> dict:
    """The model's score on an n x n grid at time t: x (n,), y (n,), score (n, n, 2), jacobian (n, n, 2, 2),
    curl (n, n), and log_p (n, n), the exact log p_t of the target (the model's own, or `target`), rows
    along y. Also the score at the edges' midpoints for helmholtz: edge_x (n, n - 1), edge_y (n - 1, n)."""
    target = getattr(model, "target", None) if target is None else target
    if not isinstance(target, GaussianMixture) or target.dim != 2:
        raise ValueError("field_on_grid needs a 2D GaussianMixture target (the model's or passed in)")
    if isinstance(n, bool) or not float(n).is_integer() or int(n) < 3:
        raise ValueError(f"n must be an integer >= 3, got {n!r}")
    n = int(n)
    a, sg = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
    box = grid_box(target, a, sg) if box is None else np.asarray(box, dtype=np.float64)
    xs, ys = np.linspace(box[0, 0], box[0, 1], n), np.linspace(box[1, 0], box[1, 1], n)
    X, Y = np.meshgrid(xs, ys)  # rows along y
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    score = np.asarray(model.score(pts, t), dtype=np.float64).reshape(n, n, 2)
    jac = score_jacobian(model, pts, t, method).reshape(n, n, 2, 2)
    mid_x = np.stack([0.5 * (X[:, 1:] + X[:, :-1]).ravel(), Y[:, 1:].ravel()], axis=1)
    mid_y = np.stack([X[1:, :].ravel(), 0.5 * (Y[1:, :] + Y[:-1, :]).ravel()], axis=1)
    edge_x = np.asarray(model.score(mid_x, t), dtype=np.float64)[:, 0].reshape(n, n - 1)
    edge_y = np.asarray(model.score(mid_y, t), dtype=np.float64)[:, 1].reshape(n - 1, n)
    exact = AnalyticModel(target, model.schedule)
    log_p = exact.log_prob(pts, t).reshape(n, n)
    lp_x, lp_y = exact.log_prob(mid_x, t).reshape(n, n - 1), exact.log_prob(mid_y, t).reshape(n - 1, n)
    return dict(x=xs, y=ys, t=float(t), alpha=a, sigma=sg, score=score, jacobian=jac, curl=curl(jac), log_p=log_p,
                edge_x=edge_x, edge_y=edge_y, log_p_x=lp_x, log_p_y=lp_y)


def helmholtz(field: dict, weighted: bool = True) -> dict:
    """Split the grid field into grad phi and a remainder by weighted least squares on the grid's edges:
    min_phi sum_e w_e ((phi_b - phi_a) / h_e - s_e)^2, w_e = p_t at the edge's midpoint (1 if not weighted).
    Returns phi (n, n), the remainders on the edges (rest_x, rest_y) and fraction = ||rest|| / ||s||
    in the weighted norm: 0 for a gradient (up to the grid's O(h^2)), |c| / sqrt(1 + c^2) for s + c J s."""
    from scipy.sparse import coo_matrix, diags, identity
    from scipy.sparse.linalg import spsolve

    xs, ys = field["x"], field["y"]
    n = len(xs)
    hx, hy = xs[1] - xs[0], ys[1] - ys[0]
    idx = np.arange(n * n).reshape(n, n)
    if weighted:
        top = max(field["log_p_x"].max(), field["log_p_y"].max())
        wx, wy = np.exp(field["log_p_x"] - top), np.exp(field["log_p_y"] - top)
    else:
        wx, wy = np.ones((n, n - 1)), np.ones((n - 1, n))
    a_x, b_x = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    a_y, b_y = idx[:-1, :].ravel(), idx[1:, :].ravel()
    m_x, m_y = len(a_x), len(a_y)
    rows = np.concatenate([np.arange(m_x)] * 2 + [m_x + np.arange(m_y)] * 2)
    cols = np.concatenate([b_x, a_x, b_y, a_y])
    vals = np.concatenate([np.full(m_x, 1 / hx), np.full(m_x, -1 / hx), np.full(m_y, 1 / hy), np.full(m_y, -1 / hy)])
    A = coo_matrix((vals, (rows, cols)), shape=(m_x + m_y, n * n)).tocsr()  # phi -> differences along edges
    w = np.concatenate([wx.ravel(), wy.ravel()])
    s = np.concatenate([field["edge_x"].ravel(), field["edge_y"].ravel()])
    # Normal equations A^T W A phi = A^T W s; a floor on w and a tiny ridge fix phi where p_t ~ 0 and its constant.
    W = diags(np.maximum(w, 1e-12))
    N = (A.T @ W @ A).tocsc()
    phi = spsolve(N + 1e-12 * N.diagonal().mean() * identity(n * n, format="csc"), A.T @ (W @ s))
    grad = np.concatenate([(phi[b_x] - phi[a_x]) / hx, (phi[b_y] - phi[a_y]) / hy])
    rest = s - grad
    fraction = float(np.sqrt(np.sum(w * rest * rest) / np.sum(w * s * s)))
    return dict(phi=phi.reshape(n, n), rest_x=rest[:m_x].reshape(n, n - 1), rest_y=rest[m_x:].reshape(n - 1, n),
                fraction=fraction)


def weighted_curl(field: dict) -> float:
    """sigma^2 times the p_t-weighted RMS curl on the grid (dimensionless: the score scales as 1 / sigma^2 ... 1/sigma)."""
    w = np.exp(field["log_p"] - field["log_p"].max())
    scale = (field["sigma"] / field["alpha"]) ** 2
    return float(scale * np.sqrt(np.sum(w * field["curl"] ** 2) / np.sum(w)))


def curl_near(model, t: float, point=(0.0, 0.0), radii=(1e-4, 1e-3, 1e-2, 0.1, 0.5), method: str = "auto") -> np.ndarray:
    """(len(radii),) (sigma / alpha)^2 |curl| at distance r from `point` (along the diagonal): how a field
    behaves near one point (the shipped 2D MLP's grows without bound toward x = 0)."""
    d = np.asarray(radii, dtype=np.float64)[:, None] * np.array([[1.0, 1.0]]) / math.sqrt(2.0)
    jac = score_jacobian(model, np.asarray(point, dtype=np.float64)[None] + d, t, method)
    return np.abs(curl(jac)) * (float(model.schedule.sigma(t)) / float(model.schedule.alpha(t))) ** 2


LEVELS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)  # sigma / alpha of the shipped learned-field table
# Even: no grid point at x = 0. The shipped 2D MLP has no bias in its input layer and its first block's
# LayerNorm sees only the direction of W x, so its field is singular at x = 0 (sigma^2 curl ~ 300 there).
TABLE_N = 40


def field_levels(model, levels=LEVELS, n: int = TABLE_N, target: GaussianMixture | None = None, method: str = "auto",
                 progress=None) -> dict:
    """The field at each noise level sigma / alpha in levels: per level its grid field, curl and the
    helmholtz fraction. Returns levels, t, fields (list), fraction (L,), curl_rms (L,).
    progress(i, total, text) is called before each level."""
    fields, fractions, rms = [], [], []
    for i, level in enumerate(levels):
        if progress is not None:
            progress(i, len(levels), f"σ/α = {level:g}")
        f = field_on_grid(model, time_of(model.schedule, level), n, target=target, method=method)
        fields.append(f)
        fractions.append(helmholtz(f)["fraction"])
        rms.append(weighted_curl(f))
    return dict(levels=np.asarray(levels, dtype=float), t=np.array([f["t"] for f in fields]), fields=fields,
                fraction=np.asarray(fractions), curl_rms=np.asarray(rms))


# Intrinsic dimension.


def normal_spectrum(model, x, t, method: str = "auto") -> np.ndarray:
    """(N, D) eigenvalues, ascending, of the symmetric part of -sigma^2 grad s at x: for the exact
    score I - (alpha^2 / sigma^2) Cov[x0 | x_t], in [0, 1]; near 1 across the data, near 0 along it."""
    jac = score_jacobian(model, x, t, method)
    sg = float(model.schedule.sigma(t))
    m = -sg * sg * 0.5 * (jac + np.swapaxes(jac, 1, 2))
    return np.linalg.eigvalsh(m)


def intrinsic_dimension(model, x, t, threshold: float = 0.5, method: str = "auto") -> np.ndarray:
    """(N,) the dimension of the data at each point: how many eigenvalues of -sigma^2 grad s (symmetric part)
    lie below threshold (directions along which the score does not pull back)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    return np.sum(normal_spectrum(model, x, t, method) < threshold, axis=1)


def line_target(length: float = 2.0, width: float = 1e-3, angle: float = 30.0) -> GaussianMixture:
    """Three components of known dimension in 2D: a line (std `length` along `angle` degrees, `width` across:
    dimension 1 at noise between the two), a point (std `width`: dimension 0) and a blob (std 0.6: dimension 2)."""
    for name, value in (("length", length), ("width", width)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not width < length:
        raise ValueError(f"width must be smaller than length, got width={width!r}, length={length!r}")
    th = math.radians(angle)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    line = R @ np.diag([length**2, width**2]) @ R.T
    covs = np.stack([line, width**2 * np.eye(2), 0.36 * np.eye(2)])
    return GaussianMixture([[-1.0, 2.0], [3.0, -2.0], [-2.5, -2.5]], covs, [0.5, 0.25, 0.25])


LINE_DIMENSIONS = (1, 0, 2)  # line_target's components: line, point, blob


def dimension_vs_noise(model, x0, components, noises, seed: int = 0, threshold: float = 0.5,
                       spectra: bool = False):
    """(len(noises), C) the median estimated dimension over the points x0 of each component
    (components: the component index of each point), evaluated at x_t = alpha x0 + sigma eps.
    With spectra=True also (len(noises), C, D): the median eigenvalues of -sigma^2 grad s per component."""
    rng = np.random.default_rng([seed, 3])
    comps = np.unique(components)
    out = np.empty((len(noises), len(comps)))
    spec = np.empty((len(noises), len(comps), x0.shape[1]))
    for i, level in enumerate(noises):
        t = time_of(model.schedule, level)
        a, sg = float(model.schedule.alpha(t)), float(model.schedule.sigma(t))
        xt = a * x0 + sg * rng.standard_normal(x0.shape)
        ev = normal_spectrum(model, xt, t)
        d = np.sum(ev < threshold, axis=1)
        out[i] = [np.median(d[components == c]) for c in comps]
        spec[i] = [np.median(ev[components == c], axis=0) for c in comps]
    return (out, spec) if spectra else out


# The shipped table of the learned 2D model's field (data/learned-fields-grid25.npz).

TABLE = "learned-fields-grid25.npz"


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_table(out=None, n: int = TABLE_N, levels=LEVELS, progress=None) -> Path:
    """Evaluate the shipped gmm-2d-grid25 model's field (and the exact one's summary) at LEVELS on an n x n
    grid and write it as a small .npz (float32 fields), with the weights file's sha256 to detect staleness."""
    from ..foundations.data_files import DATA_DIR
    from ..learned.registry import load_pretrained

    model = load_pretrained("gmm-2d-grid25")
    learned = field_levels(model, levels, n, progress=progress)
    exact = field_levels(AnalyticModel(model.target, model.schedule), levels, n)
    out = Path(DATA_DIR / TABLE if out is None else out)
    f = learned["fields"]
    np.savez_compressed(
        out, levels=learned["levels"], t=learned["t"], x=np.stack([g["x"] for g in f]), y=np.stack([g["y"] for g in f]),
        score=np.stack([g["score"] for g in f]).astype(np.float32), curl=np.stack([g["curl"] for g in f]).astype(np.float32),
        log_p=np.stack([g["log_p"] for g in f]).astype(np.float32), fraction=learned["fraction"],
        curl_rms=learned["curl_rms"], exact_fraction=exact["fraction"], exact_curl_rms=exact["curl_rms"],
        weights_sha256=np.array(sha256(DATA_DIR / "gmm-2d-grid25.pt")),
    )
    return out


def load_table(path=None) -> dict:
    """The shipped table (see make_table) as a dict of arrays; the fields are float32."""
    from ..foundations.data_files import DATA_DIR

    with np.load(DATA_DIR / TABLE if path is None else path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


if __name__ == "__main__":  # python -m explorer.analyses.gauge [out.npz]: remake the shipped table
    import sys

    from tqdm import tqdm

    bar = tqdm(total=len(LEVELS), desc="learned field")

    def _progress(i, total, text):
        bar.n = i
        bar.set_postfix_str(text)
        bar.refresh()

    print(make_table(sys.argv[1] if len(sys.argv) > 1 else None, progress=_progress))
    bar.close()
