"""Light Schrodinger Bridge (Korotin, Gushchin and Burnaev, "Light Schrodinger Bridge", ICLR 2024; code
ngushchin/LightSB, src/light_sb.py), written here from the paper's formulas.

The Schrodinger bridge between p0 and p1 with a Wiener reference of variance epsilon (dX = sqrt(epsilon) dW
on tau in [0, 1]) has the static plan pi(x0, x1) = p0(x0) exp(<x0, x1> / epsilon) v(x1) / c(x0). LightSB takes
the adjusted potential v to be a Gaussian mixture,

    v(x1) = sum_k alpha_k N(x1; r_k, epsilon S_k),
    c(x0) = sum_k alpha_k exp((x0^T S_k x0 + 2 r_k^T x0) / (2 epsilon)),

so the conditional plan is the mixture pi(x1 | x0) = sum_k w_k(x0) N(r_k + S_k x0, epsilon S_k), w_k proportional to
alpha_k exp((x0^T S_k x0 + 2 r_k^T x0) / (2 epsilon)): one exact draw maps noise to data (one "step"). The
potentials are fitted by minimising the paper's objective E_{p0} log c(x0) - E_{p1} log v(x1) (the KL to the
true plan up to a constant) on samples. The bridge's sample paths are Brownian bridges of variance epsilon
between x0 and x1; its SDE drift is (E[x1 | x_tau] - x) / (1 - tau), with x1 | x_tau again a Gaussian mixture:
precision A_k = tau / (epsilon (1 - tau)) I + (epsilon S_k)^-1, mean A_k^-1 (x / (epsilon (1 - tau)) + (epsilon S_k)^-1 r_k).

Parameterisation (ours, not the official geotorch rotation): S_k = L_k L_k^T with L_k lower-triangular and a
positive (exponentiated) diagonal; log alpha_k = raw_k / epsilon as in the official code (it keeps the weights'
learning rate comparable across epsilon). With one potential the family holds the Gaussian-to-Gaussian
bridge exactly: x1 | x0 ~ N(S x0 + r, epsilon S) has the marginal N(mu1, Sigma1) when S Sigma0 S + epsilon S = Sigma1,
solved by gaussian_solution in closed form.
"""

from __future__ import annotations

import math

import numpy as np

from ..foundations.random import as_generator
from ..foundations.trajectory import Trajectory


def _sqrtm(M):
    vals, vecs = np.linalg.eigh(0.5 * (M + M.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def gaussian_solution(mu0, cov0, mu1, cov1, epsilon: float):
    """The Schrodinger bridge between N(mu0, cov0) and N(mu1, cov1) as LightSB's one potential: (S, r) with
    x1 | x0 ~ N(S x0 + r, epsilon S). S = cov0^{-1/2} [(B + epsilon^2/4 I)^{1/2} - epsilon/2 I] cov0^{-1/2},
    B = cov0^{1/2} cov1 cov0^{1/2} (the positive root of S cov0 S + epsilon S = cov1), r = mu1 - S mu0."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    mu0, mu1 = np.asarray(mu0, dtype=np.float64), np.asarray(mu1, dtype=np.float64)
    cov0, cov1 = np.asarray(cov0, dtype=np.float64), np.asarray(cov1, dtype=np.float64)
    D = len(mu0)
    root0 = _sqrtm(cov0)
    inv_root0 = np.linalg.inv(root0)
    B = root0 @ cov1 @ root0
    M = _sqrtm(B + 0.25 * epsilon ** 2 * np.eye(D)) - 0.5 * epsilon * np.eye(D)
    S = inv_root0 @ M @ inv_root0
    S = 0.5 * (S + S.T)
    return S, mu1 - S @ mu0


class LightSB:
    """Fitted Gaussian-mixture potentials (alpha_k, r_k, S_k) of a Light Schrodinger bridge: numpy arrays
    log_alpha (K,), r (K, D), S (K, D, D), and epsilon. Made by fit (or by hand, e.g. from gaussian_solution)."""

    def __init__(self, log_alpha, r, S, epsilon: float, losses=None):
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.log_alpha = np.asarray(log_alpha, dtype=np.float64)
        self.r = np.asarray(r, dtype=np.float64)
        self.S = np.asarray(S, dtype=np.float64)
        K, D = self.r.shape
        if self.log_alpha.shape != (K,) or self.S.shape != (K, D, D):
            raise ValueError(f"log_alpha, r and S must have shapes (K,), (K, D), (K, D, D); got "
                             f"{self.log_alpha.shape}, {self.r.shape}, {self.S.shape}")
        self.epsilon = float(epsilon)
        self.losses = [] if losses is None else list(losses)

    @property
    def dim(self) -> int:
        return self.r.shape[1]

    def conditional(self, x0):
        """pi(x1 | x0) for every x0: weights (N, K), means r_k + S_k x0 (N, K, D), covariances epsilon S_k (K, D, D)."""
        x0 = np.asarray(x0, dtype=np.float64)
        Sx = np.einsum("kij,nj->nki", self.S, x0)
        logits = self.log_alpha + (np.einsum("nki,ni->nk", Sx, x0) + 2 * x0 @ self.r.T) / (2 * self.epsilon)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        return w / w.sum(axis=1, keepdims=True), self.r[None] + Sx, self.epsilon * self.S

    def posterior(self, x, tau: float):
        """x1 | x_tau = x under the bridge: weights (N, K), means (N, K, D), covariances (K, D, D) (tau < 1)."""
        x = np.asarray(x, dtype=np.float64)
        eps, D = self.epsilon, self.dim
        S_inv = np.linalg.inv(self.S)
        A = tau / (eps * (1 - tau)) * np.eye(D) + S_inv / eps  # (K, D, D) precisions
        A_inv = np.linalg.inv(A)
        c = x[:, None, :] / (eps * (1 - tau)) + (np.einsum("kij,kj->ki", S_inv, self.r) / eps)[None]
        means = np.einsum("kij,nkj->nki", A_inv, c)
        logits = (self.log_alpha - 0.5 * np.linalg.slogdet(self.S)[1] - 0.5 * np.linalg.slogdet(A)[1]
                  - 0.5 * np.einsum("ki,kij,kj->k", self.r, S_inv, self.r) / eps)[None] \
            + 0.5 * np.einsum("nki,nki->nk", c, means)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        return w / w.sum(axis=1, keepdims=True), means, A_inv

    def sample(self, x0, rng) -> np.ndarray:
        """One exact draw x1 ~ pi(x1 | x0) for every x0."""
        return _draw_mixture(*self.conditional(x0), as_generator(rng))

    def drift(self, x, tau: float) -> np.ndarray:
        """The bridge SDE's drift (E[x1 | x_tau] - x) / (1 - tau)."""
        w, means, _ = self.posterior(x, tau)
        return (np.einsum("nk,nki->ni", w, means) - np.asarray(x)) / (1 - tau)


def _draw_mixture(w, means, covs, rng) -> np.ndarray:
    N, K, D = means.shape
    u = rng.random(N)
    comp = np.minimum((np.cumsum(w, axis=1) < u[:, None]).sum(axis=1), K - 1)
    L = np.linalg.cholesky(covs + 1e-300 * np.eye(D))
    return means[np.arange(N), comp] + np.einsum("nij,nj->ni", L[comp], rng.standard_normal((N, D)))


def fit(x0, x1, epsilon: float, n_potentials: int = 16, steps: int = 1500, batch: int = 512, lr: float = 1e-2,
        seed=0, optimizer: str = "adam", progress=None) -> LightSB:
    """Fit LightSB's potentials on samples x0 ~ p0 and x1 ~ p1 by minimising the paper's objective
    E log c(x0) - E log v(x1) (r_k initialised at samples of x1, S_k at 0.1 I, as the official code does).

    optimizer "adam": the paper's training, Adam on minibatches of `batch` drawn from the samples for `steps`
    steps at rate lr. "lbfgs": L-BFGS on the full-sample objective (deterministic; our choice where the exact
    minimiser of the empirical objective is wanted, e.g. to check against a closed form); `steps` bounds its
    iterations. progress: a callable(step, steps, loss) or True for a tqdm bar."""
    import torch

    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    if x0.ndim != 2 or x1.ndim != 2 or x0.shape[1] != x1.shape[1]:
        raise ValueError(f"x0 and x1 must be (N, D) arrays of one dimension, got {x0.shape} and {x1.shape}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    if int(n_potentials) < 1 or int(steps) < 1 or int(batch) < 1:
        raise ValueError(f"n_potentials, steps and batch must be positive, got {n_potentials}, {steps}, {batch}")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    K, D, eps = int(n_potentials), x0.shape[1], float(epsilon)
    rng = as_generator(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    dt = torch.float64
    raw_alpha = torch.zeros(K, dtype=dt, requires_grad=True)
    r = torch.tensor(x1[rng.choice(len(x1), K, replace=len(x1) < K)], dtype=dt, requires_grad=True)
    log_diag = torch.full((K, D), math.log(0.1), dtype=dt, requires_grad=True)
    lower = torch.zeros((K, D, D), dtype=dt, requires_grad=True)
    mask = torch.tril(torch.ones(D, D, dtype=dt), diagonal=-1)
    X0, X1 = torch.tensor(x0, dtype=dt), torch.tensor(x1, dtype=dt)
    params = [raw_alpha, r, log_diag, lower]

    def cholesky_factor():
        return lower * mask + torch.diag_embed(torch.exp(0.5 * log_diag))

    def objective(b0, b1):
        L = cholesky_factor()
        log_alpha = raw_alpha / eps
        # log c(x0) = logsumexp_k [log alpha_k + (x0^T S_k x0 + 2 r_k^T x0) / (2 eps)],  S_k = L_k L_k^T
        Lx = torch.einsum("kji,nj->nki", L, b0)
        log_c = torch.logsumexp(log_alpha + ((Lx * Lx).sum(-1) + 2 * b0 @ r.T) / (2 * eps), dim=1)
        # log v(x1) = logsumexp_k [log alpha_k + log N(x1; r_k, eps S_k)]
        sol = torch.einsum("kij,nkj->nki", torch.linalg.inv(L), b1[:, None, :] - r[None])
        log_det = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1) + D * math.log(eps)
        log_v = torch.logsumexp(log_alpha - 0.5 * (sol * sol).sum(-1) / eps - 0.5 * log_det
                                - 0.5 * D * math.log(2 * math.pi), dim=1)
        return log_c.mean() - log_v.mean()

    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps), desc=f"LightSB fit ({optimizer})")
    losses = []

    def report(loss):
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(len(losses), int(steps), losses[-1])

    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(int(steps)):
            idx0 = torch.randint(len(X0), (int(batch),), generator=gen)
            idx1 = torch.randint(len(X1), (int(batch),), generator=gen)
            loss = objective(X0[idx0], X1[idx1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            report(loss)
    else:
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=int(steps), tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective(X0, X1)
            loss.backward()
            report(loss)
            return loss

        opt.step(closure)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        L = cholesky_factor()
        return LightSB((raw_alpha / eps).numpy().copy(), r.detach().numpy().copy(),
                       (L @ L.transpose(1, 2)).numpy(), eps, losses)


def bridge_paths(sb: LightSB, x0, n_steps: int, rng, exact: bool = True) -> Trajectory:
    """Sample paths of the bridge from x0 on tau = 0, 1/n, ..., 1, recorded as a Trajectory in the explorer's
    time t = 1 - tau (t = 1 at the source, t = 0 at the target; schedule None).

    exact=True: x1 ~ pi(x1 | x0) drawn at once (the model's one evaluation, nfe = 1), then the Brownian bridge
    x_{tau'} | x_tau, x1 ~ N(x_tau + (tau'-tau)/(1-tau) (x1 - x_tau), epsilon (tau'-tau)(1-tau')/(1-tau) I), exact in law.
    exact=False: Euler-Maruyama on the bridge SDE dx = drift dtau + sqrt(epsilon) dW (the official sampler;
    nfe = n_steps drift evaluations); its last step lands at tau = 1. denoised: E[x1 | x_tau] at each step."""
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    rng = as_generator(rng)
    n = int(n_steps)
    taus = np.linspace(0.0, 1.0, n + 1)
    x = np.asarray(x0, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != sb.dim:
        raise ValueError(f"x0 must be an (N, {sb.dim}) array, got shape {x.shape}")
    eps = sb.epsilon
    xs, ds = [x], []
    x1 = sb.sample(x, rng) if exact else None
    for i in range(n):
        tau, nxt = taus[i], taus[i + 1]
        w, means, _ = sb.posterior(x, tau)
        ds.append(np.einsum("nk,nki->ni", w, means))
        h = nxt - tau
        if exact:
            var = eps * h * (1 - nxt) / (1 - tau)
            x = x + h / (1 - tau) * (x1 - x) + math.sqrt(var) * rng.standard_normal(x.shape)
        else:
            x = x + h * (ds[-1] - x) / (1 - tau) + math.sqrt(eps * h) * rng.standard_normal(x.shape)
        xs.append(x)
    return Trajectory(t=1.0 - taus, x=np.stack(xs), denoised=np.stack(ds), nfe=1 if exact else n,
                      solver="lightsb" if exact else "lightsb-em", options={"epsilon": eps, "exact": exact})
