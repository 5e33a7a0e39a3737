"""iVAE: a VAE whose prior is conditioned on an observed auxiliary variable u.

Identifiable VAE (Khemakhem et al., 2020), model (25) of the paper with Gaussian sufficient
statistics:

    z | u ~ N(mu(u), diag lambda(u)),    x | z ~ p(x | f(z)),
    q(z | x, u) = N(m(x, u), diag v(x, u)),

a conditionally factorial prior whose means and variances are functions of u (a linear map
for one-hot u, a small network otherwise). It is the baseline of Table 3: unlike the models
of the paper it needs u. With discrete u taking values e_1, ..., e_J with frequencies
w_1, ..., w_J, the marginal prior of z is the mixture sum_j w_j N(mu(e_j), diag lambda(e_j)),
which is what ``IVAE.prior_`` exposes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from idvae.nets import Activation, mlp

__all__ = ["ConditionalGaussianPrior", "diagonal_gaussian_kl"]

_LOG_2PI = math.log(2.0 * math.pi)
MIN_VARIANCE = 1e-4


def diagonal_gaussian_kl(
    mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)), summed over the last axis.

    0.5 sum_d [log var_p - log var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1].

    Args:
        mean_q, var_q, mean_p, var_p: tensors of shape (n, m) (broadcastable), variances > 0.

    Returns:
        Tensor of shape (n,).
    """
    return 0.5 * torch.sum(
        torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0,
        dim=-1,
    )


class ConditionalGaussianPrior(nn.Module):
    """p(z | u) = N(mu(u), diag lambda(u)) with mu, lambda given by one network of u.

    With ``hidden_sizes=()`` the network is a single linear map u -> (mu, raw lambda): for
    one-hot u this is a table of one mean and one variance vector per class.
    Variances are ``softplus(raw) + min_variance``.

    Args:
        aux_dim: p, the width of u.
        latent_dim: m.
        hidden_sizes: hidden widths of the network (empty: linear).
        activation: its nonlinearity.
        min_variance: the floor of every variance.
    """

    def __init__(
        self,
        aux_dim: int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (),
        activation: Activation = "leaky_relu",
        *,
        min_variance: float = MIN_VARIANCE,
    ) -> None:
        super().__init__()
        self.aux_dim = int(aux_dim)
        self.latent_dim = int(latent_dim)
        self.min_variance = float(min_variance)
        self.net = mlp([self.aux_dim, *hidden_sizes, 2 * self.latent_dim], activation)
        # Start at N(0, I) for every u: zero output weights, softplus^{-1}(1) variance bias.
        last = self.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()
            last.bias[self.latent_dim :] = math.log(math.expm1(1.0 - self.min_variance))

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of p(z | u), two tensors of shape (n, m); u has shape (n, p)."""
        out = self.net(u)
        mean, raw = out[:, : self.latent_dim], out[:, self.latent_dim :]
        return mean, F.softplus(raw) + self.min_variance

    def log_prob(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log p(z | u), tensor of shape (n,); z has shape (n, m), u (n, p)."""
        mean, var = self(u)
        return -0.5 * torch.sum((z - mean) ** 2 / var + torch.log(var) + _LOG_2PI, dim=1)

    def kl(self, mean_q: torch.Tensor, var_q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """KL(q(z | x, u) || p(z | u)) in closed form, tensor of shape (n,)."""
        mean_p, var_p = self(u)
        return diagonal_gaussian_kl(mean_q, var_q, mean_p, var_p)
