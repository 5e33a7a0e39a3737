"""MLP builders for encoders and decoders, and the architectures of the paper.

Decoders of model (3) are piecewise affine (F1): Linear layers separated by ReLU or
LeakyReLU. App. H gives sufficient conditions for injectivity: widths nondecreasing from
m to n, every weight matrix of full column rank, and LeakyReLU activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

__all__ = [
    "ARCHITECTURES",
    "Activation",
    "activation_module",
    "architecture",
    "mlp",
]

Activation = Literal["leaky_relu", "relu"]
LEAKY_SLOPE = 0.2

# name -> (encoder hidden sizes, decoder hidden sizes); input/output sizes are added by the
# caller. App. J.3.2 (synthetic, "paper") and Table 3's Arch1-3 (App. J.4); "vade" is the
# 500-500-2000 network of Jiang et al. (2016).
ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "paper": ((64, 512, 64), (64, 512, 512)),
    "arch1": ((500, 1000), (500, 500)),
    "arch2": ((256, 512, 512), (512, 256)),
    "arch3": ((128, 256, 128, 128), (128, 128)),
    "vade": ((500, 500, 2000), (2000, 500, 500)),
}


def activation_module(activation: Activation) -> nn.Module:
    """The torch module of an activation name (LeakyReLU uses slope 0.2)."""
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if activation == "relu":
        return nn.ReLU()
    raise ValueError(f"Expected activation 'leaky_relu' or 'relu' but got {activation!r}")


def mlp(
    sizes: Sequence[int],
    activation: Activation = "leaky_relu",
    *,
    final_activation: bool = False,
) -> nn.Sequential:
    """Linear layers of widths ``sizes`` (input first) with ``activation`` between them.

    Args:
        sizes: layer widths, at least two (input and output).
        activation: the nonlinearity between Linear layers.
        final_activation: whether to apply the activation after the last layer too.

    Example:
        >>> net = mlp([2, 16, 10], "leaky_relu")  # 2 -> 16 -> 10, one LeakyReLU
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"Expected at least two positive layer sizes but got {sizes}")
    activation_module(activation)  # validate early
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation_module(activation))
    return nn.Sequential(*layers)


def architecture(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(encoder hidden sizes, decoder hidden sizes) of a named architecture."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"Expected an architecture in {sorted(ARCHITECTURES)} but got {name!r}"
        ) from None
