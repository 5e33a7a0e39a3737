"""The MFCVAE estimator (scikit-learn API on the shared base)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from idvae.mixture import GMM
from idvae.models._base import FitContext, LatentEstimator, LatentModule, check_sizes, register
from idvae.models._prior import (
    GMM_INIT_SAMPLES,
    fit_mixture,
    posterior_moments,
    subsample_rows,
)
from idvae.models.mfcvae._factor import (
    facet_basis,
    faceted_basis,
    mixture_grid,
    most_additive,
)
from idvae.models.mfcvae._module import MFCVAEModule
from idvae.models.mfcvae._prior import check_facets, fade_in_weights, joint_gmm_from_facets

__all__ = ["EM_MAX_SAMPLES", "INITIAL_POSTERIOR_VARIANCE", "MFCVAE", "MIXTURE_CANDIDATES"]

# q(z | x) starts, after pretraining, with this fraction of each latent coordinate's variance
INITIAL_POSTERIOR_VARIANCE = 0.01
# the closed-form update of the joint prior uses at most this many training points
EM_MAX_SAMPLES = 10_000
# facet_init="mixture" with gmm_n_init=None fits this many joint mixtures and keeps the most
# additive of the nearly most likely (benchmarks/levers_mfcvae.py measured 10)
MIXTURE_CANDIDATES = 10


@register
class MFCVAE(LatentEstimator):
    """Multi-Facet Clustering VAE (Falck et al., 2021): k facets, each a mixture prior.

    Fits eq. (5) of the paper: z = (z_1, ..., z_k), z_i | c_i ~ N(mu_{c_i}, diag s2_{c_i}),
    c_i ~ Cat(pi_i) independent, x = f(z) + noise. By Thm 3.3(c) (App. F, (P3)) the facet
    structure, P(U) and P(Z) are identifiable up to permutation, scaling and translation.

    Fitting runs, through the checkpointed engine ``idvae.training``:

    1. ``pretrain``: the encoder and decoder pretrained for ``pretrain_epochs``, as an
       autoencoder on the encoder means (``pretrain="ae"``) or as a VAE with prior N(0, I)
       (``pretrain="vae"``);
    2. initialisation of the facets, by ``facet_init``:

       - ``"joint"`` (k >= 2): a seeded diagonal ``GaussianMixture`` with
         J = prod K_i components on the encoder means initialises a joint prior, trained
         with the VaDE ELBO for ``joint_epochs`` (phase ``joint``); its J components are
         then arranged on the K_1 x ... x K_k grid whose means are most nearly additive
         (``factor_grid``), the latent is re-expressed in a basis whose block i spans
         facet i's effects (``facet_basis``, folded exactly into the encoder and decoder),
         and each facet's mixture is set from the joint responsibilities summed over the
         other facets. This is the route the theory suggests (the joint mixture is
         identifiable up to an affine map, Thm 3.3; (P3) fixes the blocks);
       - ``"mixture"`` (default since 2026-12-02; k >= 2): seeded full-covariance
         ``GaussianMixture`` fits with J = prod K_i components on the encoder means
         (``gmm_n_init`` of them, by default ``MIXTURE_CANDIDATES``); among those whose
         log-likelihood is within ``MIXTURE_LOGLIK_TOLERANCE`` of the best, the one whose
         means are most nearly additive is kept (``most_additive``: under (P3) the true
         clustering factors) and factored into facets as above, with no joint training
         stage (docs/models_mfcvae_ivae.md);
       - ``"blocks"``: a seeded diagonal ``GaussianMixture`` with K_i components on each
         block of the encoder means (Falck et al.'s style; the blocks of a plain
         autoencoder need not match the facets, so facets can come out mixed);

    3. ``train``: the ELBO of eq. (5) (``epochs``), with k >= 2 facets refitted every
       ``prior_refit_every`` epochs. With ``progressive=True`` facets are
       faded in one after another (Falck et al.'s progressive training): facet 0 from the
       start, facet i's weight on its latent block (at the decoder input) and on its KL
       terms ramps linearly from 0 to 1 during epochs [i F, (i + 1) F), F = fade_in_epochs.

    Args:
        facet_dims: (d_1, ..., d_k), the latent dimension of each facet; sum <= n_features.
        facet_components: (K_1, ..., K_k), the mixture size of each facet.
        encoder_sizes: hidden widths of the encoder n -> ... -> sum(d_i).
        decoder_sizes: hidden widths of the decoder sum(d_i) -> ... -> n.
        activation: ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        likelihood: ``"gaussian"`` (X standardised inside, learned noise variance per
            feature) or ``"bernoulli"`` (X in [0, 1], e.g. images).
        facet_init: ``"joint"``, ``"mixture"`` or ``"blocks"`` (see above); with one facet
            they coincide.
        pretrain: ``"ae"`` (an autoencoder on the encoder means) or ``"vae"`` (a VAE with
            prior N(0, I), VaDE's default pretraining).
        pretrain_epochs: pretraining epochs (0: none).
        joint_epochs: epochs of the joint-mixture stage (``facet_init="joint"``, k >= 2).
        epochs: epochs of the faceted ELBO.
        batch_size: mini-batch size.
        lr: Adam learning rate (all phases).
        lr_decay: the learning rate is multiplied by this every ``lr_decay_every`` epochs.
        lr_decay_every: see ``lr_decay``.
        progressive: fade the facets in one after another during ``train``.
        fade_in_epochs: F, the length of each fade-in ramp; needs epochs >= k F.
        gmm_n_init: restarts of each ``GaussianMixture`` initialisation; with
            ``facet_init="mixture"``, the number of joint mixtures compared. None (default):
            ``MIXTURE_CANDIDATES`` (10) for ``"mixture"``, 3 for the other routes.
        prior_refit_every: with k >= 2 facets, every this many epochs of ``train`` the
            facets are refitted on the encoder's posteriors and replace the current ones
            when they fit them better (``_refit_facets``): an EM step that can split and
            merge states, as VaDE's ``prior_refit_every``. Default 5 since 2026-12-02
            (``benchmarks/levers_mfcvae.py``: 29 of 32 instances at per-facet accuracy
            >= 0.9 against 27 without); None: no refit.
        refit_basis: the facet refits may also move the latent to the basis in which a
            clustering's facets fit best (``faceted_basis``), kept when that fits the
            posteriors better after the change of variables. Default True since
            2026-12-03, with ``epochs=60`` (``benchmarks/levers_mfcvae.py``,
            ``refit5-basis-e60``: 59 of 64 instances recovered against 53 before, 30 of
            them on seeds where nothing was chosen).
        early_stopping: stop a phase when its loss stalls for ``patience`` epochs.
        patience: see ``early_stopping``.
        max_retries: non-finite epochs retried (halving the lr) before ``TrainingError``.
        random_state: seed (int, numpy Generator or None); same seed, same result on CPU.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        verbose: 0 silent, 1 a progress bar with the loss terms.

    Attributes:
        prior_: the joint prior over the concatenated z, an ``idvae.GMM`` with
            J = prod K_i components, product weights and block-diagonal diagonal
            covariances; component j is the tuple ``np.unravel_index(j, facet_components)``.
        facet_priors_: the k facet mixtures (``idvae.GMM``, facet i over d_i dimensions).
        labels_: int array of shape (n_samples, k), the facet states of the training data.
        grid_residual_: with ``facet_init="joint"`` or ``"mixture"``, the share of the joint
            means' spread that the additive facet model leaves unexplained (0: exactly
            additive).
        history_: per-epoch records (phase, loss, recon, kl_z, kl_c, lr, min_weight, ...).
        collapsed_components_: (facet, component) pairs whose weight fell below 1e-3 / K_i.

    Example:
        >>> import idvae
        >>> sim = idvae.simulate.sample_model(
        ...     3000, latent_dim=4, obs_dim=12, facets=(3, 3), random_state=0)
        >>> model = idvae.MFCVAE((2, 2), (3, 3), random_state=0).fit(sim.x)
        >>> model.predict(sim.x).shape, model.prior_.n_components
        ((3000, 2), 9)
    """

    _registry_name: ClassVar[str] = "mfcvae"
    _parameter_constraints: ClassVar[dict] = {
        k: v for k, v in LatentEstimator._common_constraints.items() if k != "latent_dim"
    } | {
        "facet_dims": ["array-like", Interval(Integral, 1, None, closed="left")],
        "facet_components": ["array-like", Interval(Integral, 1, None, closed="left")],
        "encoder_sizes": ["array-like"],
        "decoder_sizes": ["array-like"],
        "activation": [StrOptions({"leaky_relu", "relu"})],
        "facet_init": [StrOptions({"joint", "mixture", "blocks"})],
        "pretrain": [StrOptions({"ae", "vae"})],
        "pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
        "joint_epochs": [Interval(Integral, 0, None, closed="left")],
        "progressive": ["boolean"],
        "fade_in_epochs": [Interval(Integral, 1, None, closed="left")],
        "gmm_n_init": [Interval(Integral, 1, None, closed="left"), None],
        "prior_refit_every": [Interval(Integral, 1, None, closed="left"), None],
        "refit_basis": ["boolean"],
    }

    def __init__(
        self,
        facet_dims: Sequence[int] = (2, 2),
        facet_components: Sequence[int] = (3, 3),
        *,
        encoder_sizes: Sequence[int] = (64, 512, 64),
        decoder_sizes: Sequence[int] = (64, 512, 512),
        activation: str = "leaky_relu",
        likelihood: str = "gaussian",
        facet_init: str = "mixture",
        pretrain: str = "ae",
        pretrain_epochs: int = 15,
        joint_epochs: int = 30,
        epochs: int = 60,
        batch_size: int = 100,
        lr: float = 2e-3,
        lr_decay: float = 0.9,
        lr_decay_every: int = 10,
        progressive: bool = False,
        fade_in_epochs: int = 5,
        gmm_n_init: int | None = None,
        prior_refit_every: int | None = 5,
        refit_basis: bool = True,
        early_stopping: bool = False,
        patience: int = 5,
        max_retries: int = 5,
        random_state: Any = None,
        device: str = "auto",
        verbose: int = 0,
    ) -> None:
        self.facet_dims = facet_dims
        self.facet_components = facet_components
        self.encoder_sizes = encoder_sizes
        self.decoder_sizes = decoder_sizes
        self.activation = activation
        self.likelihood = likelihood
        self.facet_init = facet_init
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.joint_epochs = joint_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.progressive = progressive
        self.fade_in_epochs = fade_in_epochs
        self.gmm_n_init = gmm_n_init
        self.prior_refit_every = prior_refit_every
        self.refit_basis = refit_basis
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_retries = max_retries
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- derived settings -----------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """m = sum(facet_dims), the dimension of the concatenated latent."""
        return sum(check_facets(self.facet_dims, self.facet_components)[0])

    @property
    def n_facets(self) -> int:
        """k, the number of facets."""
        return len(check_facets(self.facet_dims, self.facet_components)[0])

    def _gmm_restarts(self) -> int:
        """``gmm_n_init``, or its default: the mixtures ``"mixture"`` compares, else 3."""
        if self.gmm_n_init is not None:
            return int(self.gmm_n_init)
        return MIXTURE_CANDIDATES if self.facet_init == "mixture" else 3

    def _uses_joint_stage(self) -> bool:
        return self.facet_init == "joint" and self.n_facets >= 2

    # -- hooks of the base ------------------------------------------------------------------
    def _build_module(self, n_features: int, aux_dims: tuple[int, ...]) -> MFCVAEModule:
        dims, comps = check_facets(self.facet_dims, self.facet_components)
        return MFCVAEModule(
            n_features,
            dims,
            comps,
            check_sizes(self.encoder_sizes, "encoder_sizes"),
            check_sizes(self.decoder_sizes, "decoder_sizes"),
            self.activation,
            self.likelihood,
            joint_stage=self._uses_joint_stage(),
        )

    def _check_data(self, n_samples: int, n_features: int) -> None:
        dims, comps = check_facets(self.facet_dims, self.facet_components, n_features)
        joint = self.facet_init in ("joint", "mixture") and len(dims) >= 2
        needed = math.prod(comps) if joint else max(comps)
        if n_samples < needed:
            raise ValueError(
                f"Expected n_samples >= {needed} (the largest mixture fitted at "
                f"initialisation) but got n_samples = {n_samples}"
            )
        if self.progressive and self.epochs < len(dims) * self.fade_in_epochs:
            raise ValueError(
                f"Expected epochs >= n_facets * fade_in_epochs = {len(dims)} * "
                f"{self.fade_in_epochs} with progressive=True (so every facet is fully faded "
                f"in) but got epochs = {self.epochs}"
            )

    def _fade_weights(self, epoch: int) -> np.ndarray:
        """The facet weights used during 0-based epoch ``epoch`` of the ``train`` phase."""
        k = self.n_facets
        if not self.progressive:
            return np.ones(k)
        return fade_in_weights(float(epoch + 1), k, float(self.fade_in_epochs))

    def _on_epoch_end(self, module: LatentModule) -> Callable[[int, dict], dict]:
        base = super()._on_epoch_end(module)

        def record(epoch: int, entry: dict) -> dict:
            extra = base(epoch, entry) or {}
            if entry.get("phase") == "joint":
                self._joint_em_step(module)  # type: ignore[arg-type]
            if entry.get("phase") == "train" and self.progressive:
                extra["fade_min"] = float(module.facet_weights.min())
                # the weights of the next epoch; stored in the module, so checkpointed
                weights = torch.as_tensor(self._fade_weights(epoch), dtype=torch.float32)
                module.facet_weights.copy_(weights.to(module.facet_weights.device))
            return extra

        return record

    def _joint_em_step(self, module: MFCVAEModule) -> None:
        """One closed-form update of the joint prior from q (at most EM_MAX_SAMPLES points)."""
        was_training = module.training
        module.eval()
        with torch.no_grad():
            parts = [module.encoder(b) for b in self._em_data.split(4096)]
            mean = torch.cat([p[0] for p in parts])
            var = torch.cat([p[1] for p in parts]).exp()
            module.joint_prior.em_update(mean, var)  # type: ignore[union-attr]
        module.train(was_training)

    def _fit_phases(self, ctx: FitContext) -> None:
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        if self.pretrain_epochs > 0:
            # the autoencoder leaves the decoder's noise variance alone; the VAE learns it
            vae = self.pretrain == "vae"
            decoder = module.decoder if vae else module.decoder.net
            ctx.run_phase(
                "pretrain",
                self._train_config(self.pretrain_epochs, lr_decay=1.0, early_stopping=False),
                loss_fn=module.pretrain_vae_loss if vae else module.pretrain_loss,
                parameters=list(module.encoder.parameters()) + list(decoder.parameters()),
            )
        if self._uses_joint_stage():
            ctx.run_step("init_joint", lambda: self._initialize_joint(ctx))
            # the joint prior is updated in closed form after every epoch (_on_epoch_end)
            facet_params = set(map(id, module.prior.parameters()))
            networks = [p for p in module.parameters() if id(p) not in facet_params]
            n = int(ctx.data[0].shape[0])
            # an evenly spaced subset (no randomness, so resume is exact) bounds the cost
            index = np.linspace(0, n - 1, min(n, EM_MAX_SAMPLES)).round().astype(np.int64)
            self._em_data = ctx.data[0][torch.as_tensor(index, device=ctx.data[0].device)]
            try:
                ctx.run_phase(
                    "joint",
                    self._train_config(self.joint_epochs),
                    loss_fn=module.joint_loss,
                    parameters=networks,
                )
            finally:
                del self._em_data
            ctx.run_step("init", lambda: self._initialize_from_joint(ctx))
        elif self.facet_init == "mixture" and self.n_facets >= 2:
            ctx.run_step("init", lambda: self._initialize_mixture(ctx))
        else:
            ctx.run_step("init", lambda: self._initialize_blocks(ctx))
        every = self.prior_refit_every if self.n_facets >= 2 else None
        refit = partial(self._refit_facets, ctx)
        self._train_with_refits(ctx, self.epochs, ctx.data, every, refit)

    # -- initialisation -------------------------------------------------------------------
    @staticmethod
    def _small_posterior(module: MFCVAEModule, z: np.ndarray) -> None:
        module.reset_posterior_variance(INITIAL_POSTERIOR_VARIANCE * z.var(axis=0))

    def _start_fade(self, module: MFCVAEModule) -> None:
        weights = torch.as_tensor(self._fade_weights(0), dtype=torch.float32)
        module.facet_weights.copy_(weights.to(module.facet_weights.device))

    def _initialize_blocks(self, ctx: FitContext) -> None:
        """A seeded diagonal GaussianMixture on each facet's block of the encoder means."""
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        z = self._encoder_means(ctx)
        for i, block in enumerate(module.prior.slices):
            seed = int(ctx.rng.integers(0, 2**31 - 1))
            k = module.prior.facet_components[i]
            gmm = fit_mixture(z[:, block], k, "diag", n_init=self._gmm_restarts(), seed=seed)
            module.prior.set_facet(i, gmm)
        self._small_posterior(module, z)
        self._start_fade(module)

    def _initialize_joint(self, ctx: FitContext) -> None:
        """A seeded diagonal GaussianMixture with J = prod K_i components on the means."""
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        z = self._encoder_means(ctx)
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        n_joint = math.prod(module.prior.facet_components)
        joint = fit_mixture(z, n_joint, "diag", n_init=self._gmm_restarts(), seed=seed)
        module.joint_prior.set_facet(0, joint)  # type: ignore[union-attr]
        self._small_posterior(module, z)

    def _initialize_from_joint(self, ctx: FitContext) -> None:
        """Factor the trained joint mixture into facets (class docstring, step 2)."""
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        joint = module.joint_prior.facet_gmms()[0]  # type: ignore[union-attr]
        z = self._encoder_means(ctx)
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        sizes = module.prior.facet_components
        self._set_facets(ctx, z, *mixture_grid(joint, z, sizes, random_state=seed))
        self._start_fade(module)

    def _initialize_mixture(self, ctx: FitContext) -> None:
        """``gmm_n_init`` full-covariance joint mixtures on the encoder means; the most
        additive of the nearly most likely (``most_additive``) is factored into facets."""
        z = self._encoder_means(ctx)
        log_likelihoods, grids = self._mixture_candidates(ctx, z)
        self._set_facets(ctx, z, *grids[most_additive(log_likelihoods, _residuals(grids))])
        self._start_fade(ctx.module)  # type: ignore[arg-type]

    def _mixture_candidates(self, ctx: FitContext, z: np.ndarray) -> tuple[list, list]:
        """``gmm_n_init`` seeded full-covariance joint mixtures of z: their mean
        log-likelihoods and their grids (``mixture_grid``)."""
        sizes = ctx.module.prior.facet_components  # type: ignore[union-attr]
        log_likelihoods, grids = [], []
        for _ in range(self._gmm_restarts()):
            seed = int(ctx.rng.integers(0, 2**31 - 1))
            joint = fit_mixture(z, math.prod(sizes), "full", n_init=1, seed=seed)
            log_likelihoods.append(float(joint.logpdf(z).mean()))
            grids.append(mixture_grid(joint, z, sizes, random_state=seed))
        return log_likelihoods, grids

    def _refit_facets(self, ctx: FitContext) -> None:
        """The facets refitted on the encoder's posteriors in the current basis, kept if
        they fit them better than the current clustering does (VaDE's prior refit, for
        facets).

        The candidates are the current joint prior refined by EM with full covariances and
        the ``"mixture"`` route's fresh mixtures on the encoder means
        (``_mixture_candidates``); the most additive of the nearly most likely
        (``most_additive``) gives each facet's responsibilities, its facets matched to the
        blocks they fit best. Candidate and current clustering are compared alike: each
        facet's mixture is the moments of its responsibilities over the posteriors
        q(z | x) (means and variances, the ELBO's optimum for the prior given q), scored by
        the log-likelihood of the means. With ``refit_basis``, both clusterings are also
        tried in the basis where their facets fit best (``faceted_basis``: a latent whose
        blocks each carry parts of several facets cannot be told apart by refitting the
        facets in place), scored with the change of variables; a winner there is folded
        into the encoder and decoder (``apply_latent_map``), which are otherwise left as
        they are. Above ``GMM_INIT_SAMPLES`` rows, all of it runs on a seeded subset of
        that size.
        """
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        prior = module.prior
        z, var = self._encoder_moments(ctx)
        current = prior.to_gmm()
        seed = int(ctx.rng.integers(0, 2**31 - 1))
        rows = subsample_rows(len(z), seed, GMM_INIT_SAMPLES)
        if rows is not None:  # the mixtures see a seeded subset, as VaDE's refits
            z, var = z[rows], var[rows]
        refined = fit_mixture(z, current.n_components, "full", n_init=1, seed=seed, start=current)
        log_likelihoods, grids = self._mixture_candidates(ctx, z)
        log_likelihoods.insert(0, float(refined.logpdf(z).mean()))
        grids.insert(0, mixture_grid(refined, z, prior.facet_components, random_state=seed))
        resp, cells, residual = grids[most_additive(log_likelihoods, _residuals(grids))]
        # joint component j of the current prior sits in grid cell unravel_index(j)
        own = np.array(np.unravel_index(np.arange(current.n_components), prior.facet_components))
        now_resp = current.predict_proba(z)
        now = _facet_moments(prior, z, now_resp, own.T, var)
        # a fresh grid's facets come in any order: each is matched to the block it fits
        permutations = _facet_orders(prior)
        orders = [_facet_moments(prior, z, resp, cells[:, o], var) for o in permutations]
        scores = [float(joint_gmm_from_facets(f).logpdf(z).mean()) for f in orders]
        best = int(np.argmax(scores))
        current_score = float(joint_gmm_from_facets(now).logpdf(z).mean())
        choices = [(current_score, None, None, None), (scores[best], None, orders[best], residual)]
        if self.refit_basis:
            cells_best = cells[:, permutations[best]]
            for r, c, res in ((now_resp, own.T, None), (resp, cells_best, residual)):
                choices.append((*_rebased(prior, z, var, r, c), res))
        _, A, facets, res = max(choices, key=lambda choice: choice[0])
        if facets is None:
            return
        if A is not None:
            module.apply_latent_map(A, np.zeros(len(A)))
        for i, gmm in enumerate(facets):
            prior.set_facet(i, gmm)
        if res is not None:
            self.grid_residual_ = float(res)

    def _set_facets(
        self, ctx: FitContext, z: np.ndarray, resp: np.ndarray, cells: np.ndarray, residual: float
    ) -> None:
        """Set the facets from a joint clustering placed on the grid (``mixture_grid``): the
        latent re-expressed in the basis whose block i spans facet i's effects
        (``facet_basis``, folded into the encoder and decoder), each facet's mixture the
        moments of its responsibilities there."""
        module: MFCVAEModule = ctx.module  # type: ignore[assignment]
        prior = module.prior
        A, b = facet_basis(z, _facet_responsibilities(prior, resp, cells), prior.facet_dims)
        module.apply_latent_map(A, b)
        s = (z - b) @ A.T
        # the posterior covariance in the new basis is not diagonal; start it small again
        self._small_posterior(module, s)
        for i, gmm in enumerate(_facet_moments(prior, s, resp, cells)):
            prior.set_facet(i, gmm)
        self.grid_residual_ = float(residual)

    def _after_fit(self, data: tuple[torch.Tensor, ...]) -> None:
        # the training tensors as already scaled: equal to predict(X), without redoing X
        self.labels_ = self._states(self._log_responsibilities_of(data))
        if not hasattr(self, "grid_residual_"):
            self.grid_residual_ = None

    def _fitted_state(self) -> dict[str, Any]:
        return {"grid_residual_": getattr(self, "grid_residual_", None)}

    def _finish_fit(self) -> None:
        super()._finish_fit()
        self.facet_priors_ = self.module_.prior.facet_gmms()

    # -- answers ------------------------------------------------------------------------------
    def _log_responsibilities(self, X: Any) -> list[np.ndarray]:
        return self._log_responsibilities_of(self._check_input(X, ()))

    def _log_responsibilities_of(self, tensors: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        """Per-facet log p(c_i | z_i = E[z_i | x]) of scaled tensors, one (n, K_i) each."""
        log_p = self._map_batches(self.module_.log_responsibilities, tensors)
        bounds = np.cumsum((0, *self.module_.prior.facet_components))
        return [log_p[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def predict_proba(self, X: Any) -> list[np.ndarray]:
        """Per-facet posterior state probabilities p(c_i | z_i = E[z_i | x]).

        Args:
            X: array of shape (n_samples, n_features).

        Returns:
            A list of k arrays; array i has shape (n_samples, K_i) and rows summing to 1.
        """
        out = []
        for log_p in self._log_responsibilities(X):
            proba = np.exp(log_p)
            out.append(proba / proba.sum(axis=1, keepdims=True))
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The most probable state of every facet.

        Args:
            X: array of shape (n_samples, n_features).

        Returns:
            Int array of shape (n_samples, k); column i is facet i's state in [0, K_i).
        """
        return self._states(self._log_responsibilities(X))

    @staticmethod
    def _states(log_p: list[np.ndarray]) -> np.ndarray:
        return np.stack([lp.argmax(axis=1) for lp in log_p], axis=1)

    def predict_joint(self, X: Any) -> np.ndarray:
        """The joint state as one index in [0, J) (row-major, as ``prior_``), shape (n,)."""
        labels = self.predict(X)
        return np.ravel_multi_index(tuple(labels.T), self.module_.prior.facet_components)

    @classmethod
    def _expected_failed_checks(cls) -> dict[str, str]:
        float32 = (
            "the networks compute in float32, so outputs on a subset or a permutation of X "
            "differ from those on all of X by ~1e-6 (batched matrix products round "
            "differently), above the check's 1e-7 tolerance"
        )
        return {
            "check_methods_subset_invariance": float32,
            "check_methods_sample_order_invariance": float32,
        }

    @classmethod
    def _test_config(cls) -> dict[str, Any]:
        return {
            "facet_dims": (1, 1),
            "facet_components": (2, 2),
            "encoder_sizes": (16,),
            "decoder_sizes": (16,),
            "pretrain_epochs": 2,
            "joint_epochs": 2,
            "epochs": 2,
            "batch_size": 32,
            "gmm_n_init": 1,
            "random_state": 0,
            "device": "cpu",
        }


def _residuals(grids: list[tuple[np.ndarray, np.ndarray, float]]) -> list[float]:
    """The grid residuals of ``mixture_grid`` results."""
    return [residual for _, _, residual in grids]


def _facet_responsibilities(prior: Any, resp: np.ndarray, cells: np.ndarray) -> list[np.ndarray]:
    """Each facet's state responsibilities, (n, K_i): the joint ones summed over the other
    facets, joint component j sitting in grid cell ``cells[j]``."""
    return [resp @ np.eye(k)[cells[:, i]] for i, k in enumerate(prior.facet_components)]


def _facet_moments(
    prior: Any, s: np.ndarray, resp: np.ndarray, cells: np.ndarray, var: np.ndarray | None = None
) -> list[GMM]:
    """Each facet's diagonal mixture on its block of s: the weighted moments of its
    responsibilities, plus the weighted posterior variances ``var`` (n, m) where given
    (variances floored at 1e-3 of the block's)."""
    return [
        posterior_moments(r, s[:, block], None if var is None else var[:, block], diagonal=True)
        for r, block in zip(_facet_responsibilities(prior, resp, cells), prior.slices, strict=True)
    ]


def _rebased(
    prior: Any, z: np.ndarray, var: np.ndarray, resp: np.ndarray, cells: np.ndarray
) -> tuple[float, np.ndarray, list[GMM]]:
    """The clustering ``resp`` (grid ``cells``, facet i on block i) in the basis where its
    facets fit best (``faceted_basis``, from the current one): the mean log-density of z
    under its facets there, with log |det A| (the change of variables that makes it
    comparable with a density of z), A, and the facets (moments with the posterior
    variances carried over)."""
    A = faceted_basis(z, var, _facet_responsibilities(prior, resp, cells), prior.facet_dims)
    s = z @ A.T
    facets = _facet_moments(prior, s, resp, cells, var @ (A**2).T)
    score = float(joint_gmm_from_facets(facets).logpdf(s).mean() + np.linalg.slogdet(A)[1])
    return score, A, facets


def _facet_orders(prior: Any) -> list[list[int]]:
    """The orders of a grid's facets that fit the latent blocks: the permutations that
    move a facet only to a block of the same size and dimension (identity first)."""
    shapes = list(zip(prior.facet_components, prior.facet_dims, strict=True))
    return [
        list(order)
        for order in itertools.permutations(range(len(shapes)))
        if all(shapes[j] == shapes[i] for i, j in enumerate(order))
    ]
