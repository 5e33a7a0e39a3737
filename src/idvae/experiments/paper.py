"""The paper's published numbers that ``idvae reproduce`` sets beside ours.

Copied from the paper's text (App. J.3 and Sec. 4): study key -> metric -> (mean, std),
with the metric names of ``idvae.metrics.METRIC_LABELS``. A std is None where the paper
prints none. The paper's sentences are (where in the paper, what it says) pairs, which the
reports draw as ``idvae.report.PaperClaim``: "Paper (where): what", apart from our numbers.
"""

from __future__ import annotations

__all__ = [
    "PAPER_MLE",
    "PAPER_PINWHEEL",
    "PAPER_SETUPS",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "VADE_MNIST",
]

# The paper's numbers, copied from its text: metric -> (mean, std).
# Table 2 (App. J.3.2): "Mean (std) distAff,L2 distance ... and Mean (std) MCC".
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "parallelograms-1": {
        "dist_aff": (0.1542, 0.150),
        "strong_mcc": (0.86, 0.09),
        "weak_mcc": (0.99, 0.003),
    },
    "parallelograms-2": {
        "dist_aff": (0.1231, 0.076),
        "strong_mcc": (0.83, 0.12),
        "weak_mcc": (0.99, 0.003),
    },
    "parallelograms-3": {
        "dist_aff": (0.578, 0.301),
        "strong_mcc": (0.91, 0.08),
        "weak_mcc": (0.99, 0.001),
    },
}
# Sec. 4, "Simulated data": distAff 0.113 (std 0.065) over 20 pairs; weak MCC 0.87 and
# strong MCC 1.0 (as printed; the paper gives no standard deviations for the MCCs).
PAPER_PINWHEEL: dict[str, dict[str, tuple[float, float | None]]] = {
    "pinwheel": {
        "dist_aff": (0.113, 0.065),
        "weak_mcc": (0.87, None),
        "strong_mcc": (1.0, None),
    }
}
# Table 3 (App. J.3.3): strong MCC (std), weak MCC (std) per architecture/model/activation.
PAPER_TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "arch1-mfcvae-relu": {"strong_mcc": (0.70, 0.07), "weak_mcc": (0.91, 0.05)},
    "arch1-mfcvae-leaky_relu": {"strong_mcc": (0.69, 0.06), "weak_mcc": (0.94, 0.02)},
    "arch1-ivae-leaky_relu": {"strong_mcc": (0.65, 0.07), "weak_mcc": (0.88, 0.07)},
    "arch2-mfcvae-relu": {"strong_mcc": (0.69, 0.07), "weak_mcc": (0.89, 0.08)},
    "arch2-mfcvae-leaky_relu": {"strong_mcc": (0.69, 0.06), "weak_mcc": (0.92, 0.03)},
    "arch2-ivae-leaky_relu": {"strong_mcc": (0.64, 0.07), "weak_mcc": (0.87, 0.04)},
    "arch3-mfcvae-relu": {"strong_mcc": (0.69, 0.07), "weak_mcc": (0.86, 0.08)},
    "arch3-mfcvae-leaky_relu": {"strong_mcc": (0.70, 0.05), "weak_mcc": (0.92, 0.03)},
    "arch3-ivae-leaky_relu": {"strong_mcc": (0.67, 0.06), "weak_mcc": (0.87, 0.05)},
}
# Not Kivva et al.'s: VaDE's own MNIST clustering accuracy (Jiang et al., 2017, Table 2),
# the figure `idvae reproduce vade-mnist` is set beside. It comes from one saved model.
VADE_MNIST: dict[str, dict[str, tuple[float, float | None]]] = {
    "vade-mnist": {"accuracy": (0.9446, None)},
}
# The setup each experiment has in the paper: experiment name -> (where, what).
PAPER_SETUPS: dict[str, tuple[str, str]] = {
    "table2": (
        "Table 2, App. J.3.2",
        "5,000 samples, m = 2, 15 pretraining + 20 VaDE epochs, 5 runs.",
    ),
    "pinwheel": (
        "Sec. 4 and App. J.3.2",
        "5,000 samples, m = n = 2, the architecture of Table 2.",
    ),
    "vade-mnist": (
        "Jiang et al. (2017), VaDE, Table 2",
        "MNIST clustering accuracy 94.46%, reported for one saved model; ports that retrain "
        "from scratch report 0.716 +/- 0.044 over 20 seeds, about 0.80 and 0.75.",
    ),
    "table3": (
        "Table 3, App. J.3.3",
        "latent dimension 5, 25 components, 10 runs, Arch1-3; iVAE sees the digit labels as u.",
    ),
}
# App. J.3.1, the maximum-likelihood study (Fig. 1): (where, what).
PAPER_MLE: tuple[str, str] = (
    "App. J.3.1",
    "In all 50 simulations the truth was the unique global minimiser.",
)
