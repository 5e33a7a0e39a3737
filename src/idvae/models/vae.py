"""The classical VAE: an isotropic Gaussian prior, the J = 1 case of model (3) (Sec. 3.4).

    z ~ N(0, I_m),    x | z ~ p(x | f(z)),    q(z | x) = N(mean(x), diag var(x)).

Its latent space is identifiable at best up to an orthogonal map (the prior is rotation
invariant), which is why the paper needs J >= 2 components for more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions

from idvae.mixture import GMM
from idvae.models._base import (
    Decoder,
    GaussianEncoder,
    LatentEstimator,
    LatentModule,
    check_sizes,
    register,
    standard_vae_loss,
)

__all__ = ["VAE", "VAEModule"]


class VAEModule(LatentModule):
    """The torch module of ``VAE`` (see the contract in ``idvae.models._base``)."""

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        encoder_sizes: Sequence[int],
        decoder_sizes: Sequence[int],
        activation: str,
        likelihood: str,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = GaussianEncoder([n_features, *encoder_sizes], latent_dim, activation)
        self.decoder = Decoder([latent_dim, *decoder_sizes, n_features], activation, likelihood)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z)

    def loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Negative ELBO: -E_q log p(x|z) + KL(q(z|x) || N(0, I)), batch means."""
        return standard_vae_loss(self.encoder, self.decoder, x, generator)

    def prior_gmm(self) -> GMM:
        return GMM([1.0], np.zeros((1, self.latent_dim)), np.eye(self.latent_dim)[None])

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return self.decoder.mean(z), z


@register
class VAE(LatentEstimator):
    """Variational autoencoder with an isotropic Gaussian prior (Kingma and Welling, 2014).

    Args:
        latent_dim: m, the dimension of z (at most the number of features).
        encoder_sizes: hidden widths of the encoder n -> ... -> m.
        decoder_sizes: hidden widths of the decoder m -> ... -> n.
        activation: ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        likelihood: ``"gaussian"`` (X is standardised inside, learned noise variance per
            feature) or ``"bernoulli"`` (X in [0, 1]).
        epochs: training epochs.
        batch_size: mini-batch size.
        lr: Adam learning rate.
        lr_decay: the learning rate is multiplied by this every ``lr_decay_every`` epochs.
        lr_decay_every: see ``lr_decay``.
        early_stopping: stop when the epoch loss stalls for ``patience`` epochs.
        patience: see ``early_stopping``.
        max_retries: non-finite epochs retried (halving the lr) before ``TrainingError``.
        random_state: seed (int, numpy Generator or None).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        verbose: 0 silent, 1 a progress bar.

    Attributes:
        prior_: ``idvae.GMM`` with one component N(0, I).
        history_: per-epoch records (loss, recon, kl_z, lr, time).

    Example:
        >>> import numpy as np, idvae
        >>> X = np.random.default_rng(0).normal(size=(500, 5))
        >>> vae = idvae.VAE(latent_dim=2, epochs=3, random_state=0).fit(X)
        >>> vae.transform(X).shape
        (500, 2)
    """

    _registry_name: ClassVar[str] = "vae"
    _parameter_constraints: ClassVar[dict] = LatentEstimator._common_constraints | {
        "encoder_sizes": ["array-like"],
        "decoder_sizes": ["array-like"],
        "activation": [StrOptions({"leaky_relu", "relu"})],
    }

    def __init__(
        self,
        latent_dim: int = 2,
        *,
        encoder_sizes: Sequence[int] = (64, 64),
        decoder_sizes: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        likelihood: str = "gaussian",
        epochs: int = 50,
        batch_size: int = 100,
        lr: float = 1e-3,
        lr_decay: float = 1.0,
        lr_decay_every: int = 10,
        early_stopping: bool = False,
        patience: int = 5,
        max_retries: int = 5,
        random_state: Any = None,
        device: str = "auto",
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.encoder_sizes = encoder_sizes
        self.decoder_sizes = decoder_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_retries = max_retries
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _build_module(self, n_features: int, aux_dims: tuple[int, ...]) -> VAEModule:
        return VAEModule(
            n_features,
            self.latent_dim,
            check_sizes(self.encoder_sizes, "encoder_sizes"),
            check_sizes(self.decoder_sizes, "decoder_sizes"),
            self.activation,
            self.likelihood,
        )

    @classmethod
    def _test_config(cls) -> dict[str, Any]:
        return {
            "latent_dim": 2,
            "encoder_sizes": (16,),
            "decoder_sizes": (16,),
            "epochs": 3,
            "batch_size": 32,
            "random_state": 0,
            "device": "cpu",
        }
