"""VaDE: a VAE with a Gaussian-mixture prior (Jiang et al., 2016), the estimator of Sec. 4.

Generative model, model (3) with k = 1 (eq. (2) for the prior):

    c ~ Cat(pi),    z | c ~ N(mu_c, Sigma_c),    x | z ~ p(x | f(z)),

with Sigma_c diagonal or full (a Cholesky factor). Inference: q(z | x) = N(m(x), diag s2(x))
and q(c | x) = p(c | z) at the sampled z (Jiang et al.'s choice: the q(c|x) that maximises
the ELBO given z). The negative ELBO per sample, with gamma_c = q(c | x), is

    -E_q log p(x | z)                                              "recon"
    + sum_c gamma_c KL(q(z | x) || p(z | c))                       "kl_z"
    + KL(q(c | x) || p(c)) = sum_c gamma_c (log gamma_c - log pi_c)    "kl_c"

where E_q log N(z; mu_c, Sigma_c) has the closed form
-1/2 [m log 2 pi + log|Sigma_c| + tr(Sigma_c^-1 diag s2) + (m - mu_c)' Sigma_c^-1 (m - mu_c)],
so only the reconstruction term is a Monte Carlo estimate (one sample). Responsibilities
are computed as ``log_softmax`` of log pi_c + log N(z; mu_c, Sigma_c); weights are logits.

Fitting: pretraining of the encoder and decoder (by default as a VAE with prior N(0, I);
``pretrain="ae"`` is Jiang et al.'s plain autoencoder), a scikit-learn ``GaussianMixture``
on the encoder means (seeded) to initialise the prior, then the importance-weighted bound
(K = 10 by default; K = 1 is the ELBO above) with the prior refitted by a
``GaussianMixture`` every 20 epochs, all through the checkpointed engine
``idvae.training``. ``ELBO_PIPELINE`` holds the settings of the earlier default (ELBO,
diagonal covariances, no refit, 10 + 40 epochs); docs/recovery_levers.md measures both.
With ``n_init > 1`` this is repeated from fresh network weights and the trial with the
highest bound on the training data is kept (like scikit-learn's
``GaussianMixture(n_init=...)``); see ``VaDE``.

The module stays one file (about 680 lines, most of them docstrings): the torch module's
objectives and the estimator's fitting phases are one model, and each side reads the other.
The initial geometries from neighbour graphs live in ``idvae.models._geometries``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClusterMixin
from sklearn.utils._param_validation import Interval, StrOptions
from torch.nn import functional as F

from idvae._validation import check_positive_int, check_random_state
from idvae.mixture import GMM, LOG_2PI
from idvae.models._base import (
    _EVAL_BATCH,
    Decoder,
    FitContext,
    GaussianEncoder,
    LatentEstimator,
    LatentModule,
    autoencoder_loss,
    check_sizes,
    gaussian_entropy,
    register,
    reparameterize,
    standard_vae_loss,
)
from idvae.models._geometries import EMBEDDINGS, isomap_embedding, spectral_embedding
from idvae.models._prior import (
    GMM_INIT_SAMPLES,
    GaussianMixturePrior,
    fit_mixture,
    posterior_moments,
    subsample_rows,
)
from idvae.training import PhaseResult, step_lr
from idvae.training.polish import polish

__all__ = [
    "ELBO_PIPELINE",
    "VaDE",
    "VaDEModule",
    "isomap_embedding",
    "spectral_embedding",
]

# The defaults before the recovery levers (docs/recovery_levers.md): the plain ELBO, a
# diagonal prior, no refit, 10 + 40 epochs. ``VaDE(**ELBO_PIPELINE)`` fits that pipeline;
# it costs about a third of the default fit and recovers the truth of model (3) less often
# (18/54 against 29/54 instances of the recovery benchmark).
ELBO_PIPELINE: dict[str, Any] = {
    "covariance_type": "diag",
    "importance_samples": 1,
    "prior_refit_every": None,
    "pretrain_epochs": 10,
    "epochs": 40,
}

# decoder rows per chunk of draws in VaDE.log_likelihood (memory: rows x n_features floats)
_DRAW_ROWS = 1 << 18

# trials on subsamples (init_fraction < 1): the rows of each, at least this many (or half of
# the data)
SUBSAMPLE_MIN_ROWS = 1000

# the trials of n_init are compared by their importance-sampled log-likelihood, SELECT_DRAWS
# draws per row (the same draws for every trial), on up to SELECT_ROWS rows: the training
# rows (a seeded subset when there are more), or the rows a trial on a subsample did not see
SELECT_ROWS = 3000
SELECT_DRAWS = 200


class VaDEModule(LatentModule):
    """The torch module of ``VaDE`` (see the contract in ``idvae.models._base``)."""

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        n_components: int,
        encoder_sizes: Sequence[int],
        decoder_sizes: Sequence[int],
        activation: str,
        likelihood: str,
        covariance_type: str,
        noise_variance: str | float = "learned",
        importance_samples: int = 1,
        posterior: str = "diag",
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.importance_samples = int(importance_samples)
        self.full_posterior = posterior == "full"
        self.encoder = GaussianEncoder(
            [n_features, *encoder_sizes], latent_dim, activation, self.full_posterior
        )
        self.decoder = Decoder(
            [latent_dim, *decoder_sizes, n_features], activation, likelihood, noise_variance
        )
        self.prior = GaussianMixturePrior(n_components, latent_dim, covariance_type)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z)

    def loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The negative ELBO and its three terms (module docstring), batch means.

        With ``importance_samples`` K > 1, or a full-covariance posterior, the negative
        importance-weighted bound instead (``iw_loss``; with K = 1 an estimate of the ELBO
        from one draw).
        """
        if self.importance_samples > 1 or self.full_posterior:
            return self.iw_loss(x, generator=generator)
        mean, logvar = self.encoder(x)
        z = reparameterize(mean, logvar, generator)
        recon = -self.decoder.log_likelihood(x, z)
        log_w = self.prior.log_weights()
        # q(c | x) = p(c | z) at the sampled z, in log space
        log_gamma = F.log_softmax(log_w[None, :] + self.prior.expected_log_density(z, 0.0), 1)
        gamma = log_gamma.exp()
        expected = self.prior.expected_log_density(mean, logvar.exp())  # (n, J)
        kl_z = -(gamma * expected).sum(1) - gaussian_entropy(logvar)
        kl_c = (gamma * (log_gamma - log_w[None, :])).sum(1)
        recon, kl_z, kl_c = recon.mean(), kl_z.mean(), kl_c.mean()
        return {"loss": recon + kl_z + kl_c, "recon": recon, "kl_z": kl_z, "kl_c": kl_c}

    def iw_loss(self, x: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Negative importance-weighted bound (Burda et al., 2016) with K draws, batch mean.

        log p(x) >= E log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x), z_k ~ q(z | x), with
        the mixture prior p(z) = sum_c pi_c N(z; mu_c, Sigma_c) marginalised exactly. K = 1
        is the ELBO; the bound tightens as K grows, which weakens the ELBO's preference for
        latent geometries whose posteriors are Gaussian (docs/recovery_levers.md).
        """
        log_px, log_pz, log_q = self.log_weight_terms(x, self.importance_samples, generator)
        bound = torch.logsumexp(log_px + log_pz - log_q, 0) - math.log(self.importance_samples)
        recon = -log_px.mean()
        return {"loss": -bound.mean(), "recon": recon, "kl_z": (log_q - log_pz).mean()}

    def log_weight_terms(
        self, x: torch.Tensor, k: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x | z_k), log p(z_k) and log q(z_k | x) of K draws z_k ~ q(z | x), each (K, n).

        The importance weights of ``iw_loss`` and ``VaDE.log_likelihood`` are
        p(x | z_k) p(z_k) / q(z_k | x), with the mixture prior marginalised exactly.
        """
        chol = None
        if self.full_posterior:  # z = mean + L eps; log det L is still sum logvar / 2
            mean, logvar, chol = self.encoder.posterior(x)
        else:
            mean, logvar = self.encoder(x)
        n, m = mean.shape
        eps = torch.randn((k, n, m), generator=generator, device=mean.device, dtype=mean.dtype)
        if chol is None:
            shift = torch.exp(0.5 * logvar)[None] * eps
        else:
            shift = torch.einsum("nij,knj->kni", chol, eps)
        z = (mean[None] + shift).reshape(k * n, m)
        log_q = (-0.5 * (eps**2 + logvar[None] + LOG_2PI)).sum(-1)
        joint = self.prior.log_weights()[None, :] + self.prior.expected_log_density(z, 0.0)
        log_pz = torch.logsumexp(joint, 1).reshape(k, n)
        log_px = self.decoder.log_likelihood(x.repeat(k, 1), z).reshape(k, n)
        return log_px, log_pz, log_q

    def pretrain_loss(
        self, x: torch.Tensor, *, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Autoencoder loss on the encoder means (MSE or cross-entropy), batch mean."""
        return autoencoder_loss(self.encoder, self.decoder, x)

    def pretrain_embedding_loss(
        self, x: torch.Tensor, target: torch.Tensor, *, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Encoder means regressed on a target embedding, decoder reconstructing x from it.

        Args:
            x: array of shape (n, n_features).
            target: array of shape (n, latent_dim), e.g. ``spectral_embedding(x, m)``.
        """
        mean, _ = self.encoder(x)
        fit = ((mean - target) ** 2).sum(1).mean()
        recon = self.decoder.reconstruction_error(x, target).mean()
        return {"loss": fit + recon, "embedding": fit, "recon": recon}

    def pretrain_vae_loss(
        self, x: torch.Tensor, *, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Negative ELBO of a VAE with prior N(0, I) (recon and kl_z), batch means."""
        return standard_vae_loss(self.encoder, self.decoder, x, generator)

    def log_responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """log p(c | z = E[z | x]), shape (n, J)."""
        mean, _ = self.encoder(x)
        return self.prior.log_responsibilities(mean)

    def prior_gmm(self) -> GMM:
        return self.prior.to_gmm()

    def mixture_weights(self) -> list[torch.Tensor]:
        return [self.prior.weights()]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z, _ = self.prior.sample(n, generator)
        return self.decoder.mean(z), z


@register
class VaDE(ClusterMixin, LatentEstimator):
    """Variational Deep Embedding: a VAE whose prior is a Gaussian mixture (Jiang et al., 2016).

    Fits model (3) of the paper with k = 1: Z from a J-component Gaussian mixture, X = f(Z)
    plus noise. ``fit`` pretrains the encoder and decoder, initialises the prior with a
    seeded scikit-learn ``GaussianMixture`` on the encoder means (of a seeded random subset
    of ``GMM_INIT_SAMPLES`` = 20,000 points when there are more), then maximises the
    importance-weighted bound, refitting the prior every ``prior_refit_every`` epochs.

    The defaults are the configuration that recovered the truth of model (3) most often
    among those measured (docs/recovery_levers.md): 29 of the recovery benchmark's 54
    instances, against 18 for the plain ELBO pipeline (``ELBO_PIPELINE``) and 16 for PCA.
    That is recovery on about half of the instances, not all: check a fit with
    ``idvae.stability``, which groups restarts into modes by their bound.

    Args:
        latent_dim: m, the dimension of z (at most the number of features, Remark 3.3).
        n_components: J, the number of mixture components.
        encoder_sizes: hidden widths of the encoder n -> ... -> m. The defaults, and those
            of the training schedule below, are tuned for a few thousand points with
            m <= 5, n <= 50; the paper's synthetic-data network (App. J.3.2) is
            ``idvae.nets.architecture("paper")``, VaDE's MNIST network ``"vade"``.
        decoder_sizes: hidden widths of the decoder m -> ... -> n.
        activation: ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        likelihood: ``"gaussian"`` (X standardised inside; learned noise variance per
            feature) or ``"bernoulli"`` (X in [0, 1], e.g. images).
        covariance_type: ``"full"`` (default) or ``"diag"`` prior covariances. Full
            covariances let the prior refit split and merge components that a diagonal
            prior cannot follow (docs/recovery_levers.md); Thm E.1's canonical form
            (permutation and scaling) needs ``"diag"``, (P2).
        noise_variance: the Gaussian observation noise: ``"learned"`` (one variance shared
            by all features, the isotropic noise of model (3)), ``"learned_diag"`` (one per
            feature) or a fixed float (in the units of the internally scaled data).
        pretrain: ``"vae"`` (default): pretrain the encoder and decoder as a VAE with prior
            N(0, I); its latent space keeps clusters at comparable scales, so the
            GaussianMixture initialisation finds them far more often than on the latent
            space of a plain autoencoder (``"ae"``, Jiang et al.'s choice), which inherits
            the decoder's strong local contractions. ``"spectral"``: the encoder means are
            regressed on a spectral embedding of X (Laplacian eigenmaps of its 15-nearest-
            neighbour graph, ``spectral_embedding``) and the decoder learns to reconstruct X
            from it; a different initial geometry that reaches the true optimum on some
            instances where the others never do (docs/vade_restarts.md), for a few
            thousand points.
            ``"isomap"``: the same with Isomap coordinates (``isomap_embedding``). An array
            of shape (n_samples, latent_dim): the same with this embedding of the training
            data (standardised per column), e.g. a known latent to start from. A sequence
            of names, e.g. ``("vae", "isomap")``: one trial per initial geometry (times
            ``n_init``), compared like the trials of ``n_init`` and the best one kept
            (diverse starts, docs/recovery_levers.md).
        pretrain_epochs: pretraining epochs (0: none).
        epochs: ELBO epochs.
        batch_size: mini-batch size.
        lr: Adam learning rate (both phases).
        lr_decay: the learning rate is multiplied by this every ``lr_decay_every`` epochs
            (VaDE's schedule: 0.9 every 10).
        lr_decay_every: see ``lr_decay``.
        gmm_n_init: restarts of the ``GaussianMixture`` initialisation.
        importance_samples: K; 1 trains the ELBO, K > 1 (default 10) the importance-weighted
            bound with K draws per point (``VaDEModule.iw_loss``; about K times the
            decoder's cost: on wide decoders such as MNIST's, set 1).
        prior_refit_every: None, or (default 20) every this many epochs a seeded
            ``GaussianMixture`` (``gmm_n_init`` restarts) is fitted to the encoder means (of
            a seeded subset of ``GMM_INIT_SAMPLES`` points when there are more, as for the
            initialisation) and replaces the prior when its mean log-likelihood on them is
            higher: an EM step
            on the prior that can split and merge components, which gradient steps cannot.
        refit_moments: compare the refit's candidate and the current prior alike: each
            clustering's mixture is the moments of its responsibilities over the
            posteriors q(z | x) (means and variances, the ELBO's optimum for the prior given
            q), scored on the encoder means; the candidate's replaces the prior only when it
            scores higher. Without it (default) the trained prior, which also absorbs the
            posterior variances, is compared on the means with a mixture fitted to them.
        posterior_covariance: ``"diag"`` (default): q(z | x) = N(mean, diag var), VaDE's;
            ``"full"``: N(mean, L L') with a Cholesky factor L from the encoder
            (``GaussianEncoder.posterior``), which removes the mean-field posterior's pull
            towards latent coordinates in which the posterior is uncorrelated; the loss is
            then the importance-weighted bound (the ELBO from one draw when
            ``importance_samples=1``).
        n_init: number of trials (restarts of the whole fit, like scikit-learn's
            ``GaussianMixture(n_init=...)``). Trial 0 starts from the seed's network
            weights (it is exactly the ``n_init=1`` fit), each further trial from fresh
            weights drawn from the fit's random state; every trial runs the pretraining,
            the ``GaussianMixture`` initialisation and ``init_epochs`` ELBO epochs. The
            trial with the highest log-likelihood on the training data is kept (the
            importance-sampled estimate of ``log_likelihood`` with ``SELECT_DRAWS`` draws,
            the same for every trial, on up to ``SELECT_ROWS`` rows; deterministic) and
            trained for the remaining ``epochs - init_epochs`` epochs (learning-rate
            schedule continued, Adam restarted). The paper's theory makes the true model
            the global maximiser of the likelihood, so after long training a higher
            likelihood points to the better local optimum. Measured on the recovery
            benchmark (docs/recovery_levers.md, eleventh round), four restarts kept this
            way recover 7 of the 12 instances the defaults miss and the truth start
            recovers (6 when kept by the training bound), and lose 4 of the 29 the
            defaults recover, two because at a few thousand points the training likelihood
            prefers a wrong basin: about 32 of the 54 against 29, at four times the cost.
            After a few epochs convergence dominates, and restarts only help when some
            trial reaches the good basin (docs/vade_restarts.md).
        init_epochs: ELBO epochs of each trial before the choice; None: ``epochs`` (each
            trial is a full fit and the best one is the result). Ignored when
            ``n_init == 1``.
        init_fraction: 1 (default): every trial of ``n_init`` trains on all the rows.
            Below 1 (with ``n_init`` > 1): each trial trains on its own random subsample of
            this fraction of the rows (at least ``SUBSAMPLE_MIN_ROWS``, or half the rows
            when there are fewer than twice that; trial i draws its rows from seed i, so a
            resumed fit sees the same), and the trials are compared by their importance-
            sampled log-likelihood (``SELECT_DRAWS`` draws) on up to ``SELECT_ROWS`` of
            the rows they did not train on; the kept trial is then trained on all the rows
            for ``epochs`` epochs, its learning-rate schedule continued, prior refits
            included. Measured with six trials (docs/recovery_levers.md, tenth round):
            ``1/3`` recovers 4 of the 19 benchmark instances the defaults miss and the
            truth allows, at 3.6 times their cost (what it loses elsewhere is not
            measured); ``0.8`` recovers 3 of the simulator's seeds 0-9, the defaults 4.
        polish_iterations: at the end of the epochs, this many
            iterations of full-batch L-BFGS on the training bound, its Monte Carlo draws
            fixed for rounds of ``idvae.training.polish.ROUND_ITERATIONS`` iterations
            (``idvae.training.polish``). 0 (default): none. It takes a fit closer to its
            optimum than Adam does; on model (3) it lifts near-misses to recovery
            (docs/recovery_levers.md, finding 23). The cost is about that many passes over
            the data with K draws each: ~40-90 s for 2,000 iterations on 3,000 points.
            With several trials (``n_init``, or several ``pretrain`` geometries) that are
            full fits (``init_epochs=None``), every trial is polished before they are
            compared, so the choice is between finished fits (finding 27 of
            docs/recovery_levers.md); otherwise the kept trial is polished after its
            remaining epochs.
        early_stopping: stop when the ELBO stalls for ``patience`` epochs.
        patience: see ``early_stopping``.
        max_retries: non-finite epochs retried (halving the lr) before ``TrainingError``.
        random_state: seed (int, numpy Generator or None); same seed, same result on CPU.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        verbose: 0 silent, 1 a progress bar with the loss terms.

    Attributes:
        prior_: the learned prior over z, an ``idvae.GMM`` with J components.
        labels_: the cluster of each training sample.
        history_: per-epoch records (phase, loss, recon, kl_z, kl_c, lr, min_weight, time).
        collapsed_components_: (0, j) for each component whose weight fell below 1e-3 / J.
        init_scores_: the log-likelihood (mean per sample, in the units of X like
            ``score``) of each trial of ``n_init`` when it was compared; ``[]`` when
            ``n_init == 1``.
        best_init_: the index of the trial kept (0 when ``n_init == 1``).
        module_: the fitted torch module.

    Example:
        >>> import idvae
        >>> sim = idvae.simulate.sample_model(2000, latent_dim=2, obs_dim=5, n_components=3,
        ...                                   random_state=0)
        >>> model = idvae.VaDE(latent_dim=2, n_components=3, random_state=0).fit(sim.x)
        >>> z = model.transform(sim.x)                  # (2000, 2) posterior means
        >>> model.prior_.n_components
        3
    """

    _registry_name: ClassVar[str] = "vade"
    _parameter_constraints: ClassVar[dict] = LatentEstimator._common_constraints | {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "encoder_sizes": ["array-like"],
        "decoder_sizes": ["array-like"],
        "activation": [StrOptions({"leaky_relu", "relu"})],
        "covariance_type": [StrOptions({"diag", "full"})],
        "noise_variance": [
            StrOptions({"learned", "learned_diag"}),
            Interval(Real, 0, None, closed="neither"),
        ],
        "pretrain": [StrOptions({"vae", "ae", "spectral", "isomap"}), "array-like"],
        "importance_samples": [Interval(Integral, 1, None, closed="left")],
        "prior_refit_every": [Interval(Integral, 1, None, closed="left"), None],
        "refit_moments": ["boolean"],
        "posterior_covariance": [StrOptions({"diag", "full"})],
        "pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
        "gmm_n_init": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_epochs": [Interval(Integral, 0, None, closed="left"), None],
        "init_fraction": [Interval(Real, 0, 1, closed="right")],
        "polish_iterations": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        latent_dim: int = 2,
        n_components: int = 3,
        *,
        encoder_sizes: Sequence[int] = (64, 64),
        decoder_sizes: Sequence[int] = (64, 64),
        activation: str = "leaky_relu",
        likelihood: str = "gaussian",
        covariance_type: str = "full",
        noise_variance: str | float = "learned",
        pretrain: str = "vae",
        pretrain_epochs: int = 50,
        epochs: int = 100,
        batch_size: int = 64,
        lr: float = 3e-3,
        lr_decay: float = 0.9,
        lr_decay_every: int = 10,
        gmm_n_init: int = 3,
        importance_samples: int = 10,
        prior_refit_every: int | None = 20,
        refit_moments: bool = False,
        posterior_covariance: str = "diag",
        n_init: int = 1,
        init_epochs: int | None = None,
        init_fraction: float = 1.0,
        polish_iterations: int = 0,
        early_stopping: bool = False,
        patience: int = 5,
        max_retries: int = 5,
        random_state: Any = None,
        device: str = "auto",
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.n_components = n_components
        self.encoder_sizes = encoder_sizes
        self.decoder_sizes = decoder_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.covariance_type = covariance_type
        self.noise_variance = noise_variance
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.gmm_n_init = gmm_n_init
        self.importance_samples = importance_samples
        self.prior_refit_every = prior_refit_every
        self.refit_moments = refit_moments
        self.posterior_covariance = posterior_covariance
        self.n_init = n_init
        self.init_epochs = init_epochs
        self.init_fraction = init_fraction
        self.polish_iterations = polish_iterations
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_retries = max_retries
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- hooks of the base ------------------------------------------------------------------
    def _build_module(self, n_features: int, aux_dims: tuple[int, ...]) -> VaDEModule:
        return VaDEModule(
            n_features,
            self.latent_dim,
            self.n_components,
            check_sizes(self.encoder_sizes, "encoder_sizes"),
            check_sizes(self.decoder_sizes, "decoder_sizes"),
            self.activation,
            self.likelihood,
            self.covariance_type,
            self.noise_variance,
            self.importance_samples,
            self.posterior_covariance,
        )

    def _check_data(self, n_samples: int, n_features: int) -> None:
        super()._check_data(n_samples, n_features)
        if n_samples < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_samples}"
            )

    def _polish(self, ctx: FitContext) -> None:
        """Full-batch L-BFGS on the training bound (``idvae.training.polish``), if asked for."""
        if self.polish_iterations > 0:
            ctx.run_step("polish", lambda: self._run_polish(ctx))

    def _run_polish(self, ctx: FitContext) -> None:
        module: VaDEModule = ctx.module  # type: ignore[assignment]
        module.train()
        seed = int(ctx.rng.integers(0, 2**62))
        polish(module.loss, list(module.parameters()), ctx.data, self.polish_iterations, seed)

    def _fit_phases(self, ctx: FitContext) -> None:
        """The trials of ``n_init`` x the initial geometries, the best one kept and trained on."""
        self.init_scores_: list[float] = []
        self.best_init_ = 0
        geometries = self._geometries()
        n_trials = len(geometries) * self.n_init
        subsampled = float(self.init_fraction) < 1
        if n_trials == 1:
            if subsampled:
                raise ValueError(
                    f"Expected n_init > 1 (or several pretrain geometries) with init_fraction "
                    f"< 1 but got n_init = {self.n_init}, init_fraction = {self.init_fraction}"
                )
            self._fit_trial(ctx, self.epochs, geometries[0])
            self._polish(ctx)
            return
        if self.init_epochs is not None and self.init_epochs > self.epochs:
            raise ValueError(
                f"Expected init_epochs <= epochs but got init_epochs = {self.init_epochs}, "
                f"epochs = {self.epochs}"
            )
        init_epochs = self.epochs if self.init_epochs is None else int(self.init_epochs)
        # trials on subsamples are all trained on all the rows after the choice
        rest = self.epochs if subsampled else self.epochs - init_epochs
        trials: dict[int, dict[str, Any]] = {}
        for i in range(n_trials):
            if i > 0:
                ctx.run_step("reset", lambda: self._reset_weights(ctx))
            rows, held_out = self._trial_rows(len(ctx.data[0]), i) if subsampled else (None, None)
            data = None if rows is None else (ctx.data[0][torch.as_tensor(rows)],)
            self._fit_trial(ctx, init_epochs, geometries[i // self.n_init], data)
            if rest == 0:  # full trials are finished, polish included, before they are compared
                self._polish(ctx)
            ctx.run_step("compare", lambda i=i, h=held_out: self._record_trial(ctx, i, trials, h))
        records = [self._trial(ctx, i, trials) for i in range(n_trials)]
        self.init_scores_ = [float(r["score"]) for r in records]
        # the first of equal scores, so the choice is deterministic
        self.best_init_ = int(np.argmax(self.init_scores_))
        best = records[self.best_init_]
        ctx.run_step("select", lambda: ctx.module.load_state_dict(best["state"]))
        ctx.last_result = PhaseResult(
            epochs_run=int(best["epochs_run"]), stopped_early=bool(best["stopped_early"])
        )
        if rest > 0:
            if subsampled:
                refit = partial(self._refit_prior, ctx, ctx.data[0])
                every = self.prior_refit_every
                self._train_with_refits(ctx, rest, ctx.data, every, refit, init_epochs)
            elif not best["stopped_early"]:
                # continue the step schedule of the trial's learning rate
                lr = step_lr(float(self.lr), float(self.lr_decay), self.lr_decay_every, init_epochs)
                ctx.run_phase("train", self._train_config(rest, lr=lr))
            self._polish(ctx)

    def _trial_rows(self, n_samples: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows trial ``trial`` trains on (a random fraction ``init_fraction``, from seed
        ``trial``) and the held-out rows (up to ``SELECT_ROWS`` of the others) it is
        compared on."""
        floor = min(SUBSAMPLE_MIN_ROWS, n_samples // 2)
        size = max(round(float(self.init_fraction) * n_samples), floor)
        order = np.random.default_rng(trial).permutation(n_samples)
        return np.sort(order[:size]), np.sort(order[size:][:SELECT_ROWS])

    def _geometries(self) -> list[Any]:
        """The initial geometries that ``pretrain`` names: a list of names, or [an array]."""
        pretrain = self.pretrain
        if isinstance(pretrain, str):
            return [pretrain]
        names = list(pretrain) if isinstance(pretrain, list | tuple) else []
        if names and all(isinstance(name, str) for name in names):
            unknown = sorted(set(names) - {"vae", "ae", *EMBEDDINGS})
            if unknown:
                raise ValueError(
                    f"Expected pretrain names among 'vae', 'ae', 'spectral', 'isomap' but got "
                    f"{unknown}"
                )
            return names
        return [pretrain]

    def _fit_trial(
        self,
        ctx: FitContext,
        epochs: int,
        geometry: Any,
        data: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        """Pretraining from ``geometry``, GaussianMixture initialisation, ``epochs`` ELBO epochs,
        on ``data`` (default: all the training rows)."""
        module: VaDEModule = ctx.module  # type: ignore[assignment]
        rows = ctx.data if data is None else data
        if self.pretrain_epochs > 0:
            pretrain_data = rows
            pretrain = geometry if isinstance(geometry, str) else "given"
            if pretrain == "vae":
                loss_fn = module.pretrain_vae_loss
                parameters = list(module.encoder.parameters()) + list(module.decoder.parameters())
            elif pretrain == "ae":
                loss_fn = module.pretrain_loss
                parameters = list(module.encoder.parameters()) + list(
                    module.decoder.net.parameters()
                )
            else:
                loss_fn = module.pretrain_embedding_loss
                parameters = list(module.encoder.parameters()) + list(
                    module.decoder.net.parameters()
                )
                # the targets travel with the data so that batches (and fit_seeds) pair them
                if pretrain == "given":
                    target = self._given_embedding(geometry, rows[0])
                else:
                    target = EMBEDDINGS[pretrain](rows[0], self.latent_dim)
                pretrain_data = (rows[0], target)
            ctx.run_phase(
                "pretrain",
                self._train_config(self.pretrain_epochs, lr_decay=1.0, early_stopping=False),
                loss_fn=loss_fn,
                parameters=parameters,
                data=pretrain_data,
            )
        ctx.run_step("init", lambda: self._initialize_prior(ctx, rows[0]))
        refit = partial(self._refit_prior, ctx, rows[0])
        self._train_with_refits(ctx, epochs, rows, self.prior_refit_every, refit)

    def _given_embedding(self, given: Any, x: torch.Tensor) -> torch.Tensor:
        """``pretrain`` as an array: checked against the data, standardised per column."""
        try:
            embedding = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Expected pretrain to be a name, a sequence of names or an array of shape "
                f"(n_samples, latent_dim) but got {given!r:.80}"
            ) from error
        expected = (int(x.shape[0]), int(self.latent_dim))
        if embedding.shape != expected or not np.isfinite(embedding).all():
            raise ValueError(
                f"Expected pretrain to be 'vae', 'ae', 'spectral', 'isomap' or a finite array "
                f"of shape {expected} (n_samples, latent_dim) but got an array of shape "
                f"{embedding.shape}"
            )
        embedding = (embedding - embedding.mean(0)) / np.maximum(embedding.std(0), 1e-12)
        return torch.as_tensor(embedding, dtype=x.dtype, device=x.device)

    def _reset_weights(self, ctx: FitContext) -> None:
        """Fresh network and prior weights for the next trial, seeded from the fit's rng."""
        seed = int(ctx.rng.integers(0, 2**62))
        fresh = self._new_module(int(ctx.data[0].shape[1]), (), seed)
        ctx.module.load_state_dict(fresh.state_dict())

    @staticmethod
    def _selection_rows(n_samples: int) -> np.ndarray:
        """The training rows that full trials are compared on: all of them, or a seeded
        subset of ``SELECT_ROWS`` when there are more."""
        if n_samples <= SELECT_ROWS:
            return np.arange(n_samples)
        return np.sort(np.random.default_rng(0).permutation(n_samples)[:SELECT_ROWS])

    def _trial_path(self, ctx: FitContext, i: int) -> Path | None:
        if ctx.checkpoint_path is None:
            return None
        return ctx.checkpoint_path.parent / f"vade_init_{i}.pt"

    def _record_trial(
        self,
        ctx: FitContext,
        i: int,
        trials: dict[int, dict[str, Any]],
        held_out: np.ndarray | None = None,
    ) -> None:
        """Score trial i and keep its weights (also next to the checkpoint, for resume): its
        log-likelihood on the training rows (``_selection_rows``), or on the ``held_out``
        rows."""
        last = ctx.last_result
        module: VaDEModule = ctx.module  # type: ignore[assignment]
        x = ctx.data[0]
        if held_out is None:
            held_out = self._selection_rows(len(x))
        rows = x[torch.as_tensor(held_out, device=x.device)]
        score = self._mean_log_likelihood(rows, SELECT_DRAWS, seed=0, module=module)
        record = {
            # in the units of X, like score(): the change of variables adds -sum(log scale)
            "score": score - float(np.log(self.scaler_scale_).sum()),
            "state": {k: v.detach().clone() for k, v in ctx.module.state_dict().items()},
            "epochs_run": int(last.epochs_run) if last is not None else 0,
            "stopped_early": bool(last.stopped_early) if last is not None else False,
        }
        trials[i] = record
        path = self._trial_path(ctx, i)
        if path is not None:
            tmp = path.with_name(path.name + ".tmp")
            torch.save(record, tmp)
            os.replace(tmp, path)

    def _trial(self, ctx: FitContext, i: int, trials: dict[int, dict[str, Any]]) -> dict:
        """Trial i's record: from this fit, or from the file written before a resume."""
        if i in trials:
            return trials[i]
        path = self._trial_path(ctx, i)
        if path is None or not path.exists():
            raise ValueError(
                f"Expected the weights of trial {i} of n_init next to the checkpoint "
                f"({path}) but they are missing; fit again without resume"
            )
        trials[i] = torch.load(path, map_location=ctx.device, weights_only=True)
        return trials[i]

    @staticmethod
    def _posterior_moments(
        module: VaDEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The means and marginal variances of q(z | x): with a full posterior the
        diagonal of L L', else exp(logvar)."""
        if not module.full_posterior:
            return LatentEstimator._posterior_moments(module, x)
        mean, _, chol = module.encoder.posterior(x)
        return mean, (chol.double() ** 2).sum(-1)

    def _mixture_on(self, z: np.ndarray, seed: int) -> GMM:
        """A seeded ``GaussianMixture`` (``gmm_n_init`` restarts) fitted to latents z."""
        covariance_type, n_init = self.covariance_type, self.gmm_n_init
        return fit_mixture(z, self.n_components, covariance_type, n_init=n_init, seed=seed)

    def _initialize_prior(self, ctx: FitContext, x: torch.Tensor) -> None:
        """Fit a seeded GaussianMixture to the encoder means of rows x; copy it into the prior."""
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        z = self._sampled_encoder_means(ctx, seed, x)
        ctx.module.prior.load_gmm(self._mixture_on(z, seed))

    def _refit_prior(self, ctx: FitContext, x: torch.Tensor) -> None:
        """Replace the prior by a GaussianMixture on the encoder means of rows x if that fits
        them better."""
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        z, var = self._sampled_encoder_moments(ctx, seed, x)
        current = ctx.module.prior.to_gmm()
        candidate = self._mixture_on(z, seed)
        if self.refit_moments:
            diagonal = self.covariance_type == "diag"
            current = posterior_moments(current.predict_proba(z), z, var, diagonal=diagonal)
            candidate = posterior_moments(candidate.predict_proba(z), z, var, diagonal=diagonal)
        if float(candidate.logpdf(z).mean()) > float(current.logpdf(z).mean()):
            ctx.module.prior.load_gmm(candidate)

    def _sampled_encoder_means(self, ctx: FitContext, seed: int, x: torch.Tensor) -> np.ndarray:
        """The encoder means of the rows x, or, above ``GMM_INIT_SAMPLES`` of them, of a
        random subset of that size drawn from ``seed`` (the mixture fits and their comparison
        see the same rows)."""
        return self._sampled_encoder_moments(ctx, seed, x)[0]

    def _sampled_encoder_moments(
        self, ctx: FitContext, seed: int, x: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """The means and variances of q(z | x) on the rows of ``_sampled_encoder_means``."""
        rows = subsample_rows(len(x), seed, GMM_INIT_SAMPLES)
        if rows is not None:
            x = x[torch.as_tensor(rows, device=x.device)]
        return self._encoder_moments(ctx, x)

    def _after_fit(self, data: tuple[torch.Tensor, ...]) -> None:
        # the training tensors as already scaled: equal to predict(X), without redoing X
        self.labels_ = self._labels(data)

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "init_scores_": [float(s) for s in getattr(self, "init_scores_", [])],
            "best_init_": int(getattr(self, "best_init_", 0)),
        }

    # -- answers ------------------------------------------------------------------------------
    def log_likelihood(self, X: Any, n_draws: int = 1000, random_state: Any = 0) -> float:
        """Mean log p(x) per sample, estimated by importance sampling from q(z | x).

        The estimate is log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x) with K = ``n_draws``
        draws z_k ~ q(z | x) per sample: the importance-weighted bound of Burda et al.
        (2016). In expectation it is below log p(x) and rises towards it as K grows, so with
        the default K = 1000 it is much tighter than ``score`` (the training bound, K =
        ``importance_samples``) and separates fits that ``score`` cannot. Units as ``score``:
        nats per sample, in the units of X.

        Args:
            X: array of shape (n_samples, n_features).
            n_draws: K, the draws per sample.
            random_state: seed of the draws (the estimate is reproducible).
        """
        n_draws = check_positive_int(n_draws, "n_draws")
        (x,) = self._check_input(X, ())
        seed = int(check_random_state(random_state).integers(0, 2**62))
        log_scale = float(np.log(self.scaler_scale_).sum())
        return self._mean_log_likelihood(x, n_draws, seed, self.module_) - log_scale

    def _mean_log_likelihood(
        self, x: torch.Tensor, n_draws: int, seed: int, module: VaDEModule
    ) -> float:
        """``log_likelihood`` of the scaled rows x under ``module``, in their units."""
        generator = torch.Generator(device=x.device).manual_seed(seed)
        # draws in chunks so that a chunk holds at most _DRAW_ROWS decoder rows
        chunk = max(1, min(n_draws, _DRAW_ROWS // min(len(x), _EVAL_BATCH)))
        sizes = [min(chunk, n_draws - start) for start in range(0, n_draws, chunk)]

        def estimate(rows: torch.Tensor) -> torch.Tensor:
            terms = [module.log_weight_terms(rows, k, generator) for k in sizes]
            log_w = torch.cat([px + pz - q for px, pz, q in terms])
            return torch.logsumexp(log_w, 0) - math.log(n_draws)

        was_training = module.training
        module.eval()
        with torch.no_grad():
            values = torch.cat([estimate(rows).double() for rows in x.split(_EVAL_BATCH)])
        module.train(was_training)
        return float(values.mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior cluster probabilities p(c | z = E[z | x]).

        Args:
            X: array of shape (n_samples, n_features).

        Returns:
            Array of shape (n_samples, n_components); rows sum to 1.
        """
        tensors = self._check_input(X, ())
        log_p = self._map_batches(self.module_.log_responsibilities, tensors)
        proba = np.exp(log_p)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable cluster of each sample, int array of shape (n_samples,)."""
        return self._labels(self._check_input(X, ()))

    def _labels(self, tensors: tuple[torch.Tensor, ...]) -> np.ndarray:
        return np.argmax(self._map_batches(self.module_.log_responsibilities, tensors), axis=1)

    @classmethod
    def _test_config(cls) -> dict[str, Any]:
        return {
            "latent_dim": 2,
            "n_components": 3,
            "encoder_sizes": (16,),
            "decoder_sizes": (16,),
            "pretrain_epochs": 2,
            "epochs": 2,
            "batch_size": 32,
            "gmm_n_init": 1,
            "random_state": 0,
            "device": "cpu",
        }
