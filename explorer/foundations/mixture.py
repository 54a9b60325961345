"""Gaussian mixtures and their exact noised marginals.

If x0 ~ sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps, then
x_t ~ sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I): every quantity a sampler
needs (density, score, posterior mean E[x0 | x_t]) is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np

from .random import as_generator

_LOG_2PI = math.log(2.0 * math.pi)
# exp() of arguments below about -708 underflows through a path several times slower; at low
# noise most components sit there. e^-700 ~ 1e-304 is as good as zero against the top term's 1.
_EXP_FLOOR = -700.0


def _as_float_array(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {value!r}") from err
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr



def _exp_shifted(L: np.ndarray, log_prob: np.ndarray | None = None) -> np.ndarray:
    """Per column of the (K, n) log weights L, in place: exp(L - its max), floored at exp(_EXP_FLOOR)
    against underflow; returns the column sums, and writes log(sum) + max (log of the normaliser) into
    log_prob when given."""
    top = L.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    L -= top
    np.maximum(L, _EXP_FLOOR, out=L)
    np.exp(L, out=L)
    total = L.sum(axis=0)
    if log_prob is not None:
        with np.errstate(divide="ignore"):
            log_prob[:] = np.log(total) + top
    return total

class GaussianMixture:
    """A mixture sum_k w_k N(mu_k, S_k) in D dimensions.

    means: (K, D) (a 1-D array is read as K modes in one dimension).
    covs: (K, D, D) full, (K, D) diagonal or (K,) isotropic variances.
    weights: (K,) non-negative, normalised here; uniform by default.
    labels: optional (K,) integer class of each component.
    """

    def __init__(self, means, covs, weights=None, labels=None):
        means = _as_float_array(means, "means")
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {means.shape}")
        K, D = means.shape

        covs = _as_float_array(covs, "covs")
        if covs.shape == (K,):
            covs = covs[:, None] * np.ones((1, D))
        if covs.shape == (K, D):
            if np.any(covs <= 0):
                raise ValueError("covs: variances must be positive")
            evals, evecs, full = covs.copy(), None, np.einsum("kd,de->kde", covs, np.eye(D))
        elif covs.shape == (K, D, D):
            if not np.allclose(covs, np.swapaxes(covs, 1, 2), rtol=1e-10, atol=1e-12):
                raise ValueError("covs: covariance matrices must be symmetric")
            full = 0.5 * (covs + np.swapaxes(covs, 1, 2))
            evals, evecs = np.linalg.eigh(full)
            if np.any(evals <= 0):
                raise ValueError("covs: covariance matrices must be positive definite")
            off = full - np.einsum("kdd->kd", full)[:, :, None] * np.eye(D)
            if not np.any(off):  # axis-aligned: skip the rotations
                evals, evecs = np.einsum("kdd->kd", full).copy(), None
        else:
            raise ValueError(
                f"covs must have shape (K,), (K, D) or (K, D, D) = {(K, D, D)} "
                f"for means of shape {(K, D)}, got {covs.shape}"
            )

        if weights is None:
            weights = np.full(K, 1.0 / K)
        weights = _as_float_array(weights, "weights")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {weights.shape}")
        if np.any(weights < 0):
            raise ValueError("weights must be non-negative")
        if weights.sum() <= 0:
            raise ValueError("weights must not all be zero")

        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (K,) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"labels must be {K} integers, got {labels!r}")

        self.means = means
        self.covs = full
        self.weights = weights / weights.sum()
        self.labels = labels
        self._evals = evals  # (K, D) eigenvalues of each covariance
        self._evecs = evecs  # (K, D, D) eigenvectors as columns, or None if all diagonal
        with np.errstate(divide="ignore"):
            self._log_w = np.log(self.weights)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def diagonal(self) -> bool:
        """True when every covariance is axis-aligned."""
        return self._evecs is None

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def mean(self) -> np.ndarray:
        """Overall mean sum_k w_k mu_k."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """Overall covariance: sum_k w_k (S_k + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = np.einsum("k,kde->de", self.weights, self.covs)
        second += np.einsum("k,kd,ke->de", self.weights, self.means, self.means)
        return second - np.outer(m, m)

    def stds(self) -> np.ndarray:
        """(K,) the largest standard deviation of each component."""
        return np.sqrt(self._evals.max(axis=1))

    def sample(self, n: int, rng=None, return_components: bool = False):
        """n independent draws, (n, D); with the component index of each if asked."""
        rng = as_generator(rng)
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim)) * np.sqrt(self._evals[comp])
        if self._evecs is not None:
            z = np.einsum("nde,ne->nd", self._evecs[comp], z)
        x = self.means[comp] + z
        return (x, comp) if return_components else x

    def log_prob(self, x) -> np.ndarray:
        """log p(x) under the mixture, (N,)."""
        return self.noised(x, 1.0, 0.0)["log_prob"]

    def responsibilities(self, x) -> np.ndarray:
        """p(component k | x), (N, K)."""
        return self.noised(x, 1.0, 0.0, need=("resp",))["resp"]

    def noised(self, x, alpha, sigma, need=("log_prob", "resp", "x0")) -> dict:
        """Exact terms of the noised marginal p(x_t) at x_t = x.

        alpha, sigma: scalars, or (N,) arrays (one noise level per particle).
        Returns a dict with whichever of: "log_prob" (N,), "resp" (N, K) the
        posterior component probabilities, "x0" (N, D) the posterior mean E[x0 | x_t].
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {x.shape}")
        alpha = np.asarray(alpha, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        if alpha.ndim == 0 and sigma.ndim == 0 and (self._evecs is None or self.dim <= self._MAX_GEMM_DIM):
            return self._noised_one_level(x, float(alpha), float(sigma), need)
        if self.dim <= self._MAX_LOOP_DIM:
            return self._noised_per_particle(x, alpha, sigma, need)
        return self._noised_general(x, alpha, sigma, need)

    _CHUNK = 4096  # particles per block: keeps the (K, chunk) work arrays in cache
    _MAX_GEMM_DIM = 8  # full covariances up to this D use the quadratic-feature expansion
    _MAX_LOOP_DIM = 8  # per-particle levels up to this D: one (K, n) pass per coordinate

    def _noised_one_level(self, x, alpha, sigma, need) -> dict:
        # One noise level for all particles. With P_k = (alpha^2 S_k + sigma^2 I)^-1 the logit
        # -1/2 (x - a mu_k)^T P_k (x - a mu_k) + c_k is linear in the features [x_i x_j, x_i],
        # so every component's logit is one (K, F) @ (F, n) product; the posterior mean
        # E[x0 | x, k] = b_k + G_k x, G_k = alpha S_k P_k, is another. Work is laid out (K, n)
        # and done in cache-sized blocks of particles.
        D, lam, U = self.dim, self._evals, self._evecs
        v = alpha * alpha * lam + sigma * sigma  # (K, D) eigenvalues of the noised covariances
        am = alpha * self.means
        c = -0.5 * np.log(v).sum(axis=1) - 0.5 * D * _LOG_2PI + self._log_w
        if U is None:  # axis-aligned: features x_i^2, gains diagonal
            P_am = am / v
            W_quad = -0.5 / v
            gain = alpha * lam / v
            M = np.concatenate([self.means - alpha * gain * self.means, gain], axis=1).T  # (2D, K)
        else:
            P = np.einsum("kij,kj,klj->kil", U, 1.0 / v, U)
            G = alpha * np.einsum("kij,kj,klj->kil", U, lam / v, U)
            P_am = np.einsum("kij,kj->ki", P, am)
            iu, ju = np.triu_indices(D)
            W_quad = -0.5 * P[:, iu, ju] * np.where(iu == ju, 1.0, 2.0)
            b = self.means - alpha * np.einsum("kij,kj->ki", G, self.means)
            M = np.concatenate([b, G.reshape(-1, D * D)], axis=1).T  # (D + D^2, K)
        W = np.concatenate([W_quad, P_am], axis=1)  # (K, F)
        c = c - 0.5 * (am * P_am).sum(axis=1)
        n_quad = W_quad.shape[1]

        N = x.shape[0]
        out = {}
        if "log_prob" in need:
            out["log_prob"] = np.empty(N)
        if "resp" in need:
            out["resp"] = np.empty((N, self.n_components))
        if "x0" in need:
            out["x0"] = np.empty((N, D))
        F = np.empty((W.shape[1], min(N, self._CHUNK)))
        for lo in range(0, N, self._CHUNK):
            xT = x[lo : lo + self._CHUNK].T  # (D, n)
            n = xT.shape[1]
            f = F[:, :n]
            if U is None:
                np.multiply(xT, xT, out=f[:D])
            else:
                np.multiply(xT[iu], xT[ju], out=f[:n_quad])
            f[n_quad:] = xT
            L = W @ f
            L += c[:, None]
            total = _exp_shifted(L, out["log_prob"][lo : lo + n] if "log_prob" in out else None)
            if "resp" in out:
                out["resp"][lo : lo + n] = (L / total).T
            if "x0" in out:
                S = M @ L
                S /= total
                if U is None:
                    x0 = S[:D] + xT * S[D:]
                else:
                    x0 = S[:D] + np.einsum("ijn,jn->in", S[D:].reshape(D, D, n), xT)
                out["x0"][lo : lo + n] = x0.T
        return out

    def _noised_per_particle(self, x, alpha, sigma, need) -> dict:
        # One noise level per particle, in a few dimensions: _noised_general's arithmetic laid out
        # (D, K, n), particles last, in cache-sized blocks of particles (its (N, K, D) work arrays,
        # the few coordinates last, cost up to 10x the one-level path per particle). The same terms
        # summed in the same order; only the sums over components may round differently (~1e-16;
        # a test compares the two).
        N, D, K = x.shape[0], self.dim, self.n_components
        if alpha.shape != (N,):
            alpha = np.broadcast_to(alpha, (N,))
        if sigma.shape != (N,):
            sigma = np.broadcast_to(sigma, (N,))
        lam, U = self._evals.T[:, :, None], self._evecs  # lam (D, K, 1)
        muT = self.means.T  # (D, K)
        out = {}
        if "log_prob" in need:
            out["log_prob"] = np.empty(N)
        if "resp" in need:
            out["resp"] = np.empty((N, K))
        if "x0" in need:
            out["x0"] = np.empty((N, D))
        for lo in range(0, N, self._CHUNK):
            xT = x[lo : lo + self._CHUNK].T  # (D, n)
            a, s = alpha[lo : lo + self._CHUNK], sigma[lo : lo + self._CHUNK]
            n = xT.shape[1]
            y = xT[:, None, :] - a * muT[:, :, None]  # (D, K, n): x - a mu_k
            if U is not None:
                y = np.einsum("dkn,kde->ekn", y, U)  # into each component's eigenbasis
            v = a * a * lam + s * s  # (D, K, n) noised variances
            L = -0.5 * (y * y / v).sum(axis=0)
            L -= 0.5 * (np.log(v).sum(axis=0) + D * _LOG_2PI)
            L += self._log_w[:, None]
            total = _exp_shifted(L, out["log_prob"][lo : lo + n] if "log_prob" in out else None)
            if "resp" in out or "x0" in out:
                L /= total  # the responsibilities, (K, n)
                if "resp" in out:
                    out["resp"][lo : lo + n] = L.T
                if "x0" in out:
                    m = (a * lam / v) * y * L  # weighted posterior shifts, eigenbasis
                    if U is not None:
                        m = np.einsum("ekn,kde->dkn", m, U)
                    out["x0"][lo : lo + n] = (muT @ L + m.sum(axis=1)).T
        return out

    def _noised_general(self, x, alpha, sigma, need) -> dict:
        N = x.shape[0]
        a = np.broadcast_to(alpha, (N,)) if alpha.ndim else alpha
        s = np.broadcast_to(sigma, (N,)) if sigma.ndim else sigma
        a3 = a[:, None, None] if np.ndim(a) else a
        s3 = s[:, None, None] if np.ndim(s) else s
        y = x[:, None, :] - a3 * self.means[None]  # (N, K, D)
        if self._evecs is not None:
            y = np.einsum("nkd,kde->nke", y, self._evecs)  # into each component's eigenbasis
        v = a3 * a3 * self._evals + s3 * s3  # (K, D) or (N, K, D)
        logits = (
            -0.5 * np.sum(y * y / v, axis=-1)
            - 0.5 * (np.sum(np.log(v), axis=-1) + self.dim * _LOG_2PI)
            + self._log_w
        )

        def x0(r):
            m = (a3 * self._evals / v) * y * r[:, :, None]  # weighted posterior shifts, eigenbasis
            if self._evecs is not None:
                m = np.einsum("nke,kde->nkd", m, self._evecs)
            return r @ self.means + m.sum(axis=1)

        return self._finish(logits, need, x0)

    @staticmethod
    def _finish(logits, need, x0_fn) -> dict:
        top = np.max(logits, axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(np.maximum(logits - top, _EXP_FLOOR))
        total = e.sum(axis=1, keepdims=True)
        out = {}
        if "log_prob" in need:
            with np.errstate(divide="ignore"):
                out["log_prob"] = (np.log(total) + top)[:, 0]
        if "resp" in need or "x0" in need:
            r = e / total
            if "resp" in need:
                out["resp"] = r
            if "x0" in need:
                out["x0"] = x0_fn(r)
        return out
