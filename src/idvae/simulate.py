"""Samplers of model (3) of the paper: U → Z → X with the ground truth returned.

    U = u ~ P(U)                    k = 1: U ∈ [J];  k > 1: U ∈ [d_1] × … × [d_k]
    Z | U = u ~ N(μ_u, Σ_u)         (P1); diagonal Σ_u gives (P2)
    X = f(Z) + ε, ε ~ N(0, σ² I)    f a ReLU / LeakyReLU MLP, (F1); App. H for injectivity

``sample_model`` draws a random instance of the model and samples from it; the returned
``Simulation``, an ``idvae.data.Data``, holds the data (x, z, u, labels) and the truth (the
prior of Z as a ``GMM``, the decoder f as a ``torch.nn.Module``, the noise level and, for
multivariate U, the graph and P(U)). How every parameter is drawn is documented on
``sample_model``.

The module is long because model (3) is sampled in one place: the prior (k = 1, and
multivariate U with its graph), the random decoder, and the checks of (P2), (P3) and the
structure that a sampled instance is drawn to pass.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from idvae._validation import (
    RandomState,
    check_array,
    check_positive_int,
    check_random_state,
)
from idvae.data import Data
from idvae.mixture import GMM
from idvae.nets import LEAKY_SLOPE, Activation, activation_module, mlp

__all__ = [
    "Simulation",
    "check_neighbors",
    "check_structure",
    "decoder_jacobians",
    "default_hidden",
    "default_neighbors",
    "random_decoder",
    "sample_model",
]

Covariance = Literal["diag", "full"]

# -- how random instances are drawn (documented on `sample_model`) -----------------------
SEPARATION = 3.0  # smallest distance between component means, in units of the largest std
VARIANCE_RANGE = (0.25, 1.0)  # component variances / eigenvalues, drawn log-uniformly
WEIGHT_FLOOR = 0.5  # half the mass is spread evenly: every weight >= WEIGHT_FLOOR / J
DIRICHLET_ALPHA = 2.0
HIDDEN_BIAS_STD = 0.5
CALIBRATION_SAMPLES = 4096
RANK_TOL = 1e-3  # a weight counts as full column rank when sigma_min / sigma_max >= this
RATIO_GAP = 0.1  # (P2): distinct log-variance ratios differ by at least RATIO_GAP / m²
MAX_REDRAWS = 100


@dataclass(frozen=True, eq=False, kw_only=True)
class Simulation(Data):
    """A sample of model (3) together with the truth that generated it.

    A :class:`~idvae.data.Data` whose z, u, prior and labels are always known, with the
    decoder and the noise as well: anything that takes a ``Data`` (``idvae.stability``,
    ``Data.save`` / ``idvae.datasets.load_array``) takes a simulation as it is.

    Attributes:
        x: array of shape (n_samples, obs_dim), float64: the observations f(z) + ε.
        z: array of shape (n_samples, latent_dim), float64: the latent points.
        u: int64 array of shape (n_samples,) (k = 1: the component of each point) or
            (n_samples, k) (multivariate U: the state of each U_i).
        prior: the law of Z as a ``GMM``. For multivariate U its J = ∏ d_i components are the
            configurations of U in row-major order (component ``np.ravel_multi_index(u,
            facets)``), with weights ``joint.ravel()``.
        labels: int64 array of shape (n_samples,): the component of ``prior`` each point
            came from; computed from u (and facets) when not given.
        decoder: the decoder f, a float64 ``torch.nn.Sequential`` (parameters frozen).
        noise_std: σ, the standard deviation of each coordinate of ε.
        facets: (d_1, …, d_k) for multivariate U, else None.
        neighbors: ne(U_i) ⊂ {0, …, latent_dim − 1} for each i, for multivariate U.
        joint: array of shape facets, P(U = u), for multivariate U.
    """

    decoder: nn.Module
    noise_std: float
    facets: tuple[int, ...] | None = None
    neighbors: tuple[tuple[int, ...], ...] | None = None
    joint: np.ndarray | None = None

    def __post_init__(self) -> None:
        missing = [name for name in ("z", "u", "prior") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"Expected a Simulation with z, u and prior but {missing} are None")
        if self.labels is None:
            labels = self.u
            if self.facets is not None:
                labels = np.ravel_multi_index(tuple(self.u.T), self.facets).astype(np.int64)
            object.__setattr__(self, "labels", labels)
        super().__post_init__()

    def decode(self, z: Any) -> np.ndarray:
        """f(z) without noise.

        Args:
            z: array of shape (n, latent_dim).

        Returns:
            Float64 array of shape (n, obs_dim).
        """
        z = check_array(z, "z", n_features=self.z.shape[1])
        return _apply(self.decoder, z)

    def save(self, path: str | Path) -> Path:
        """Write the sample and the truth to a ``.npz`` file, atomically.

        Keys: ``x``, ``z``, ``u``, ``labels`` (read back by ``idvae.datasets.load_array``),
        ``noise_std``, ``prior_weights``, ``prior_means``, ``prior_covariances``,
        ``decoder_activation`` (``"leaky_relu"`` with slope 0.2, ``"relu"``, or ``"none"``
        for an affine f) and ``decoder_weight_<l>`` / ``decoder_bias_<l>`` for each
        Linear layer l; with multivariate U also ``facets``, ``joint`` and ``neighbors`` (a
        boolean array of shape (k, latent_dim), entry [i, t] true when t ∈ ne(U_i)).

        Returns:
            The path written.
        """
        return super().save(path)

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` keys and arrays that :meth:`save` writes (see there)."""
        arrays = super().arrays()
        arrays["noise_std"] = np.asarray(self.noise_std)
        linears = [m for m in self.decoder.modules() if isinstance(m, nn.Linear)]
        activations = [m for m in self.decoder.modules() if isinstance(m, nn.LeakyReLU | nn.ReLU)]
        name = "none"  # a single Linear layer: f is affine
        if activations:
            name = "leaky_relu" if isinstance(activations[0], nn.LeakyReLU) else "relu"
        arrays["decoder_activation"] = np.asarray(name)
        for i, layer in enumerate(linears):
            arrays[f"decoder_weight_{i}"] = layer.weight.detach().cpu().numpy()
            arrays[f"decoder_bias_{i}"] = layer.bias.detach().cpu().numpy()
        if self.facets is not None:
            adjacency = np.zeros((len(self.facets), self.z.shape[1]), dtype=bool)
            for i, ne in enumerate(self.neighbors):
                adjacency[i, list(ne)] = True
            arrays.update(facets=np.asarray(self.facets), joint=self.joint, neighbors=adjacency)
        return arrays

    @classmethod
    def load(cls, path: str | Path) -> Simulation:
        """Read a ``Simulation`` written by ``save`` (the decoder is rebuilt from its weights).

        Raises:
            ValueError: the file is not a saved simulation (a key is missing or malformed).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Expected a saved simulation at {path} but it does not exist")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {key: f[key] for key in f.files}
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"Expected a .npz simulation at {path} but: {err}") from None
        required = ("x", "z", "u", "noise_std", "prior_weights", "prior_means")
        required += ("prior_covariances", "decoder_activation")
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(
                f"Expected a simulation saved by Simulation.save at {path} but it lacks {missing}"
            )
        try:
            weights, biases = _saved_decoder(data)
            prior = GMM(data["prior_weights"], data["prior_means"], data["prior_covariances"])
            facets = neighbors = joint = None
            if "facets" in data:
                facets = tuple(int(d) for d in data["facets"])
                adjacency = np.asarray(data["neighbors"], dtype=bool)
                neighbors = tuple(tuple(int(t) for t in np.flatnonzero(row)) for row in adjacency)
                joint = np.asarray(data["joint"], dtype=np.float64)
        except (KeyError, ValueError, TypeError) as err:
            reason = f"it lacks {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(
                f"Expected a simulation saved by Simulation.save at {path} but {reason}"
            ) from None
        sizes = [int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights]
        if sizes[0] != prior.dim or sizes[-1] != np.shape(data["x"])[-1]:
            raise ValueError(
                f"Expected a decoder from the prior's {prior.dim} dimensions to x's "
                f"{np.shape(data['x'])[-1]} in {path} but its widths are {sizes}"
            )
        saved = np.asarray(data["decoder_activation"])
        activation = str(saved) if saved.ndim == 0 else f"an array of shape {saved.shape}"
        if activation not in ("relu", "leaky_relu", "none"):
            raise ValueError(
                f"Expected decoder_activation relu, leaky_relu or none in {path} but got "
                f"{activation}"
            )
        net = _build(sizes, "relu" if activation == "relu" else "leaky_relu", weights, biases)
        return cls(
            x=np.asarray(data["x"], dtype=np.float64),
            z=np.asarray(data["z"], dtype=np.float64),
            u=np.asarray(data["u"], dtype=np.int64),
            prior=prior,
            decoder=net,
            noise_std=float(data["noise_std"]),
            facets=facets,
            neighbors=neighbors,
            joint=joint,
        )


def _saved_decoder(data: dict[str, np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The decoder's weights and biases of a saved simulation, checked to chain."""
    weights, biases, i = [], [], 0
    while f"decoder_weight_{i}" in data:
        w = np.asarray(data[f"decoder_weight_{i}"], np.float64)
        b = np.asarray(data[f"decoder_bias_{i}"], np.float64)
        n_in = weights[-1].shape[0] if weights else None
        if w.ndim != 2 or b.shape != (w.shape[0],) or n_in not in (None, w.shape[1]):
            raise ValueError(
                f"decoder layer {i} has weight shape {w.shape} and bias shape {b.shape}, "
                f"expected (out, {n_in or 'in'}) and (out,)"
            )
        weights.append(torch.from_numpy(w))
        biases.append(torch.from_numpy(b))
        i += 1
    if not weights:
        raise ValueError("it holds no decoder weights")
    return weights, biases


def sample_model(
    n_samples: int,
    *,
    latent_dim: int,
    obs_dim: int,
    n_components: int | None = None,
    covariance: Covariance = "diag",
    decoder: Activation = "leaky_relu",
    hidden: Sequence[int] | None = None,
    noise_std: float = 0.05,
    injective: bool = True,
    facets: Sequence[int] | None = None,
    neighbors: Sequence[Sequence[int]] | None = None,
    joint: Any = None,
    random_state: RandomState = None,
) -> Simulation:
    """Draw a random instance of model (3) and ``n_samples`` points from it.

    How the instance is drawn (the constants live at the top of this module):

    * **Weights** (k = 1): ``0.5 / J + 0.5 · Dirichlet(2, …, 2)``, so every weight is at
      least 1 / (2J). Multivariate U: P(U) is the same draw over the ∏ d_i configurations,
      reshaped to ``facets`` (so the U_i are dependent in general), unless ``joint`` is given.
    * **Variances**: log-uniform in [0.25, 1] (diagonal entries for ``"diag"``, eigenvalues
      of a randomly rotated matrix for ``"full"``). For ``"diag"`` with J ≥ 2, two components
      whose variance ratios (Σ_u1)_tt / (Σ_u2)_tt are pairwise distinct are checked to exist
      (their logs differ by ≥ 0.1 / m²), i.e. (P2) holds; otherwise the variances are
      redrawn. The same check is made for multivariate U.
    * **Means** (k = 1): drawn one by one uniformly in a cube [−R, R]^m with R =
      1.5 · J^(1/m), rejected when closer than 3 to an earlier mean (R grows by 20 % when a
      mean cannot be placed), so every pair of components is ≥ 3 of its largest standard
      deviation apart: separated, with neighbours overlapping a little. Multivariate U: for
      each coordinate Z_t the C_t configurations of its parents get the means 3 · (π(c) −
      (C_t − 1) / 2) + U(−0.3, 0.3), π a random permutation.
    * The prior is then **standardised** coordinate-wise (an affine map that keeps
      diagonal covariances diagonal and variance ratios unchanged), so Z has mean 0 and
      unit variance per coordinate.
    * **Decoder** (see ``random_decoder``): Linear layers of widths
      ``(latent_dim, *hidden, obs_dim)``; weights N(0, g² / fan_in) with g² = 2 / (1 + a²)
      (a = 0.2 for LeakyReLU, 0 for ReLU) and g = 1 for the last layer, hidden biases
      N(0, 0.5²); with ``injective=True`` every weight is redrawn until it has full column
      rank (σ_min / σ_max ≥ 1e-3). Finally the last layer is rescaled and shifted so that
      f(Z) has mean 0 and average per-coordinate variance 1 over 4,096 draws of Z: x stays
      O(1) and ``noise_std`` is relative to a unit signal.

    Random draws happen in that order (prior, decoder, then the data), so the same seed with
    another ``n_samples`` gives the same prior and decoder.

    Long for its documentation, which states how every part of the instance is drawn; the body
    checks the arguments, draws the prior (_draw_prior) and the decoder, and samples.

    Args:
        n_samples: the number of points.
        latent_dim: m, the dimension of Z.
        obs_dim: n, the dimension of X; m ≤ n (Remark 3.3).
        n_components: J, the number of mixture components (k = 1). With ``facets`` it may be
            omitted or must equal ∏ d_i.
        covariance: ``"diag"`` (conditionally independent coordinates, (P2)) or ``"full"``
            (k = 1 only).
        decoder: the activation of f, ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        hidden: hidden widths of f; default ``default_hidden(latent_dim, obs_dim)``, two layers
            interpolating geometrically between m and n.
        noise_std: σ ≥ 0.
        injective: impose App. H's sufficient conditions: widths nondecreasing from m to n and
            every weight of full column rank. With LeakyReLU f is then injective, (F4)
            (Cor. H.4). With ReLU the paper's Cor. H.2 claims observable injectivity, (F3),
            when also dim f(R^m) = m (checked: the Jacobian has rank m at some of the 4,096
            calibration points, else redrawn); that claim is false in general
            (``idvae.identify.counterexamples.relu_fold``), so ReLU decoders carry no
            guarantee — check them with ``idvae.identify.check_decoder``.
        facets: (d_1, …, d_k), each d_i ≥ 2, for a multivariate U.
        neighbors: ne(U_i) for each facet i, sequences of latent coordinates; default
            ``default_neighbors(k, latent_dim)`` (disjoint contiguous blocks as in MFCVAE).
            Checked by ``check_neighbors`` (every coordinate has a parent; (P3)(c)).
        joint: array of shape ``facets``, P(U = u) > 0 summing to 1; default a random table.
        random_state: int, ``numpy.random.Generator`` or None.

    Returns:
        A ``Simulation``; for multivariate U, Z_t | U ~ N(μ_t(pa), σ_t(pa)²) depends only on
        the states of the parents pa(Z_t) = {U_i : t ∈ ne(U_i)}, and the parameters of each
        Z_t are distinct for distinct parent states, which is (P3)(a).

    Example:
        >>> from idvae.simulate import sample_model
        >>> sim = sample_model(1000, latent_dim=2, obs_dim=10, n_components=3, random_state=0)
        >>> sim.x.shape, sim.z.shape, sim.u.shape, sim.prior.n_components
        ((1000, 10), (1000, 2), (1000,), 3)
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    obs_dim = check_positive_int(obs_dim, "obs_dim")
    if latent_dim > obs_dim:
        raise ValueError(
            f"Expected latent_dim <= obs_dim but got latent_dim = {latent_dim}, obs_dim = "
            f"{obs_dim}: a continuous decoder from R^m to R^n with m > n cannot be injective, "
            "and the paper's identifiability results assume m <= n (Remark 3.3)"
        )
    if covariance not in ("diag", "full"):
        raise ValueError(f"Expected covariance 'diag' or 'full' but got {covariance!r}")
    activation_module(decoder)  # validates the name
    noise_std = _check_noise_std(noise_std)
    if not isinstance(injective, bool | np.bool_):
        raise TypeError(f"Expected injective to be a bool but got {type(injective).__name__}")
    rng = check_random_state(random_state)

    prior, facets_t, neighbors_t, joint_arr = _draw_prior(
        n_components, latent_dim, covariance, facets, neighbors, joint, rng
    )

    calibration = prior.sample(CALIBRATION_SAMPLES, rng)
    net = random_decoder(
        latent_dim,
        obs_dim,
        hidden=hidden,
        activation=decoder,
        injective=injective,
        calibration=calibration,
        random_state=rng,
    )
    z, labels = prior.sample(n_samples, rng, return_labels=True)
    x = _apply(net, z) + noise_std * rng.standard_normal((n_samples, obs_dim))
    labels = labels.astype(np.int64)
    if facets_t is None:
        u = labels
    else:
        u = np.stack(np.unravel_index(labels, facets_t), axis=1).astype(np.int64)
    return Simulation(
        x=x,
        z=z,
        u=u,
        prior=prior,
        decoder=net,
        noise_std=noise_std,
        facets=facets_t,
        neighbors=neighbors_t,
        joint=joint_arr,
    )


def _draw_prior(
    n_components: int | None,
    latent_dim: int,
    covariance: Covariance,
    facets: Sequence[int] | None,
    neighbors: Sequence[Sequence[int]] | None,
    joint: Any,
    rng: np.random.Generator,
) -> tuple[GMM, tuple[int, ...] | None, tuple[tuple[int, ...], ...] | None, np.ndarray | None]:
    """The prior of Z as ``sample_model`` draws it, with the checked facets, graph and P(U).

    k = 1 (``facets`` None): a mixture of ``n_components``; multivariate U: the faceted
    mixture of ``facets`` with neighbourhoods ``neighbors`` and law ``joint`` of U (drawn
    when None). The facets, neighbourhoods and joint law are None for k = 1.
    """
    if facets is None:
        if neighbors is not None or joint is not None:
            raise ValueError("Expected facets when neighbors or joint is given but got facets=None")
        if n_components is None:
            raise ValueError(
                "Expected n_components (k = 1) or facets (multivariate U) but got neither"
            )
        n_components = check_positive_int(n_components, "n_components")
        prior = _draw_mixture(n_components, latent_dim, covariance, rng)
        facets_t, neighbors_t, joint_arr = None, None, None
    else:
        facets_t = _check_facets(facets)
        n_configurations = math.prod(facets_t)
        if n_components is not None and n_components != n_configurations:
            raise ValueError(
                f"Expected n_components = ∏ d_i = {n_configurations} for facets {facets_t} "
                f"but got n_components = {n_components}"
            )
        if covariance != "diag":
            raise ValueError(
                "Expected covariance='diag' with facets (the coordinates of Z are "
                f"conditionally independent given U, (P2)) but got covariance={covariance!r}"
            )
        if neighbors is None:
            neighbors_t = default_neighbors(len(facets_t), latent_dim)
        else:
            neighbors_t = check_neighbors(neighbors, len(facets_t), latent_dim)
        joint_arr = _check_joint(joint, facets_t) if joint is not None else None
        if joint_arr is None:
            joint_arr = _draw_weights(n_configurations, rng).reshape(facets_t)
        prior = _draw_faceted_mixture(facets_t, neighbors_t, joint_arr, latent_dim, rng)
    return prior, facets_t, neighbors_t, joint_arr


# -- decoders -----------------------------------------------------------------------------
def default_hidden(latent_dim: int, obs_dim: int, n_layers: int = 2) -> tuple[int, ...]:
    """Hidden widths interpolating geometrically from m to n (nondecreasing, App. H).

    Example:
        >>> default_hidden(2, 10)
        (3, 6)
    """
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    obs_dim = check_positive_int(obs_dim, "obs_dim")
    n_layers = check_positive_int(n_layers, "n_layers", minimum=0)
    lo, hi = sorted((latent_dim, obs_dim))
    widths = [
        round(latent_dim * (obs_dim / latent_dim) ** (i / (n_layers + 1)))
        for i in range(1, n_layers + 1)
    ]
    return tuple(int(min(max(w, lo), hi)) for w in widths)


def random_decoder(
    latent_dim: int,
    obs_dim: int,
    *,
    hidden: Sequence[int] | None = None,
    activation: Activation = "leaky_relu",
    injective: bool = True,
    calibration: Any = None,
    random_state: RandomState = None,
) -> nn.Sequential:
    """A random float64 MLP f: R^m → R^n whose output is O(1) on ``calibration``.

    Weights are drawn from a ``torch.Generator`` seeded by ``random_state`` (torch's global
    generator is neither used nor changed). See ``sample_model`` for the distributions.

    Args:
        latent_dim: m.
        obs_dim: n.
        hidden: hidden widths; default ``default_hidden(m, n)``.
        activation: ``"leaky_relu"`` or ``"relu"``.
        injective: require widths nondecreasing from m to n and full-column-rank weights
            (App. H); for ReLU also dim f(R^m) = m on the calibration points.
        calibration: array of shape (n_points, m) of typical inputs; the last layer is
            rescaled so that f(calibration) has mean 0 and average variance 1 per output.
            Default: 4,096 standard normal points.
        random_state: int, ``numpy.random.Generator`` or None.

    Returns:
        An ``nn.Sequential`` in eval mode with frozen float64 parameters.
    """
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    obs_dim = check_positive_int(obs_dim, "obs_dim")
    activation_module(activation)
    rng = check_random_state(random_state)
    hidden = default_hidden(latent_dim, obs_dim) if hidden is None else _check_hidden(hidden)
    sizes = [latent_dim, *hidden, obs_dim]
    if injective and any(a > b for a, b in zip(sizes[:-1], sizes[1:], strict=True)):
        raise ValueError(
            "Expected nondecreasing layer widths from latent_dim to obs_dim for an injective "
            f"decoder (App. H) but got widths {sizes}; pass injective=False for any widths"
        )
    if calibration is None:
        calibration = rng.standard_normal((CALIBRATION_SAMPLES, latent_dim))
    calibration = check_array(calibration, "calibration", n_features=latent_dim, min_samples=2)
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    gain2 = 2.0 / (1.0 + (LEAKY_SLOPE**2 if activation == "leaky_relu" else 0.0))
    for _ in range(MAX_REDRAWS):
        weights, biases = [], []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = i == len(sizes) - 2
            std = math.sqrt((1.0 if last else gain2) / n_in)
            weights.append(_draw_weight(n_out, n_in, std, injective, generator))
            bias_std = 0.0 if last else HIDDEN_BIAS_STD
            biases.append(bias_std * torch.randn(n_out, generator=generator, dtype=torch.float64))
        net = _build(sizes, activation, weights, biases)
        out = _apply(net, calibration)
        scale = float(np.sqrt(np.mean(out.var(axis=0))))
        if not np.isfinite(scale) or scale <= 0:
            continue  # f is constant on the calibration points: redraw
        last_layer = net[-1]
        with torch.no_grad():
            last_layer.weight /= scale
            last_layer.bias.copy_((last_layer.bias - torch.from_numpy(out.mean(axis=0))) / scale)
        if injective and activation == "relu":
            # Cor. H.2 needs dim f(R^m) = m: rank m somewhere on the calibration points
            ranks = np.linalg.matrix_rank(decoder_jacobians(net, calibration[:256]))
            if not np.any(ranks == latent_dim):
                continue
        return net
    raise RuntimeError(  # pragma: no cover - needs MAX_REDRAWS failures in a row
        f"Could not draw a decoder with widths {sizes} meeting the requirements in "
        f"{MAX_REDRAWS} tries"
    )


def decoder_jacobians(decoder: nn.Module, z: Any) -> np.ndarray:
    """Jacobians of a piecewise affine MLP (Linear, ReLU, LeakyReLU layers) at points z.

    Args:
        decoder: an ``nn.Sequential`` of ``nn.Linear``, ``nn.ReLU`` and ``nn.LeakyReLU``.
        z: array of shape (n, m).

    Returns:
        Float64 array of shape (n, obs_dim, m): df/dz at each point (the one-sided
        derivative 0 for ReLU, slope a for LeakyReLU, where a pre-activation is exactly 0).
    """
    z = check_array(z, "z")
    h = torch.from_numpy(z)
    jac = torch.eye(z.shape[1], dtype=torch.float64).expand(z.shape[0], -1, -1)
    with torch.no_grad():
        for layer in decoder:
            if isinstance(layer, nn.Linear):
                w = layer.weight.detach().to(torch.float64)
                h = h @ w.T + layer.bias.detach().to(torch.float64)
                jac = w @ jac
            elif isinstance(layer, nn.LeakyReLU | nn.ReLU):
                slope = layer.negative_slope if isinstance(layer, nn.LeakyReLU) else 0.0
                d = torch.where(h > 0, torch.ones_like(h), torch.full_like(h, slope))
                h = torch.where(h > 0, h, slope * h)
                jac = d[:, :, None] * jac
            else:
                raise TypeError(
                    "Expected a Sequential of Linear, ReLU and LeakyReLU layers but got "
                    f"{type(layer).__name__}"
                )
    return jac.numpy()


def _draw_weight(
    n_out: int, n_in: int, std: float, injective: bool, generator: torch.Generator
) -> torch.Tensor:
    for _ in range(MAX_REDRAWS):
        w = std * torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
        if not injective:
            return w
        s = torch.linalg.svdvals(w)
        if s[-1] >= RANK_TOL * s[0]:  # full column rank, not nearly singular
            return w
    raise RuntimeError(f"Could not draw a full-rank {n_out}x{n_in} weight")  # pragma: no cover


def _build(
    sizes: Sequence[int],
    activation: Activation,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
) -> nn.Sequential:
    with torch.device("meta"):  # no default initialisation: torch's global RNG is untouched
        net = mlp(sizes, activation)
    net = net.to_empty(device="cpu").to(torch.float64)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, w, b in zip(linears, weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    net.requires_grad_(False)
    return net.eval()


def _apply(net: nn.Module, z: np.ndarray) -> np.ndarray:
    param = next(net.parameters())
    with torch.no_grad():
        out = net(torch.as_tensor(z, dtype=param.dtype, device=param.device))
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float64)


# -- priors -------------------------------------------------------------------------------
def _draw_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    w = WEIGHT_FLOOR / n + (1.0 - WEIGHT_FLOOR) * rng.dirichlet(np.full(n, DIRICHLET_ALPHA))
    return w / w.sum()


def _log_uniform(rng: np.random.Generator, size: Any) -> np.ndarray:
    lo, hi = np.log(VARIANCE_RANGE)
    return np.exp(rng.uniform(lo, hi, size=size))


def _has_distinct_ratios(variances: np.ndarray) -> bool:
    """(P2): some pair of rows u1, u2 with all variances[u1, t] / variances[u2, t] distinct."""
    n_rows, m = variances.shape
    if n_rows < 2:
        return False
    if m == 1:
        return True
    log_var = np.log(variances)
    for j in range(min(n_rows, 50)):
        ratios = np.sort(log_var[j] - log_var, axis=1)  # (J, m): log ratios against row j
        gaps = np.min(np.diff(ratios, axis=1), axis=1)
        gaps[j] = -np.inf
        if np.any(gaps >= RATIO_GAP / m**2):
            return True
    return False


def _draw_means(n_components: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    radius = 0.5 * SEPARATION * n_components ** (1.0 / dim)
    means = np.empty((0, dim))
    while means.shape[0] < n_components:
        for _ in range(1000):
            candidate = rng.uniform(-radius, radius, size=dim)
            if np.all(np.linalg.norm(means - candidate, axis=1) >= SEPARATION):
                means = np.vstack([means, candidate])
                break
        else:
            radius *= 1.2
    return means


def _draw_mixture(
    n_components: int, dim: int, covariance: Covariance, rng: np.random.Generator
) -> GMM:
    weights = _draw_weights(n_components, rng)
    if covariance == "diag":
        for _ in range(MAX_REDRAWS):
            variances = _log_uniform(rng, (n_components, dim))
            if n_components < 2 or _has_distinct_ratios(variances):
                break
        covariances = variances[:, :, None] * np.eye(dim)[None]
    else:
        q, r = np.linalg.qr(rng.standard_normal((n_components, dim, dim)))
        q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar rotations
        eig = _log_uniform(rng, (n_components, dim))
        covariances = np.einsum("jik,jk,jlk->jil", q, eig, q)
    # the largest variance is 1, so SEPARATION is in units of the largest std
    means = _draw_means(n_components, dim, rng)
    return _standardize(GMM(weights, means, covariances))


def _standardize(prior: GMM) -> GMM:
    """The law of (Z − E Z) / sd(Z), coordinate-wise."""
    mean = prior.weights @ prior.means
    second = np.einsum("j,jtt->t", prior.weights, prior.covariances) + prior.weights @ (
        prior.means**2
    )
    std = np.sqrt(second - mean**2)
    return prior.pushforward(np.diag(1.0 / std), -mean / std)


def _check_facets(facets: Any) -> tuple[int, ...]:
    if isinstance(facets, numbers.Integral) or isinstance(facets, str | bytes):
        raise TypeError(
            f"Expected facets to be a sequence of state counts like (2, 3) but got {facets!r}"
        )
    try:
        values = list(facets)
    except TypeError:
        raise TypeError(
            f"Expected facets to be a sequence of state counts but got {type(facets).__name__}"
        ) from None
    if not values:
        raise ValueError("Expected at least one facet but got facets = ()")
    return tuple(check_positive_int(d, f"d_{i + 1}", minimum=2) for i, d in enumerate(values))


def _check_joint(joint: Any, facets: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(joint.detach().cpu() if hasattr(joint, "detach") else joint)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"Expected joint to hold numbers but got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.shape != facets:
        raise ValueError(f"Expected joint of shape {facets} (the facets) but got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("Expected joint to be finite but it contains NaN or infinity")
    if np.any(arr <= 0):
        where = tuple(int(i) for i in np.argwhere(arr <= 0)[0])
        raise ValueError(
            "Expected P(U = u) > 0 for every configuration u (Thm F.1 assumes it, and each "
            f"configuration is a component of the prior) but got joint[{where}] = {arr[where]:g}"
        )
    if not np.isclose(arr.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError(f"Expected joint summing to 1 but got sum {arr.sum():.8g}")
    return arr / arr.sum()


def default_neighbors(n_facets: int, latent_dim: int) -> tuple[tuple[int, ...], ...]:
    """ne(U_i) as disjoint contiguous blocks (MFCVAE's structure).

    Each facet gets ``latent_dim // n_facets`` coordinates; the remainder goes one each to the
    first facets.

    Example:
        >>> default_neighbors(2, 5)
        ((0, 1, 2), (3, 4))
    """
    n_facets = check_positive_int(n_facets, "n_facets")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if n_facets > latent_dim:
        raise ValueError(
            f"Expected at most latent_dim = {latent_dim} facets for disjoint blocks but got "
            f"{n_facets} facets; pass neighbors explicitly"
        )
    base, extra = divmod(latent_dim, n_facets)
    out, start = [], 0
    for i in range(n_facets):
        size = base + (1 if i < extra else 0)
        out.append(tuple(range(start, start + size)))
        start += size
    return tuple(out)


def check_neighbors(
    neighbors: Sequence[Sequence[int]], n_facets: int, latent_dim: int
) -> tuple[tuple[int, ...], ...]:
    """Validate the bipartite graph ne(U_i) ⊂ {0, …, m − 1} and return it as sorted tuples.

    Checks the graph part of the assumptions (Def. 3.2, (P3), App. F):

    * every ne(U_i) is a nonempty set of distinct coordinates in [0, m);
    * every coordinate Z_t has at least one parent U_i (t ∈ ne(U_i));
    * (P3)(c) / (L4): ne(U_i) is not a subset of ne(U_j) for i ≠ j (which implies (L1),
      no twins).

    The other parts of (P3) concern the distribution, not the graph: (a) (equivalently (L3)(b))
    holds for the parameters ``sample_model`` draws, because with conditionally independent
    coordinates it reduces to: the parameters (μ_t, σ_t) of every Z_t differ between distinct
    states of its parents (their means are ≥ 2.4 apart before standardisation). (b)
    (maximality, (L2)) then follows when P(U = u) > 0 for all u: splitting U_i into (V, W)
    would make a child of V alone depend on U_i only through V, so two states of U_i would
    give it equal parameters, contradicting (a).

    Args:
        neighbors: a sequence of ``n_facets`` sequences of coordinate indices.
        n_facets: k.
        latent_dim: m.
    """
    n_facets = check_positive_int(n_facets, "n_facets")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if isinstance(neighbors, str | bytes) or not isinstance(neighbors, Sequence | np.ndarray):
        raise TypeError(
            f"Expected neighbors to be a sequence of {n_facets} index sequences but got "
            f"{type(neighbors).__name__}"
        )
    if len(neighbors) != n_facets:
        raise ValueError(
            f"Expected neighbors for each of the {n_facets} facets but got {len(neighbors)}"
        )
    sets: list[tuple[int, ...]] = []
    for i, ne in enumerate(neighbors):
        if isinstance(ne, numbers.Integral) or isinstance(ne, str | bytes):
            raise TypeError(f"Expected ne(U_{i}) to be a sequence of indices but got {ne!r}")
        items = list(ne)
        if not items:
            raise ValueError(f"Expected ne(U_{i}) to be nonempty but got an empty set")
        idx = [check_positive_int(t, f"an index in ne(U_{i})", minimum=0) for t in items]
        if max(idx) >= latent_dim:
            raise ValueError(
                f"Expected indices in ne(U_{i}) below latent_dim = {latent_dim} but got {max(idx)}"
            )
        if len(set(idx)) != len(idx):
            raise ValueError(f"Expected distinct indices in ne(U_{i}) but got {idx}")
        sets.append(tuple(sorted(idx)))
    covered = set().union(*sets)
    orphans = [t for t in range(latent_dim) if t not in covered]
    if orphans:
        raise ValueError(
            "Expected every latent coordinate to have a parent U_i but "
            f"Z_{orphans[0]} is in no ne(U_i)"
        )
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            if i != j and set(a) <= set(b):
                raise ValueError(
                    f"Expected ne(U_i) not a subset of ne(U_j) for i != j ((P3)(c)) but "
                    f"ne(U_{i}) = {set(a)} is a subset of ne(U_{j}) = {set(b)}"
                )
    return tuple(sets)


def _parents(neighbors: tuple[tuple[int, ...], ...], latent_dim: int) -> list[tuple[int, ...]]:
    return [tuple(i for i, ne in enumerate(neighbors) if t in ne) for t in range(latent_dim)]


def _draw_faceted_mixture(
    facets: tuple[int, ...],
    neighbors: tuple[tuple[int, ...], ...],
    joint: np.ndarray,
    latent_dim: int,
    rng: np.random.Generator,
) -> GMM:
    """The GMM over Z of a multivariate U: component j is configuration unravel(j, facets)."""
    parents = _parents(neighbors, latent_dim)
    configs = np.stack(np.unravel_index(np.arange(joint.size), facets), axis=1)  # (J, k)
    # index of each configuration's parent states in each coordinate's table: (J, m)
    table_index = np.stack(
        [
            np.ravel_multi_index(tuple(configs[:, list(pa)].T), tuple(facets[i] for i in pa))
            for pa in parents
        ],
        axis=1,
    )
    sizes = [math.prod(facets[i] for i in pa) for pa in parents]
    mean_tables = []
    for size in sizes:  # eq. (3): Z_t | U ~ N(μ_t(pa), σ_t(pa)²)
        spaced = SEPARATION * (rng.permutation(size) - (size - 1) / 2.0)
        mean_tables.append(spaced + rng.uniform(-0.3, 0.3, size=size))
    means = np.stack([mean_tables[t][table_index[:, t]] for t in range(latent_dim)], axis=1)
    for _ in range(MAX_REDRAWS):
        var_tables = [_log_uniform(rng, size) for size in sizes]
        variances = np.stack([var_tables[t][table_index[:, t]] for t in range(latent_dim)], 1)
        if _has_distinct_ratios(variances):
            break
    prior = _standardize(GMM(joint.ravel(), means, variances))
    check_structure(prior, facets, neighbors)
    return prior


def check_structure(
    prior: GMM, facets: Sequence[int], neighbors: Sequence[Sequence[int]], *, tol: float = 1e-8
) -> None:
    """Check that a prior over Z has the structure of a multivariate U, or raise ValueError.

    The components of ``prior`` are read as the configurations of U in row-major order
    (component j is ``np.unravel_index(j, facets)``). Checked:

    * the graph: ``check_neighbors`` (every Z_t has a parent; (P3)(c));
    * (P2), first part: diagonal covariances (Z_s ⊥ Z_t | U);
    * Markov property (24): the mean and variance of Z_t depend only on the states of its
      parents pa(Z_t) = {U_i : t ∈ ne(U_i)};
    * (P3)(a): distinct states of pa(Z_t) give Z_t distinct (mean, variance), for every t
      (with conditionally independent coordinates this is (P3)(a) for every subset Z');
    * (P2), second part: some pair of configurations u1, u2 has pairwise distinct variance
      ratios (Σ_u1)_tt / (Σ_u2)_tt (needs J ≥ 2).

    Args:
        prior: a ``GMM`` with ∏ d_i components.
        facets: (d_1, …, d_k).
        neighbors: ne(U_i) for each i.
        tol: parameters closer than this count as equal.
    """
    facets = _check_facets(facets)
    neighbors = check_neighbors(neighbors, len(facets), prior.dim)
    n_configurations = math.prod(facets)
    if prior.n_components != n_configurations:
        raise ValueError(
            f"Expected a prior with ∏ d_i = {n_configurations} components for facets "
            f"{facets} but got {prior.n_components}"
        )
    if not prior.is_diagonal():
        raise ValueError(
            "Expected diagonal covariances (Z_s independent of Z_t given U, (P2)) but got "
            "a prior with non-diagonal covariances"
        )
    variances = np.diagonal(prior.covariances, axis1=1, axis2=2)
    configs = np.stack(np.unravel_index(np.arange(n_configurations), facets), axis=1)
    for t, pa in enumerate(_parents(neighbors, prior.dim)):
        keys = np.ravel_multi_index(tuple(configs[:, list(pa)].T), tuple(facets[i] for i in pa))
        params = np.stack([prior.means[:, t], np.log(variances[:, t])], axis=1)
        first = np.array([np.flatnonzero(keys == key)[0] for key in range(keys.max() + 1)])
        spread = np.abs(params - params[first[keys]]).max()
        if spread > tol:
            names = ", ".join(f"U_{i}" for i in pa)
            raise ValueError(
                f"Expected the law of Z_{t} to depend only on its parents {{{names}}} (Markov "
                f"property (24)) but it varies by {spread:.3g} across states of the other U_i"
            )
        reps = params[first]
        gaps = np.abs(reps[:, None, :] - reps[None, :, :]).max(axis=2)
        np.fill_diagonal(gaps, np.inf)
        if gaps.size and gaps.min() <= tol:
            a, b = np.unravel_index(np.argmin(gaps), gaps.shape)
            raise ValueError(
                f"Expected distinct laws of Z_{t} for distinct states of its parents ((P3)(a)) "
                f"but parent states {int(a)} and {int(b)} give the same mean and variance"
            )
    if not _has_distinct_ratios(variances):
        raise ValueError(
            "Expected two configurations u1, u2 whose variance ratios (Σ_u1)_tt / (Σ_u2)_tt "
            "are pairwise distinct over t ((P2)) but found none"
        )


# -- argument checks ----------------------------------------------------------------------
def _check_noise_std(noise_std: Any) -> float:
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real):
        raise TypeError(f"Expected noise_std to be a number but got {type(noise_std).__name__}")
    value = float(noise_std)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"Expected a finite noise_std >= 0 but got noise_std = {value}")
    return value


def _check_hidden(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, numbers.Integral) or isinstance(hidden, str | bytes):
        raise TypeError(f"Expected hidden to be a sequence of widths but got {hidden!r}")
    return tuple(check_positive_int(h, "each hidden width") for h in hidden)
