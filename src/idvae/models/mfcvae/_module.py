"""The torch module of MFCVAE: encoder, decoder, faceted prior (and the joint-stage prior)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from idvae.mixture import GMM
from idvae.models._base import (
    Decoder,
    GaussianEncoder,
    LatentModule,
    autoencoder_loss,
    inverse_softplus,
    reparameterize,
    standard_vae_loss,
)
from idvae.models.mfcvae._prior import FacetedMixturePrior

__all__ = ["MFCVAEModule"]


class MFCVAEModule(LatentModule):
    """The torch module of ``MFCVAE`` (see the contract in ``idvae.models._base``).

    Holds the encoder q(z | x) = N(mean(x), diag var(x)) over the concatenated latent, the
    decoder p(x | z), the faceted prior, and, when the model is initialised through a
    joint mixture (``facet_init="joint"`` with k >= 2 facets), that joint prior
    (``joint_prior``, one facet with J = prod K_i components over all of z), used only
    before the facets are formed. The buffer ``facet_weights`` (k,) holds the fade-in
    weights of progressive training (all ones otherwise).
    """

    def __init__(
        self,
        n_features: int,
        facet_dims: Sequence[int],
        facet_components: Sequence[int],
        encoder_sizes: Sequence[int],
        decoder_sizes: Sequence[int],
        activation: str,
        likelihood: str,
        *,
        joint_stage: bool,
    ) -> None:
        super().__init__()
        self.prior = FacetedMixturePrior(facet_dims, facet_components)
        self.latent_dim = self.prior.latent_dim
        m = self.latent_dim
        self.encoder = GaussianEncoder([n_features, *encoder_sizes], m, activation)
        self.decoder = Decoder([m, *decoder_sizes, n_features], activation, likelihood)
        self.joint_prior = (
            FacetedMixturePrior((m,), (math.prod(self.prior.facet_components),), trainable=False)
            if joint_stage
            else None
        )
        self.register_buffer("facet_weights", torch.ones(self.prior.n_facets))
        facet_of_dim = [i for i, d in enumerate(self.prior.facet_dims) for _ in range(d)]
        self.register_buffer("facet_of_dim", torch.tensor(facet_of_dim), persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z)

    def _dim_weights(self) -> torch.Tensor:
        """The facet weights repeated over each facet's coordinates, shape (m,)."""
        return self.facet_weights[self.facet_of_dim]

    def _elbo_terms(
        self,
        x: torch.Tensor,
        prior: FacetedMixturePrior,
        facet_weights: torch.Tensor | None,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar, generator)
        z_in = z if facet_weights is None else z * self._dim_weights()
        recon = -self.decoder.log_likelihood(x, z_in)
        # q(c_i | x) = p(c_i | z_i) at the sampled z, in log space (as VaDE, per facet)
        log_resp = prior.log_responsibilities(z)
        kl_z, kl_c = prior.kl_terms(mean, logvar.exp(), log_resp)  # (n, k) each
        if facet_weights is not None:
            kl_z, kl_c = kl_z * facet_weights, kl_c * facet_weights
        recon, kl_z, kl_c = recon.mean(), kl_z.sum(1).mean(), kl_c.sum(1).mean()
        return {"loss": recon + kl_z + kl_c, "recon": recon, "kl_z": kl_z, "kl_c": kl_c}

    def loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Negative ELBO of eq. (5), batch means, with each facet's terms fade-in weighted.

        -E_q log p(x | z) + sum_i w_i [E_{q(c_i|x)} KL(q(z_i|x) || p(z_i|c_i))
        + KL(q(c_i|x) || p(c_i))]; w = ``facet_weights`` also scales z_i at the decoder.
        """
        # always weighted (a no-op at weight 1): no host sync to test the weights per step
        return self._elbo_terms(x, self.prior, self.facet_weights, generator)

    def joint_loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The VaDE ELBO under the joint prior (J = prod K_i components), batch means."""
        if self.joint_prior is None:
            raise RuntimeError("this MFCVAE module was built without a joint stage")
        return self._elbo_terms(x, self.joint_prior, None, generator)

    def pretrain_loss(
        self, x: torch.Tensor, *, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Autoencoder loss on the encoder means (MSE or cross-entropy), batch mean."""
        return autoencoder_loss(self.encoder, self.decoder, x)

    def pretrain_vae_loss(
        self, x: torch.Tensor, *, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO of a VAE with prior N(0, I) over the whole latent, batch means."""
        return standard_vae_loss(self.encoder, self.decoder, x, generator)

    def log_responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """log p(c_i | z_i = E[z_i | x]) of all facets side by side, shape (n, sum K_i)."""
        mean, _ = self.encoder(x)
        return torch.cat(self.prior.log_responsibilities(mean), dim=1)

    def prior_gmm(self) -> GMM:
        return self.prior.to_gmm()

    def mixture_weights(self) -> list[torch.Tensor]:
        return [facet.weights() for facet in self.prior.facets]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z, _ = self.prior.sample(n, generator)
        return self.decoder.mean(z), z

    @torch.no_grad()
    def reset_posterior_variance(self, variance: np.ndarray) -> None:
        """Make q(z | x) start with the variances ``variance`` (array (m,)) for every x.

        Pretraining fits only the encoder means; the variance head is still at its random
        initialisation, whose variances (~0.7) can swamp a latent spread of the same order
        and wash out the clusters the initialisation found. Starting them small (callers
        use 1% of each coordinate's spread) lets the ELBO phase begin from the pretrained
        embedding.
        """
        head, m = self.encoder.head, self.latent_dim
        var = torch.as_tensor(np.maximum(variance, 1e-5), dtype=torch.float64)
        var = var.to(head.bias.device)
        head.weight[m:] = 0.0
        head.bias[m:] = inverse_softplus(var).to(dtype=head.bias.dtype, device=head.bias.device)

    @torch.no_grad()
    def apply_latent_map(self, A: np.ndarray, b: np.ndarray) -> None:
        """Reparametrise the latent as s = A (z - b) without changing encoder(x) -> decoder.

        The encoder's mean head then outputs A (mean - b) and the decoder's first layer
        reads z = A^-1 s + b, so decode(encode_mean(x)) is unchanged. The posterior
        variances are scaled by the squared row norms of A (exact for diagonal A).
        """
        dtype, device = self.encoder.head.weight.dtype, self.encoder.head.weight.device
        A_t = torch.as_tensor(A, dtype=torch.float64, device=device)
        b_t = torch.as_tensor(b, dtype=torch.float64, device=device)
        m = self.latent_dim
        head = self.encoder.head
        w, bias = head.weight.double(), head.bias.double()
        head.weight[:m] = (A_t @ w[:m]).to(dtype=dtype, device=device)
        head.bias[:m] = (A_t @ (bias[:m] - b_t)).to(dtype=dtype, device=device)
        # var -> var * |A_j|^2: raw' = softplus^-1(softplus(raw) * scale), done on the bias
        scale = (A_t**2).sum(dim=1)
        var = F.softplus(bias[m:]).clamp_min(1e-6) * scale
        head.bias[m:] = inverse_softplus(var).to(dtype=dtype, device=device)
        first = self.decoder.net[0]
        w0, b0 = first.weight.double(), first.bias.double()
        first.bias.copy_((b0 + w0 @ b_t).to(dtype=dtype, device=device))
        first.weight.copy_((w0 @ torch.linalg.inv(A_t)).to(dtype=dtype, device=device))
