"""Exact likelihood of the 1-D toy models of App. J.3.1 and the maximum-likelihood experiment.

The toy model is model (1) with m = n = 1:

    Z ~ sum_j lambda_j N(mu_j, s_j^2)                       (P1), eq. (2)
    X = f(Z) + eps,   eps ~ N(0, sigma^2)
    f(z) = sum_i alpha_i ReLU(beta_i z + pi_i)             (two neurons in the paper)

``f`` is piecewise affine with at most H + 1 pieces (kinks at z = -pi_i / beta_i). On a
piece f(z) = a z + c, so the density of X is a finite sum of Gaussian-times-Gaussian
integrals over intervals, each a normal-CDF expression (complete the square in z):

    N(z; mu, s^2) N(x; a z + c, sigma^2)
        = N(x; a mu + c, sigma^2 + a^2 s^2) N(z; m(x), v),
    v = s^2 sigma^2 / (sigma^2 + a^2 s^2)
    m(x) = (mu sigma^2 + a s^2 (x - c)) / (sigma^2 + a^2 s^2)

and the z-integral over [l, u] is Phi((u - m)/sqrt v) - Phi((l - m)/sqrt v). Everything is
evaluated in log space, vectorised over x and over a leading batch axis of parameter sets.

On top of the density: the population negative log-likelihood (cross-entropy from a true
model, by trapezoidal quadrature on a uniform lattice, spectrally accurate here because the
densities are Gaussian convolutions), an exhaustive ``grid_search`` as in App. J.3.1,
``equivalent`` (equality up to the model's symmetries, Sec. 2 Definition 2.1) and the
experiment itself, ``mle_study`` (Fig. 1: "is the truth the unique global minimiser?").
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import log_ndtr

from idvae._validation import (
    RandomState,
    atomic_write,
    check_array,
    check_positive_int,
    check_random_state,
)

__all__ = [
    "Grid",
    "GridSearchResult",
    "MLEStudy",
    "ToyModel",
    "canonical_form",
    "default_grid",
    "density_distance",
    "disagreement_mass",
    "equivalent",
    "grid_search",
    "injectivity",
    "mle_study",
    "paper_grid",
    "plot_profiles",
    "population_nll",
    "profile_nll",
    "quadrature_nodes",
    "quick_grid",
    "sample_nll",
    "simplex_grid",
    "total_variation",
]

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_FLOOR = -1e30  # stands in for log(0) so that 0 * log p stays 0 in quadrature sums
# total variation below which two closed-form densities are equal to float64 rounding
# (equivalent models measure <= 1e-16; distinct ones on the paper grid >= 1.5e-11)
_TV_FLOOR = 1e-13


# ---------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------
def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate on both sides of -log 2 (Maechler, 2012)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def _log_ndtr_diff(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log(Phi(hi) - Phi(lo)) for lo <= hi; -inf where the interval is empty.

    The difference is taken in the tail where it does not cancel: when the interval's centre
    is positive, Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi) is used instead.
    """
    with np.errstate(invalid="ignore"):
        flip = (lo + hi) > 0  # inf - inf gives nan -> False, the whole line needs no flip
    a = np.where(flip, -hi, lo)
    b = np.where(flip, -lo, hi)
    log_b = log_ndtr(b)
    with np.errstate(invalid="ignore"):
        out = log_b + _log1mexp(log_ndtr(a) - log_b)
    return np.where(hi > lo, out, -np.inf)


def _pieces(
    alpha: np.ndarray, beta: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The affine pieces of f(z) = sum_i alpha_i ReLU(beta_i z + pi_i).

    Args:
        alpha, beta, bias: arrays of shape (B, H).

    Returns:
        lower, upper, slope, intercept: arrays of shape (B, H + 1). On [lower, upper] the
        decoder is slope * z + intercept. Missing kinks (beta_i = 0) give empty pieces.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = np.where(beta != 0, -bias / np.where(beta != 0, beta, 1.0), -np.inf)
    kinks = np.sort(kinks, axis=-1)
    n_batch = kinks.shape[0]
    edges = np.concatenate(
        [np.full((n_batch, 1), -np.inf), kinks, np.full((n_batch, 1), np.inf)], axis=-1
    )
    lower, upper = edges[:, :-1], edges[:, 1:]  # (B, P)
    own_kink = np.where(beta != 0, -bias / np.where(beta != 0, beta, 1.0), 0.0)[:, :, None]
    b = beta[:, :, None]
    # neuron i is active on a piece iff beta_i z + pi_i >= 0 there; kinks are piece edges,
    # so comparing the edges with the neuron's own kink is exact.
    active = np.where(
        b > 0,
        lower[:, None, :] >= own_kink,
        np.where(b < 0, upper[:, None, :] <= own_kink, (bias > 0)[:, :, None]),
    )  # (B, H, P)
    slope = np.sum(np.where(active, (alpha * beta)[:, :, None], 0.0), axis=1)
    intercept = np.sum(np.where(active, (alpha * bias)[:, :, None], 0.0), axis=1)
    return lower, upper, slope, intercept


def _component_logpdf(
    x: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray,
    pieces: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    noise_std: np.ndarray,
) -> np.ndarray:
    """log p(x | component j) in closed form, for a batch of models.

    Args:
        x: array of shape (N,) or (B, N).
        means, stds: arrays of shape (B, J).
        pieces: the output of ``_pieces``, arrays of shape (B, P).
        noise_std: array of shape (B,).

    Returns:
        Array of shape (B, J, N).
    """
    lower, upper, slope, intercept = (p[:, None, :, None] for p in pieces)  # (B, 1, P, 1)
    mu = means[:, :, None, None]
    s2 = stds[:, :, None, None] ** 2
    sig2 = noise_std[:, None, None, None] ** 2
    xx = x[None, None, None, :] if x.ndim == 1 else x[:, None, None, :]
    var_x = sig2 + slope**2 * s2  # (B, J, P, 1)
    resid = xx - (slope * mu + intercept)
    log_normal = -0.5 * (resid**2 / var_x + np.log(var_x) + _LOG_2PI)
    post_mean = (mu * sig2 + slope * s2 * (xx - intercept)) / var_x
    post_sd = np.sqrt(s2 * sig2 / var_x)
    with np.errstate(invalid="ignore"):
        lo = (lower - post_mean) / post_sd
        hi = (upper - post_mean) / post_sd
    terms = log_normal + _log_ndtr_diff(lo, hi)  # (B, J, P, N)
    top = terms.max(axis=2)  # finite: the pieces cover the line
    return top + np.log(np.sum(np.exp(terms - top[:, :, None, :]), axis=2))


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
def _as_param(value: Any, name: str, batched: bool | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64) if not hasattr(value, "detach") else value
    arr = check_array(arr, name, ndim=np.ndim(arr) if np.ndim(arr) in (1, 2) else 1)
    if batched is not None and (arr.ndim == 2) != batched:
        raise ValueError(
            f"Expected {name} to be {'2-D (batch, k)' if batched else '1-D'} like weights "
            f"but got shape {arr.shape}"
        )
    return arr


class ToyModel:
    """The 1-D toy model of App. J.3.1: a GMM prior, a one-hidden-layer ReLU decoder, noise.

    ``X = f(Z) + eps`` with ``Z ~ sum_j weights[j] N(means[j], stds[j]^2)``,
    ``f(z) = sum_i alpha[i] ReLU(beta[i] z + bias[i])`` and ``eps ~ N(0, noise_std^2)``.
    A *batched* model holds B parameter sets along a leading axis; every method then
    evaluates all of them at once.

    Args:
        weights: array of shape (J,) or (B, J), non-negative, summing to 1 (zero weights
            are allowed, as in App. J.3.1).
        means: array of shape (J,) or (B, J).
        stds: array of shape (J,) or (B, J), positive.
        alpha: array of shape (H,) or (B, H): output weights (the paper has H = 2).
        beta: array of shape (H,) or (B, H): input weights.
        bias: array of shape (H,) or (B, H): biases (the paper's pi).
        noise_std: positive float, or array of shape (B,) for a batched model.

    Example:
        >>> import numpy as np
        >>> from idvae.exact import ToyModel
        >>> m = ToyModel([0.5, 0.5], [-1.0, 1.0], [0.5, 0.5], [1.0, -0.5], [1.0, -1.0],
        ...              [0.0, 0.5], noise_std=0.25)
        >>> x = np.linspace(-10, 10, 20001)
        >>> round(float(np.sum(m.pdf(x)) * (x[1] - x[0])), 8)
        1.0
    """

    def __init__(
        self,
        weights: Any,
        means: Any,
        stds: Any,
        alpha: Any,
        beta: Any,
        bias: Any,
        noise_std: Any,
    ) -> None:
        weights = _as_param(weights, "weights", None)
        batched = weights.ndim == 2
        means = _as_param(means, "means", batched)
        stds = _as_param(stds, "stds", batched)
        alpha = _as_param(alpha, "alpha", batched)
        beta = _as_param(beta, "beta", batched)
        bias = _as_param(bias, "bias", batched)
        for name, arr in (("means", means), ("stds", stds)):
            if arr.shape != weights.shape:
                raise ValueError(
                    f"Expected {name} of shape {weights.shape} like weights but got {arr.shape}"
                )
        for name, arr in (("beta", beta), ("bias", bias)):
            if arr.shape != alpha.shape:
                raise ValueError(
                    f"Expected {name} of shape {alpha.shape} like alpha but got {arr.shape}"
                )
        if batched and alpha.shape[0] != weights.shape[0]:
            raise ValueError(
                f"Expected alpha with batch size {weights.shape[0]} like weights but got "
                f"{alpha.shape[0]}"
            )
        if np.any(weights < 0):
            raise ValueError(f"Expected non-negative weights but got min weight {weights.min():g}")
        sums = weights.sum(axis=-1)
        if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
            bad = float(np.ravel(sums)[np.argmax(np.abs(np.ravel(sums) - 1.0))])
            raise ValueError(f"Expected weights summing to 1 but got sum {bad:.10g}")
        if np.any(stds <= 0):
            raise ValueError(f"Expected positive stds but got min std {stds.min():g}")
        noise = np.asarray(noise_std, dtype=np.float64)
        if batched:
            noise = np.broadcast_to(noise, (weights.shape[0],)).copy() if noise.ndim == 0 else noise
            if noise.shape != (weights.shape[0],):
                raise ValueError(
                    f"Expected noise_std of shape ({weights.shape[0]},) or a scalar but got "
                    f"shape {noise.shape}"
                )
        elif noise.ndim != 0:
            raise ValueError(f"Expected a scalar noise_std but got shape {noise.shape}")
        if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
            raise ValueError(f"Expected noise_std > 0 but got {np.min(noise):g}")
        weights = weights / sums[..., None]
        self._params = {
            "weights": weights,
            "means": means,
            "stds": stds,
            "alpha": alpha,
            "beta": beta,
            "bias": bias,
            "noise_std": noise,
        }
        for arr in self._params.values():
            arr.setflags(write=False)
        self._batched = batched

    # -- state ------------------------------------------------------------------------------
    weights = property(lambda self: self._params["weights"], doc="Mixing weights (J,) / (B, J).")
    means = property(lambda self: self._params["means"], doc="Component means.")
    stds = property(lambda self: self._params["stds"], doc="Component standard deviations.")
    alpha = property(lambda self: self._params["alpha"], doc="Output weights of the neurons.")
    beta = property(lambda self: self._params["beta"], doc="Input weights of the neurons.")
    bias = property(lambda self: self._params["bias"], doc="Biases of the neurons (pi).")
    noise_std = property(lambda self: self._params["noise_std"], doc="Noise std sigma.")

    @property
    def is_batched(self) -> bool:
        """Whether the model holds a leading batch axis of parameter sets."""
        return self._batched

    @property
    def n_components(self) -> int:
        """J, the number of mixture components (zero weights included)."""
        return int(self.weights.shape[-1])

    @property
    def n_neurons(self) -> int:
        """H, the number of hidden ReLU units."""
        return int(self.alpha.shape[-1])

    def __len__(self) -> int:
        if not self._batched:
            raise TypeError("len() of an unbatched ToyModel")
        return int(self.weights.shape[0])

    def __getitem__(self, index: int) -> ToyModel:
        if not self._batched:
            raise TypeError("Expected a batched ToyModel to index but got an unbatched one")
        return ToyModel(**{k: v[index] for k, v in self._params.items()})

    def __iter__(self) -> Iterator[ToyModel]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        if self._batched:
            return f"ToyModel(batch={len(self)}, J={self.n_components}, H={self.n_neurons})"
        fields = ", ".join(f"{k}={np.round(v, 6).tolist()}" for k, v in self._params.items())
        return f"ToyModel({fields})"

    def _batch(self) -> dict[str, np.ndarray]:
        if self._batched:
            return self._params
        return {k: v[None] for k, v in self._params.items()}

    @classmethod
    def stack(cls, models: Sequence[ToyModel]) -> ToyModel:
        """One batched model from unbatched ones with equal J and H."""
        if len(models) == 0:
            raise ValueError("Expected at least one model to stack but got none")
        keys = ("weights", "means", "stds", "alpha", "beta", "bias", "noise_std")
        try:
            arrays = {k: np.stack([m._params[k] for m in models]) for k in keys}
        except ValueError as err:
            raise ValueError(f"Expected models with equal J and H to stack: {err}") from None
        return cls(**arrays)

    def replace(self, **changes: Any) -> ToyModel:
        """A copy with some parameters replaced (same names as the constructor)."""
        unknown = set(changes) - set(self._params)
        if unknown:
            raise TypeError(f"Expected parameters among {sorted(self._params)} but got {unknown}")
        return ToyModel(**{**self._params, **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (lists of floats)."""
        return {k: np.asarray(v).tolist() for k, v in self._params.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyModel:
        """Inverse of ``to_dict``."""
        return cls(**data)

    # -- the decoder ------------------------------------------------------------------------
    def decoder(self, z: Any) -> np.ndarray:
        """f(z) = sum_i alpha_i ReLU(beta_i z + pi_i).

        Args:
            z: array of shape (n,).

        Returns:
            Array of shape (n,), or (B, n) for a batched model.
        """
        z = check_array(z, "z", ndim=1, min_samples=0)
        p = self._batch()
        pre = p["beta"][:, :, None] * z[None, None, :] + p["bias"][:, :, None]
        out = np.sum(p["alpha"][:, :, None] * np.maximum(pre, 0.0), axis=1)
        return out if self._batched else out[0]

    def kinks(self) -> np.ndarray:
        """The kinks -pi_i / beta_i of the neurons (NaN where beta_i = 0); shape (H,)/(B, H)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.beta != 0, -self.bias / self.beta, np.nan)

    # -- densities --------------------------------------------------------------------------
    def component_logpdf(self, x: Any) -> np.ndarray:
        """log p(x | U = j) in closed form; shape (J, n) or (B, J, n)."""
        x = _check_x(x)
        p = self._batch()
        pieces = _pieces(p["alpha"], p["beta"], p["bias"])
        out = _component_logpdf(x, p["means"], p["stds"], pieces, p["noise_std"])
        return out if self._batched else out[0]

    def logpdf(self, x: Any) -> np.ndarray:
        """log p(x) in closed form (no numerical integration).

        Args:
            x: array of shape (n,) (an (n, 1) array is accepted too).

        Returns:
            Array of shape (n,), or (B, n) for a batched model.
        """
        comp = self.component_logpdf(x)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)[..., None]
        terms = log_w + comp
        top = terms.max(axis=-2, keepdims=True)  # finite: some weight is positive
        return (top + np.log(np.sum(np.exp(terms - top), axis=-2, keepdims=True)))[..., 0, :]

    def pdf(self, x: Any) -> np.ndarray:
        """p(x) = exp(logpdf(x))."""
        return np.exp(self.logpdf(x))

    def sample(
        self, n_samples: int, random_state: RandomState = None, *, return_latents: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw X (and optionally Z) from an unbatched model; arrays of shape (n_samples,)."""
        if self._batched:
            raise ValueError("Expected an unbatched ToyModel to sample from but got a batch")
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_random_state(random_state)
        labels = rng.choice(self.n_components, size=n_samples, p=self.weights)
        z = self.means[labels] + self.stds[labels] * rng.standard_normal(n_samples)
        x = self.decoder(z) + float(self.noise_std) * rng.standard_normal(n_samples)
        return (x, z) if return_latents else x

    @property
    def prior(self) -> Any:
        """The law of Z as an ``idvae.GMM`` (components of zero weight dropped)."""
        if self._batched:
            raise ValueError("Expected an unbatched ToyModel but got a batch")
        from idvae.mixture import GMM

        keep = self.weights > 0
        return GMM(self.weights[keep], self.means[keep, None], self.stds[keep, None] ** 2)


def _check_x(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64) if not hasattr(x, "detach") else x
    if np.ndim(arr) == 2 and np.shape(arr)[1] == 1:
        arr = np.asarray(arr)[:, 0]
    return check_array(arr, "x", ndim=1, min_samples=0)


# ---------------------------------------------------------------------------------------
# likelihoods
# ---------------------------------------------------------------------------------------
def _support(model: ToyModel, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Per model, an interval of x holding all but ~exp(-cutoff^2/2) of the mass; (B,), (B,)."""
    p = model._batch()
    lo = np.full(p["weights"].shape[0], np.inf)
    hi = np.full(p["weights"].shape[0], -np.inf)
    kinks = np.nan_to_num(
        np.where(p["beta"] != 0, -p["bias"] / np.where(p["beta"] != 0, p["beta"], 1.0), 0.0)
    )
    for j in range(p["weights"].shape[1]):
        left = p["means"][:, j] - cutoff * p["stds"][:, j]
        right = p["means"][:, j] + cutoff * p["stds"][:, j]
        pts = np.concatenate(
            [left[:, None], right[:, None], np.clip(kinks, left[:, None], right[:, None])], 1
        )
        pre = p["beta"][:, :, None] * pts[:, None, :] + p["bias"][:, :, None]
        f = np.sum(p["alpha"][:, :, None] * np.maximum(pre, 0.0), axis=1)  # (B, n_pts)
        used = p["weights"][:, j] > 0
        lo = np.where(used, np.minimum(lo, f.min(axis=1)), lo)
        hi = np.where(used, np.maximum(hi, f.max(axis=1)), hi)
    pad = cutoff * p["noise_std"]
    return lo - pad, hi + pad


def quadrature_nodes(
    model: ToyModel, *, step: float | None = None, cutoff: float = 9.0
) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoidal nodes and weights covering the density of ``model`` (union over a batch).

    The nodes are the points of the lattice ``step * Z`` inside the support interval, so node
    sets of different models are subsets of one lattice. ``step`` defaults to sigma / 4: the
    densities are convolutions with N(0, sigma^2), for which the trapezoidal rule on the line
    converges like exp(-2 pi^2 sigma^2 / step^2), i.e. to machine precision here.

    Returns:
        x, w: arrays of shape (Q,).
    """
    if step is None:
        step = float(np.min(model.noise_std)) / 2.0
    if not step > 0:
        raise ValueError(f"Expected step > 0 but got {step}")
    lo, hi = _support(model, cutoff)
    first, last = math.floor(lo.min() / step), math.ceil(hi.max() / step)
    if last - first > 5_000_000:
        raise ValueError(f"Expected at most 5e6 quadrature nodes but got {last - first}")
    x = np.arange(first, last + 1, dtype=np.float64) * step
    return x, np.full(x.shape, step)


def population_nll(
    true_model: ToyModel,
    model: ToyModel,
    *,
    nodes: tuple[np.ndarray, np.ndarray] | None = None,
) -> float | np.ndarray:
    """The population negative log-likelihood -int p_true(x) log p_theta(x) dx.

    Args:
        true_model: an unbatched ToyModel, the law of the data.
        model: a ToyModel, batched or not (p_theta).
        nodes: quadrature (x, w) as from ``quadrature_nodes``; by default the truth's, with
            step min(sigma_true, sigma_theta) / 2.

    Returns:
        A float, or an array of shape (B,) for a batched ``model``. At ``model = true_model``
        it is the differential entropy of the truth, its minimum (Gibbs' inequality).
    """
    if true_model.is_batched:
        raise ValueError("Expected an unbatched true_model but got a batch")
    if nodes is None:  # resolve the finer of the two noise scales
        step = min(float(true_model.noise_std), float(np.min(model.noise_std))) / 2
        nodes = quadrature_nodes(true_model, step=step)
    x, w = nodes
    weight = w * true_model.pdf(x)
    log_p = np.maximum(model.logpdf(x), _LOG_FLOOR)
    out = -(log_p @ weight)
    return out if model.is_batched else float(out)


def sample_nll(model: ToyModel, x: Any) -> float | np.ndarray:
    """The sample negative log-likelihood -mean_i log p_theta(x_i); float or (B,)."""
    x = _check_x(x)
    if x.shape[0] == 0:
        raise ValueError("Expected at least 1 sample in x but got 0")
    out = -np.mean(model.logpdf(x), axis=-1)
    return out if model.is_batched else float(out)


# ---------------------------------------------------------------------------------------
# equivalence up to the model's symmetries
# ---------------------------------------------------------------------------------------
def _decoder_function(
    alpha: np.ndarray, beta: np.ndarray, bias: np.ndarray, tol: float
) -> tuple[float, float, list[tuple[float, float]]]:
    """f as a function: f(z) = const + slope z + sum_k jump_k ReLU(z - kink_k), unique.

    Uses ReLU(b (z - k)) = b ReLU(z - k) for b > 0 and |b| (ReLU(z - k) - (z - k)) for b < 0
    (positive homogeneity of ReLU); equal kinks are merged and zero jumps dropped.
    """
    const, slope = 0.0, 0.0
    jumps: dict[float, float] = {}
    for a, b, c in zip(alpha, beta, bias, strict=True):
        if b == 0:
            const += a * max(c, 0.0)  # a constant neuron
            continue
        k = -c / b
        jumps[k] = jumps.get(k, 0.0) + a * abs(b)
        if b < 0:
            slope -= a * abs(b)
            const += a * abs(b) * k
    merged: list[list[float]] = []
    for k in sorted(jumps):
        if merged and abs(k - merged[-1][0]) <= tol:
            merged[-1][1] += jumps[k]
        else:
            merged.append([k, jumps[k]])
    scale = max([1.0, abs(slope)] + [abs(d) for _, d in merged])
    kept = [(k, d) for k, d in merged if abs(d) > tol * scale]
    return const, slope, kept


def canonical_form(model: ToyModel, *, sign: int = 1, tol: float = 1e-9) -> dict[str, Any]:
    """A representative of the model's class under the symmetries of Sec. 2 / App. J.3.1.

    The affine map h(z) = sign (z - m) / S, with m and S the mean and standard deviation of
    Z, standardises the prior (P' = h#P, f' = f o h^{-1}, Definition 2.1); then the prior is
    described as a distribution (zero weights dropped, identical components merged, sorted)
    and f as a function (``_decoder_function``), which removes permutations of components and
    neurons, positive rescalings alpha_i <-> (beta_i, pi_i) and inactive neurons. ``sign``
    chooses the orientation; two models are equivalent iff the form of one equals the form
    of the other for sign = +1 or -1.

    Returns:
        dict with ``prior``: list of (weight, mean, std) and ``decoder``:
        (const, slope, [(kink, jump), ...]).
    """
    if model.is_batched:
        raise ValueError("Expected an unbatched ToyModel but got a batch")
    if sign not in (1, -1):
        raise ValueError(f"Expected sign +1 or -1 but got {sign}")
    w, mu, s = model.weights, model.means, model.stds
    mean = float(w @ mu)
    scale = math.sqrt(float(w @ (s**2 + (mu - mean) ** 2)))
    comps: list[list[float]] = []
    for wj, mj, sj in sorted(
        zip(w, sign * (mu - mean) / scale, s / scale, strict=True), key=lambda t: (t[1], t[2])
    ):
        if wj <= tol:
            continue
        if comps and abs(mj - comps[-1][1]) <= tol and abs(sj - comps[-1][2]) <= tol:
            comps[-1][0] += wj
        else:
            comps.append([float(wj), float(mj), float(sj)])
    # z = mean + sign * scale * z'  =>  beta z + pi = (sign scale beta) z' + (pi + beta mean)
    decoder = _decoder_function(
        model.alpha, sign * scale * model.beta, model.bias + model.beta * mean, tol
    )
    return {"prior": [tuple(c) for c in comps], "decoder": decoder}


def _eval_decoder(
    form: tuple[float, float, list[tuple[float, float]]], z: np.ndarray
) -> np.ndarray:
    const, slope, kinks = form
    out = const + slope * z
    for k, d in kinks:
        out = out + d * np.maximum(z - k, 0.0)
    return out


def _forms_close(a: dict[str, Any], b: dict[str, Any], tol: float) -> bool:
    if not _priors_close(a, b, tol):
        return False
    (ca, la, ka), (cb, lb, kb) = a["decoder"], b["decoder"]
    if len(ka) != len(kb) or abs(ca - cb) > tol * max(1, abs(ca)) or abs(la - lb) > tol:
        return False
    return all(
        abs(k1 - k2) <= tol * max(1.0, abs(k1)) and abs(d1 - d2) <= tol * max(1.0, abs(d1))
        for (k1, d1), (k2, d2) in zip(ka, kb, strict=True)
    )


def _priors_close(a: dict[str, Any], b: dict[str, Any], tol: float) -> bool:
    return len(a["prior"]) == len(b["prior"]) and np.allclose(
        np.array(a["prior"]), np.array(b["prior"]), rtol=0, atol=tol
    )


def equivalent(a: ToyModel, b: ToyModel, tol: float = 1e-6) -> bool:
    """Whether two toy models are the same up to the model's symmetries.

    (P, f) ~ (P', f') iff there is an invertible affine h with P' = h#P and f' = f o h^{-1}
    (Definition 2.1) and equal noise. Component/neuron permutations, zero weights, merged
    identical components, positive rescaling of ReLU units and inactive neurons are all
    absorbed by ``canonical_form``. Equivalent models have equal densities; the converse is
    the identifiability the paper proves (and that ``grid_search`` probes).

    Args:
        a, b: unbatched ToyModels.
        tol: absolute tolerance on the canonical parameters.
    """
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    if abs(float(a.noise_std) - float(b.noise_std)) > tol:
        return False
    form_a = canonical_form(a, tol=tol * 1e-3)
    return any(
        _forms_close(form_a, canonical_form(b, sign=sgn, tol=tol * 1e-3), tol) for sgn in (1, -1)
    )


def disagreement_mass(a: ToyModel, b: ToyModel, tol: float = 1e-6) -> float:
    """How far two models are from equivalent, as prior probability.

    1.0 when no affine map of z matches their priors (or their noise differs); otherwise,
    after that map, the probability under the prior of {z : f_a(z) != f_b(z)} (the smaller
    of the two orientations). 0.0 iff ``equivalent(a, b)``. Models that disagree only on a
    set of prior mass eps have a KL divergence of order eps^2, so mass below ~1e-5 is beyond
    what a float64 likelihood resolves: such ties in a grid search are numerical, not a
    failure of identifiability.
    """
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    if abs(float(a.noise_std) - float(b.noise_std)) > tol:
        return 1.0
    form_a = canonical_form(a, tol=tol * 1e-3)
    best = 1.0
    for sgn in (1, -1):
        form_b = canonical_form(b, sign=sgn, tol=tol * 1e-3)
        if not _priors_close(form_a, form_b, tol):
            continue
        kinks = np.unique([k for k, _ in form_a["decoder"][2] + form_b["decoder"][2]])
        edges = np.concatenate([[-np.inf], kinks, [np.inf]])
        probes = np.concatenate([[kinks[0] - 1.0] if kinks.size else [-1.0], kinks])
        probes = np.concatenate([probes, [kinks[-1] + 1.0] if kinks.size else [1.0]])
        fa, fb = _eval_decoder(form_a["decoder"], probes), _eval_decoder(form_b["decoder"], probes)
        agree = np.abs(fa - fb) <= tol * np.maximum(1.0, np.abs(fa))
        if not kinks.size:
            agree_piece = np.array([agree.all()])
        else:  # both are affine between consecutive probes: agreement at both ends suffices
            agree_piece = agree[:-1] & agree[1:]
        prior = np.array(form_a["prior"])  # (weight, mean, std)
        std_edges = (edges[None, :] - prior[:, 1:2]) / prior[:, 2:3]
        piece_mass = prior[:, :1] * np.exp(_log_ndtr_diff(std_edges[:, :-1], std_edges[:, 1:]))
        mass = float(np.sum(piece_mass[:, ~agree_piece]))
        best = min(best, mass)
    return best


def _tie_total_variation(truth: ToyModel, models: list[ToyModel], chunk: int = 64) -> np.ndarray:
    """``total_variation`` of each model to the truth, batched; shape (n_models,)."""
    if not models:
        return np.empty(0)
    batch = ToyModel.stack(models)
    lo9, hi9 = _support(batch, 9.0)
    t_lo9, t_hi9 = _support(truth, 9.0)
    step = min(float(truth.noise_std), float(batch.noise_std.min())) / 4
    fine = np.arange(min(lo9.min(), t_lo9[0]), max(hi9.max(), t_hi9[0]) + step, step)
    p_truth = truth.pdf(fine)
    tvs = [
        0.5 * step * np.abs(ToyModel.stack(models[i : i + chunk]).pdf(fine) - p_truth).sum(1)
        for i in range(0, len(models), chunk)
    ]
    return np.concatenate(tvs)


def _max_log_density_gap(a: ToyModel, b: ToyModel, cutoff: float = 30.0) -> float:
    """max_x |log p_a - log p_b| / max(1, |log p_a|) over a wide range (tails included)."""
    lo_a, hi_a = _support(a, cutoff)
    lo_b, hi_b = _support(b, cutoff)
    x = np.linspace(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()), 4001)
    la, lb = a.logpdf(x), b.logpdf(x)
    return float(np.max(np.abs(la - lb) / np.maximum(1.0, np.abs(la))))


def total_variation(a: ToyModel, b: ToyModel) -> float:
    """The total variation distance 1/2 int |p_a - p_b| dx, by quadrature of closed forms."""
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    lo_a, hi_a = _support(a, 9.0)
    lo_b, hi_b = _support(b, 9.0)
    step = min(float(a.noise_std), float(b.noise_std)) / 4
    x = np.arange(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()) + step, step)
    return float(0.5 * step * np.sum(np.abs(a.pdf(x) - b.pdf(x))))


def density_distance(a: ToyModel, b: ToyModel, *, n_points: int = 2001) -> float:
    """max_x |p_a(x) - p_b(x)| on a uniform grid covering both densities."""
    lo_a, hi_a = _support(a, 9.0)
    lo_b, hi_b = _support(b, 9.0)
    x = np.linspace(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()), n_points)
    return float(np.max(np.abs(a.pdf(x) - b.pdf(x))))


def _bulk_interval(model: ToyModel, bulk: float) -> tuple[float, float]:
    """The hull of mean_j +- bulk * std_j over components of positive weight."""
    used = model.weights > 0
    return (
        float(np.min(model.means[used] - bulk * model.stds[used])),
        float(np.max(model.means[used] + bulk * model.stds[used])),
    )


def injectivity(model: ToyModel, *, bulk: float | None = None) -> str:
    """The strongest of (F4) / (F3) / (F2) of Definition 3.1 that the decoder f meets.

    Args:
        model: an unbatched ToyModel.
        bulk: if given, classify f restricted to the bulk of the prior (the hull of
            mean +- ``bulk`` std over components): a decoder whose only sloped piece lies
            10 standard deviations out is injective on R but constant where Z lives.

    Returns:
        One of ``"injective"``, ``"observably injective"``, ``"weakly injective"`` or
        ``"not weakly injective"`` (a constant f included). Decided exactly from the pieces.
    """
    if model.is_batched:
        raise ValueError("Expected an unbatched ToyModel but got a batch")
    interval = None if bulk is None else _bulk_interval(model, bulk)
    return _decoder_injectivity(model.alpha, model.beta, model.bias, interval)


def _decoder_injectivity(
    alpha: np.ndarray,
    beta: np.ndarray,
    bias: np.ndarray,
    interval: tuple[float, float] | None = None,
) -> str:
    """``injectivity`` of f = sum_i alpha_i ReLU(beta_i z + pi_i), on R or on an interval."""
    lower, upper, slope, intercept = (p[0] for p in _pieces(alpha[None], beta[None], bias[None]))
    if interval is not None:
        left, right = interval
        lower, upper = np.clip(lower, left, right), np.clip(upper, left, right)
    used = upper > lower
    lower, upper, slope, intercept = lower[used], upper[used], slope[used], intercept[used]
    sloped = slope != 0
    if not np.any(sloped):
        return "not weakly injective"
    with np.errstate(invalid="ignore"):
        ends = np.stack([slope * lower + intercept, slope * upper + intercept], 1)
    ends = np.where(np.isnan(ends), intercept[:, None], ends)  # 0 * inf on flat pieces
    images = np.sort(ends, axis=1)
    if sloped.all() and (np.all(slope > 0) or np.all(slope < 0)):
        return "injective"
    # multiplicity of values on the open intervals between image endpoints
    cuts = np.unique(images[np.isfinite(images)])
    if cuts.size == 0:
        cuts = np.zeros(1)
    probes = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    counts = np.array([np.sum(sloped & (images[:, 0] < y) & (y < images[:, 1])) for y in probes])
    covered = counts > 0
    if np.all(counts[covered] == 1):
        return "observably injective"  # (F3); flat pieces only add measure-zero values
    if np.any(counts == 1):
        return "weakly injective"
    return "not weakly injective"


# ---------------------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------------------
def simplex_grid(n_components: int, resolution: int) -> np.ndarray:
    """All weight vectors with entries in {0, 1/r, ..., 1} summing to 1; (n, J), float64."""
    n_components = check_positive_int(n_components, "n_components")
    resolution = check_positive_int(resolution, "resolution")
    rows = [
        c
        for c in itertools.product(range(resolution + 1), repeat=n_components)
        if sum(c) == resolution
    ]
    return np.array(rows, dtype=np.float64) / resolution


def _as_values(values: Any, name: str) -> tuple[float, ...]:
    arr = check_array(np.atleast_1d(np.asarray(values, dtype=np.float64)), name, ndim=1)
    return tuple(sorted({float(v) for v in arr}))


@dataclass(frozen=True)
class Grid:
    """A parameter grid of toy models (App. J.3.1): the product of the value sets below.

    Args:
        weights: candidate weight vectors, shape (n_w, J) (e.g. ``simplex_grid(J, 4)``).
        means: values of each component mean.
        stds: values of each component standard deviation.
        alpha, beta, bias: values of each neuron's parameters.
        noise_std: the known noise standard deviation (not searched).
        n_neurons: H, the number of hidden units.
        weakly_injective_only: keep only decoders that are weakly injective (F2) on R, the
            class of decoders the identifiability theorem speaks about (Definition 2.1
            compares models within one class).
    """

    weights: tuple[tuple[float, ...], ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    bias: tuple[float, ...]
    noise_std: float
    n_neurons: int = 2
    weakly_injective_only: bool = False

    def __post_init__(self) -> None:
        w = check_array(np.asarray(self.weights, dtype=np.float64), "grid weights", ndim=2)
        if np.any(w < 0) or not np.allclose(w.sum(1), 1.0, rtol=0, atol=1e-8):
            raise ValueError("Expected grid weights to be non-negative rows summing to 1")
        object.__setattr__(self, "weights", tuple(tuple(float(v) for v in r) for r in w))
        for name in ("means", "stds", "alpha", "beta", "bias"):
            object.__setattr__(self, name, _as_values(getattr(self, name), f"grid {name}"))
        if min(self.stds) <= 0:
            raise ValueError(f"Expected positive grid stds but got {min(self.stds)}")
        if not float(self.noise_std) > 0:
            raise ValueError(f"Expected noise_std > 0 but got {self.noise_std}")
        object.__setattr__(self, "noise_std", float(self.noise_std))
        check_positive_int(self.n_neurons, "n_neurons")

    @property
    def n_components(self) -> int:
        """J."""
        return len(self.weights[0])

    @property
    def size(self) -> int:
        """The number of points of the full product grid."""
        n_keys = len(self.means) * len(self.stds)
        n_neuron = len(self.alpha) * len(self.beta) * len(self.bias)
        return len(self.weights) * n_keys**self.n_components * n_neuron**self.n_neurons

    def contains(self, model: ToyModel, tol: float = 1e-9) -> bool:
        """Whether an unbatched model's parameters are a point of the grid."""
        if model.n_components != self.n_components or model.n_neurons != self.n_neurons:
            return False

        def inside(vals: np.ndarray, grid: tuple[float, ...]) -> bool:
            return bool(np.all(np.min(np.abs(vals[:, None] - np.array(grid)), 1) <= tol))

        return (
            bool(np.any(np.all(np.abs(np.array(self.weights) - model.weights) <= tol, 1)))
            and inside(model.means, self.means)
            and inside(model.stds, self.stds)
            and inside(model.alpha, self.alpha)
            and inside(model.beta, self.beta)
            and inside(model.bias, self.bias)
            and abs(float(model.noise_std) - self.noise_std) <= tol
        )

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The (mean, std) pairs a component can take; two arrays of shape (K,)."""
        pairs = list(itertools.product(self.means, self.stds))
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def priors(self, *, deduplicate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The priors of the grid as (weights (n_p, J), key indices (n_p, J)).

        With ``deduplicate`` each distinct mixture *distribution* appears once: permuted
        components, zero-weight components and identical components merged are one law.
        """
        n_keys = len(self.means) * len(self.stds)
        weights = np.array(self.weights)
        out_w, out_k, seen = [], [], set()
        for w in weights:
            for keys in itertools.product(range(n_keys), repeat=self.n_components):
                if deduplicate:
                    law: dict[int, float] = {}
                    for wj, kj in zip(w, keys, strict=True):
                        if wj > 0:
                            law[kj] = law.get(kj, 0.0) + wj
                    tag = tuple(sorted((k, round(v, 9)) for k, v in law.items()))
                    if tag in seen:
                        continue
                    seen.add(tag)
                out_w.append(w)
                out_k.append(keys)
        return np.array(out_w), np.array(out_k, dtype=np.int64)

    def decoders(self, *, deduplicate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decoders of the grid as alpha, beta, bias arrays of shape (n_d, H).

        With ``deduplicate`` each distinct *function* f appears once (neuron permutations,
        inactive neurons and positive rescalings give the same function).
        """
        neuron = np.array(list(itertools.product(self.alpha, self.beta, self.bias)))
        index = np.array(list(itertools.product(range(len(neuron)), repeat=self.n_neurons)))
        params = neuron[index]  # (n_d, H, 3)
        if deduplicate:
            keep, seen = [], set()
            for i, p in enumerate(params):
                const, slope, kinks = _decoder_function(p[:, 0], p[:, 1], p[:, 2], 1e-12)
                tag = (round(const, 9), round(slope, 9)) + tuple(
                    (round(k, 9), round(d, 9)) for k, d in kinks
                )
                if tag not in seen:
                    seen.add(tag)
                    keep.append(i)
            params = params[keep]
        if self.weakly_injective_only:
            f2 = [
                _decoder_injectivity(p[:, 0], p[:, 1], p[:, 2]) != "not weakly injective"
                for p in params
            ]
            params = params[np.array(f2, dtype=bool)]
        return params[:, :, 0].copy(), params[:, :, 1].copy(), params[:, :, 2].copy()

    def random_model(self, random_state: RandomState = None) -> ToyModel:
        """A model drawn uniformly from the grid's value sets, as in App. J.3.1 steps 1-4.

        With ``weakly_injective_only`` the draw is repeated until f is weakly injective on
        R and on the bulk of the prior (4 standard deviations), so that the truth lies in
        the theorem's class with a margin float64 can see.
        """
        rng = check_random_state(random_state)
        J, H = self.n_components, self.n_neurons
        pick = lambda vals, n: np.array(vals)[rng.integers(len(vals), size=n)]  # noqa: E731
        for _ in range(10_000):
            model = ToyModel(
                np.array(self.weights)[rng.integers(len(self.weights))],
                pick(self.means, J),
                pick(self.stds, J),
                pick(self.alpha, H),
                pick(self.beta, H),
                pick(self.bias, H),
                self.noise_std,
            )
            if not self.weakly_injective_only or (
                injectivity(model) != "not weakly injective"
                and injectivity(model, bulk=4.0) != "not weakly injective"
            ):
                return model
        raise ValueError("Expected the grid to hold weakly injective decoders but found none")


def paper_grid(n_components: int = 3) -> Grid:
    """The grid used to reproduce App. J.3.1 (the paper does not print its grids).

    Weights on the simplex in steps of 1/4, means in {-2, -1, 0, 1, 2}, one known component
    std 0.5, alpha, beta, pi in {-1, -0.5, 0, 0.5, 1} and known noise sigma = 0.25: a
    "uniform grid on the hypercube" for every parameter the paper lists (lambda, mu, alpha,
    beta, pi). Stds and noise are not among them, so they are fixed and known.
    """
    n_components = check_positive_int(n_components, "n_components")
    values = (-1.0, -0.5, 0.0, 0.5, 1.0)
    return Grid(
        weights=simplex_grid(n_components, 4),
        means=(-2.0, -1.0, 0.0, 1.0, 2.0),
        stds=(0.5,),
        alpha=values,
        beta=values,
        bias=values,
        noise_std=0.25,
    )


def default_grid(true_model: ToyModel) -> Grid:
    """``paper_grid`` of the truth's J and H, enlarged so that it contains ``true_model``."""
    if true_model.is_batched:
        raise ValueError("Expected an unbatched true_model but got a batch")
    base = paper_grid(true_model.n_components)
    weights = np.unique(np.vstack([np.array(base.weights), true_model.weights[None]]), axis=0)
    return Grid(
        weights=weights,
        means=base.means + tuple(true_model.means),
        stds=base.stds + tuple(true_model.stds),
        alpha=base.alpha + tuple(true_model.alpha),
        beta=base.beta + tuple(true_model.beta),
        bias=base.bias + tuple(true_model.bias),
        noise_std=float(true_model.noise_std),
        n_neurons=true_model.n_neurons,
    )


# ---------------------------------------------------------------------------------------
# grid search
# ---------------------------------------------------------------------------------------
_GRID_CACHE: dict[tuple[Grid, bool], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = {}


def _grid_arrays(
    grid: Grid, deduplicate: bool
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(prior weights, prior keys), (alpha, beta, bias) of a grid, cached per grid."""
    key = (grid, deduplicate)
    if key not in _GRID_CACHE:
        if len(_GRID_CACHE) > 8:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = (
            grid.priors(deduplicate=deduplicate),
            grid.decoders(deduplicate=deduplicate),
        )
    return _GRID_CACHE[key]


@dataclass
class _TopK:
    """The ``keep`` smallest values seen so far and their flat indices, for T objectives."""

    keep: int
    n_targets: int
    values: list[np.ndarray] = field(default_factory=list)
    index: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = [np.empty(0) for _ in range(self.n_targets)]
        self.index = [np.empty(0, dtype=np.int64) for _ in range(self.n_targets)]

    def update(self, values: np.ndarray, index: np.ndarray) -> None:
        """values: array of shape (n, T); index: array of shape (n,)."""
        for t in range(self.n_targets):
            v = values[:, t]
            if self.values[t].size >= self.keep:
                mask = v <= self.values[t][-1]
                if not mask.any():
                    continue
                v, idx = v[mask], index[mask]
            else:
                idx = index
            all_v = np.concatenate([self.values[t], v])
            all_i = np.concatenate([self.index[t], idx])
            order = np.lexsort((all_i, all_v))[: self.keep]
            self.values[t], self.index[t] = all_v[order], all_i[order]


def _component_table(grid: Grid, deduplicate: bool, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled component densities of every decoder and (mean, std) key at nodes x.

    Returns:
        g: array of shape (K, n_decoders, Q), exp(log g - shift);
        shift: array of shape (n_decoders, Q), the max over keys of log g.
    """
    _, (alpha, beta, bias) = _grid_arrays(grid, deduplicate)
    key_means, key_stds = grid.keys()
    n_keys, n_dec = len(key_means), len(alpha)
    g = np.empty((n_keys, n_dec, x.shape[0]))
    shift = np.empty((n_dec, x.shape[0]))
    step = max(1, 2_000_000 // max(1, n_keys * 3 * x.shape[0]))
    for start in range(0, n_dec, step):
        sl = slice(start, min(start + step, n_dec))
        n_c = sl.stop - sl.start
        log_g = _component_logpdf(
            x,
            np.broadcast_to(key_means, (n_c, n_keys)),
            np.broadcast_to(key_stds, (n_c, n_keys)),
            _pieces(alpha[sl], beta[sl], bias[sl]),
            np.full(n_c, grid.noise_std),
        )  # (n_c, K, Q)
        shift[sl] = log_g.max(axis=1)
        g[:, sl] = np.exp(log_g - shift[sl][:, None, :]).transpose(1, 0, 2)
    return g, shift


_TABLE_CACHE: dict[tuple[Grid, bool, float], tuple[int, int, np.ndarray, np.ndarray]] = {}
_TABLE_MAX_BYTES = 400 * 2**20


def _lattice_table(
    grid: Grid, deduplicate: bool, step: float, first: int, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """``_component_table`` on the lattice nodes step * [first, last], cached per grid.

    Population searches of many truths on one grid share the lattice, so the closed-form
    component densities are computed once and only the mixing and the log remain per search.
    """
    key = (grid, deduplicate, step)
    cached = _TABLE_CACHE.get(key)
    if cached is not None and cached[0] <= first and last <= cached[1]:
        lo = first - cached[0]
        return cached[2][:, :, lo : lo + last - first + 1], cached[3][:, lo : lo + last - first + 1]
    if cached is not None:
        first, last = min(first, cached[0]), max(last, cached[1])
    x = np.arange(first, last + 1, dtype=np.float64) * step
    g, shift = _component_table(grid, deduplicate, x)
    if g.nbytes + shift.nbytes <= _TABLE_MAX_BYTES:
        _TABLE_CACHE.clear()
        _TABLE_CACHE[key] = (first, last, g, shift)
    return g, shift


def _evaluate_grid(
    grid: Grid,
    g: np.ndarray,
    shift: np.ndarray,
    node_weights: np.ndarray,
    *,
    deduplicate: bool,
    chunk_size: int,
    keep: int,
    n_jobs: int = 1,
) -> tuple[_TopK, int]:
    """Stream the objective -sum_q node_weights[q, t] log p_theta(x_q) over the grid.

    The component densities depend only on (decoder, mean, std), so they come precomputed
    (``g``, ``shift`` from ``_component_table``) and all priors are mixed by one matrix
    product, p_theta(x_q) = sum_k W[prior, k] g_k(x_q): one log per (point, node) remains.

    Returns:
        The top-``keep`` tracker (flat index = prior * n_decoders + decoder) and the number
        of points evaluated.
    """
    (prior_w, prior_k), _ = _grid_arrays(grid, deduplicate)
    n_keys, n_dec, n_nodes = g.shape
    n_prior = len(prior_w)
    mix = np.zeros((n_prior, n_keys))
    rows = np.repeat(np.arange(n_prior), grid.n_components)
    np.add.at(mix, (rows, prior_k.ravel()), prior_w.ravel())
    top = _TopK(keep, node_weights.shape[1])
    step = max(1, chunk_size // n_prior)
    flat_g = g.reshape(n_keys, n_dec * n_nodes)  # column slices of it are BLAS-ready views
    shift_term = shift @ node_weights  # (n_dec, T): the shift is constant per decoder

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(start + step, n_dec)
        n_c = stop - start
        dens = mix @ flat_g[:, start * n_nodes : stop * n_nodes]  # (n_prior, n_c * Q)
        # a density that underflows relative to the best key stays finite, so that nodes of
        # zero quadrature weight contribute 0, not nan
        np.maximum(dens, 1e-300, out=dens)
        log_p = np.log(dens, out=dens).reshape(n_prior * n_c, n_nodes)
        values = -(log_p @ node_weights).reshape(n_prior, n_c, -1) - shift_term[None, start:stop]
        flat = (np.arange(n_prior)[:, None] * n_dec + np.arange(start, stop)).ravel()
        return values.reshape(n_prior * n_c, -1), flat

    starts = range(0, n_dec, step)
    if n_jobs == 1 or len(starts) == 1:
        for start in starts:
            top.update(*block(start))
    else:  # numpy releases the GIL in matmul and log: threads share the table, no copies
        with ThreadPoolExecutor(n_jobs) as pool:
            for values, flat in pool.map(block, starts):
                top.update(values, flat)
    return top, n_prior * n_dec


def _grid_models(grid: Grid, deduplicate: bool, flat: np.ndarray) -> ToyModel:
    """The batched ToyModel of grid points given by flat indices."""
    (prior_w, prior_k), (alpha, beta, bias) = _grid_arrays(grid, deduplicate)
    key_means, key_stds = grid.keys()
    p, d = np.divmod(np.asarray(flat, dtype=np.int64), len(alpha))
    return ToyModel(
        prior_w[p],
        key_means[prior_k[p]],
        key_stds[prior_k[p]],
        alpha[d],
        beta[d],
        bias[d],
        np.full(len(p), grid.noise_std),
    )


@dataclass
class GridSearchResult:
    """The outcome of ``grid_search``.

    Attributes:
        minimum: the smallest objective value on the grid.
        minimizers: batched ToyModel of every point within ``tol`` of the minimum.
        candidates: batched ToyModel of the ``keep`` best points, best first.
        values: array of shape (keep,): their objective values.
        n_evaluated: points evaluated (after removing trivially duplicated ones).
        grid_size: points of the full product grid.
        truncated: True when more than ``keep`` points lie within ``tol`` of the minimum.
        seconds: wall time of the search.
    """

    minimum: float
    minimizers: ToyModel
    candidates: ToyModel
    values: np.ndarray
    n_evaluated: int
    grid_size: int
    truncated: bool
    seconds: float
    objective: str
    tol: float

    @property
    def n_minimizers(self) -> int:
        """The number of grid points within ``tol`` of the minimum."""
        return len(self.minimizers)

    def unique_up_to_equivalence(self, model: ToyModel, tol: float = 1e-6) -> bool:
        """Whether every minimiser is ``equivalent`` to ``model`` (and none was cut off)."""
        return not self.truncated and all(equivalent(m, model, tol) for m in self.minimizers)

    def best_nonequivalent(self, model: ToyModel, tol: float = 1e-6) -> tuple[float, int | None]:
        """The best objective value among candidates not equivalent to ``model``.

        Returns (value, position in ``candidates``); (nan, None) when all ``keep`` candidates
        are equivalent to ``model`` (the gap is then at least ``values[-1] - minimum``).
        """
        for i, m in enumerate(self.candidates):
            if not equivalent(m, model, tol):
                return float(self.values[i]), i
        return float("nan"), None


def _finish(
    top: _TopK, t: int, grid: Grid, dedup: bool, n_eval: int, seconds: float, obj: str, tol: float
) -> GridSearchResult:
    values, flat = top.values[t], top.index[t]
    minimum = float(values[0])
    within = values <= minimum + tol
    return GridSearchResult(
        minimum=minimum,
        minimizers=_grid_models(grid, dedup, flat[within]),
        candidates=_grid_models(grid, dedup, flat),
        values=values,
        n_evaluated=n_eval,
        grid_size=grid.size,
        truncated=bool(within.all() and len(values) >= top.keep),
        seconds=seconds,
        objective=obj,
        tol=tol,
    )


def grid_search(
    true_model: ToyModel | None,
    grid: Grid | None = None,
    *,
    objective: Literal["population", "sample"] = "population",
    x: Any = None,
    chunk_size: int = 50_000,
    tol: float = 1e-10,
    keep: int = 256,
    deduplicate: bool = True,
    n_jobs: int = 1,
) -> GridSearchResult:
    """Exhaustive minimisation of the negative log-likelihood over a grid (App. J.3.1).

    Args:
        true_model: the truth (population objective); may be None for ``"sample"``.
        grid: the grid; ``default_grid(true_model)`` by default.
        objective: ``"population"`` for -int p_true log p_theta (the exact likelihood, by
            quadrature of closed-form densities) or ``"sample"`` for -mean_i log p_theta(x_i).
        x: array of shape (n_samples,), the data for ``"sample"``.
        chunk_size: grid points evaluated per block (bounds memory: ~8 * chunk_size * Q bytes).
        tol: points within ``tol`` of the minimum are minimisers. Equivalent models have equal
            densities, so their values agree to rounding (~1e-13).
        keep: how many best points to keep as ``candidates``.
        deduplicate: evaluate each distinct prior law and decoder function once (the dropped
            points have exactly the same density as a kept one).
        n_jobs: threads evaluating blocks of the grid (numpy releases the GIL there).

    Returns:
        GridSearchResult.
    """
    if objective not in ("population", "sample"):
        raise ValueError(f"Expected objective 'population' or 'sample' but got {objective!r}")
    if grid is None:
        if true_model is None:
            raise ValueError("Expected a grid or a true_model to build the default grid")
        grid = default_grid(true_model)
    if not isinstance(grid, Grid):
        raise TypeError(f"Expected grid to be a Grid but got {type(grid).__name__}")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    keep = check_positive_int(keep, "keep")
    if not tol >= 0:
        raise ValueError(f"Expected tol >= 0 but got {tol}")
    start = time.perf_counter()
    if objective == "population":
        if true_model is None or true_model.is_batched:
            raise ValueError("Expected an unbatched true_model for the population objective")
        step = grid.noise_std / 2
        nodes, w = quadrature_nodes(true_model, step=step)
        first = round(nodes[0] / step)
        g, shift = _lattice_table(grid, deduplicate, step, first, first + len(nodes) - 1)
        weights = (w * true_model.pdf(nodes))[:, None]
    else:
        if x is None:
            raise ValueError("Expected data x for objective='sample' but got None")
        nodes = _check_x(x)
        if nodes.shape[0] == 0:
            raise ValueError("Expected at least 1 sample in x but got 0")
        g, shift = _component_table(grid, deduplicate, nodes)
        weights = np.full((nodes.shape[0], 1), 1.0 / nodes.shape[0])
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    top, n_eval = _evaluate_grid(
        grid,
        g,
        shift,
        weights,
        deduplicate=deduplicate,
        chunk_size=chunk_size,
        keep=keep,
        n_jobs=n_jobs,
    )
    return _finish(top, 0, grid, deduplicate, n_eval, time.perf_counter() - start, objective, tol)


# ---------------------------------------------------------------------------------------
# the experiment of App. J.3.1
# ---------------------------------------------------------------------------------------
def quick_grid(n_components: int = 3) -> Grid:
    """A coarse grid for smoke runs: simplex step 1/2, means and alpha, beta, pi in {-1, 0, 1}."""
    n_components = check_positive_int(n_components, "n_components")
    values = (-1.0, 0.0, 1.0)
    return Grid(
        weights=simplex_grid(n_components, 2),
        means=values,
        stds=(0.5,),
        alpha=values,
        beta=values,
        bias=values,
        noise_std=0.25,
    )


@dataclass
class MLEStudy:
    """The outcome of ``mle_study``: one record per simulated truth and a summary."""

    simulations: list[dict[str, Any]]
    summary: dict[str, Any]
    grids: dict[int, Grid]

    @property
    def truths(self) -> list[ToyModel]:
        """The simulated true models."""
        return [ToyModel.from_dict(s["truth"]) for s in self.simulations]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: summary, simulations and the grids used."""
        grids = {
            str(j): {
                "weights": [list(w) for w in g.weights],
                "means": list(g.means),
                "stds": list(g.stds),
                "alpha": list(g.alpha),
                "beta": list(g.beta),
                "bias": list(g.bias),
                "noise_std": g.noise_std,
                "n_neurons": g.n_neurons,
                "weakly_injective_only": g.weakly_injective_only,
                "size": g.size,
            }
            for j, g in self.grids.items()
        }
        return {"summary": self.summary, "grids": grids, "simulations": self.simulations}


def _resolve_grids(
    grid: Grid | Callable[[int], Grid] | None, n_components: Sequence[int]
) -> tuple[dict[int, Grid], list[int]]:
    if isinstance(grid, Grid):
        return {grid.n_components: grid}, [grid.n_components]
    make = paper_grid if grid is None else grid
    if not callable(make):
        raise TypeError(f"Expected grid to be a Grid, a callable or None but got {type(grid)}")
    comps = [check_positive_int(j, "n_components") for j in n_components]
    if not comps:
        raise ValueError("Expected at least one value in n_components but got none")
    grids = {j: make(j) for j in comps}
    for j, g in grids.items():
        if not isinstance(g, Grid) or g.n_components != j:
            raise ValueError(f"Expected grid({j}) to return a Grid with J = {j}")
    return grids, comps


def mle_study(
    n_simulations: int = 50,
    *,
    random_state: RandomState = 0,
    grid: Grid | Callable[[int], Grid] | None = None,
    n_components: Sequence[int] = (2, 3),
    tol: float = 1e-10,
    equivalence_tol: float = 1e-6,
    tail_mass: float = 1e-4,
    weakly_injective_only: bool = False,
    keep: int = 512,
    chunk_size: int = 50_000,
    n_jobs: int = 1,
) -> MLEStudy:
    """The maximum-likelihood experiment of App. J.3.1 (Fig. 1).

    For each simulation a true model is drawn uniformly from the grid's value sets (steps 1-4
    of App. J.3.1; J alternates over ``n_components``), the population NLL is minimised by
    exhaustive search over the same grid, and the minimisers are compared with the truth up
    to the model's symmetries. All truths with the same J share one pass over the grid (their
    quadrature nodes lie on one lattice; the NLLs of all truths are one matrix product).

    Args:
        n_simulations: how many true models.
        random_state: seed of the draws of the truths.
        grid: a Grid (all simulations use its J), a callable J -> Grid, or None for
            ``paper_grid``.
        n_components: the values of J to alternate over (paper: 2 or 3).
        tol: grid points within ``tol`` of the minimal NLL are global minimisers.
        equivalence_tol: tolerance of ``equivalent``.
        tail_mass: a tie (a non-equivalent point within ``tol`` of the minimum) counts as
            explained, for ``n_unique_up_to_tails``, when its density differs from the
            truth's (total variation > 1e-13; then KL > 0 and the truth is strictly better in
            exact arithmetic, by Gibbs, just below what float64 resolves) or when its f
            differs from the truth's only on prior mass < ``tail_mass``.
        weakly_injective_only: restrict truths and grid decoders to the theorem's class
            (f weakly injective, (F2); truths also on the prior's bulk), see ``Grid``.
        keep: best points kept per truth (for the gap to the best non-equivalent point).
        chunk_size: grid points per block.
        n_jobs: threads evaluating blocks of the grid.

    Returns:
        MLEStudy; ``summary["n_unique"]`` counts truths that are the unique global minimiser
        up to equivalence (the paper reports 50 of 50).
    """
    n_simulations = check_positive_int(n_simulations, "n_simulations")
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    rng = check_random_state(random_state)
    grids, comps = _resolve_grids(grid, n_components)
    if weakly_injective_only:
        grids = {j: dataclasses.replace(g, weakly_injective_only=True) for j, g in grids.items()}
    start = time.perf_counter()
    truths = [grids[comps[i % len(comps)]].random_model(rng) for i in range(n_simulations)]
    records: list[dict[str, Any] | None] = [None] * n_simulations
    evaluated: dict[str, int] = {}
    for j, g in grids.items():
        idx = [i for i in range(n_simulations) if truths[i].n_components == j]
        if not idx:
            continue
        batch = ToyModel.stack([truths[i] for i in idx])
        step = g.noise_std / 2
        nodes, w = quadrature_nodes(batch, step=step)
        first = round(nodes[0] / step)
        table, shift = _lattice_table(g, True, step, first, first + len(nodes) - 1)
        node_weights = (w[None, :] * batch.pdf(nodes)).T  # (Q, T)
        top, n_eval = _evaluate_grid(
            g,
            table,
            shift,
            node_weights,
            deduplicate=True,
            chunk_size=chunk_size,
            keep=keep,
            n_jobs=n_jobs,
        )
        evaluated[str(j)] = n_eval
        truth_nll = -(np.maximum(batch.logpdf(nodes), _LOG_FLOOR) * node_weights.T).sum(1)
        for t, i in enumerate(idx):
            res = _finish(top, t, g, True, n_eval, 0.0, "population", tol)
            records[i] = _simulation_record(
                i, truths[i], res, float(truth_nll[t]), equivalence_tol, tail_mass
            )
    done = [r for r in records if r is not None]
    summary = _summarise(done, grids, evaluated, time.perf_counter() - start)
    return MLEStudy(simulations=done, summary=summary, grids=grids)


def _simulation_record(
    index: int,
    truth: ToyModel,
    res: GridSearchResult,
    truth_nll: float,
    eq_tol: float,
    tail_mass: float,
) -> dict[str, Any]:
    truth_is_min = truth_nll <= res.minimum + res.tol
    minimizers = list(res.minimizers)
    masses = [
        0.0 if equivalent(m, truth, eq_tol) else disagreement_mass(m, truth, eq_tol)
        for m in minimizers
    ]
    n_equiv = sum(mass == 0.0 for mass in masses)
    worst = max(masses)
    ties = [(m, mass) for m, mass in zip(minimizers, masses, strict=True) if mass > 0]
    tvs = _tie_total_variation(truth, [m for m, _ in ties])
    tie_tv = float(tvs.max(initial=0.0))
    # A tie is explained when its density differs from the truth's (total variation above
    # the float64 rounding floor of ~1e-16, or log densities differing far out): then
    # KL > 0 and the truth is strictly better in exact arithmetic (Gibbs), by less than the
    # float64 NLL resolves. So is a tie whose f differs only where the prior has mass
    # < tail_mass. What remains has the truth's density to rounding: not identifiable.
    unexplained = [
        m
        for (m, mass), tv in zip(ties, tvs, strict=True)
        if mass >= tail_mass and tv <= _TV_FLOOR and _max_log_density_gap(m, truth) <= 1e-9
    ]
    # Definition 2.1 compares models of the same class: a tie whose decoder is not weakly
    # injective (F2) is outside the class the identifiability theorem speaks about.
    unexplained_f2 = [m for m in unexplained if injectivity(m) != "not weakly injective"]
    best_other, _ = res.best_nonequivalent(truth, eq_tol)
    unique = bool(truth_is_min and not ties and not res.truncated)
    unique_tails = bool(truth_is_min and not unexplained and not res.truncated)
    unique_f2 = bool(truth_is_min and not unexplained_f2 and not res.truncated)
    if unique:
        reason = "unique up to equivalence"
    elif not truth_is_min:
        reason = "a non-equivalent point has a lower NLL than the truth"
    elif res.truncated:
        reason = f"more than {len(res.values)} points tie with the minimum"
    elif unique_tails:
        reason = (
            f"{len(ties)} non-equivalent tie(s), all with a density distinct from the truth's "
            f"(total variation {float(tvs.min()):.1e} to {tie_tv:.1e}): KL below float64 "
            "resolution; unique in exact arithmetic"
        )
    else:
        reason = (
            f"{len(unexplained)} non-equivalent model(s) with the truth's density (to float64 "
            f"rounding), differing on prior mass {max(mass for _, mass in ties):.2g}: not "
            "identifiable"
            + ("" if unexplained_f2 else "; their decoders are not weakly injective (F2)")
        )
    return {
        "index": index,
        "n_components": truth.n_components,
        "truth": truth.to_dict(),
        "truth_injectivity": injectivity(truth),
        "truth_injectivity_on_bulk": injectivity(truth, bulk=4.0),
        "truth_nll": truth_nll,
        "min_nll": res.minimum,
        "n_minimizers": res.n_minimizers,
        "minimizers_truncated": res.truncated,
        "minimizers": [m.to_dict() for m in minimizers][:20],
        "minimizers_equivalent_to_truth": int(n_equiv),
        "max_disagreement_mass": worst,
        "truth_is_minimizer": bool(truth_is_min),
        "unique_up_to_equivalence": unique,
        "unique_up_to_tails": unique_tails,
        "n_unexplained_ties": len(unexplained),
        "n_unexplained_ties_weakly_injective": len(unexplained_f2),
        "unique_among_weakly_injective": unique_f2,
        "max_tie_total_variation": tie_tv,
        "reason": reason,
        "second_best_nll": best_other,
        "gap": best_other - res.minimum if math.isfinite(best_other) else None,
        "gap_lower_bound": float(res.values[-1] - res.minimum),
    }


def _summarise(
    records: list[dict[str, Any]],
    grids: dict[int, Grid],
    evaluated: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    by_class: dict[str, dict[str, int]] = {}
    for r in records:
        c = by_class.setdefault(
            r["truth_injectivity"],
            {
                "n": 0,
                "n_unique": 0,
                "n_unique_up_to_tails": 0,
                "n_unique_among_weakly_injective": 0,
            },
        )
        c["n"] += 1
        c["n_unique"] += int(r["unique_up_to_equivalence"])
        c["n_unique_up_to_tails"] += int(r["unique_up_to_tails"])
        c["n_unique_among_weakly_injective"] += int(r["unique_among_weakly_injective"])
    gaps = [r["gap"] for r in records if r["gap"] is not None and r["unique_up_to_equivalence"]]
    n_tails = sum(r["unique_up_to_tails"] for r in records)
    weakly = [r for r in records if r["truth_injectivity"] != "not weakly injective"]
    return {
        "n_simulations": len(records),
        "n_unique": sum(r["unique_up_to_equivalence"] for r in records),
        "n_unique_up_to_tails": n_tails,
        "max_tie_total_variation": max(r["max_tie_total_variation"] for r in records),
        "n_unique_among_weakly_injective": sum(r["unique_among_weakly_injective"] for r in records),
        "n_truth_is_minimizer": sum(r["truth_is_minimizer"] for r in records),
        "n_truth_weakly_injective": len(weakly),
        "by_injectivity": by_class,
        "failures": [
            {
                "index": r["index"],
                "reason": r["reason"],
                "injectivity": r["truth_injectivity"],
                "injectivity_on_bulk": r["truth_injectivity_on_bulk"],
            }
            for r in records
            if not r["unique_up_to_tails"]
        ],
        "min_gap": min(gaps) if gaps else None,
        "median_gap": float(np.median(gaps)) if gaps else None,
        "grid_sizes": {str(j): g.size for j, g in grids.items()},
        "points_evaluated": evaluated,
        "seconds": round(seconds, 3),
        "paper": "50 of 50 (App. J.3.1)",
    }


# ---------------------------------------------------------------------------------------
# profiles (Fig. 1)
# ---------------------------------------------------------------------------------------
_PROFILE_NAMES = ("weights", "means", "alpha", "beta", "bias")


def _parse_parameter(model: ToyModel, parameter: str) -> tuple[str, int]:
    name, _, rest = parameter.partition("[")
    if name not in _PROFILE_NAMES or not rest.endswith("]") or not rest[:-1].isdigit():
        raise ValueError(
            f"Expected a parameter like 'means[0]' with name in {_PROFILE_NAMES} but got "
            f"{parameter!r}"
        )
    index = int(rest[:-1])
    size = model.n_components if name in ("weights", "means") else model.n_neurons
    if index >= size:
        raise ValueError(f"Expected an index < {size} for {name} but got {index}")
    return name, index


def profile_nll(
    true_model: ToyModel,
    parameter: str,
    values: Any,
    *,
    at: ToyModel | None = None,
    nodes: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The population NLL along one parameter, the others held at ``at`` (the truth).

    Args:
        true_model: the truth (an unbatched ToyModel).
        parameter: ``"weights[j]"``, ``"means[j]"``, ``"alpha[i]"``, ``"beta[i]"`` or
            ``"bias[i]"``. Varying ``weights[j]`` rescales the other weights proportionally.
        values: array of shape (n,), the values of the parameter.
        at: the model whose other parameters are used; the truth by default.
        nodes: quadrature nodes; the truth's by default.

    Returns:
        Array of shape (n,).
    """
    base = true_model if at is None else at
    name, index = _parse_parameter(base, parameter)
    values = check_array(np.atleast_1d(np.asarray(values, dtype=np.float64)), "values", ndim=1)
    n = values.shape[0]
    params = {k: np.repeat(v[None], n, axis=0) for k, v in base._params.items()}
    if name == "weights":
        if np.any((values < 0) | (values > 1)):
            raise ValueError("Expected weight values in [0, 1]")
        w = params["weights"]
        rest = 1.0 - base.weights[index]
        others = (
            base.weights / rest
            if rest > 0
            else np.full(base.n_components, 1.0 / max(1, base.n_components - 1))
        )
        w[:] = (1.0 - values)[:, None] * others[None]
        w[:, index] = values
    else:
        params[name][:, index] = values
    return population_nll(true_model, ToyModel(**params), nodes=nodes)


def _profile_range(model: ToyModel, name: str, index: int) -> tuple[float, float]:
    if name == "weights":
        return 0.0, 1.0
    centre = float(getattr(model, name)[index])
    half = 2.0 if name == "means" else 1.5
    return centre - half, centre + half


def plot_profiles(
    true_model: ToyModel,
    path: str | Path,
    *,
    parameters: Sequence[str] | None = None,
    n_points: int = 121,
    title: str | None = None,
) -> dict[str, dict[str, float]]:
    """Figure-1-style profiles: NLL along each parameter with the others at the truth.

    Each panel marks the true value (solid line) and the profile's minimiser (dashed); the
    paper's claim is that they coincide. Written atomically as a PNG (no pyplot state).

    Returns:
        For each parameter, ``{"truth": value, "argmin": value}`` (argmin NaN on a flat
        profile, e.g. the mean of a component of weight 0).
    """
    from matplotlib.figure import Figure

    if parameters is None:
        parameters = [
            f"{n}[{i}]"
            for n in _PROFILE_NAMES
            for i in range(true_model.n_components if n in ("weights", "means") else 2)
        ]
    nodes = quadrature_nodes(true_model)
    n_cols = min(4, len(parameters))
    n_rows = math.ceil(len(parameters) / n_cols)
    fig = Figure(figsize=(3.2 * n_cols, 2.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    marks: dict[str, dict[str, float]] = {}
    for ax, parameter in zip(axes, parameters, strict=False):
        name, index = _parse_parameter(true_model, parameter)
        lo, hi = _profile_range(true_model, name, index)
        truth = float(getattr(true_model, name)[index])
        grid = np.union1d(np.linspace(lo, hi, n_points), [truth])
        nll = profile_nll(true_model, parameter, grid, nodes=nodes)
        finite = nll < 1e20
        tied = nll <= nll.min() + 1e-9
        # among profile points tied with the minimum, mark the one nearest the truth and
        # shade the tied range (a flat stretch, e.g. a neuron that is off there)
        arg = float(grid[tied][np.argmin(np.abs(grid[tied] - truth))])
        if tied.sum() > 1:
            ax.axvspan(grid[tied].min(), grid[tied].max(), color="tab:red", alpha=0.12, lw=0)
        flat = bool(np.ptp(nll[finite]) < 1e-9) if finite.any() else True
        ax.plot(grid[finite], nll[finite], color="black", lw=1.2)
        ax.axvline(truth, color="tab:blue", lw=2.0, label="truth")
        if flat:  # e.g. the mean of a component of weight 0: no information, no minimiser
            ax.text(0.5, 0.9, "flat", transform=ax.transAxes, ha="center", fontsize=8)
        else:
            ax.axvline(arg, color="tab:red", lw=1.2, ls="--", label="minimiser")
        ax.set_xlabel(parameter)
        ax.set_ylabel("NLL")
        ax.ticklabel_format(axis="y", useOffset=False)
        marks[parameter] = {"truth": truth, "argmin": float("nan") if flat else arg}
    for ax in axes[len(parameters) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    return marks
