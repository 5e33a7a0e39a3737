"""Gaussian mixtures: the prior (P1) of model (3), eq. (2) of the paper.

``GMM`` is an immutable numpy (float64) mixture used everywhere a law of Z is passed
around: simulators return it, estimators expose their fitted prior as one, and the metrics
and identifiability tools take it as input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from idvae._validation import RandomState, check_array, check_positive_int, check_random_state

__all__ = ["GMM", "LOG_2PI", "gaussian_logpdf", "log_l2_inner"]

# log(2 pi): the constant of every Gaussian log-density in idvae (numpy and torch alike)
LOG_2PI = float(np.log(2.0 * np.pi))


def gaussian_logpdf(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """Log densities of points under several Gaussians, by Cholesky factors.

    Args:
        x: array of shape (n, m).
        means: array of shape (J, m).
        covariances: array of shape (J, m, m), symmetric positive definite.

    Returns:
        Array of shape (n, J): ``log N(x_i; means_j, covariances_j)``.
    """
    chol = np.linalg.cholesky(covariances)  # (J, m, m)
    diff = x[None, :, :] - means[:, None, :]  # (J, n, m)
    # Solve L y = diff^T for every component at once.
    sol = np.linalg.solve(chol, np.swapaxes(diff, 1, 2))  # (J, m, n)
    maha = np.sum(sol**2, axis=1)  # (J, n)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)  # (J,)
    m = x.shape[1]
    return (-0.5 * (maha + log_det[:, None] + m * LOG_2PI)).T


class GMM:
    """An immutable Gaussian mixture ``sum_j weights[j] N(means[j], covariances[j])``.

    Args:
        weights: array of shape (J,), positive, summing to 1.
        means: array of shape (J, m).
        covariances: array of shape (J, m, m), each symmetric positive definite. An array
            of shape (J, m) is read as the diagonals of diagonal covariances.

    Example:
        >>> import numpy as np, idvae
        >>> p = idvae.GMM([0.5, 0.5], [[0.0], [3.0]], [[[1.0]], [[0.5]]])
        >>> q = p.pushforward([[2.0]], [1.0])  # the law of 2 Z + 1
        >>> q.means.ravel().tolist()
        [1.0, 7.0]
    """

    __slots__ = ("_weights", "_means", "_covariances")

    def __init__(self, weights: Any, means: Any, covariances: Any) -> None:
        weights = check_array(weights, "weights", ndim=1)
        means = check_array(means, "means", ndim=2)
        n_components, dim = means.shape
        covariances = (
            np.asarray(covariances, dtype=np.float64)
            if not hasattr(covariances, "detach")
            else covariances.detach().cpu().numpy().astype(np.float64)
        )
        if covariances.ndim == 2 and covariances.shape == (n_components, dim):
            covariances = check_array(covariances, "covariances", ndim=2)
            covariances = np.einsum("jk,kl->jkl", covariances, np.eye(dim))
        covariances = check_array(covariances, "covariances", ndim=3)
        if weights.shape[0] != n_components:
            raise ValueError(
                f"Expected weights of shape ({n_components},) to match means of shape "
                f"{means.shape} but got weights of shape {weights.shape}"
            )
        if covariances.shape != (n_components, dim, dim):
            raise ValueError(
                f"Expected covariances of shape ({n_components}, {dim}, {dim}) but got "
                f"{covariances.shape}"
            )
        if np.any(weights <= 0):
            raise ValueError(f"Expected positive weights but got min weight {weights.min():g}")
        if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"Expected weights summing to 1 but got sum {weights.sum():.8g}")
        if not np.allclose(covariances, np.swapaxes(covariances, 1, 2), rtol=1e-7, atol=1e-10):
            raise ValueError("Expected symmetric covariances but got a non-symmetric matrix")
        covariances = 0.5 * (covariances + np.swapaxes(covariances, 1, 2))
        eig_min = np.linalg.eigvalsh(covariances)[:, 0]
        if np.any(eig_min <= 0):
            j = int(np.argmin(eig_min))
            raise ValueError(
                "Expected positive definite covariances but component "
                f"{j} has smallest eigenvalue {eig_min[j]:.3g}"
            )
        weights = weights / weights.sum()
        # own copies: freezing the caller's arrays (check_array returns them) is a side effect
        means, covariances = means.copy(), covariances.copy()
        for arr in (weights, means, covariances):
            arr.setflags(write=False)
        self._weights, self._means, self._covariances = weights, means, covariances

    # -- read-only state ------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """Array of shape (J,): the mixing weights."""
        return self._weights

    @property
    def means(self) -> np.ndarray:
        """Array of shape (J, m): the component means."""
        return self._means

    @property
    def covariances(self) -> np.ndarray:
        """Array of shape (J, m, m): the component covariances."""
        return self._covariances

    @property
    def n_components(self) -> int:
        """J, the number of components."""
        return int(self._weights.shape[0])

    @property
    def dim(self) -> int:
        """m, the dimension of the space the mixture lives in."""
        return int(self._means.shape[1])

    def __repr__(self) -> str:
        return f"GMM(n_components={self.n_components}, dim={self.dim})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GMM):
            return NotImplemented
        return (
            self.weights.shape == other.weights.shape
            and self.dim == other.dim
            and np.array_equal(self.weights, other.weights)
            and np.array_equal(self.means, other.means)
            and np.array_equal(self.covariances, other.covariances)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- densities ------------------------------------------------------------------------
    def _check_points(self, x: Any) -> np.ndarray:
        return check_array(x, "x", ndim=2, n_features=self.dim)

    def component_logpdf(self, x: Any) -> np.ndarray:
        """Array of shape (n, J): ``log weights[j] + log N(x_i; means[j], covariances[j])``."""
        x = self._check_points(x)
        return np.log(self.weights)[None, :] + gaussian_logpdf(x, self.means, self.covariances)

    def logpdf(self, x: Any) -> np.ndarray:
        """Log density at each row of ``x`` (array of shape (n, m)); returns shape (n,)."""
        return logsumexp(self.component_logpdf(x), axis=1)

    def pdf(self, x: Any) -> np.ndarray:
        """Density at each row of ``x`` (array of shape (n, m)); returns shape (n,)."""
        return np.exp(self.logpdf(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """Posterior component probabilities, array of shape (n, J)."""
        log_joint = self.component_logpdf(x)
        return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))

    def predict(self, x: Any) -> np.ndarray:
        """The most probable component of each row, array of shape (n,)."""
        return np.argmax(self.component_logpdf(x), axis=1)

    # -- sampling and transformations -----------------------------------------------------
    def sample(
        self, n_samples: int, random_state: RandomState = None, *, return_labels: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points; array of shape (n_samples, m).

        With ``return_labels=True`` also returns the component of each point, shape (n,).
        """
        n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
        rng = check_random_state(random_state)
        labels = rng.choice(self.n_components, size=n_samples, p=self.weights)
        chol = np.linalg.cholesky(self.covariances)
        eps = rng.standard_normal((n_samples, self.dim))
        x = self.means[labels] + np.einsum("nij,nj->ni", chol[labels], eps)
        return (x, labels) if return_labels else x

    def pushforward(self, A: Any, b: Any = None) -> GMM:
        """The law of ``A Z + b`` for Z ~ self.

        Args:
            A: array of shape (p, m) with full row rank (p <= m), or a scalar.
            b: array of shape (p,), or None for zero.
        """
        A = np.asarray(A, dtype=np.float64)
        if A.ndim == 0:
            A = A * np.eye(self.dim)
        A = check_array(A, "A", ndim=2, n_features=self.dim)
        p = A.shape[0]
        b = np.zeros(p) if b is None else check_array(np.ravel(b), "b", ndim=1)
        if b.shape != (p,):
            raise ValueError(f"Expected b of shape ({p},) but got {b.shape}")
        if np.linalg.matrix_rank(A) < p:
            raise ValueError(
                f"Expected A of full row rank {p} but got rank {np.linalg.matrix_rank(A)}; "
                "the pushforward would be degenerate"
            )
        means = self.means @ A.T + b
        covs = np.einsum("ij,njk,lk->nil", A, self.covariances, A)
        return GMM(self.weights, means, covs)

    def marginal(self, dims: Sequence[int]) -> GMM:
        """The law of the coordinates ``dims`` (a sequence of distinct indices)."""
        dims = [int(d) for d in np.atleast_1d(dims)]
        if not dims or len(set(dims)) != len(dims) or min(dims) < 0 or max(dims) >= self.dim:
            raise ValueError(f"Expected distinct dims in [0, {self.dim}) but got {dims}")
        idx = np.asarray(dims)
        return GMM(self.weights, self.means[:, idx], self.covariances[:, idx][:, :, idx])

    def is_diagonal(self, atol: float = 1e-10) -> bool:
        """Whether every component covariance is diagonal up to ``atol``."""
        off = self.covariances * (1.0 - np.eye(self.dim))
        return bool(np.all(np.abs(off) <= atol))

    # -- conversions ----------------------------------------------------------------------
    @classmethod
    def from_sklearn(cls, model: Any) -> GMM:
        """Convert a fitted ``sklearn.mixture.GaussianMixture`` (any covariance_type)."""
        if not hasattr(model, "means_") or not hasattr(model, "covariance_type"):
            raise TypeError(
                f"Expected a fitted sklearn.mixture.GaussianMixture but got {type(model).__name__}"
            )
        means = np.asarray(model.means_, dtype=np.float64)
        n_components, dim = means.shape
        cov = np.asarray(model.covariances_, dtype=np.float64)
        kind = model.covariance_type
        if kind == "full":
            covs = cov
        elif kind == "tied":
            covs = np.broadcast_to(cov, (n_components, dim, dim)).copy()
        elif kind == "diag":
            covs = np.einsum("jk,kl->jkl", cov, np.eye(dim))
        elif kind == "spherical":
            covs = cov[:, None, None] * np.eye(dim)[None]
        else:
            raise ValueError(f"Expected a known covariance_type but got {kind!r}")
        return cls(model.weights_, means, covs)

    def to_dict(self) -> dict[str, list]:
        """A JSON-serialisable description (inverse of ``from_dict``)."""
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMM:
        """Build a GMM from the output of ``to_dict``."""
        try:
            return cls(data["weights"], data["means"], data["covariances"])
        except KeyError as err:
            raise ValueError(
                f"Expected a GMM description with key {err} but it is missing"
            ) from None


def log_l2_inner(p: GMM, q: GMM) -> float:
    """``log ∫ p(x) q(x) dx`` in closed form.

    Uses ``∫ N(x; μ1, Σ1) N(x; μ2, Σ2) dx = N(μ1; μ2, Σ1 + Σ2)`` (App. J.1, eq. (34)),
    summed over all pairs of components in log space.
    """
    if p.dim != q.dim:
        raise ValueError(f"Expected mixtures of equal dimension but got {p.dim} and {q.dim}")
    m = p.dim
    diff = p.means[:, None, :] - q.means[None, :, :]  # (J, K, m)
    cov = p.covariances[:, None] + q.covariances[None, :]  # (J, K, m, m)
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, diff[..., None])[..., 0]
    maha = np.sum(sol**2, axis=-1)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_n = -0.5 * (maha + log_det + m * LOG_2PI)
    log_w = np.log(p.weights)[:, None] + np.log(q.weights)[None, :]
    return float(logsumexp(log_w + log_n))
