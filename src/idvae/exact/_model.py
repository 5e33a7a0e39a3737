"""The toy model of App. J.3.1: closed-form density, sampling, population and sample NLL."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy.special import log_ndtr

from idvae._validation import (
    RandomState,
    check_array,
    check_positive_int,
    check_random_state,
)
from idvae.mixture import LOG_2PI

LOG_FLOOR = -1e30  # stands in for log(0) so that 0 * log p stays 0 in quadrature sums


# ---------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------
def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate on both sides of -log 2 (Maechler, 2012)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def log_ndtr_diff(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
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


def affine_pieces(
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


def mixture_component_logpdf(
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
        pieces: the output of ``affine_pieces``, arrays of shape (B, P).
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
    log_normal = -0.5 * (resid**2 / var_x + np.log(var_x) + LOG_2PI)
    post_mean = (mu * sig2 + slope * s2 * (xx - intercept)) / var_x
    post_sd = np.sqrt(s2 * sig2 / var_x)
    with np.errstate(invalid="ignore"):
        lo = (lower - post_mean) / post_sd
        hi = (upper - post_mean) / post_sd
    terms = log_normal + log_ndtr_diff(lo, hi)  # (B, J, P, N)
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
        x = check_points(x)
        p = self._batch()
        pieces = affine_pieces(p["alpha"], p["beta"], p["bias"])
        out = mixture_component_logpdf(x, p["means"], p["stds"], pieces, p["noise_std"])
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


def check_points(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64) if not hasattr(x, "detach") else x
    if np.ndim(arr) == 2 and np.shape(arr)[1] == 1:
        arr = np.asarray(arr)[:, 0]
    return check_array(arr, "x", ndim=1, min_samples=0)


# ---------------------------------------------------------------------------------------
# likelihoods
# ---------------------------------------------------------------------------------------
def mass_interval(model: ToyModel, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
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
    lo, hi = mass_interval(model, cutoff)
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
    log_p = np.maximum(model.logpdf(x), LOG_FLOOR)
    out = -(log_p @ weight)
    return out if model.is_batched else float(out)


def sample_nll(model: ToyModel, x: Any) -> float | np.ndarray:
    """The sample negative log-likelihood -mean_i log p_theta(x_i); float or (B,)."""
    x = check_points(x)
    if x.shape[0] == 0:
        raise ValueError("Expected at least 1 sample in x but got 0")
    out = -np.mean(model.logpdf(x), axis=-1)
    return out if model.is_batched else float(out)
