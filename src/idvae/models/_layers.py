"""Building blocks of the torch modules: Gaussian encoder, decoder, reparameterisation.

Shared by every estimator's module (re-exported by ``idvae.models._base``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from idvae.mixture import LOG_2PI

__all__ = [
    "MIN_NOISE_VARIANCE",
    "MIN_POSTERIOR_VARIANCE",
    "MIN_PRIOR_VARIANCE",
    "Decoder",
    "GaussianEncoder",
    "check_sizes",
    "gaussian_entropy",
    "autoencoder_loss",
    "inverse_softplus",
    "reparameterize",
    "standard_vae_loss",
]

MIN_POSTERIOR_VARIANCE = 1e-6
MIN_NOISE_VARIANCE = 1e-4
# floor of the variances of a learned prior (VaDE's, MFCVAE's and iVAE's mixtures)
MIN_PRIOR_VARIANCE = 1e-4


def check_sizes(sizes: Any, name: str) -> list[int]:
    """Validate a sequence of hidden layer widths (may be empty); return it as ints."""
    if isinstance(sizes, str | bytes) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"Expected {name} to be a sequence of ints but got {sizes!r}")
    values = list(sizes)
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) for s in values):
        raise TypeError(f"Expected {name} to be a sequence of ints but got {values!r}")
    if any(s < 1 for s in values):
        raise ValueError(f"Expected {name} to hold positive ints but got {values!r}")
    return [int(s) for s in values]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y for y > 0 (stable for large y)."""
    return y + torch.log(-torch.expm1(-y))


class GaussianEncoder(nn.Module):
    """q(z | x) = N(mean(x), diag var(x)); var through softplus with a floor.

    With ``full_covariance`` the encoder also has a head ``offdiag`` for the entries below
    the diagonal of a Cholesky factor L = diag(sqrt var) + lower(offdiag), so that
    q(z | x) = N(mean, L L') (``posterior``); it starts at zero, the diagonal q.

    Args:
        sizes: widths ``[n_in, *hidden]``; the heads map the last width to 2 * latent_dim.
        latent_dim: m.
        activation: nonlinearity between layers.
        full_covariance: add the ``offdiag`` head (m (m - 1) / 2 outputs).
    """

    def __init__(
        self, sizes: Sequence[int], latent_dim: int, activation: str, full_covariance: bool = False
    ) -> None:
        super().__init__()
        from idvae.nets import mlp

        sizes = [int(s) for s in sizes]
        self.body = (
            mlp(sizes, activation, final_activation=True) if len(sizes) > 1 else nn.Identity()
        )
        self.head = nn.Linear(sizes[-1], 2 * latent_dim)
        self.latent_dim = latent_dim
        self.offdiag = None
        if full_covariance:
            self.offdiag = nn.Linear(sizes[-1], latent_dim * (latent_dim - 1) // 2)
            nn.init.zeros_(self.offdiag.weight)
            nn.init.zeros_(self.offdiag.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each of shape (n, latent_dim)."""
        return self._moments(self.head(self.body(x)))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, logvar, L): L of shape (n, m, m), lower triangular with diagonal
        exp(logvar / 2), the Cholesky factor of q's covariance (diagonal without
        ``full_covariance``)."""
        hidden = self.body(x)
        mean, logvar = self._moments(self.head(hidden))
        chol = torch.diag_embed(torch.exp(0.5 * logvar))
        if self.offdiag is not None:
            rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim, -1)
            lower = torch.zeros_like(chol)
            lower[:, rows, cols] = self.offdiag(hidden)
            chol = chol + lower
        return mean, logvar, chol

    def _moments(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out[:, : self.latent_dim], out[:, self.latent_dim :]
        var = torch.nn.functional.softplus(raw) + MIN_POSTERIOR_VARIANCE
        return mean, torch.log(var)


class Decoder(nn.Module):
    """p(x | z): Gaussian N(f(z), s² I) or Bernoulli with logits f(z).

    Args:
        sizes: widths ``[latent_dim, *hidden, n_features]``.
        activation: nonlinearity between layers (none after the last).
        likelihood: ``"gaussian"`` or ``"bernoulli"`` (f(z) are logits then).
        noise_variance: ``"learned"`` (one s² shared by all features, as the isotropic
            noise of model (3), trained through softplus with a floor), ``"learned_diag"``
            (one s² per feature) or a fixed positive float.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str,
        likelihood: str,
        noise_variance: str | float = "learned",
    ) -> None:
        super().__init__()
        from idvae.nets import mlp

        self.net = mlp(sizes, activation)
        self.likelihood = likelihood
        self.fixed_noise: float | None = None
        if likelihood == "gaussian":
            if noise_variance == "learned":
                self.raw_noise = nn.Parameter(inverse_softplus(torch.full((1,), 0.1)))
            elif noise_variance == "learned_diag":
                self.raw_noise = nn.Parameter(inverse_softplus(torch.full((int(sizes[-1]),), 0.1)))
            elif isinstance(noise_variance, int | float) and noise_variance > 0:
                self.fixed_noise = float(noise_variance)
            else:
                raise ValueError(
                    "Expected noise_variance 'learned', 'learned_diag' or a positive float but "
                    f"got {noise_variance!r}"
                )

    def noise_variance(self) -> torch.Tensor:
        """The observation noise variances s² (Gaussian only), shape (1,) or (n_features,)."""
        if self.fixed_noise is not None:
            return torch.tensor([self.fixed_noise], device=self.net[0].weight.device)
        return torch.nn.functional.softplus(self.raw_noise) + MIN_NOISE_VARIANCE

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (n, n_features)."""
        out = self.net(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over features, shape (n,)."""
        out = self.net(z)
        if self.likelihood == "bernoulli":
            return -torch.nn.functional.binary_cross_entropy_with_logits(
                out, x, reduction="none"
            ).sum(dim=1)
        var = self.noise_variance()
        return -0.5 * (((x - out) ** 2) / var + torch.log(var) + LOG_2PI).sum(dim=1)

    def reconstruction_error(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A plain autoencoder loss per sample (MSE or binary cross-entropy), shape (n,)."""
        out = self.net(z)
        if self.likelihood == "bernoulli":
            return torch.nn.functional.binary_cross_entropy_with_logits(
                out, x, reduction="none"
            ).sum(dim=1)
        return ((x - out) ** 2).sum(dim=1)


def reparameterize(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I) drawn from ``generator``."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def autoencoder_loss(
    encoder: GaussianEncoder, decoder: Decoder, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """A plain autoencoder's loss on the encoder means (MSE or cross-entropy), batch mean."""
    mean, _ = encoder(x)
    return {"loss": decoder.reconstruction_error(x, mean).mean()}


def standard_vae_loss(
    encoder: GaussianEncoder, decoder: Decoder, x: torch.Tensor, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Negative ELBO of a VAE with prior N(0, I): -E_q log p(x | z) + KL(q(z | x) || N(0, I)).

    Returns the batch means ``loss`` = ``recon`` + ``kl_z``; the KL is in closed form,
    0.5 sum(s2 + mu^2 - 1 - log s2).
    """
    mean, logvar = encoder(x)
    z = reparameterize(mean, logvar, generator)
    recon = -decoder.log_likelihood(x, z).mean()
    kl_z = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar).sum(dim=1).mean()
    return {"loss": recon + kl_z, "recon": recon, "kl_z": kl_z}


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """Entropy of N(., diag exp(logvar)), summed over the last axis."""
    return 0.5 * (logvar + 1.0 + LOG_2PI).sum(dim=-1)
