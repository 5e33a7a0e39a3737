"""A plain PyTorch VaDE, the peer that idvae's VaDE is timed against (issue 10, item 4).

Written for this repository in the style of the common public PyTorch ports of VaDE (Jiang
et al., 2017), not copied from any of them: an ``nn.Sequential`` of ``nn.Linear`` + ReLU for
the encoder (784-500-500-2000, then two Linear heads for the mean and the log-variance of
q(z | x)) and the decoder (latent-2000-500-500-784, sigmoid output), the Bernoulli
reconstruction term as ``F.binary_cross_entropy`` on the sigmoid output, the prior's
parameters ``pi``, ``mu_c`` and ``log_sigma2_c`` held as plain parameters, and the loss
written out term by term as those ports write it: gamma, the responsibilities
q(c | x) ~ p(c | z) of the prior at the sampled z, then the expected log prior density and
the KL of the cluster assignment summed explicitly over the latent axis and the components.
The training loop is ``torch.optim.Adam`` over all parameters, one shuffled pass per epoch.

Two choices differ from the typical port, both in the peer's favour or neutral for timing:
the log-density of the J components is computed with one broadcast instead of a Python loop
over components, and the mixing weights are ``softmax(pi_logits)`` (a port keeps ``pi`` as
raw probabilities, which Adam can push below zero). Data are taken from an in-memory tensor
by index (no ``DataLoader`` with per-image transforms), so an epoch's time is arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PeerVaDE", "train_epoch"]

LOG_2PI = math.log(2.0 * math.pi)


def _stack(widths: list[int], last: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class PeerVaDE(nn.Module):
    """VaDE with a Bernoulli decoder, as a plain port writes it.

    Args:
        n_features: D, the number of pixels (784 for MNIST).
        latent_dim: the dimension of z.
        n_components: J, the number of mixture components.
        hidden: the encoder's hidden widths; the decoder uses them reversed.
    """

    def __init__(
        self,
        n_features: int = 784,
        latent_dim: int = 10,
        n_components: int = 10,
        hidden: tuple[int, ...] = (500, 500, 2000),
    ) -> None:
        super().__init__()
        # the encoder body ends with a ReLU; the two heads read its last hidden layer
        self.encoder = _stack([n_features, *hidden], nn.ReLU())
        self.mu_head = nn.Linear(hidden[-1], latent_dim)
        self.logvar_head = nn.Linear(hidden[-1], latent_dim)
        self.decoder = _stack([latent_dim, *reversed(hidden), n_features], nn.Sigmoid())
        self.pi_logits = nn.Parameter(torch.zeros(n_components))
        self.mu_c = nn.Parameter(torch.randn(n_components, latent_dim))
        self.log_sigma2_c = nn.Parameter(torch.zeros(n_components, latent_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z | x), each (n, latent_dim)."""
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h)

    def component_log_pdf(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu_c, diag exp(log_sigma2_c)) for every component c, shape (n, J)."""
        diff2 = (z[:, None, :] - self.mu_c[None, :, :]) ** 2
        per_dim = LOG_2PI + self.log_sigma2_c[None] + diff2 / torch.exp(self.log_sigma2_c[None])
        return -0.5 * per_dim.sum(dim=2)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative ELBO, averaged over the batch, written as the ports write it."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        x_hat = self.decoder(z)
        # reconstruction: the mean binary cross-entropy over pixels, times the pixel count
        rec = F.binary_cross_entropy(x_hat, x) * x.shape[1]

        pi = torch.softmax(self.pi_logits, dim=0)
        # gamma: responsibilities of the prior at the sampled z (a small floor, as ports add)
        gamma = torch.exp(torch.log(pi)[None, :] + self.component_log_pdf(z)) + 1e-10
        gamma = gamma / gamma.sum(dim=1, keepdim=True)

        # - E_q[log p(z | c)] (without the 2 pi constant), summed over the latent axis
        # and weighted by gamma over the components
        var_c = torch.exp(self.log_sigma2_c)[None]
        inner = (
            self.log_sigma2_c[None]
            + torch.exp(logvar[:, None, :]) / var_c
            + (mu[:, None, :] - self.mu_c[None]) ** 2 / var_c
        )
        expected_log_prior = 0.5 * torch.mean(torch.sum(gamma * inner.sum(dim=2), dim=1))
        # KL of q(c | x) from pi, and the entropy of q(z | x) (without the constant)
        kl_c = torch.mean(torch.sum(gamma * torch.log(gamma / pi[None, :]), dim=1))
        entropy = 0.5 * torch.mean(torch.sum(1.0 + logvar, dim=1))
        return rec + expected_log_prior + kl_c - entropy


def train_epoch(
    model: PeerVaDE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> float:
    """One shuffled pass over ``x`` with one Adam step per mini-batch; the mean loss."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch = x[order[start : start + batch_size]]
        loss = model.loss(batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(x)
